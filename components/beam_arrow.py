"""Beam building blocks for jobs whose elements are Arrow tables (DESIGN §12).

Tables are split with ``take`` (never ``slice``, whose pickles carry the parent's buffers)
before they cross a shuffle. Large tables can cross it as Arrow IPC bytes
(:func:`to_ipc`/:func:`from_ipc`): runners decode and re-encode shuffled elements, and for
bytes that is a copy where a pickled table is rebuilt column by column (~8x the cost).
"""
from __future__ import annotations

import collections
import concurrent.futures

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.utils.windowed_value import WindowedValue

from components.lake import fs, parquet
from schemas.validation import stable_bucket


def to_ipc(table: pa.Table) -> bytes:
    """``table`` as one Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    """The table of :func:`to_ipc` (zero-copy: its buffers point into ``data``)."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def split_by_bucket(table: pa.Table, buckets: np.ndarray, num_buckets: int):
    """``(bucket, rows of table in that bucket)`` for each non-empty bucket, in bucket order (``take``, not ``slice``)."""
    order = np.argsort(buckets, kind="stable")
    bounds = np.searchsorted(buckets[order], np.arange(num_buckets + 1))
    for b in range(num_buckets):
        if bounds[b] < bounds[b + 1]:
            yield b, table.take(pa.array(order[bounds[b] : bounds[b + 1]]))


def sort_table(table: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """``table.sort_by(columns)``; a table already in that order is only combined into single
    chunks (what ``take`` returns), not copied row by row, so the written bytes are the same."""
    indices = pc.sort_indices(table, sort_keys=[(c, "ascending") for c in columns])
    if len(indices) and bool(pc.all(pc.equal(indices, pa.array(np.arange(len(indices), dtype=np.uint64)))).as_py()):
        return table.combine_chunks()
    return table.take(indices)


class KeyByBucket(beam.DoFn):
    """Splits a table into per-bucket tables keyed by a stable hash of ``column``."""

    def __init__(self, column: str, num_buckets: int):
        self.column, self.num_buckets = column, num_buckets

    def process(self, table: pa.Table):
        yield from split_by_bucket(table, stable_bucket(table.column(self.column), self.num_buckets), self.num_buckets)


class BackgroundFn(beam.DoFn):
    """A DoFn whose :meth:`work` runs on ``threads`` background threads (DESIGN §12).

    pyarrow and numpy release the GIL in their kernels, so while the bundle's thread goes on
    with Beam's coding and the next elements, the work of up to ``threads`` elements runs on
    the other cores. Outputs are emitted in input order, with their input's window, as soon
    as the bundle has to wait for them and at the latest when it finishes; a failure fails
    the bundle. Without ``setup()`` (a direct call), work runs inline.
    """

    def __init__(self, threads: int = 1):
        self.threads = threads
        self._pool = None
        self._pending = collections.deque()

    def work(self, element) -> list:
        """The outputs of ``element``; runs on a background thread, so it must not touch Beam state."""
        raise NotImplementedError

    def setup(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.threads,
                                                           thread_name_prefix=type(self).__name__)

    def start_bundle(self):
        self._pending = collections.deque()

    def process(self, element, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        yield from self.submit(element, window, timestamp)

    def submit(self, element, window, timestamp):
        """Queue ``element``'s work; yields the outputs of earlier elements it had to wait for."""
        if self._pool is None:
            yield from self.work(element)
            return
        self._pending.append((self._pool.submit(self.work, element), window, timestamp))
        while len(self._pending) > self.threads:
            yield from self._emit(*self._pending.popleft())

    def finish_bundle(self):
        while self._pending:
            yield from self._emit(*self._pending.popleft())

    @staticmethod
    def _emit(future, window, timestamp):
        for value in future.result():
            yield WindowedValue(value, timestamp, [window])

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class WriteBucketFn(BackgroundFn):
    """Writes one bucket as ``part-<bucket>.parquet`` in ``directory``: a deterministic file set.

    Sorting and writing run in the background (:class:`BackgroundFn`), ``threads`` buckets at a
    time; ``(path, rows)`` is emitted once the file is written. A DoFn that computes a
    bucket's table can subclass this and :meth:`submit` ``(bucket, table)`` itself, so the
    table never becomes a PCollection element (Beam samples element sizes by pickling them).
    """

    def __init__(self, directory: str, sort_by: tuple[str, ...], threads: int = 2):
        super().__init__(threads)
        self.directory, self.sort_by = directory, sort_by

    def work(self, element) -> list[tuple[str, int]]:
        bucket, table = element
        table = sort_table(table, self.sort_by)
        path = fs.join(self.directory, f"part-{bucket:05d}.parquet")
        parquet.write_table(table, path)
        return [(path, table.num_rows)]

    def process(self, element, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        bucket, tables = element
        # A grouped iterable is read here, on the bundle's thread.
        table = pa.concat_tables(list(tables)) if not isinstance(tables, pa.Table) else tables
        yield from self.submit((bucket, table), window, timestamp)
