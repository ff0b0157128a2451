"""Beam transforms of the ``corpora`` step (DESIGN §7, §12).

Events are read as Arrow tables, bucketed by a stable hash of the user key, and each
bucket is split into sessions by the vectorized kernel. Per-bucket co-click counts are
re-bucketed by listing and summed, so each pair is counted once across the whole day.
"""
from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from components.beam_arrow import KeyByBucket, WriteBucketFn
from components.corpora.sessions import PAIRS_SCHEMA, coclick_pairs, count_pairs, split_sessions
from components.corpora.text import listing_text
from components.lake import parquet
from components.sessionize.transforms import KEY, ReadSourceFn, Source

SESSIONS, PAIRS = "sessions", "pairs"


class SessionsBucketFn(beam.DoFn):
    """All session events of a bucket of user keys -> its sessions, and (tagged) its co-click counts."""

    def __init__(self, session_ms: int, max_listings: int):
        self.session_ms, self.max_listings = session_ms, max_listings
        self.sessions = Metrics.counter("corpora", "sessions")

    def process(self, element):
        bucket, tables = element
        events = pa.concat_tables([t.drop_columns([KEY]) for t in tables])
        sessions = split_sessions(events, self.session_ms)
        if sessions.num_rows == 0:
            return
        self.sessions.inc(sessions.num_rows)
        yield bucket, sessions
        pairs = coclick_pairs(sessions, self.max_listings)
        if pairs.num_rows:
            yield beam.pvalue.TaggedOutput(PAIRS, pairs)


def _sum_pairs(element):
    bucket, tables = element
    return bucket, count_pairs(pa.concat_tables(list(tables)).cast(PAIRS_SCHEMA))


class SessionsDay(beam.PTransform):
    """One day's sessions and co-click pair counts, written as ``part-<bucket>.parquet`` files."""

    def __init__(self, events: list[str], sessions_dir: str, pairs_dir: str, session_ms: int,
                 max_listings: int, num_buckets: int):
        super().__init__()
        self.events, self.sessions_dir, self.pairs_dir = events, sessions_dir, pairs_dir
        self.session_ms, self.max_listings, self.num_buckets = session_ms, max_listings, num_buckets

    def expand(self, pbegin):
        sources = [Source(p, actions=("view", "purchase")) for p in self.events]
        results = (
            pbegin
            | "Files" >> beam.Create(sources)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadSourceFn())
            | "BucketByUserKey" >> beam.ParDo(KeyByBucket(KEY, self.num_buckets))
            | "GroupByUserKey" >> beam.GroupByKey()
            | "Sessions" >> beam.ParDo(SessionsBucketFn(self.session_ms, self.max_listings)).with_outputs(
                PAIRS, main=SESSIONS)
        )
        _ = results[SESSIONS] | "WriteSessions" >> beam.ParDo(WriteBucketFn(self.sessions_dir, ("user_key", "start_ts")))
        return (
            results[PAIRS]
            | "BucketByListing" >> beam.ParDo(KeyByBucket("listing_a", self.num_buckets))
            | "GroupByListing" >> beam.GroupByKey()
            | "SumPairs" >> beam.Map(_sum_pairs)
            | "WritePairs" >> beam.ParDo(WriteBucketFn(self.pairs_dir, ("listing_a", "listing_b")))
        )


class ListingTextFn(beam.DoFn):
    """One catalog file -> its normalized listing text, keyed by the file's index."""

    def __init__(self, stop_token: str | None, number_token: str):
        self.stop_token, self.number_token = stop_token, number_token

    def process(self, element):
        index, path = element
        table = parquet.read_file(path, columns=["listing_id", "title", "tags", "taxonomy_path"])
        if table.num_rows:
            yield index, listing_text(table, self.stop_token, self.number_token)


class ListingText(beam.PTransform):
    """Normalized text of a catalog snapshot, one output file per input file."""

    def __init__(self, listings: list[str], out_dir: str, stop_token: str | None, number_token: str):
        super().__init__()
        self.listings, self.out_dir = listings, out_dir
        self.stop_token, self.number_token = stop_token, number_token

    def expand(self, pbegin):
        return (
            pbegin
            | "Files" >> beam.Create(list(enumerate(self.listings)))
            | "Spread" >> beam.Reshuffle()
            | "Normalize" >> beam.ParDo(ListingTextFn(self.stop_token, self.number_token))
            | "Write" >> beam.ParDo(WriteBucketFn(self.out_dir, ("listing_id",)))
        )
