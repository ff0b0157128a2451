"""Blessing thresholds (DESIGN §8 "Bless")."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BlessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    auc_tolerance: float = Field(0.002, ge=0, description="the candidate may score at most this much ROC-AUC below "
                                 "the blessed model on the same test day")
    max_ece: dict[str, float] = Field(default_factory=lambda: {"ctr": 0.01, "pccvr": 0.02},
                                      description="largest calibrated ECE on the test day, per task")
    min_roc_auc: float = Field(0.5, ge=0, le=1, description="a candidate must rank better than this (chance)")
    score_batch_rows: int = Field(16384, ge=1, description="test-day rows per batch when scoring the incumbent")
