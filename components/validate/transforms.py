"""Beam transforms of the ``validate`` step (DESIGN §4, §12).

Rows travel as Arrow record batches, never one Python object per row: each DoFn works on
a whole batch with ``pyarrow.compute`` (DESIGN §12: ~10x faster than row-at-a-time).
Tables cross Beam boundaries only as ``take``/``filter`` results, never as slices, whose
pickles would carry the parent's buffers.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from components.beam_arrow import KeyByBucket, WriteBucketFn
from components.lake import fs
from schemas.raw import TableSpec
from schemas.validation import PROVENANCE, check_batch, split_duplicates


@dataclasses.dataclass(frozen=True)
class RowGroup:
    """One unit of reading: a row group of a Parquet file and the index of its first row."""

    path: str
    name: str  # the path relative to the lake root, as recorded in dead letters
    index: int
    first_row: int
    num_rows: int


def plan_row_groups(paths: list[str], root: str) -> list[RowGroup]:
    """Read the footers of ``paths`` and list their row groups (raises ValueError on unreadable files)."""
    groups = []
    prefix = root.rstrip("/") + "/"
    for path in paths:
        name = path[len(prefix):] if path.startswith(prefix) else path
        try:
            meta = _open(path).metadata
        except Exception as err:  # pyarrow raises several types for corrupt files
            raise ValueError(f"{path} is not a readable Parquet file ({err})") from err
        first = 0
        for i in range(meta.num_row_groups):
            n = meta.row_group(i).num_rows
            groups.append(RowGroup(path, name, i, first, n))
            first += n
    return groups


def _open(path: str) -> pq.ParquetFile:
    if fs.is_local(path):
        return pq.ParquetFile(path)
    return pq.ParquetFile(pa.BufferReader(fs.read_bytes(path)))


class CheckRowGroupFn(beam.DoFn):
    """Reads one row group in batches and splits each into valid rows and dead letters."""

    DEAD = "dead"

    def __init__(self, spec: TableSpec, day: dt.date, batch_rows: int):
        self.spec, self.day, self.batch_rows = spec, day, batch_rows
        self.good_rows = Metrics.counter("validate", f"{spec.name}_valid_rows")
        self.bad_rows = Metrics.counter("validate", f"{spec.name}_bad_rows")

    def process(self, group: RowGroup):
        first = group.first_row
        for batch in _open(group.path).iter_batches(batch_size=self.batch_rows, row_groups=[group.index]):
            good, dead = check_batch(pa.Table.from_batches([batch]), self.spec, self.day, group.name, first)
            first += batch.num_rows
            self.good_rows.inc(good.num_rows)
            self.bad_rows.inc(dead.num_rows)
            if good.num_rows:
                yield good
            if dead.num_rows:
                yield beam.pvalue.TaggedOutput(self.DEAD, dead)


class DedupeBucketFn(beam.DoFn):
    """All rows of a bucket's keys meet here: keep the first copy of each key."""

    DEAD = "dead"

    def __init__(self, spec: TableSpec):
        self.spec = spec
        self.duplicates = Metrics.counter("validate", f"{spec.name}_duplicate_rows")

    def process(self, element):
        bucket, tables = element
        unique, dead = split_duplicates(pa.concat_tables(list(tables)), self.spec)
        self.duplicates.inc(dead.num_rows)
        yield bucket, unique.drop_columns(list(PROVENANCE)).cast(self.spec.schema)
        if dead.num_rows:
            yield beam.pvalue.TaggedOutput(self.DEAD, dead)


class ValidatePartition(beam.PTransform):
    """Validate one raw partition: valid rows (deduplicated, schema-exact) and dead letters, written.

    ``groups`` are the partition's row groups (:func:`plan_row_groups`); outputs go to
    ``valid_dir`` and ``dead_dir`` as ``part-<bucket>.parquet`` files. Returns the
    PCollection of ``(path, rows)`` written.
    """

    def __init__(self, spec: TableSpec, day: dt.date, groups: list[RowGroup], valid_dir: str,
                 dead_dir: str, num_buckets: int, batch_rows: int):
        super().__init__()
        self.spec, self.day, self.groups = spec, day, groups
        self.valid_dir, self.dead_dir = valid_dir, dead_dir
        self.num_buckets, self.batch_rows = num_buckets, batch_rows

    def expand(self, pbegin):
        spec = self.spec
        checked = (
            pbegin
            | "RowGroups" >> beam.Create(self.groups)
            | "Redistribute" >> beam.Reshuffle()
            | "Check" >> beam.ParDo(CheckRowGroupFn(spec, self.day, self.batch_rows)).with_outputs(
                CheckRowGroupFn.DEAD, main="good")
        )
        deduped = (
            checked.good
            | "BucketByKey" >> beam.ParDo(KeyByBucket(spec.key, self.num_buckets))
            | "GroupBucket" >> beam.GroupByKey()
            | "Dedupe" >> beam.ParDo(DedupeBucketFn(spec)).with_outputs(DedupeBucketFn.DEAD, main="unique")
        )
        valid_written = deduped.unique | "WriteValid" >> beam.ParDo(WriteBucketFn(self.valid_dir, spec.order_by))
        dead_written = (
            (checked[CheckRowGroupFn.DEAD], deduped[DedupeBucketFn.DEAD])
            | "AllDead" >> beam.Flatten()
            | "BucketDead" >> beam.ParDo(KeyByBucket("source_file", self.num_buckets))
            | "GroupDead" >> beam.GroupByKey()
            | "WriteDead" >> beam.ParDo(WriteBucketFn(self.dead_dir, ("source_file", "row")))
        )
        return (valid_written, dead_written) | "Written" >> beam.Flatten()

