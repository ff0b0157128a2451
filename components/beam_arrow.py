"""Beam building blocks for jobs whose elements are Arrow tables (DESIGN §12).

Tables are split with ``take`` (never ``slice``, whose pickles carry the parent's buffers)
before they cross a shuffle.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa

from components.lake import fs, parquet
from schemas.validation import stable_bucket


class KeyByBucket(beam.DoFn):
    """Splits a table into per-bucket tables keyed by a stable hash of ``column``."""

    def __init__(self, column: str, num_buckets: int):
        self.column, self.num_buckets = column, num_buckets

    def process(self, table: pa.Table):
        buckets = stable_bucket(table.column(self.column), self.num_buckets)
        order = np.argsort(buckets, kind="stable")
        bounds = np.searchsorted(buckets[order], np.arange(self.num_buckets + 1))
        for b in range(self.num_buckets):
            if bounds[b] < bounds[b + 1]:
                yield b, table.take(pa.array(order[bounds[b] : bounds[b + 1]]))


class WriteBucketFn(beam.DoFn):
    """Writes one bucket as ``part-<bucket>.parquet`` in ``directory``: a deterministic file set."""

    def __init__(self, directory: str, sort_by: tuple[str, ...]):
        self.directory, self.sort_by = directory, sort_by

    def process(self, element):
        bucket, tables = element
        table = pa.concat_tables(list(tables)) if not isinstance(tables, pa.Table) else tables
        table = table.sort_by([(c, "ascending") for c in self.sort_by])
        path = fs.join(self.directory, f"part-{bucket:05d}.parquet")
        parquet.write_table(table, path)
        yield path, table.num_rows
