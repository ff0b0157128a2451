"""Settings of the reference models (DESIGN §8: logistic regression and gradient-boosted trees)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReferencesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="fit the reference models of every run (train_references step)")
    logreg_c: float = Field(1.0, gt=0, description="inverse L2 strength of the logistic regressions (standardized inputs)")
    gbdt_max_iter: int = Field(300, ge=1, description="boosting rounds at most; early stopping on a held-out "
                               "share of the training split picks fewer")
    gbdt_learning_rate: float = Field(0.1, gt=0)
    gbdt_max_leaf_nodes: int = Field(31, ge=2)
    gbdt_min_samples_leaf: int = Field(40, ge=1)
    gbdt_l2: float = Field(1.0, ge=0, description="L2 regularization of the leaf values")
    gbdt_validation_fraction: float = Field(0.1, gt=0, lt=1, description="share of the training split the "
                                            "boosting's early stopping holds out (never the validation day)")
    max_position: int = Field(10, ge=1, description="positions one-hot encoded for the logistic regressions "
                              "(deeper ones share the last column)")
