"""Thresholds of the data gates (DESIGN §4: anomalous days must not train or publish a model)."""
from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field


class GatesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="false: the data_gate step records the figures but never fails")
    history_days: int = Field(7, ge=1, description="days before each checked day that form its reference (median)")
    min_history_days: int = Field(2, ge=1, description="fewer validated reference days than this: the day is not "
                                  "judged (a new lake), and the manifest says so")
    min_volume_ratio: float = Field(0.5, gt=0, description="fail when a day's rows (events, impressions) fall below "
                                    "this multiple of the reference median")
    max_volume_ratio: float = Field(3.0, gt=0, description="fail when they rise above this multiple")
    max_click_rate_change: float = Field(0.5, gt=0, description="fail when the click rate moves by more than this "
                                         "fraction of the reference median, either way")
    max_dead_letter_increase: float = Field(0.005, ge=0, description="fail when a table's dead-letter share exceeds "
                                            "the reference median by more than this (absolute)")
    skip_days: list[dt.date] = Field(default_factory=list, description="days an operator has accepted "
                                 "as they are: checked and reported, never failing")
