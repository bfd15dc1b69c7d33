"""Guardrails: inline checks over a call's arguments and results (pure, no Django, no I/O)."""
