"""Settings of the CTR and PCCVR rankers and their training (paper 000 §4, A.2-A.4, Tables 5, 9, 13; DESIGN §8).

The defaults are the ``local`` sizes; the ``production`` preset sets the paper's (CTR: 4 cross
layers, deep 5000-2500-250-500; PCCVR: 2 cross layers, deep 240-120).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from components.dicts import deep_merge
from components.models.adpm.config import AdpmConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WideConfig(_Section):
    """Embedding sizes of the non-personalized ("wide") inputs: target listing, query, context, position."""

    listing: int = 32
    shop: int = 16
    taxonomy: int = 16
    query: int = 16
    query_token: int = 16
    platform: int = 4
    hour_of_day: int = 4
    day_of_week: int = Field(4, ge=0, description="0 = no day-of-week input")
    position: int = 8
    max_position: int = Field(64, ge=1, description="positions at or above share the last embedding row")
    engineered_bucket: int = Field(4, ge=1, description="embedding size of each engineered feature's quantile bucket")
    id_dropout: float = Field(0.0, ge=0, lt=1, description="in training, the share of rows whose target listing, shop "
                              "and query ids each read as unknown (their hashed OOV index), in the wide input and the "
                              "ADPM alike (models.wide.IdDropout): the ranker learns on rows whose id it cannot tell, "
                              "as it meets new and tail ids at serving, instead of memorizing the training days' ids")


class RankerConfig(_Section):
    cross_layers: int = Field(2, ge=0)
    cross_rank: int | None = Field(64, ge=1, description="low-rank cross kernels W = U V (DCN-v2 §3.2); None = full "
                                                         "rank, d^2 weights per layer for an input of width d (~1,500 "
                                                         "with the ADPM: 2.3M per layer)")
    deep: list[int] = Field(default_factory=lambda: [256, 128])
    dropout: float = Field(0.1, ge=0, lt=1)
    personalized: bool = Field(True, description="false = the non-personalized baseline: the same model without the ADPM")
    debias: bool = Field(True, description="a shallow position/platform tower added to the logit in training and "
                                           "detached at serving (paper 000 §5.3, paper 002 §3.4)")
    debias_hidden: list[int] = Field(default_factory=lambda: [16])
    engineered: bool = Field(True, description="the wide input also reads the transform step's engineered "
                             "point-in-time features (schemas.features): request context, relevance and priors; "
                             "the personalized ranker also the target-session identity features")
    engineered_linear: bool = Field(True, description="a linear term of the standardized engineered features "
                                    "added to the logit (wide & deep: the ranker holds the logistic regression "
                                    "on those features as a special case)")


class TrainingConfig(_Section):
    batch_size: int = Field(1024, ge=1)
    epochs: int = Field(2, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    cosine_decay_alpha: float = Field(0.05, ge=0, le=1, description="final learning rate as a fraction of the initial")
    strategy: Literal["default", "mirrored", "multi_worker"] = Field(
        "default", description="tf.distribute strategy: one device, MirroredStrategy (GPUs of one worker), "
                               "MultiWorkerMirroredStrategy (workers from TF_CONFIG)")
    mixed_precision: bool = Field(False, description="mixed_float16 compute (GPU only)")
    early_stopping_patience: int | None = Field(
        None, ge=0, description="stop after this many epochs without a better validation ROC-AUC and keep the best "
                                "epoch's weights (the validation day's second use after Platt, DESIGN §5); None = off")
    shuffle_buffer: int = Field(50_000, ge=0)
    steps_per_execution: int = Field(1, ge=1)
    optimizer: Literal["adam", "lazy_adam", "fused_adam"] = Field(
        "adam", description="adam: Keras' Adam, which reads and writes every row of every embedding table each "
                            "step; lazy_adam: Adam whose embedding-table gradients update only the rows a batch "
                            "touches (components/models/lazy_adam.py; the paper's baseline used LazyAdam). On the "
                            "local CTR ranker lazy_adam made a step ~5% faster but learned less in the 2 epochs "
                            "(test ROC-AUC 0.757 vs 0.763, seed 7): rows seen once get one step instead of Adam's "
                            "momentum-carried ones, so it would need its own learning rate; fused_adam: Adam as "
                            "TensorFlow's one-pass ResourceApplyAdam kernel (components/models/fused_adam.py), a "
                            "step ~10-15% faster, the moments of a row repeated in a batch from its summed gradient")
    jit_compile: bool = Field(
        False, description="compile fit's train (and validation) steps with XLA. Off by default: on the 2-core "
                           "CPU the local CTR step was slower with it (Keras' Dropout draws its masks with a threefry "
                           "generator that XLA runs slowly on CPU, and XLA cannot take the encoder's length "
                           "split or the valid-only lookups, which need data-dependent shapes); worth measuring "
                           "on GPU workers")
    profile_batches: list[int] | None = Field(
        None, min_length=2, max_length=2,
        description="[first, last] training batches to trace with TensorFlow's profiler into the step's "
                    "tensorboard/ directory (op-level time of the train step; view with TensorBoard's profile "
                    "plugin); None = no trace")
    @field_validator("profile_batches")
    @classmethod
    def _profile_range(cls, batches):
        if batches is not None and not 1 <= batches[0] <= batches[1]:
            raise ValueError(f"training.profile_batches must be [first, last] with 1 <= first <= last, got {batches}")
        return batches

    prediction_batch_size: int | None = Field(
        8192, ge=1, description="rows per batch of the inference passes: the validation passes of early stopping "
                                "and the validation and test predictions (no activations are kept for a backward "
                                "pass, so larger batches amortize the per-step overhead); None = batch_size")


class TaskConfig(_Section):
    wide: WideConfig | None = Field(None, description="this task's wide embedding sizes; None = models.wide")
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    adpm: AdpmConfig = Field(default_factory=AdpmConfig)
    pretrained: list[str] = Field(default_factory=lambda: ["air"], description="representations whose frozen lookups "
                                  "feed ADPM component 2 (paper 000 Table 1: AIR for CTR, skip-gram + visual for PCCVR)")


def _ctr() -> TaskConfig:
    adpm = AdpmConfig()
    # Not in the paper: without it the full ADPM overfit the local day (training AUC 0.87 against ~0.76 on
    # the next day) and fell behind component 2 alone with one seed of two; dropping 35% of the sequence
    # entries in training put it ahead with both (README "Ablations").
    adpm.sequence_dropout = 0.35
    return TaskConfig(adpm=adpm)


def _pccvr() -> TaskConfig:
    adpm = AdpmConfig()
    adpm.component1.heads = 2  # paper 000 Table 1
    # No debias tower: the paper adds it to the CTR model only (000 §5.3); position biases clicks, not
    # purchases after a click.
    return TaskConfig(ranker=RankerConfig(cross_layers=2, deep=[240, 120], debias=False), adpm=adpm,
                      pretrained=["skipgram", "visual"],
                      training=TrainingConfig(batch_size=256, epochs=4))  # ~10k clicked rows a day on local


class MinPositivesConfig(_Section):
    """Fewest positive labels a task needs in a split before its rankers train (DESIGN §8; paper 000 §4:
    CTR learns clicks on impressions, PCCVR purchases after a click). A log that lacks a label (no
    purchases, hence nothing for PCCVR; no clicks) would otherwise train a model on one class and report
    success; below either minimum the task's train steps are skipped with the counts instead, and
    calibration, evaluation, serving export and blessing say why that task has no model."""

    train: int = Field(20, ge=0, description="positives (CTR: clicks; PCCVR: purchases after a click) the "
                                             "training split must hold for the task's models to train; 0 = no check")
    validation: int = Field(5, ge=0, description="positives the validation split must hold (early stopping and the "
                                                 "Platt fit read it; with none the model cannot be calibrated); "
                                                 "0 = no check")


class ModelsConfig(_Section):
    """Everything the train, calibrate, evaluate and export_serving steps read."""

    max_seq_len: int = Field(50, ge=1, description="sequence length M the input pipeline pads/truncates to")
    max_query_tokens: int = Field(8, ge=1)
    min_positives: MinPositivesConfig = Field(
        default_factory=MinPositivesConfig, description="per split, the fewest positive labels of a task below which "
        "its train steps are skipped (with the reason) rather than fit on a label the log (almost) does not have")
    wide: WideConfig = Field(default_factory=WideConfig)
    ctr: TaskConfig = Field(default_factory=_ctr)
    pccvr: TaskConfig = Field(default_factory=_pccvr)
    @model_validator(mode="before")
    @classmethod
    def _task_defaults_under_overrides(cls, data):
        """A preset or ``--set`` that changes one field of a task keeps the task's other defaults (a bare
        ``TaskConfig`` would bring neither PCCVR's pretrained skip-gram + visual, batch 256 and 2 heads nor
        CTR's sequence dropout)."""
        if isinstance(data, dict):
            for task, defaults in (("ctr", _ctr), ("pccvr", _pccvr)):
                if isinstance(data.get(task), dict):
                    data = {**data, task: deep_merge(defaults().model_dump(), data[task])}
        return data

    ece_bins: int = Field(20, ge=2, description="equal-width bins of the expected calibration error")
    serving_parity_rows: int = Field(2000, ge=1, description="test-day rows export_serving scores through the "
                                     "exported model and compares with the evaluated calibrated predictions")
    serving_tolerance: float = Field(1e-5, gt=0, description="largest allowed |probability difference| in that check")
