"""The ablation suites of paper 000 §5.1 (Tables 2, 3, 4) as changes of a task's :class:`TaskConfig`.

A :class:`Variant` is a name, a task (``ctr`` or ``pccvr``) and ``changes``: a nested dict laid over
the task's base config (``config.models.<task>``, i.e. the preset and ``--set``) and validated
again, exactly like a ``--set`` override, so a variant is a function of the base config, is
printed and stored as what it changes, and cannot produce an invalid config. The baseline of a
task is the same ranker without the ADPM (``personalized=False``), like ``<task>_baseline`` in the
daily DAG.

Suites:

- ``table2`` (CTR, Table 2): the full 3-component ADPM with global max pooling (``adpm_max``, the
  config's default) and with average pooling (``adpm_avg``); each single component and each pair;
  the ADPM on the last k = 5 / 20 actions of every sequence instead of the one-hour window
  (``adpm_k5``, ``adpm_k20``); the full ADPM with component 1 as in the paper, without our
  target-match readout (``adpm_paper``); BST on the last 20 listing views (``bst_k20``: one transformer block,
  8 heads, the target listing at position 0, learned positions, output = the encoded target
  position, BST's dropout 0.2; Chen et al. 2019, paper 000 ref. [11]) and eBay's average of the
  learned embeddings of the last 5 viewed listings (``ebay_k5``, paper 000 ref. [3]), each in place
  of the ADPM in the same ranker.
- ``table3`` (PCCVR, Table 3): the pooling and component variants of table2.
- ``table4`` (CTR and PCCVR, Table 4): component 2 with each non-empty subset of the pretrained
  representations {skipgram, visual, air} (the other components on) and without component 2
  (``none``); names prefixed ``ctr_`` / ``pccvr_``.

This module imports no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from components.dicts import deep_merge
from components.models.config import TaskConfig

TASKS = ("ctr", "pccvr")
BASELINE = "baseline"
PRETRAINED = ("skipgram", "visual", "air")
"""The representations Table 4 combines in component 2."""
BST_HEADS = 8           # BST (Chen et al. 2019, Table 2 of that paper): 8 heads, 1 block, sequence length 20
BST_DROPOUT = 0.2       # ... and dropout 0.2
BST_SEQUENCE = 20
EBAY_SEQUENCE = 5       # paper 000 §5.1: "the last k = 5 user actions" (eBay, ref. [3])
PAPER_ENCODER = {"target_match": False, "embedding_init_stddev": None}
"""Component-1 settings that undo our addition to the paper's encoder: the target-match readout and the
embedding initialization it needs to learn (components/models/adpm/config.py)."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of an ablation table: ``changes`` laid over ``config.models.<task>``."""

    name: str
    task: str
    description: str
    changes: dict[str, Any] = dataclasses.field(default_factory=dict)
    personalized: bool = True

    def task_config(self, base: TaskConfig) -> TaskConfig:
        """The variant's config: ``base`` with :attr:`changes` merged in, validated."""
        return TaskConfig.model_validate(deep_merge(base.model_dump(), self.changes))

    @property
    def model(self) -> str:
        """The ``components.models.step.MODELS`` key it trains as (task and personalization)."""
        return self.task if self.personalized else f"{self.task}_baseline"


def _off(*components: int) -> dict:
    return {f"component{c}": {"enabled": False} for c in components}


def _components(on: tuple[int, ...]) -> dict:
    """ADPM changes that keep exactly the components ``on`` (1, 2, 3) switched on."""
    return {"adpm": {f"component{c}": {"enabled": c in on} for c in (1, 2, 3)}}


_COMPONENT_NAMES = {1: "adSformer encoder", 2: "pretrained", 3: "learned on the fly"}
_COMPONENT_SETS = [(1,), (2,), (3,), (1, 2), (1, 3), (2, 3)]


def _component_variants(task: str) -> list[Variant]:
    """adpm_max, adpm_avg and every single component and pair (Tables 2 and 3)."""
    out = [Variant("adpm_max", task, "ADPM, 3 components, global max pooling in component 1",
                   deep_merge(_components((1, 2, 3)), {"adpm": {"component1": {"pooling": "max"}}})),
           Variant("adpm_avg", task, "ADPM, 3 components, average pooling in component 1",
                   deep_merge(_components((1, 2, 3)), {"adpm": {"component1": {"pooling": "avg"}}}))]
    for on in _COMPONENT_SETS:
        name = "_".join(f"c{c}" for c in on)
        out.append(Variant(name, task, "ADPM with only " + " + ".join(f"component {c} ({_COMPONENT_NAMES[c]})"
                                                                         for c in on), _components(on)))
    return out


def bst_changes(k: int = BST_SEQUENCE, heads: int = BST_HEADS, dropout: float = BST_DROPOUT) -> dict:
    """BST in place of the ADPM: one adSformer block on the last ``k`` listing views with the target at
    position 0, learned positions, and the encoded target position as output (no pooling)."""
    return {"adpm": {"last_k": k, **_off(2, 3),
                     "component1": {"enabled": True, "pairs": [["listing", "view"]], "blocks": 1, "heads": heads,
                                    "pooling": "target", "max_len": k, "dropout": dropout, **PAPER_ENCODER}}}


def ebay_changes(k: int = EBAY_SEQUENCE) -> dict:
    """eBay's encoding in place of the ADPM: the plain average of the learned embeddings of the last ``k``
    viewed listings (no attention)."""
    return {"adpm": {"last_k": k, **_off(1, 2),
                     "component3": {"enabled": True, "pairs": [["listing", "view"]]}}}


def _table2() -> list[Variant]:
    return [Variant(BASELINE, "ctr", "non-personalized CTR ranker (no ADPM)", personalized=False),
            *_component_variants("ctr"),
            Variant("adpm_paper", "ctr", "ADPM, 3 components, component 1 as in the paper (no target-match "
                                         "readout, Keras' embedding initialization)",
                    {"adpm": {"component1": PAPER_ENCODER}}),
            Variant("adpm_k5", "ctr", "ADPM on the last 5 actions of each sequence", {"adpm": {"last_k": 5}}),
            Variant("adpm_k20", "ctr", "ADPM on the last 20 actions of each sequence", {"adpm": {"last_k": 20}}),
            Variant("bst_k20", "ctr", f"BST (1 block, {BST_HEADS} heads, target output) on the last "
                                      f"{BST_SEQUENCE} listing views", bst_changes()),
            Variant("ebay_k5", "ctr", f"eBay: average learned embedding of the last {EBAY_SEQUENCE} viewed "
                                      "listings", ebay_changes())]


def _table3() -> list[Variant]:
    return [Variant(BASELINE, "pccvr", "non-personalized PCCVR ranker (no ADPM)", personalized=False),
            *_component_variants("pccvr")]


def _table4() -> list[Variant]:
    out = []
    subsets = [s for n in (1, 2, 3) for s in itertools.combinations(PRETRAINED, n)]
    for task in TASKS:
        out.append(Variant(f"{task}_{BASELINE}", task, f"non-personalized {task.upper()} ranker (no ADPM)",
                           personalized=False))
        for subset in subsets:
            names = sorted(subset)  # the paper's names: air_skipgram, air_visual, skipgram_visual, ...
            out.append(Variant(f"{task}_{'_'.join(names)}", task, "ADPM, component 2 pooling " + " + ".join(names),
                               {"pretrained": names, "adpm": {"component2": {"enabled": True}}}))
        out.append(Variant(f"{task}_none", task, "ADPM without component 2 (no pretrained representations)",
                           _components((1, 3))))
    return out


SUITES: dict[str, list[Variant]] = {"table2": _table2(), "table3": _table3(), "table4": _table4()}
"""Suite name -> its variants, baselines first, in the order of the paper's tables."""


def suite_variants(suite: str, names: list[str] | None = None) -> list[Variant]:
    """The variants of ``suite`` (all, or those named, in the suite's order), always with the baselines
    of their tasks (the lifts need them)."""
    if suite not in SUITES:
        raise ValueError(f"unknown ablation suite {suite!r}; suites: {', '.join(SUITES)}")
    variants = SUITES[suite]
    if not names:
        return list(variants)
    known = {v.name for v in variants}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"suite {suite} has no variant(s) {unknown}; its variants: "
                         f"{', '.join(v.name for v in variants)}")
    wanted = set(names)
    tasks = {v.task for v in variants if v.name in wanted}
    return [v for v in variants if v.name in wanted or (not v.personalized and v.task in tasks)]
