"""The dashboard's forms. The audit filter is validated by the audit API's own serializer, so
the explorer, its export links and the API accept and refuse exactly the same filters."""

from __future__ import annotations

from typing import Any

from django import forms

from audit.api.serializers import FilterQuerySerializer
from audit.models import AuditRecord
from audit.selectors import AuditFilters

FILTER_FIELDS = ("agent", "tool", "decision", "outcome", "kind", "since", "until", "q")


def _any(choices: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [("", "any"), *choices]


class AuditFilterForm(forms.Form):
    """The explorer's filters (GET) and its page cursors. The fields here only draw the form
    and read the cursors; ``clean`` hands the filters to ``FilterQuerySerializer``."""

    agent = forms.CharField(required=False, widget=forms.TextInput(attrs={"list": "agents"}))
    tool = forms.CharField(required=False, widget=forms.TextInput(attrs={"list": "tools"}))
    decision = forms.CharField(
        required=False, widget=forms.Select(choices=_any(AuditRecord.Decision.choices))
    )
    outcome = forms.CharField(
        required=False, widget=forms.Select(choices=_any(AuditRecord.Outcome.choices))
    )
    kind = forms.CharField(
        required=False, widget=forms.Select(choices=_any(AuditRecord.Kind.choices))
    )
    since = forms.CharField(
        required=False,
        help_text="UTC",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}),
    )
    until = forms.CharField(
        required=False,
        help_text="UTC",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}),
    )
    q = forms.CharField(
        label="Text",
        required=False,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "tool, agent, reason…"}),
    )
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    after = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    filters: AuditFilters

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        query = {name: self.data[name] for name in FILTER_FIELDS if self.data.get(name)}
        serializer = FilterQuerySerializer(data=query)
        if serializer.is_valid():
            self.filters = serializer.filters
        else:
            for name, errors in serializer.errors.items():
                self.add_error(name if name in self.fields else None, [str(e) for e in errors])
        return cleaned

    def export_query(self) -> dict[str, str]:
        """The valid filters as the export API's query (times in the chain's UTC format)."""
        return self.filters.as_query()


class DecisionForm(forms.Form):
    """A reviewer's decision on one approval request. ``digest`` is the arguments' digest the
    page showed: a decision is bound to what the reviewer saw."""

    decision = forms.ChoiceField(choices=[("approve", "approve"), ("deny", "deny")])
    comment = forms.CharField(required=False, max_length=2000)
    digest = forms.CharField(required=False, max_length=64)

    @property
    def approve(self) -> bool:
        return self.cleaned_data["decision"] == "approve"
