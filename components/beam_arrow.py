"""Beam building blocks for jobs whose elements are Arrow tables (DESIGN §12).

Tables are split with ``take`` (never ``slice``, whose pickles carry the parent's buffers)
before they cross a shuffle.
"""
from __future__ import annotations

import collections
import concurrent.futures

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.utils.windowed_value import WindowedValue

from components.lake import fs, parquet
from schemas.validation import stable_bucket


def split_by_bucket(table: pa.Table, buckets: np.ndarray, num_buckets: int):
    """``(bucket, rows of table in that bucket)`` for each non-empty bucket, in bucket order (``take``, not ``slice``)."""
    order = np.argsort(buckets, kind="stable")
    bounds = np.searchsorted(buckets[order], np.arange(num_buckets + 1))
    for b in range(num_buckets):
        if bounds[b] < bounds[b + 1]:
            yield b, table.take(pa.array(order[bounds[b] : bounds[b + 1]]))


class KeyByBucket(beam.DoFn):
    """Splits a table into per-bucket tables keyed by a stable hash of ``column``."""

    def __init__(self, column: str, num_buckets: int):
        self.column, self.num_buckets = column, num_buckets

    def process(self, table: pa.Table):
        yield from split_by_bucket(table, stable_bucket(table.column(self.column), self.num_buckets), self.num_buckets)


class WriteBucketFn(beam.DoFn):
    """Writes one bucket as ``part-<bucket>.parquet`` in ``directory``: a deterministic file set.

    Sorting and writing (pyarrow, which releases the GIL) run on a background thread while
    the bundle goes on with its next elements, so they use a second core; at most
    ``in_flight`` tables wait for it. ``(path, rows)`` is emitted once the file is written,
    at the latest when the bundle finishes, and a failed write fails the bundle.
    """

    def __init__(self, directory: str, sort_by: tuple[str, ...], in_flight: int = 2):
        self.directory, self.sort_by, self.in_flight = directory, sort_by, in_flight
        self._pool = None
        self._pending = collections.deque()

    def setup(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-bucket")

    def start_bundle(self):
        self._pending = collections.deque()

    def _write(self, bucket: int, table: pa.Table) -> tuple[str, int]:
        table = table.sort_by([(c, "ascending") for c in self.sort_by])
        path = fs.join(self.directory, f"part-{bucket:05d}.parquet")
        parquet.write_table(table, path)
        return path, table.num_rows

    def process(self, element, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        bucket, tables = element
        table = pa.concat_tables(list(tables)) if not isinstance(tables, pa.Table) else tables
        if self._pool is None:  # setup() not called (e.g. a direct call in a test): write here
            yield self._write(bucket, table)
            return
        self._pending.append((self._pool.submit(self._write, bucket, table), window, timestamp))
        while len(self._pending) > self.in_flight:
            yield self._emit(*self._pending.popleft())

    def finish_bundle(self):
        while self._pending:
            yield self._emit(*self._pending.popleft())

    @staticmethod
    def _emit(future, window, timestamp) -> WindowedValue:
        return WindowedValue(future.result(), timestamp, [window])

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
