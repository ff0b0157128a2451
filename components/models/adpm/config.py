"""Settings of the ADPM, one section per component (paper 000 §2.3-2.6, Table 1; DESIGN §8).

Defaults follow the CTR column of paper 000 Table 1 where it gives a value:

=====================================  =====================  ===========================
Table 1 row                            CTR / PCCVR            here
=====================================  =====================  ===========================
Pretrained Representation Type         AIR / skip&visual      ``component2.lookups`` (names -> lookup paths)
Num adFormer Blocks                    1 / 1                  ``component1.blocks = 1``
adFormer Block Dropout                 0 / 0                  ``component1.dropout = 0.0``
adFormer Num Heads                     3 / 2                  ``component1.heads = 3``
Learned Listing/Shop/Taxonomy Dim      32 / 16 / 8            ``component3.dims``
(e, a) (Learned Component)             (all e, all a)         ``component3.pairs`` = the 13 pairs
(e, a) (Pretrained Component)          (listing, all a)       ``component2.actions`` = the 4 listing actions
(e, a) (adFormer Encoder)              (listing, viewed)      ``component1.pairs = [(listing, view)]``
=====================================  =====================  ===========================

Not given by the paper (our choices, each a field): the encoder's feed-forward width (``ff_dim``,
2 x d1), the LeakyReLU slope (0.2, the default of ``tf.nn.leaky_relu``; neither paper 000 nor
BST [11] states one), the layer-norm epsilon, the query embedding size of component 3 (16,
the query entity has no row in Table 1), component 1's ``target_match`` readout and
``embedding_init_stddev`` (both on by default; off = the paper's encoder) and ``sequence_dropout`` (0 here; the CTR task sets 0.35,
``components/models/config.py``). ``max_len`` is M = 50 (paper 000 §4.2).

:func:`adpm_inputs` lists the batch features an ADPM of a config reads, in the
``{feature: (dtype, shape without batch)}`` form :func:`components.models.ranker.build_ranker`
takes; the keys are those of the input pipeline:

- ``listing_id_idx`` int64 ``[B]``: the target listing's vocabulary index (component 1);
- ``seq_<entity>_<action>_idx`` int64 ``[B, M]``: vocabulary indices, newest first, padded with -1
  (components 1 and 3);
- ``seq_listing_<action>`` string ``[B, M]``: raw listing ids padded with ``""`` (component 2,
  ``component2.input_mode = "ids"``), or ``seq_listing_<action>_rows_<lookup>`` int64 ``[B, M]``: the
  lookup's rows of those ids, -1 for padding (``component2.input_mode = "rows"``).
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.examples import DEFAULT_PAIRS, ENTITIES
from schemas.raw import LISTING_ACTIONS

TARGET_IDX = "listing_id_idx"
ENTITY_ACTIONS = {"listing": LISTING_ACTIONS, "shop": LISTING_ACTIONS, "taxonomy": LISTING_ACTIONS,
                  "query": ("search",)}


def seq_idx_key(entity: str, action: str) -> str:
    """Feature of the vocabulary-index sequence of (entity, action): int64 ``[B, M]``, padding -1."""
    return f"seq_{entity}_{action}_idx"


def seq_ids_key(action: str) -> str:
    """Feature of the raw listing-id sequence of ``action``: string ``[B, M]``, padding ``""``."""
    return f"seq_listing_{action}"


def seq_rows_key(action: str, lookup: str) -> str:
    """Feature of the rows of lookup ``lookup`` for the listing ids of ``action``: int64 ``[B, M]``,
    -1 for padding, 0 for an id the lookup does not know (a zero vector that counts), else the row."""
    return f"seq_listing_{action}_rows_{lookup}"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_pairs(pairs: list[tuple[str, str]], where: str) -> list[tuple[str, str]]:
    pairs = [tuple(p) for p in pairs]
    for entity, action in pairs:
        if entity not in ENTITY_ACTIONS:
            raise ValueError(f"{where}: unknown entity {entity!r} in ({entity}, {action}); "
                             f"entities are {list(ENTITIES)}")
        if action not in ENTITY_ACTIONS[entity]:
            raise ValueError(f"{where}: action {action!r} does not occur with entity {entity!r}; "
                             f"its actions are {list(ENTITY_ACTIONS[entity])}")
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"{where}: duplicate (entity, action) pairs in {pairs}")
    return pairs


class EncoderComponentConfig(_Section):
    """Component 1, the adSformer encoder (paper 000 §2.3): one encoder per (entity, action) pair."""

    enabled: bool = True
    pairs: list[tuple[str, str]] = Field(default_factory=lambda: [("listing", "view")],
                                         description="listing sequences only: the target listing sits at position 0")
    embedding_dim: int = Field(32, ge=1, description="d1 (paper 000 §2.3)")
    heads: int = Field(3, ge=1, description="attention heads (Table 1: CTR 3, PCCVR 2); each projects to d1")
    blocks: int = Field(1, ge=1, description="stacked adSformer blocks (Table 1: 1)")
    ff_dim: int = Field(64, ge=1, description="hidden width of the point-wise feed-forward network (not in the paper)")
    dropout: float = Field(0.0, ge=0, lt=1, description="block dropout (Table 1: 0; Table 12: 0 beat 0.1)")
    pooling: Literal["max", "avg", "target"] = Field(
        "max", description="global max pooling (eq. 8), the average (§5.1 ablation), or target: the encoded "
                           "target position's vector without pooling (BST, Chen et al. 2019, the §5.1 baseline)")
    target_match: bool = Field(
        True, description="not in the paper: append, per head, the first block's largest pre-softmax attention "
                          "score of the target over the known sequence entries (AdsformerBlock.target_match; "
                          "W_K starts equal to W_Q), so the output says how strongly the target matches the "
                          "session, e.g. that it is the very listing viewed before; output size d1 + heads. "
                          "Local CTR, seed 7: ROC-AUC 0.7973 with it, 0.7766 without (README 'Ablations'). "
                          "false = the paper's encoder")
    embedding_init_stddev: float | None = Field(
        0.5, gt=0, description="not in the paper: standard deviation of a normal initializer of the listing "
                               "embedding; None = Keras' default uniform(-0.05, 0.05), the paper's encoder, whose "
                               "small rows keep the attention scores near 0 for the first hundreds of steps")
    leaky_relu_alpha: float = Field(0.2, ge=0, description="negative slope of the feed-forward LeakyReLU "
                                                           "(not in the paper)")
    layer_norm_epsilon: float = Field(1e-6, gt=0)
    max_len: int = Field(50, ge=1, description="M: longer sequences keep their first (newest) M positions")
    length_buckets: list[int] = Field(
        default_factory=lambda: [2, 4, 8, 16, 32],
        description="how the encoder computes, not what: outside XLA each batch is split by the position of "
                    "each row's last valid entry (target included) and every group is encoded cut to the "
                    "smallest of these widths that holds it (the rest at full width); identical outputs, "
                    "~4x less work on the local preset's mostly short sequences (AdsformerEncoder); [] = no split")

    @field_validator("length_buckets")
    @classmethod
    def _buckets(cls, widths):
        if any(w < 1 for w in widths):
            raise ValueError(f"component1.length_buckets must be >= 1, got {widths}")
        return sorted(set(widths))

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, pairs):
        pairs = _check_pairs(pairs, "component1.pairs")
        others = [p for p in pairs if p[0] != "listing"]
        if others:
            raise ValueError(f"component1.pairs: {others} are not listing sequences; the adSformer encoder puts the "
                             "target listing at position 0 of a listing sequence (paper 000 §2.3)")
        return pairs


class PretrainedComponentConfig(_Section):
    """Component 2, average-pooled frozen pretrained listing vectors (paper 000 §2.4, §2.7.2)."""

    enabled: bool = True
    lookups: dict[str, str] = Field(default_factory=dict,
                                    description="representation name -> lookup SavedModel path (export_lookups "
                                                "outputs, filled when the model is built); e.g. air, or skipgram "
                                                "and visual (Table 1)")
    actions: list[str] = Field(default_factory=lambda: list(LISTING_ACTIONS),
                               description="listing actions whose raw id sequences are pooled (Table 1: all)")
    input_mode: Literal["ids", "rows"] = Field(
        "ids", description="ids: the model reads the raw string id sequences and looks them up itself; rows: it "
                           "reads int64 lookup rows made outside the model (ADPM.add_lookup_rows, e.g. in tf.data), "
                           "which XLA can compile and which Keras' fit under a tf.distribute strategy accepts")

    @field_validator("lookups")
    @classmethod
    def _lookups(cls, lookups):
        bad = [name for name in lookups if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name)]
        if bad:
            raise ValueError(f"component2.lookups: names {bad} must be identifiers (letters, digits, _); they name "
                             "model inputs")
        return lookups

    @field_validator("actions")
    @classmethod
    def _actions(cls, actions):
        bad = [a for a in actions if a not in LISTING_ACTIONS]
        if bad:
            raise ValueError(f"component2.actions: {bad} are not listing actions {list(LISTING_ACTIONS)}")
        if len(set(actions)) != len(actions):
            raise ValueError(f"component2.actions: duplicates in {actions}")
        return actions


class LearnedComponentConfig(_Section):
    """Component 3, per-(entity, action) embeddings learned on the fly, average-pooled (paper 000 §2.5)."""

    enabled: bool = True
    pairs: list[tuple[str, str]] = Field(default_factory=lambda: list(DEFAULT_PAIRS),
                                         description="Table 1: (all e, all a)")
    dims: dict[str, int] = Field(default_factory=lambda: {"listing": 32, "shop": 16, "taxonomy": 8, "query": 16},
                                 description="d_ae per entity (Table 1: listing 32, shop 16, taxonomy 8)")
    share_tables: bool = Field(False, description="false: one table per (entity, action), each sequence in its own "
                                                  "vector space (paper 000 §2.5); true: one table per entity")

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, pairs):
        return _check_pairs(pairs, "component3.pairs")

    @model_validator(mode="after")
    def _dims(self):
        missing = sorted({e for e, _ in self.pairs} - set(self.dims))
        if missing:
            raise ValueError(f"component3.dims has no size for {missing}")
        bad = {e: d for e, d in self.dims.items() if d < 1}
        if bad:
            raise ValueError(f"component3.dims must be >= 1, got {bad}")
        return self


class AdpmConfig(_Section):
    """The three ADPM components; any of them can be switched off (at least one must stay on)."""

    component1: EncoderComponentConfig = Field(default_factory=EncoderComponentConfig)
    component2: PretrainedComponentConfig = Field(default_factory=PretrainedComponentConfig)
    component3: LearnedComponentConfig = Field(default_factory=LearnedComponentConfig)
    sequence_dropout: float = Field(
        0.0, ge=0, lt=1, description="in training, each entry of every sequence the components read is dropped "
                                     "(becomes padding) with this probability, so the learned id embeddings cannot "
                                     "lean on any one past action; off at inference")
    last_k: int | None = Field(None, ge=1, description="keep only the first (newest) k entries of every sequence "
                               "the components read instead of the whole one-hour window (paper 000 §5.1: "
                               "ADPM k = 5 and k = 20); None = the whole sequence")

    def with_lookups(self, lookups: dict[str, str]) -> "AdpmConfig":
        """A copy whose component 2 pools ``lookups`` (name -> path), e.g. the export_lookups outputs."""
        return self.model_copy(update={"component2": self.component2.model_copy(update={"lookups": dict(lookups)})})

    def entities(self) -> list[str]:
        """Entities whose vocabulary sizes an ADPM of this config needs."""
        used = []
        if self.component1.enabled:
            used += [e for e, _ in self.component1.pairs]
        if self.component3.enabled:
            used += [e for e, _ in self.component3.pairs]
        return sorted(set(used))


def adpm_inputs(cfg: AdpmConfig) -> dict[str, tuple[str, tuple]]:
    """``{feature: (dtype, shape without batch)}`` of the features an ADPM of ``cfg`` reads."""
    specs: dict[str, tuple[str, tuple]] = {}
    if cfg.component1.enabled:
        specs[TARGET_IDX] = ("int64", ())
        for entity, action in cfg.component1.pairs:
            specs[seq_idx_key(entity, action)] = ("int64", (None,))
    if cfg.component2.enabled:
        for action in cfg.component2.actions:
            if cfg.component2.input_mode == "ids":
                specs[seq_ids_key(action)] = ("string", (None,))
            else:
                for name in cfg.component2.lookups:
                    specs[seq_rows_key(action, name)] = ("int64", (None,))
    if cfg.component3.enabled:
        for entity, action in cfg.component3.pairs:
            specs[seq_idx_key(entity, action)] = ("int64", (None,))
    return specs
