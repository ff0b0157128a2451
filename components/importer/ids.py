"""Deterministic event ids for sources that have none: a 128-bit hash of chosen columns.

pyarrow has no stable string hash and Python's ``hash`` is salted per process, so this is
FNV-1a over the UTF-8 bytes in numpy, vectorized across rows (one numpy step per byte
position, rows sorted by length so the rows still going are a prefix). Two 64-bit lanes
(bytes forward, and backward from a length-seeded basis), each finished with murmur3's
fmix64, give 32 hex characters. Not cryptographic; accidental collisions are negligible
at log sizes.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_PRIME = np.uint64(0x100000001B3)
_BASIS = np.uint64(0xCBF29CE484222325)
_BASIS2 = np.uint64(0x84222325CBF29CE4)
SEPARATOR = "\x1f"  # ASCII unit separator between column values
NULL = "\x00"  # stands for a null value inside the key
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def key_strings(columns: list[pa.Array]) -> pa.Array:
    """Join each row's values (as strings, nulls as NUL) with the unit separator."""
    parts = [pc.cast(c, pa.string()) if c.type != pa.string() else c for c in columns]
    if len(parts) == 1:
        return pc.fill_null(parts[0], NULL)
    return pc.binary_join_element_wise(*parts, SEPARATOR, null_handling="replace", null_replacement=NULL)


def hash_strings(keys: pa.Array) -> pa.Array:
    """32-hex-character hashes of the (non-null) strings ``keys``."""
    keys = pc.cast(keys, pa.large_string()).combine_chunks() if isinstance(keys, pa.ChunkedArray) \
        else pc.cast(keys, pa.large_string())
    n = len(keys)
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int64)[keys.offset: keys.offset + n + 1]
    data = np.frombuffer(keys.buffers()[2], dtype=np.uint8) if n and keys.buffers()[2] is not None \
        else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")
    starts, lengths = starts[order], lengths[order]
    ends = starts + lengths - 1
    h1 = np.full(n, _BASIS, dtype=np.uint64)
    h2 = _fmix64(lengths.astype(np.uint64) ^ _BASIS2)
    # going[j]: how many rows (a prefix, as rows are sorted by length) have a byte at position j.
    going = np.searchsorted(-lengths, -np.arange(int(lengths.max(initial=0))), side="left")
    with np.errstate(over="ignore"):
        for j, k in enumerate(going):
            h1[:k] = (h1[:k] ^ data[starts[:k] + j]) * _PRIME
            h2[:k] = (h2[:k] ^ data[ends[:k] - j]) * _PRIME
        both = np.empty((n, 2), dtype=">u8")
        both[order, 0], both[order, 1] = _fmix64(h1), _fmix64(h2)
    raw = both.view(np.uint8).reshape(n, 16)
    hexed = np.empty((n, 32), dtype=np.uint8)
    hexed[:, 0::2], hexed[:, 1::2] = _HEX[raw >> 4], _HEX[raw & 15]
    value_offsets = pa.py_buffer(np.arange(0, 32 * n + 1, 32, dtype=np.int32).tobytes())
    return pa.StringArray.from_buffers(n, value_offsets, pa.py_buffer(hexed.tobytes()))
