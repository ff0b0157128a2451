"""Beam transforms around tensorflow-transform: read and sample examples, write sharded TFRecords.

Reading assigns each example a split (by the day's role in the run window, or a random
validation fraction of training days) and applies the DESIGN §5 sampling: training rows
are kept with probability ``sample_rate`` (all clicks, a fraction of non-clicks),
evaluation rows with ``eval_sample_rate`` (a representative random sample). Keep/drop and
the validation fraction use stable hashes of the impression id and the seed, so a rerun
keeps the same rows. Output shards are keyed by a hash of the impression id and sorted by
it, so the files do not depend on the runner's element order.
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from components.lake import fs, parquet
from components.transform.arrow_input import input_columns, to_record_batch
from schemas.validation import stable_bucket

SPLITS = ("train", "validation", "test")
_HASH_RANGE = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class ExampleFile:
    """One examples file and its day's role: ``train`` (maybe with a held-out fraction) or ``test``/``validation``."""

    path: str
    role: str
    validation_fraction: float = 0.0


def uniform(ids: pa.Array, salt: str) -> np.ndarray:
    """A stable pseudo-random number in [0, 1) per id (same id and salt -> same number)."""
    salted = pc.binary_join_element_wise(ids, pa.scalar(salt), "|")
    return stable_bucket(salted, _HASH_RANGE) / _HASH_RANGE


class ReadExamplesFn(beam.DoFn):
    """An examples file -> sampled record batches, tagged with their split."""

    def __init__(self, pairs, seed: int, eval_sample_rate: float, batch_rows: int):
        self.pairs, self.seed = tuple(tuple(p) for p in pairs), seed
        self.eval_sample_rate, self.batch_rows = eval_sample_rate, batch_rows
        self.read = Metrics.counter("transform", "examples_read")

    def process(self, source: ExampleFile):
        table = parquet.read_file(source.path, columns=input_columns(self.pairs))
        self.read.inc(table.num_rows)
        ids = table.column("impression_id").combine_chunks()
        if source.role == "train":
            held_out = uniform(ids, f"validation|{self.seed}") < source.validation_fraction
            keep = uniform(ids, f"sample|{self.seed}") < table.column("sample_rate").to_numpy()
            parts = {"train": ~held_out & keep, "validation": held_out}
        else:
            parts = {source.role: np.ones(table.num_rows, dtype=bool)}
        for split, mask in parts.items():
            if split != "train" and self.eval_sample_rate < 1:
                mask = mask & (uniform(ids, f"eval|{self.seed}") < self.eval_sample_rate)
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


class KeyByShardFn(beam.DoFn):
    """Transformed record batches -> (shard, table) by a hash of the impression id; counts the rows, the
    positives of each task (``<split>_clicks``: CTR's; ``<split>_purchases``: clicked rows with a purchase
    after the click, PCCVR's; the trainers skip a task with too few, models.min_positives) and the OOV
    targets."""

    def __init__(self, split: str, num_shards: int, listing_oov_index: int):
        self.split, self.num_shards, self.oov = split, num_shards, listing_oov_index
        self.rows = Metrics.counter("transform", f"{split}_rows")
        self.clicks = Metrics.counter("transform", f"{split}_clicks")
        self.purchases = Metrics.counter("transform", f"{split}_purchases")
        self.listing_oov = Metrics.counter("transform", f"{split}_listing_oov")

    def process(self, element):
        batch = element[0] if isinstance(element, tuple) else element
        table = pa.Table.from_batches([batch])
        ids = pc.list_flatten(table.column("impression_id"))
        self.rows.inc(table.num_rows)
        clicked = pc.list_flatten(table.column("clicked")).to_numpy(zero_copy_only=False) != 0
        purchased = pc.list_flatten(table.column("purchased")).to_numpy(zero_copy_only=False) != 0
        self.clicks.inc(int(clicked.sum()))
        self.purchases.inc(int((clicked & purchased).sum()))  # PCCVR's positives: a purchase after the click
        listing = pc.list_flatten(table.column("listing_id_idx")).to_numpy(zero_copy_only=False)
        self.listing_oov.inc(int((listing >= self.oov).sum()))
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
