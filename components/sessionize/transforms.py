"""Beam transforms of the ``sessionize`` step (DESIGN §5, §12).

Events and impressions are read as Arrow tables, bucketed by a stable hash of the user
key, co-grouped, and each bucket is sessionized by the vectorized kernel. All of a key's
rows meet in one bucket, so the result does not depend on how the input was split.
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from components.beam_arrow import KeyByBucket, WriteBucketFn
from components.lake import parquet
from components.sessionize.examples import build_examples
from components.sessionize.kernel import SessionSpec
from schemas.raw import EVENTS_SCHEMA, IMPRESSIONS_SCHEMA, user_key

KEY = "_user_key"


@dataclasses.dataclass(frozen=True)
class Source:
    """A validated Parquet file and the rows of it a day needs: ``lo_ms <= ts < hi_ms`` and ``actions``."""

    path: str
    lo_ms: int | None = None
    hi_ms: int | None = None
    actions: tuple[str, ...] | None = None


class ReadSourceFn(beam.DoFn):
    """Reads one file, keeps the rows a day needs, adds the user key column for bucketing."""

    def process(self, source: Source):
        table = parquet.read_file(source.path)
        keep = None
        ts = pc.cast(table.column("ts"), pa.int64())
        for cond in ((pc.greater_equal(ts, source.lo_ms) if source.lo_ms is not None else None),
                     (pc.less(ts, source.hi_ms) if source.hi_ms is not None else None),
                     (pc.is_in(table.column("action"), pa.array(source.actions)) if source.actions else None)):
            if cond is not None:
                keep = cond if keep is None else pc.and_(keep, cond)
        if keep is not None:
            table = table.filter(keep)
        if table.num_rows:
            yield table.append_column(KEY, user_key(table))


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
        events = _concat(groups["events"], EVENTS_SCHEMA)
        self.events.inc(events.num_rows)
        examples = build_examples(events, impressions, self.spec, self.negative_rate)
        self.examples.inc(examples.num_rows)
        yield bucket, examples


def _concat(tables, schema: pa.Schema) -> pa.Table:
    tables = [t.drop_columns([KEY]) for t in tables]
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
        def keyed(name, sources):
            return (pbegin
                    | f"{name}Files" >> beam.Create(sources)
                    | f"{name}Spread" >> beam.Reshuffle()
                    | f"Read{name}" >> beam.ParDo(ReadSourceFn())
                    | f"Bucket{name}" >> beam.ParDo(KeyByBucket(KEY, self.num_buckets)))

        return (
            {"events": keyed("Events", self.event_sources), "impressions": keyed("Impressions", self.impression_sources)}
            | "CoGroupByUserKey" >> beam.CoGroupByKey()
            | "Sessionize" >> beam.ParDo(SessionizeBucketFn(self.spec, self.negative_rate))
            | "Write" >> beam.ParDo(WriteBucketFn(self.out_dir, ("ts", "impression_id")))
        )
