"""Beam transforms around tensorflow-transform: read and sample examples, write sharded TFRecords.

Reading assigns each example a split (by the day's role in the run window, or a random
validation fraction of training days) and applies the DESIGN §5 sampling: training rows
are kept with probability ``sample_rate`` (all clicks, a fraction of non-clicks),
evaluation rows with ``eval_sample_rate`` (a representative random sample). Keep/drop and
the validation fraction use stable hashes of the impression id and the seed, so a rerun
keeps the same rows. Output shards are keyed by a hash of the impression id and sorted by
it, so the files do not depend on the runner's element order.

:class:`VocabularyCoverage` sizes a vocabulary by the share of occurrences it must cover
(``transform.listing_coverage``) in a Beam pass before tensorflow-transform's analysis.
"""
from __future__ import annotations

import dataclasses
import fractions
import json
import math

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from components.lake import fs, parquet
from components.transform.arrow_input import input_columns, to_record_batch
from components.transform.splits import split_masks
from schemas.validation import stable_bucket

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class ExampleFile:
    """One examples file and its day's role: ``train`` (maybe with a held-out fraction) or ``test``/``validation``."""

    path: str
    role: str
    validation_fraction: float = 0.0


class ReadExamplesFn(beam.DoFn):
    """An examples file -> sampled record batches, tagged with their split."""

    def __init__(self, pairs, seed: int, eval_sample_rate: float, batch_rows: int, splits=SPLITS):
        self.pairs, self.seed = tuple(tuple(p) for p in pairs), seed
        self.eval_sample_rate, self.batch_rows = eval_sample_rate, batch_rows
        self.splits = tuple(splits)  # the splits to emit (the same rows of each as when all are emitted)
        self.read = Metrics.counter("transform", "examples_read")

    def process(self, source: ExampleFile):
        table = parquet.read_file(source.path, columns=input_columns(self.pairs))
        self.read.inc(table.num_rows)
        parts = split_masks(table, source.role, source.validation_fraction, self.seed, self.eval_sample_rate)
        for split, mask in parts.items():
            if split not in self.splits:
                continue
            rows = np.flatnonzero(mask)
            if not len(rows):
                continue
            part = table.take(pa.array(rows))
            if split != "train":  # evaluation rows are a uniform sample: their rate is the eval rate
                part = part.set_column(part.schema.get_field_index("sample_rate"), "sample_rate",
                                       pa.array(np.full(len(rows), self.eval_sample_rate)))
            for start in range(0, len(rows), self.batch_rows):
                chunk = part.take(pa.array(np.arange(start, min(start + self.batch_rows, len(rows)))))
                yield beam.pvalue.TaggedOutput(split, to_record_batch(chunk, self.pairs))


# The target id feature of each entity whose OOV share the transform step reports.
TARGET_ID_FEATURES = {"listing": "listing_id_idx", "shop": "shop_id_idx", "taxonomy": "taxonomy_id_idx",
                      "query": "query_idx"}


def in_vocabulary_sizes(metadata, num_oov_buckets: dict) -> dict[str, int]:
    """K per entity of :data:`TARGET_ID_FEATURES` from the transformed metadata: ``tft.apply_vocabulary``
    records the id domain ``0 .. K + n - 1`` (``n`` = the entity's OOV buckets)."""
    domains = {f.name: f.int_domain.max for f in metadata.schema.feature if f.HasField("int_domain")}
    missing = sorted(set(TARGET_ID_FEATURES.values()) - set(domains))
    if missing:
        raise ValueError(f"the transformed schema has no id domain for {missing}")
    return {e: int(domains[f]) + 1 - int(num_oov_buckets[e]) for e, f in TARGET_ID_FEATURES.items()}


class KeyByShardFn(beam.DoFn):
    """Transformed record batches -> (shard, table) by a hash of the impression id; counts the rows, the
    positives of each task (``<split>_clicks``: CTR's; ``<split>_purchases``: clicked rows with a purchase
    after the click, PCCVR's; the trainers skip a task with too few, models.min_positives) and, per
    entity, the target ids out of the vocabulary (index >= K, one of the OOV buckets).

    ``in_vocabulary`` (``{entity: K}``, a side input: known once the analysis ran) may come as an
    argument of ``process``; counters ``<split>_<entity>_oov``."""

    def __init__(self, split: str, num_shards: int):
        self.split, self.num_shards = split, num_shards
        self.rows = Metrics.counter("transform", f"{split}_rows")
        self.clicks = Metrics.counter("transform", f"{split}_clicks")
        self.purchases = Metrics.counter("transform", f"{split}_purchases")
        self.oov = {e: Metrics.counter("transform", f"{split}_{e}_oov") for e in TARGET_ID_FEATURES}

    def process(self, element, in_vocabulary: dict):
        batch = element[0] if isinstance(element, tuple) else element
        table = pa.Table.from_batches([batch])
        ids = pc.list_flatten(table.column("impression_id"))
        self.rows.inc(table.num_rows)
        clicked = pc.list_flatten(table.column("clicked")).to_numpy(zero_copy_only=False) != 0
        purchased = pc.list_flatten(table.column("purchased")).to_numpy(zero_copy_only=False) != 0
        self.clicks.inc(int(clicked.sum()))
        self.purchases.inc(int((clicked & purchased).sum()))  # PCCVR's positives: a purchase after the click
        for entity, feature in TARGET_ID_FEATURES.items():
            index = pc.list_flatten(table.column(feature)).to_numpy(zero_copy_only=False)
            self.oov[entity].inc(int((index >= in_vocabulary[entity]).sum()))
        shard = stable_bucket(ids, self.num_shards)
        for s in np.unique(shard):
            yield int(s), table.take(pa.array(np.flatnonzero(shard == s)))


class WriteShardFn(beam.DoFn):
    """All rows of one shard, sorted by impression id, as a GZIP TFRecord file of tf.Examples."""

    def __init__(self, directory: str, num_shards: int, compression_level: int):
        self.directory, self.num_shards, self.compression_level = directory, num_shards, compression_level

    def process(self, element):
        import tensorflow as tf
        from tensorflow.core.example import example_pb2
        from tfx_bsl.public.tfxio import RecordBatchToExamplesEncoder

        shard, tables = element
        table = pa.concat_tables(list(tables))
        order = pc.sort_indices(pc.list_flatten(table.column("impression_id")))
        table = table.take(order).combine_chunks()
        encoder = RecordBatchToExamplesEncoder()  # every column is a flat list: no schema needed
        fs.makedirs(self.directory)
        path = fs.join(self.directory, f"part-{shard:05d}-of-{self.num_shards:05d}.tfrecord.gz")
        options = tf.io.TFRecordOptions(compression_type="GZIP", compression_level=self.compression_level)
        with tf.io.TFRecordWriter(path, options=options) as writer:
            for batch in table.to_batches():
                for record in encoder.encode(batch):
                    # The C++ encoder's feature-map order changes from process to process; a
                    # deterministic re-serialization (sorted keys, ~15 us/record) makes the bytes
                    # of a rerun identical.
                    writer.write(example_pb2.Example.FromString(record).SerializeToString(deterministic=True))
        yield path, table.num_rows


# ---------------------------------------------------------------------------------------------
# Coverage-sized vocabularies
# ---------------------------------------------------------------------------------------------

def vocabulary_values(batch: pa.RecordBatch, columns) -> pa.Array:
    """The values ``tft.vocabulary`` counts from ``columns`` of a TFXIO record batch (every column a
    list): all entries, without the empty strings and strings with a newline it filters out."""
    values = pa.concat_arrays([pc.cast(pc.list_flatten(batch.column(c)), pa.string()) for c in columns])
    keep = pc.and_(pc.greater(pc.utf8_length(values), 0), pc.invert(pc.match_substring_regex(values, r"[\n\r]")))
    return values.filter(pc.fill_null(keep, False))


class CountValuesFn(beam.DoFn):
    """A record batch -> ``(id, occurrences in the batch)`` for the values of ``columns`` (pre-aggregated
    per batch, summed per id by a ``CombinePerKey`` after it)."""

    def __init__(self, columns):
        self.columns = tuple(columns)

    def process(self, batch):
        counts = pc.value_counts(vocabulary_values(batch, self.columns))
        yield from zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())


def choose_k(histogram, coverage: float, cap: int, frequency_threshold: int = 1) -> dict:
    """The smallest K whose K most frequent ids hold at least ``coverage`` of all occurrences, at most
    ``cap`` and at most the ids seen ``frequency_threshold`` times or more (those ``tft.vocabulary``
    keeps), and what it covers.

    ``histogram``: ``(frequency f, number of ids seen f times)`` pairs. The top-K's occurrences only
    depend on the sorted frequencies, so ties among ids at the cut do not change the coverage.
    ``coverage`` is read as the decimal it is written as (0.7 -> 7/10 exactly), so a case reaching it
    exactly is not missed by float rounding. Returns ``k``, ``achieved`` (the covered share of the
    occurrences), ``coverage`` (the target), ``occurrences``, ``distinct`` (ids), ``eligible`` (ids at or
    over the threshold) and ``limited_by``: ``coverage`` (K reached it), ``cap`` (top_k stopped K
    first) or ``threshold`` (the eligible ids do not reach it)."""
    merged: dict[int, int] = {}
    for frequency, ids in histogram:
        merged[int(frequency)] = merged.get(int(frequency), 0) + int(ids)
    total = sum(f * n for f, n in merged.items())
    ranked = [(f, merged[f]) for f in sorted(merged, reverse=True) if f >= frequency_threshold]
    needed = math.ceil(fractions.Fraction(repr(float(coverage))) * total)
    k = covered = 0
    for frequency, ids in ranked:
        if covered >= needed:
            break
        take = min(ids, -(-(needed - covered) // frequency))  # ceil: the fewest ids of this frequency
        k, covered = k + take, covered + take * frequency
    limited_by = "coverage" if covered >= needed else "threshold"
    if k > cap:
        k, covered, limited_by = cap, _top_occurrences(ranked, cap), "cap"
    return {"k": max(k, 1), "achieved": round(covered / total, 6) if total else 0.0, "coverage": float(coverage),
            "occurrences": total, "distinct": sum(merged.values()), "eligible": sum(n for _, n in ranked),
            "limited_by": limited_by}


def _top_occurrences(ranked, k: int) -> int:
    """Occurrences of the ``k`` most frequent ids; ``ranked``: (frequency, ids) by falling frequency."""
    out = 0
    for frequency, ids in ranked:
        take = min(ids, k)
        out, k = out + take * frequency, k - take
        if not k:
            break
    return out


class VocabularyCoverage(beam.PTransform):
    """Record batches -> one dict (:func:`choose_k`): the vocabulary size that covers ``coverage`` of the
    occurrences of the values of ``columns``.

    A word count (ids pre-counted per batch, summed per id by key), then a histogram of the per-id
    counts (how many ids were seen f times, summed by f): the histogram has at most ~sqrt(2 x
    occurrences) entries, so it alone is gathered into one element. Nothing is held per id on one
    worker; it is the count ``tft.vocabulary`` itself runs, before it, because ``tft.vocabulary`` takes
    its ``top_k`` as a number fixed when the preprocessing graph is traced."""

    def __init__(self, columns, coverage: float, cap: int, frequency_threshold: int = 1):
        super().__init__()
        self.columns, self.coverage, self.cap = tuple(columns), coverage, cap
        self.frequency_threshold = frequency_threshold

    def expand(self, batches):
        return (batches
                | "CountPerBatch" >> beam.ParDo(CountValuesFn(self.columns))
                | "SumPerId" >> beam.CombinePerKey(sum)
                | "Frequency" >> beam.Map(lambda kv: (kv[1], 1))
                | "IdsPerFrequency" >> beam.CombinePerKey(sum)
                | "Histogram" >> beam.combiners.ToList()
                | "ChooseK" >> beam.Map(choose_k, self.coverage, self.cap, self.frequency_threshold))


class WriteJsonFn(beam.DoFn):
    """Writes its one element as JSON to ``path`` (a small result the driver reads after the job)."""

    def __init__(self, path: str):
        self.path = path

    def process(self, element):
        fs.write_text(self.path, json.dumps(element, sort_keys=True) + "\n")
        yield self.path
