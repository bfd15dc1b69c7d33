"""Run ``manage.py`` with every garbage collection timed: ``python bench/gc_probe.py serve …``.

Each collection's wall-clock time, generation and duration (``gc.callbacks``) are kept in
memory and written at exit, as JSON lines ``[time, generation, seconds]``, to the file named by
``GC_PROBE_OUT``; bench/gc_pauses.py keeps those of its measured window. SIGUSR1 forces a full
collection, recorded as generation -1.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORCED = -1  # the generation recorded for a collection SIGUSR1 asked for
pauses: list[tuple[float, int, float]] = []
_started = 0.0


_forcing = False


def _timed(phase: str, info: dict[str, int]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
    else:
        generation = FORCED if _forcing else info["generation"]
        pauses.append((time.time(), generation, time.perf_counter() - _started))


def _force(*_: object) -> None:
    global _forcing
    _forcing = True
    try:
        gc.collect()
    finally:
        _forcing = False


def _write() -> None:
    with open(os.environ["GC_PROBE_OUT"], "w") as out:
        out.writelines(json.dumps(p) + "\n" for p in pauses)


if __name__ == "__main__":
    gc.callbacks.append(_timed)
    atexit.register(_write)
    # SIGUSR1: a full collection now, the worst pause this heap can cause.
    signal.signal(signal.SIGUSR1, _force)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line([str(ROOT / "manage.py"), *sys.argv[1:]])
