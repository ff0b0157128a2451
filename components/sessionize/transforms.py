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

from components.beam_arrow import BackgroundFn, WriteBucketFn, from_ipc, sort_table, split_by_bucket, to_ipc
from components.lake import fs, parquet
from components.sessionize import features
from components.sessionize.examples import FeatureContext, build_examples
from components.sessionize.kernel import EVENT_COLUMNS, SessionSpec
from schemas.raw import EVENTS_SCHEMA, IMPRESSIONS_SCHEMA, user_key
from schemas.validation import stable_bucket

KEY = "_user_key"
OUTPUT_ORDER = ("ts", "impression_id")  # row order of each written examples file


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


EVENTS, IMPRESSIONS = "events", "impressions"
READ_COLUMNS = {EVENTS: EVENT_COLUMNS, IMPRESSIONS: None}  # None: every column (all are carried)


class ReadBucketsFn(BackgroundFn):
    """Reads one ``(kind, source)`` file, keeps the rows and columns a day needs, splits them by
    user-key bucket: ``(bucket, (kind, Arrow IPC bytes))``.

    The key is hashed, not carried, so no key column crosses the shuffle; events and
    impressions travel in one PCollection, so one ``GroupByKey`` brings a bucket together
    without the extra decode/encode pass a ``CoGroupByKey`` (a Flatten of tagged inputs)
    costs; tables cross it as IPC bytes, not pickles (``components.beam_arrow``). The next
    file is read in the background while Beam encodes this one's outputs.
    """

    def __init__(self, num_buckets: int, threads: int = 1):
        super().__init__(threads)
        self.num_buckets = num_buckets

    def work(self, element) -> list[tuple[int, tuple[str, bytes]]]:
        kind, source = element
        columns = READ_COLUMNS[kind]
        table = read_source(source, list(columns) if columns else None)
        if not table.num_rows:
            return []
        keys = user_key(table).dictionary_encode()  # hash each distinct key once
        buckets = stable_bucket(keys.dictionary, self.num_buckets)[keys.indices.to_numpy()]
        return [(bucket, (kind, to_ipc(part))) for bucket, part in split_by_bucket(table, buckets, self.num_buckets)]


class SessionizeBucketFn(WriteBucketFn):
    """All events and impressions of a bucket of user keys -> that bucket's examples, written
    as ``part-<bucket>.parquet`` in ``out_dir`` (rows in ``OUTPUT_ORDER``); emits ``(path, rows)``."""

    def __init__(self, spec: SessionSpec, negative_rate: float, out_dir: str, prior_days: int = 0,
                 prior_strength: float = 20.0):
        super().__init__(out_dir, OUTPUT_ORDER)
        self.spec, self.negative_rate = spec, negative_rate
        self.prior_days, self.prior_strength = prior_days, prior_strength
        self.examples = Metrics.counter("sessionize", "examples")
        self.events = Metrics.counter("sessionize", "events_in_buckets")

    def process(self, element, catalog=(), prior_counts=None, window=beam.DoFn.WindowParam,
                timestamp=beam.DoFn.TimestampParam):
        bucket, tagged = element
        groups = {EVENTS: [], IMPRESSIONS: []}
        for kind, data in tagged:
            groups[kind].append(from_ipc(data))
        impressions = _concat(groups[IMPRESSIONS], IMPRESSIONS_SCHEMA)
        if impressions.num_rows == 0:
            return
        # Examples keep the impressions' row order: in the output order, the writer need not re-sort them.
        impressions = sort_table(impressions, OUTPUT_ORDER)
        events = _concat(groups[EVENTS], pa.schema([EVENTS_SCHEMA.field(c) for c in EVENT_COLUMNS]))
        self.events.inc(events.num_rows)
        context = FeatureContext(
            catalog=pa.concat_tables([from_ipc(c) for c in catalog]) if catalog else None,
            prior_counts={kind: from_ipc(data) for kind, data in (prior_counts or {}).items()},
            prior_days=self.prior_days, prior_strength=self.prior_strength)
        examples = build_examples(events, impressions, self.spec, self.negative_rate, context)
        self.examples.inc(examples.num_rows)
        yield from self.submit((bucket, examples), window, timestamp)


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


CATALOG_COLUMNS = ["listing_id", "title", "tags", "taxonomy_path"]
PRIOR_COLUMNS = ["query", "listing_id", "shop_id", "clicked"]  # what features.prior_counts reads


def read_catalog_text(path: str) -> bytes:
    """The catalog text the relevance features read, of one validated listings file, as IPC bytes."""
    return to_ipc(parquet.read_file(path, CATALOG_COLUMNS))


class PriorCountsFn(beam.DoFn):
    """One validated impressions file of an earlier day -> ``(kind, IPC bytes)`` partial counts per prior key."""

    def process(self, path: str):
        table = parquet.read_file(path, PRIOR_COLUMNS)
        for kind, counts in features.prior_counts(table).items():
            yield kind, to_ipc(counts)


def _merge_counts(element) -> tuple[str, bytes]:
    kind, parts = element
    return kind, to_ipc(features.merge_prior_counts([from_ipc(p) for p in parts], kind))


class PriorCounts(beam.PTransform):
    """Impressions and clicks per listing, shop and (query, listing) over earlier days' files:
    ``(kind, IPC bytes)``, one element per kind (a side input: one row per key seen)."""

    def __init__(self, paths: list[str]):
        super().__init__()
        self.paths = paths

    def expand(self, pbegin):
        return (pbegin
                | "Files" >> beam.Create(self.paths)
                | "Count" >> beam.ParDo(PriorCountsFn())
                | "GroupByKind" >> beam.GroupByKey()
                | "Merge" >> beam.Map(_merge_counts))


class SessionizeDay(beam.PTransform):
    """Examples of one day, written as ``part-<bucket>.parquet`` files in ``out_dir``.

    The engineered features read two side inputs besides the bucket: the day's catalog text
    (relevance) and the earlier days' impression counts (priors). Both hold one row per
    listing (or key) rather than per event, which is what a side input can afford.
    """

    def __init__(self, events: list[Source], impressions: list[Source], out_dir: str, spec: SessionSpec,
                 negative_rate: float, num_buckets: int, catalog: list[str] = (), prior_impressions: list[str] = (),
                 prior_days: int = 0, prior_strength: float = 20.0):
        super().__init__()
        self.event_sources, self.impression_sources = events, impressions
        self.out_dir, self.spec = out_dir, spec
        self.negative_rate, self.num_buckets = negative_rate, num_buckets
        self.catalog, self.prior_impressions = list(catalog), list(prior_impressions)
        self.prior_days, self.prior_strength = prior_days, prior_strength

    def expand(self, pbegin):
        sources = [(EVENTS, s) for s in self.event_sources] + [(IMPRESSIONS, s) for s in self.impression_sources]
        catalog = pbegin | "Catalog" >> beam.Create(self.catalog) | "CatalogText" >> beam.Map(read_catalog_text)
        priors = pbegin | "Priors" >> PriorCounts(self.prior_impressions)
        return (
            pbegin
            | "Files" >> beam.Create(sources)
            | "Spread" >> beam.Reshuffle()
            | "ReadByBucket" >> beam.ParDo(ReadBucketsFn(self.num_buckets))
            | "GroupByBucket" >> beam.GroupByKey()
            | "SessionizeAndWrite" >> beam.ParDo(
                SessionizeBucketFn(self.spec, self.negative_rate, self.out_dir, self.prior_days, self.prior_strength),
                beam.pvalue.AsList(catalog), beam.pvalue.AsDict(priors))
        )
