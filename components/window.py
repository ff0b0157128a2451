"""The dates a run for logical date D reads (DESIGN §5: train [D-T, D-2], validation D-1, test D).

With ``validation: fraction`` there is no validation day: training days are ``[D-T, D-1]``
and a random ``validation_fraction`` of their impressions (by a stable hash of the
impression id) is held out, so two days of data are enough (train on D-1, test on D).
"""
from __future__ import annotations

import datetime as dt

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class WindowConfig(BaseModel):
    """Run window; all offsets are in days relative to the logical date D."""

    model_config = ConfigDict(extra="forbid")

    train_days: int = Field(2, ge=1, description="number of training days, ending at D-2 (D-1 with a validation fraction)")
    validation: Literal["day", "fraction"] = Field("day", description="validate on day D-1, or on a random "
                                                                      "fraction of the training days' impressions")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="held-out share when validation is 'fraction'")
    session_lookback_days: int = Field(1, ge=0, description="days before the first day read for session tails")
    label_lookahead_days: int = Field(1, ge=0, description="days after D read for purchase labels")
    corpus_days: int | None = Field(None, ge=1, description="days of sessions for the representation corpora, "
                                    "ending at the last training day; default: the training days (paper 000 A.2: two months)")

    def train_dates(self, day: dt.date) -> list[dt.date]:
        last = 2 if self.validation == "day" else 1
        return [day - dt.timedelta(days=k) for k in range(self.train_days + last - 1, last - 1, -1)]

    def validation_date(self, day: dt.date) -> dt.date | None:
        return day - dt.timedelta(days=1) if self.validation == "day" else None

    def test_date(self, day: dt.date) -> dt.date:
        return day

    def example_dates(self, day: dt.date) -> list[dt.date]:
        """Days whose impressions become examples: train, validation and test."""
        validation = [self.validation_date(day)] if self.validation == "day" else []
        return self.train_dates(day) + validation + [self.test_date(day)]

    def corpus_dates(self, day: dt.date) -> list[dt.date]:
        """Days whose sessions feed the representation corpora: up to the last training day, never later
        (representations are features of the validation and test days, so they must not see them)."""
        last = self.train_dates(day)[-1]
        n = self.corpus_days or self.train_days
        return [last - dt.timedelta(days=k) for k in range(n - 1, -1, -1)]

    def raw_dates(self, day: dt.date) -> tuple[list[dt.date], list[dt.date]]:
        """(required, optional) raw days: corpus and example days, plus session tails before and label heads after."""
        required = sorted(set(self.corpus_dates(day)) | set(self.example_dates(day)))
        before = [required[0] - dt.timedelta(days=k) for k in range(self.session_lookback_days, 0, -1)]
        after = [day + dt.timedelta(days=k) for k in range(1, self.label_lookahead_days + 1)]
        return required, before + after
