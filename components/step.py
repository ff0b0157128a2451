"""What a pipeline step returns, and the error it raises (DESIGN §2: ``run(config, date, lake) -> StepResult``)."""
from __future__ import annotations

import dataclasses
import re
from typing import Any


@dataclasses.dataclass
class StepResult:
    """A step's report to the runner, which turns it into the step's manifest.

    A step that ran but had nothing to do (a log without images, a label the log lacks) returns a
    note ``skipped: <why>`` and ``metrics["skipped"] = <why>``; the run summary and the report show
    it as skipped with that reason, and downstream steps read the reason from its manifest."""

    inputs: list[str] = dataclasses.field(default_factory=list)
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    row_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


class StepError(RuntimeError):
    """A step failed for a reason the user can act on; the message says what, where and what to do."""


def rows_text(row_counts: dict) -> str:
    """A manifest's row counts for people: summed over days per output (``events/2026-03-01`` ->
    ``events``), dead letters apart (``(+N dead letters)``); ``-`` when there are none."""
    totals: dict[str, int] = {}
    for key, value in (row_counts or {}).items():
        name = re.sub(r"/\d{4}-\d{2}-\d{2}$", "", key)
        totals[name] = totals.get(name, 0) + int(value)
    text = " · ".join(f"{k} {v:,}" for k, v in totals.items() if not k.startswith("dead_letter/"))
    if any(k.startswith("dead_letter/") for k in totals):
        text += f" (+{sum(v for k, v in totals.items() if k.startswith('dead_letter/')):,} dead letters)"
    return text or "-"
