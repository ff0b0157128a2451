"""Small shared helpers: seeded random streams, grouped sampling, vectorized id formatting."""
from __future__ import annotations

import enum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MS_PER_S = 1_000


class Stream(enum.IntEnum):
    """Independent random streams. The catalog and population depend on the seed only,
    the daily streams on (seed, day index[, chunk]) so that a date range's prefix is
    identical whatever the range's length."""

    CATALOG = 1
    POPULATION = 2
    DAY_CATALOG = 3
    DAY_SESSIONS = 4
    IMAGES = 5


def stream(seed: int, kind: Stream, *keys: int) -> np.random.Generator:
    """A generator for ``(seed, kind, *keys)``; equal inputs give equal streams."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(kind), *map(int, keys)])))


def categorical(rng: np.random.Generator, weights: np.ndarray, size: int | None = None) -> np.ndarray:
    """Draws from one categorical distribution (1-D ``weights``) or one per row (2-D ``weights``)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        cdf = np.cumsum(w / w.sum())
        return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(w) - 1)
    cdf = np.cumsum(w, axis=1)
    cdf /= cdf[:, -1:]
    u = rng.random(len(w))[:, None]
    return np.minimum((u >= cdf).sum(axis=1), w.shape[1] - 1)


class Groups:
    """Members bucketed by an integer key, for O(1) vectorized sampling within a bucket.

    With ``weights`` (one positive weight per member) a member is drawn with probability proportional to its
    weight within its bucket (one binary search per draw); without, uniformly.
    """

    def __init__(self, keys: np.ndarray, members: np.ndarray, n_keys: int, weights: np.ndarray | None = None):
        order = np.argsort(keys, kind="stable")
        self.items = np.asarray(members)[order]
        self.count = np.bincount(keys, minlength=n_keys).astype(np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]]).astype(np.int64)
        self.cum: np.ndarray | None = None
        if weights is not None:
            self.cum = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
            edges = np.concatenate([[0.0], self.cum])
            self.base = edges[self.start]
            self.total = edges[self.start + self.count] - self.base

    def sample(self, key: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A member of bucket ``key`` per row (``u`` uniform in [0, 1)), uniform or by weight; -1 where the
        bucket is empty."""
        key = np.asarray(key)
        valid = key >= 0
        k = np.where(valid, key, 0)
        cnt = self.count[k]
        ok = valid & (cnt > 0)
        if len(self.items) == 0:
            return np.full(len(key), -1, dtype=np.int64)
        last = self.start[k] + np.maximum(cnt - 1, 0)
        if self.cum is None:
            pos = self.start[k] + (u * cnt).astype(np.int64)
        else:
            pos = np.searchsorted(self.cum, self.base[k] + u * self.total[k], side="right")
        pos = np.clip(pos, self.start[k], last)
        pos = np.where(ok, pos, 0)
        return np.where(ok, self.items[pos], -1)


def sample_chain(rng: np.random.Generator, chain: list[tuple[Groups, np.ndarray]]) -> np.ndarray:
    """Samples from the first non-empty bucket of a fallback chain [(groups, keys), ...]."""
    n = len(chain[0][1])
    out = np.full(n, -1, dtype=np.int64)
    u = rng.random(n)
    for groups, keys in chain:
        missing = out < 0
        if not missing.any():
            break
        out[missing] = groups.sample(keys[missing], u[missing])
    return out


def format_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded ``numbers`` as an Arrow string array (vectorized)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.asarray(numbers, dtype=np.int64)), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(pa.scalar(prefix), digits, pa.scalar(""))


def join_words(*parts: pa.Array) -> pa.Array:
    """Element-wise join of word arrays with single spaces, skipping nulls (all-null rows give "").

    (``binary_join_element_wise(..., null_handling="skip")`` drops all-null rows in pyarrow 25,
    so nulls are replaced by "" and the extra spaces removed instead.)
    """
    joined = pc.binary_join_element_wise(*parts, " ", null_handling="replace", null_replacement="")
    return pc.utf8_trim(pc.replace_substring_regex(joined, pattern=" {2,}", replacement=" "), characters=" ")


def take_strings(values: pa.Array, index: np.ndarray) -> pa.Array:
    """``values[index]`` with nulls where ``index`` < 0."""
    index = np.asarray(index, dtype=np.int64)
    mask = index < 0
    idx = pa.array(np.where(mask, 0, index), mask=mask if mask.any() else None)
    return values.take(idx)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))
