"""Beam transforms of the ``sessionize`` step (DESIGN §5, §12).

Events and impressions are read as Arrow tables (only the columns and row groups a day
needs), split by a stable hash of the user key, co-grouped, and each bucket is sessionized
by the vectorized kernel. All of a key's rows meet in one bucket, so the result does not
depend on how the input was split.
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from components.beam_arrow import WriteBucketFn, split_by_bucket
from components.lake import fs
from components.sessionize.examples import build_examples
from components.sessionize.kernel import EVENT_COLUMNS, SessionSpec
from schemas.raw import EVENTS_SCHEMA, IMPRESSIONS_SCHEMA, user_key
from schemas.validation import stable_bucket

KEY = "_user_key"


@dataclasses.dataclass(frozen=True)
class Source:
    """A validated Parquet file and the rows of it a day needs: ``lo_ms <= ts < hi_ms`` and ``actions``."""

    path: str
    lo_ms: int | None = None
    hi_ms: int | None = None
    actions: tuple[str, ...] | None = None


def _row_groups(file: pq.ParquetFile, source: Source) -> list[int]:
    """Row groups of a file whose ``ts`` statistics may hold rows with ``lo_ms <= ts < hi_ms``."""
    meta = file.metadata
    groups = list(range(meta.num_row_groups))
    schema = file.schema_arrow
    if (source.lo_ms is None and source.hi_ms is None) or "ts" not in schema.names \
            or schema.field("ts").type != pa.timestamp("ms", tz="UTC"):
        return groups
    column = [meta.schema.column(i).path for i in range(meta.num_columns)].index("ts")
    keep = []
    for g in groups:
        stats = meta.row_group(g).column(column).statistics
        if stats is None or not stats.has_min_max or stats.physical_type != "INT64" or \
                ((source.lo_ms is None or stats.max_raw >= source.lo_ms) and
                 (source.hi_ms is None or stats.min_raw < source.hi_ms)):
            keep.append(g)
    return keep


def read_source(source: Source, columns: list[str] | None = None) -> pa.Table:
    """The rows of ``source`` a day needs (``columns`` only): row groups outside its time range are not read."""
    handle = source.path if fs.is_local(source.path) else pa.BufferReader(fs.read_bytes(source.path))
    file = pq.ParquetFile(handle)
    table = file.read_row_groups(_row_groups(file, source), columns=columns)
    keep = None
    ts = pc.cast(table.column("ts"), pa.int64())
    for cond in ((pc.greater_equal(ts, source.lo_ms) if source.lo_ms is not None else None),
                 (pc.less(ts, source.hi_ms) if source.hi_ms is not None else None),
                 (pc.is_in(table.column("action"), pa.array(source.actions)) if source.actions else None)):
        if cond is not None:
            keep = cond if keep is None else pc.and_(keep, cond)
    return table.filter(keep) if keep is not None else table


class ReadSourceFn(beam.DoFn):
    """Reads one file, keeps the rows a day needs, adds the user key column for bucketing."""

    def process(self, source: Source):
        table = read_source(source)
        if table.num_rows:
            yield table.append_column(KEY, user_key(table))


class ReadBucketsFn(beam.DoFn):
    """Reads one file (``columns`` only), keeps the rows a day needs, splits them by user-key bucket.

    The key is hashed, not carried: no key column crosses the shuffle.
    """

    def __init__(self, columns: tuple[str, ...] | None, num_buckets: int):
        self.columns, self.num_buckets = columns, num_buckets

    def process(self, source: Source):
        table = read_source(source, list(self.columns) if self.columns else None)
        if table.num_rows:
            yield from split_by_bucket(table, stable_bucket(user_key(table), self.num_buckets), self.num_buckets)


class SessionizeBucketFn(beam.DoFn):
    """All events and impressions of a bucket of user keys -> that bucket's examples."""

    def __init__(self, spec: SessionSpec, negative_rate: float):
        self.spec, self.negative_rate = spec, negative_rate
        self.examples = Metrics.counter("sessionize", "examples")
        self.events = Metrics.counter("sessionize", "events_in_buckets")

    def process(self, element):
        bucket, groups = element
        impressions = _concat(groups["impressions"], IMPRESSIONS_SCHEMA)
        if impressions.num_rows == 0:
            return
        events = _concat(groups["events"], pa.schema([EVENTS_SCHEMA.field(c) for c in EVENT_COLUMNS]))
        self.events.inc(events.num_rows)
        examples = build_examples(events, impressions, self.spec, self.negative_rate)
        self.examples.inc(examples.num_rows)
        yield bucket, examples


def _concat(tables, schema: pa.Schema) -> pa.Table:
    tables = list(tables)
    return pa.concat_tables(tables) if tables else schema.empty_table()


class SessionizeDay(beam.PTransform):
    """Examples of one day, written as ``part-<bucket>.parquet`` files in ``out_dir``."""

    def __init__(self, events: list[Source], impressions: list[Source], out_dir: str, spec: SessionSpec,
                 negative_rate: float, num_buckets: int):
        super().__init__()
        self.event_sources, self.impression_sources = events, impressions
        self.out_dir, self.spec = out_dir, spec
        self.negative_rate, self.num_buckets = negative_rate, num_buckets

    def expand(self, pbegin):
        def keyed(name, sources, columns):
            return (pbegin
                    | f"{name}Files" >> beam.Create(sources)
                    | f"{name}Spread" >> beam.Reshuffle()
                    | f"Read{name}" >> beam.ParDo(ReadBucketsFn(columns, self.num_buckets)))

        return (
            {"events": keyed("Events", self.event_sources, EVENT_COLUMNS),
             "impressions": keyed("Impressions", self.impression_sources, None)}
            | "CoGroupByUserKey" >> beam.CoGroupByKey()
            | "Sessionize" >> beam.ParDo(SessionizeBucketFn(self.spec, self.negative_rate))
            | "Write" >> beam.ParDo(WriteBucketFn(self.out_dir, ("ts", "impression_id")))
        )
