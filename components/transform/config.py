"""Settings of the transform step (paper 000 §2.7.1 and Table 1: top-K vocabularies; DESIGN §6: hashed OOV
buckets and coverage-sized listing vocabularies)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

VOCABULARIES = ("listing", "shop", "taxonomy", "query", "query_token")
DEFAULT_TOP_K = {"listing": 750_000, "shop": 100_000, "taxonomy": 5_000, "query": 200_000, "query_token": 100_000}
# Hashed OOV buckets per vocabulary, sized for a production catalog's tail (see the field's description).
DEFAULT_NUM_OOV_BUCKETS = {"listing": 100_000, "shop": 10_000, "taxonomy": 100, "query": 50_000,
                           "query_token": 10_000}


def _known(name: str, values: dict) -> None:
    unknown = set(values) - set(VOCABULARIES)
    if unknown:
        raise ValueError(f"{name}: unknown vocabularies {sorted(unknown)}; known: {VOCABULARIES}")
    if min(values.values(), default=1) < 1:
        raise ValueError(f"{name} must be >= 1 for every vocabulary, got {values}")


class TransformConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_TOP_K),
        description="vocabulary size per entity (unset ones keep their default); the paper's CTR model caps "
                    "listings at 750K. With listing_coverage set, the listing entry is only an upper cap")
    listing_coverage: float | None = Field(
        None, gt=0, le=1,
        description="size the listing vocabulary by coverage instead of a fixed K: the smallest K whose top-K "
                    "listings account for this share of the training split's listing occurrences (targets plus "
                    "every listing sequence entry, what the vocabulary is built from), at most top_k.listing. "
                    "A fixed K leaves a long-tailed catalog's targets mostly OOV or wastes rows on a small one; "
                    "coverage adapts K to the day's data. The chosen K and the achieved coverage go to stats.json. "
                    "null: top_k.listing as given")
    frequency_threshold: int = Field(1, ge=1, description="ids seen fewer times in training get an OOV index")
    num_oov_buckets: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_NUM_OOV_BUCKETS),
        description="hashed OOV buckets per entity (an int sets all; unset ones keep their default): an id "
                    "outside the K-entry vocabulary gets index K + fingerprint64(id) mod n (tf.lookup."
                    "StaticVocabularyTable, the same in the serving graph), so the tail's ids spread over n "
                    "learned embedding rows instead of sharing one (the paper's single OOV bucket). About "
                    "distinct-OOV-ids / n ids share a row; each bucket costs one embedding row per table. "
                    "Component 1's target-match readout still treats every index >= K as unknown")
    engineered_buckets: int = Field(16, ge=0, description="quantile buckets of each engineered feature "
                                    "(tft.bucketize over the training split; the rankers embed each bucket, "
                                    "a piecewise-constant reading of the feature beside its z-score); 0: none")
    eval_sample_rate: float = Field(1.0, gt=0, le=1, description="random share of validation/test impressions kept")
    num_shards: int = Field(4, ge=1, description="TFRecord files per split")
    compression_level: int = Field(1, ge=0, le=9, description="GZIP level of the TFRecords: 1 writes ~2.7x faster "
                                                             "than 6 for ~30% larger files")
    batch_rows: int = Field(8192, ge=1, description="rows per record batch fed to tensorflow-transform")

    @field_validator("top_k")
    @classmethod
    def _known_vocabularies(cls, top_k):
        _known("top_k", top_k)
        return {**DEFAULT_TOP_K, **top_k}

    @field_validator("num_oov_buckets", mode="before")
    @classmethod
    def _oov_for_all(cls, value):
        """An int means the same count for every vocabulary."""
        if isinstance(value, int) and not isinstance(value, bool):
            return {e: value for e in VOCABULARIES}
        return value

    @field_validator("num_oov_buckets")
    @classmethod
    def _oov_per_vocabulary(cls, num_oov_buckets):
        _known("num_oov_buckets", num_oov_buckets)
        return {**DEFAULT_NUM_OOV_BUCKETS, **num_oov_buckets}
