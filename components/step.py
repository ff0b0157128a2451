"""What a pipeline step returns, and the error it raises (DESIGN §2: ``run(config, date, lake) -> StepResult``)."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class StepResult:
    """A step's report to the runner, which turns it into the step's manifest."""

    inputs: list[str] = dataclasses.field(default_factory=list)
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    row_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


class StepError(RuntimeError):
    """A step failed for a reason the user can act on; the message says what, where and what to do."""
