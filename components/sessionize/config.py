"""Settings of the sessionize step (DESIGN §5; paper 000 §2.1: one-hour window, M = 50)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.examples import DEFAULT_PAIRS, ENTITIES
from schemas.raw import ACTIONS


class SessionizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_minutes: int = Field(60, ge=1, description="events in [t - window, t) feed an impression at t")
    max_len: int = Field(50, ge=1, description="M: most recent ids kept per (entity, action) sequence")
    attribution_minutes: int = Field(60, ge=1, description="a purchase this soon after the click labels it purchased")
    pairs: list[tuple[str, str]] = Field(default_factory=lambda: list(DEFAULT_PAIRS))
    negative_sample_rate: float = Field(0.5, gt=0, le=1, description="share of non-clicks kept on CTR training days")
    num_buckets: int = Field(8, ge=1, description="user-key buckets: the shuffle keys and output files per day")
    prior_days: int = Field(1, ge=0, description="historical priors count the impressions of the P days strictly "
                            "before the example's day (0: no priors); a run uses them only when every training "
                            "day has all P (validate covers window.session_lookback_days days before the window)")
    prior_strength: float = Field(20.0, gt=0, description="pseudo-impressions at the earlier days' click rate that "
                                  "smooth each prior CTR: (clicks + a p0) / (impressions + a)")
    allow_immature_labels: bool = Field(False, description="write a day whose next day's purchases are not there yet")

    @field_validator("pairs")
    @classmethod
    def _known_pairs(cls, pairs):
        for entity, action in pairs:
            if entity not in ENTITIES or action not in ACTIONS:
                raise ValueError(f"unknown (entity, action) pair ({entity}, {action}); entities {ENTITIES}, actions {ACTIONS}")
        return pairs
