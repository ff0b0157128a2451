"""Settings of the representation steps (paper 000 §3, A.5-A.8; DESIGN §7).

Defaults are the paper's hyperparameters where it gives them; the ``local`` preset shrinks
image size, samples and epochs so the steps fit a 2-core CPU.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Representation(_Section):
    enabled: bool = Field(True, description="false skips the step (the manifest says so); downstream steps do without it")
    retrain_every_days: int = Field(1, ge=1, description="cadence: on other days the last trained model is reused "
                                                          "and only inference runs for the current catalog")


class SkipgramConfig(_Representation):
    """fastText skip-gram over session lines of listing ids (paper 000 §3.3, A.8)."""

    dim: int = Field(64, ge=2)
    window: int = Field(5, ge=1)
    epochs: int = Field(5, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    min_count: int = Field(1, ge=1, description="listings seen fewer times in the corpus get no vector")
    loss: Literal["hs", "ns", "softmax"] = Field("hs", description="paper: hierarchical softmax beat negative sampling")
    threads: int = Field(1, ge=1, description="fastText threads; more than 1 is Hogwild and not reproducible")


class TextVectorsConfig(_Representation):
    """fastText skip-gram over normalized listing text, subwords 3-6 (paper 000 A.7)."""

    dim: int = Field(128, description="128 or 256 (paper Table 15)")
    window: int = Field(5, ge=1)
    epochs: int = Field(5, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    negatives: int = Field(5, ge=1)
    min_subword: int = Field(3, ge=0)
    max_subword: int = Field(6, ge=0)
    subword_buckets: int = Field(2_000_000, ge=1, description="hashed subword rows (fastText -bucket); the model "
                                                              "file holds buckets x dim floats")
    min_count: int = Field(10, ge=1, description="rarer tokens are dropped unless seen in recent ad interactions")
    ad_token_days: int = Field(30, ge=0, description="days of ad impressions/clicks whose listings' tokens are always kept")
    threads: int = Field(1, ge=1, description="fastText threads; more than 1 is Hogwild and not reproducible")


class VisualConfig(_Representation):
    """Multitask EfficientNetB0 image classifier whose 256-d conv block is the representation (paper 000 §3.1, A.5)."""

    retrain_every_days: int = Field(7, ge=1)
    image_size: int = Field(224, ge=32, description="square input side in pixels (EfficientNetB0 needs >= 32)")
    embedding_dim: int = Field(256, ge=8)
    weights_path: str | None = Field(None, description="local ImageNet weights file for the backbone (.h5/.weights.h5); "
                                                       "None = random init (recorded in the manifest)")
    samples_per_task: int = Field(16_000, ge=1, description="images sampled per task dataset per epoch (paper: 16K)")
    batch_size: int = Field(64, ge=2)
    phase1_epochs: int = Field(1, ge=0, description="epochs with the backbone frozen (paper: 1)")
    phase2_epochs: int = Field(8, ge=0, description="epochs with the last layers unfrozen (paper: 8)")
    unfreeze_last: int = Field(50, ge=0, description="backbone layers trained in phase 2 (paper: 50 with ImageNet "
                                                     "weights); 234 = the whole cut backbone, needed with random init")
    learning_rate: float = Field(1e-3, gt=0)
    rotation: float = Field(0.05, ge=0, description="RandomRotation factor (fraction of a full turn)")
    translation: float = Field(0.1, ge=0)
    zoom: float = Field(0.1, ge=0)
    contrast: float = Field(0.2, ge=0)
    inference_batch: int = Field(256, ge=1)


class AirConfig(_Representation):
    """Pseudo-two-tower over [visual | text | numeric] trained on co-clicked pairs (paper 000 §3.2, A.6)."""

    dim: int = Field(256, ge=8)
    hidden: list[int] = Field(default_factory=lambda: [512], description="tower hidden layer widths")
    batch_size: int = Field(4096, ge=2)
    sampled_negatives: int = Field(1500, ge=1, description="in-batch negatives per source (paper: 1500 at batch 4096)")
    temperature: float = Field(0.05, gt=0, description="cosine similarities are divided by this before the softmax")
    learning_rate: float = Field(1e-4, gt=0)
    epochs: int = Field(5, ge=1)
    max_pairs: int = Field(30_000_000, ge=1, description="most frequent co-clicked pairs used (paper: 30M)")


class AnnIndexConfig(_Section):
    """FAISS IVF index over listings with active campaigns (paper 000 A.5.2)."""

    enabled: bool = True
    representations: list[str] = Field(default_factory=lambda: ["visual", "air"])
    nlist: int | None = Field(None, ge=1, description="IVF clusters; None = 4*sqrt(n) rounded")
    nprobe: int = Field(16, ge=1, description="clusters searched per query")
    k: int = Field(10, ge=1, description="recall@k against exact search is reported")
    recall_queries: int = Field(2000, ge=1, description="listings used as queries for the recall estimate")
    min_recall: float = Field(0.9, ge=0, le=1, description="the step fails below this recall@k")


class LookupConfig(_Section):
    """Frozen lookup SavedModels of the representations (paper 000 §2.7.2)."""

    representations: list[str] = Field(default_factory=lambda: ["skipgram", "text", "visual", "air"])


class QualityConfig(_Section):
    """The checks every representation must pass (paper 000 Figure 13; a broken trainer must not pass silently)."""

    sample: int = Field(2000, ge=10, description="listings whose pairwise cosines and neighbours are measured")
    neighbours: int = Field(10, ge=1)
    min_cosine_gap: float = Field(0.02, description="same-taxonomy minus different-taxonomy mean cosine must exceed this")
    min_purity_ratio: float = Field(1.5, description="neighbour purity / chance purity must exceed this")


class RepresentationsConfig(_Section):
    skipgram: SkipgramConfig = Field(default_factory=SkipgramConfig)
    text: TextVectorsConfig = Field(default_factory=TextVectorsConfig)
    visual: VisualConfig = Field(default_factory=VisualConfig)
    air: AirConfig = Field(default_factory=AirConfig)
    ann_index: AnnIndexConfig = Field(default_factory=AnnIndexConfig)
    lookups: LookupConfig = Field(default_factory=LookupConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
