"""Settings of the transform step (paper 000 §2.7.1 and Table 1: top-K vocabularies, one OOV bucket)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

VOCABULARIES = ("listing", "shop", "taxonomy", "query", "query_token")
DEFAULT_TOP_K = {"listing": 750_000, "shop": 100_000, "taxonomy": 5_000, "query": 200_000, "query_token": 100_000}


class TransformConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_TOP_K),
        description="vocabulary size per entity (unset ones keep their default); the paper's CTR model caps "
                    "listings at 750K")
    frequency_threshold: int = Field(1, ge=1, description="ids seen fewer times in training get the OOV index")
    num_oov_buckets: int = Field(1, ge=1, description="OOV indices after the K in-vocabulary ones (paper: 1)")
    eval_sample_rate: float = Field(1.0, gt=0, le=1, description="random share of validation/test impressions kept")
    num_shards: int = Field(4, ge=1, description="TFRecord files per split")
    compression_level: int = Field(1, ge=0, le=9, description="GZIP level of the TFRecords: 1 writes ~2.7x faster "
                                                             "than 6 for ~30% larger files")
    batch_rows: int = Field(8192, ge=1, description="rows per record batch fed to tensorflow-transform")

    @field_validator("top_k")
    @classmethod
    def _known_vocabularies(cls, top_k):
        unknown = set(top_k) - set(VOCABULARIES)
        if unknown:
            raise ValueError(f"unknown vocabularies {sorted(unknown)}; known: {VOCABULARIES}")
        if min(top_k.values(), default=1) < 1:
            raise ValueError("top_k sizes must be >= 1")
        return {**DEFAULT_TOP_K, **top_k}
