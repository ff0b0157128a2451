"""Which split each example row belongs to (DESIGN §5 sampling), as a pure function of the row.

Training rows are kept with probability ``sample_rate`` (all clicks, a fraction of non-clicks);
on a training day with a validation fraction, a stable share of its rows is held out for
validation instead. Evaluation rows are a uniform
``eval_sample_rate`` sample. Every draw is a stable hash of the impression id and the seed, so the transform step and the reference models select the same rows.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.validation import stable_bucket

_HASH_RANGE = 2**31 - 1


def uniform(ids: pa.Array, salt: str) -> np.ndarray:
    """A stable pseudo-random number in [0, 1) per id (same id and salt -> same number)."""
    salted = pc.binary_join_element_wise(ids, pa.scalar(salt), "|")
    return stable_bucket(salted, _HASH_RANGE) / _HASH_RANGE


def split_masks(table: pa.Table, role: str, validation_fraction: float, seed: int,
                eval_sample_rate: float) -> dict[str, np.ndarray]:
    """``split -> boolean mask`` over the rows of an examples table of a day with ``role``
    (``train``, ``validation`` or ``test``)."""
    ids = table.column("impression_id").combine_chunks()
    if role == "train":
        held_out = uniform(ids, f"validation|{seed}") < validation_fraction
        keep = uniform(ids, f"sample|{seed}") < table.column("sample_rate").to_numpy()
        parts = {"train": ~held_out & keep, "validation": held_out}
    else:
        parts = {role: np.ones(table.num_rows, dtype=bool)}
    if eval_sample_rate < 1:
        evaluated = uniform(ids, f"eval|{seed}") < eval_sample_rate
        parts = {split: mask if split == "train" else mask & evaluated for split, mask in parts.items()}
    return parts
