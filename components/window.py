"""The dates a run for logical date D reads (DESIGN §5: train [D-T, D-2], validation D-1, test D)."""
from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field


class WindowConfig(BaseModel):
    """Run window; all offsets are in days relative to the logical date D."""

    model_config = ConfigDict(extra="forbid")

    train_days: int = Field(2, ge=1, description="number of training days, ending at D-2")
    session_lookback_days: int = Field(1, ge=0, description="days before the first day read for session tails")
    label_lookahead_days: int = Field(1, ge=0, description="days after D read for purchase labels")

    def train_dates(self, day: dt.date) -> list[dt.date]:
        return [day - dt.timedelta(days=k) for k in range(self.train_days + 1, 1, -1)]

    def validation_date(self, day: dt.date) -> dt.date:
        return day - dt.timedelta(days=1)

    def test_date(self, day: dt.date) -> dt.date:
        return day

    def example_dates(self, day: dt.date) -> list[dt.date]:
        """Days whose impressions become examples: train, validation and test."""
        return self.train_dates(day) + [self.validation_date(day), self.test_date(day)]

    def raw_dates(self, day: dt.date) -> tuple[list[dt.date], list[dt.date]]:
        """(required, optional) raw days: the example days, plus session tails before and label heads after."""
        required = self.example_dates(day)
        before = [required[0] - dt.timedelta(days=k) for k in range(self.session_lookback_days, 0, -1)]
        after = [day + dt.timedelta(days=k) for k in range(1, self.label_lookahead_days + 1)]
        return required, before + after
