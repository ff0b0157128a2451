"""tf.data input of the CTR / PCCVR trainers: the transform step's GZIP TFRecords -> batches of dense tensors.

The pipeline (DESIGN §8, §12) reads the shards of ``runs/D/transform/<split>/`` in parallel,
batches the serialized records *before* parsing them (one vectorized ``parse_example`` per
batch instead of one per record) and prefetches::

    files (sorted; shuffled when ``shuffle``) -> [this input pipeline's files]
      -> interleave(TFRecordDataset(GZIP).batch(read_chunk), deterministic)
      -> shuffle: unbatch -> shuffle(buffer, seed) -> repeat(epochs) -> batch
         else:    repeat(epochs) -> rebatch
      -> parse_example + densify (parallel) -> prefetch

Reading each file in chunks of ``read_chunk`` serialized records makes the parallel interleave
hand over one tensor per chunk instead of one per record: on 2 cores that removed about 2 us of
CPU per record (reading + batching 181k GZIP records: 170k -> 270k records per CPU-second).

Every element is one ``dict`` of dense tensors, labels included (the trainer picks them):

* scalars ``[B]``: the ``*_idx`` ids and other integer features stay ``int64`` (``logged_in`` 0/1),
  float features are ``float32``; the labels ``clicked`` and ``purchased`` are ``float32``;
* per-(entity, action) sequences ``seq_<entity>_<action>_idx``: ``int64 [B, max_seq_len]``, newest
  first as written by sessionize, truncated to the first ``max_seq_len`` and padded with ``-1``;
* ``query_tokens_idx``: ``int64 [B, max_query_tokens]`` padded with ``-1``;
* with ``include_strings``: the raw ``listing_id``, ``query``, ``impression_id`` (``string [B]``)
  and the raw listing sequences ``seq_listing_<action>`` (``string [B, max_seq_len]`` padded with
  ``""``) the frozen representation lookups need.

The ids follow the transform's vocabularies: ``0 .. V-1`` in the vocabulary, one of the
entity's hashed OOV buckets ``V .. V+n-1`` otherwise (:func:`num_oov_buckets`), so an embedding
table needs :func:`vocabulary_sizes` rows and ``-1`` is free to mark padding.

Parsing uses ``tf.io.RaggedFeature`` for the variable-length features and
``RaggedTensor.to_tensor(shape=[None, width])``, which truncates and pads in one kernel: on the
local preset's records at batch 4096, parse + densify take 4.8 us of CPU per record (parse alone
3.7), against 5.8 with ``VarLenFeature`` + ``tf.sparse.slice`` + ``tf.sparse.to_dense``.

Determinism: the interleave is deterministic by default, so with ``shuffle=False`` every pass
yields the same batches in the same order (evaluation), and with ``shuffle=True`` the same seed
gives the same order (each epoch of one dataset is reshuffled, reproducibly). tf.data's
model-based autotuning is off unless asked for (``make_dataset(autotune=True)``; see there why).
"""
from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

from schemas.examples import ENTITIES, seq_column

LABELS = ("clicked", "purchased")
QUERY_TOKENS = "query_tokens_idx"
PAD_ID = -1
PAD_STRING = b""

# The id feature of each vocabulary (components/transform/features.py) and the number of OOV
# buckets of the platform vocabulary, which the preprocessing_fn fixes at one.
VOCABULARY_FEATURES = {"listing": "listing_id_idx", "shop": "shop_id_idx", "taxonomy": "taxonomy_id_idx",
                       "query": "query_idx", "query_token": QUERY_TOKENS, "platform": "platform_idx"}
PLATFORM_OOV_BUCKETS = 1


def seq_idx_key(entity: str, action: str) -> str:
    """Name of the vocabulary-index sequence of an (entity, action) pair, e.g. ``seq_shop_view_idx``."""
    return f"{seq_column(entity, action)}_idx"


def _split_seq_key(name: str) -> tuple[str, str] | None:
    """``seq_<entity>_<action>[_idx]`` -> (entity, action); None for other names."""
    if not name.startswith("seq_"):
        return None
    body = name[len("seq_"):]
    if body.endswith("_idx"):
        body = body[:-len("_idx")]
    for entity in ENTITIES:
        if body.startswith(entity + "_") and len(body) > len(entity) + 1:
            return entity, body[len(entity) + 1:]
    return None


@dataclasses.dataclass(frozen=True)
class FeatureNames:
    """The keys of a :func:`make_dataset` element, grouped the way the model consumes them."""

    labels: tuple[str, ...]
    int_scalars: tuple[str, ...]                      # int64 [B], labels excluded
    float_scalars: tuple[str, ...]                    # float32 [B], labels excluded
    string_scalars: tuple[str, ...]                   # string [B] (only with include_strings)
    sequences: dict[tuple[str, str], str]             # (entity, action) -> int64 [B, max_seq_len]
    raw_sequences: dict[tuple[str, str], str]         # (entity, action) -> string [B, max_seq_len]
    query_tokens: str | None                          # int64 [B, max_query_tokens]

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple(self.sequences)

    def all(self, include_strings: bool = True) -> tuple[str, ...]:
        names = self.labels + self.int_scalars + self.float_scalars + tuple(self.sequences.values())
        names += (self.query_tokens,) if self.query_tokens else ()
        if include_strings:
            names += self.string_scalars + tuple(self.raw_sequences.values())
        return tuple(sorted(names))


def _tft_output(transform_dir: str):
    import tensorflow_transform as tft

    metadata = os.path.join(transform_dir, "transformed_metadata")
    if not tf.io.gfile.exists(metadata):
        raise FileNotFoundError(f"no transform output at {transform_dir} ({metadata} is missing); "
                                "run the transform step for this date first (adsformer run --steps transform)")
    return tft.TFTransformOutput(transform_dir)


def _feature_names_from_spec(spec: dict) -> FeatureNames:
    labels, ints, floats, strings, seqs, raw_seqs, tokens = [], [], [], [], {}, {}, None
    for name in sorted(spec):
        feature = spec[name]
        if name in LABELS:
            labels.append(name)
        elif isinstance(feature, tf.io.FixedLenFeature):
            {tf.int64: ints, tf.float32: floats, tf.string: strings}[feature.dtype].append(name)
        elif name == QUERY_TOKENS:
            tokens = name
        elif (pair := _split_seq_key(name)) is not None:
            (seqs if feature.dtype == tf.int64 else raw_seqs)[pair] = name
        else:
            raise ValueError(f"transformed feature {name!r} ({feature}) is neither a scalar, a sequence "
                             "seq_<entity>_<action>[_idx] nor query_tokens_idx; make_dataset does not know "
                             "how to densify it")
    missing = set(LABELS) - set(labels)
    if missing:
        raise ValueError(f"the transformed features lack the labels {sorted(missing)}")
    order = lambda d: dict(sorted(d.items(), key=lambda kv: (ENTITIES.index(kv[0][0]), kv[1])))
    return FeatureNames(tuple(labels), tuple(ints), tuple(floats), tuple(strings), order(seqs), order(raw_seqs), tokens)


def feature_names(transform_dir: str) -> FeatureNames:
    """The element keys of :func:`make_dataset` for a transform output, by kind and (entity, action)."""
    return _feature_names_from_spec(_tft_output(transform_dir).transformed_feature_spec())


def _per_entity(num_oov_buckets) -> dict[str, int] | None:
    """OOV buckets per id vocabulary from an int (the same for all, as stats.json held before the
    per-entity counts), a dict or None."""
    if num_oov_buckets is None:
        return None
    if isinstance(num_oov_buckets, dict):
        return {str(e): int(n) for e, n in num_oov_buckets.items()}
    return {e: int(num_oov_buckets) for e in VOCABULARY_FEATURES if e != "platform"}


def vocabulary_sizes(transform_dir: str, num_oov_buckets: int | dict | None = None) -> dict[str, int]:
    """Embedding-table rows per vocabulary: its size plus its OOV buckets.

    Covers ``listing``, ``shop``, ``taxonomy``, ``query``, ``query_token`` and ``platform``.
    ``num_oov_buckets`` (per entity, or an int for all) defaults to what the transform step
    recorded in ``stats.json`` (the id domain of the transformed schema if there is no
    stats.json). Raises if the schema's id domain disagrees, i.e. an id could index past the table.
    """
    from components.transform.features import vocabulary_name

    output = _tft_output(transform_dir)
    if num_oov_buckets is None and (stats := transform_stats(transform_dir)) is not None:
        num_oov_buckets = stats["num_oov_buckets"]
    per_entity = _per_entity(num_oov_buckets)
    domains = {f.name: f.int_domain.max for f in output.transformed_metadata.schema.feature if f.HasField("int_domain")}
    sizes = {}
    for entity, feature in VOCABULARY_FEATURES.items():
        vocab = output.vocabulary_size_by_name(vocabulary_name(entity))
        oov = PLATFORM_OOV_BUCKETS if entity == "platform" else (per_entity or {}).get(entity)
        if oov is None:
            if feature not in domains:
                raise ValueError(f"cannot tell the OOV buckets of {vocabulary_name(entity)} in {transform_dir}: "
                                 "no stats.json and no id domain in the schema; pass num_oov_buckets")
            oov = domains[feature] + 1 - vocab
        size = vocab + oov
        if feature in domains and domains[feature] + 1 != size:
            raise ValueError(f"{feature} ranges over 0..{domains[feature]} in {transform_dir}, but "
                             f"{vocabulary_name(entity)} has {vocab} entries + {oov} OOV bucket(s) = {size} rows")
        sizes[entity] = size
    return sizes


def num_oov_buckets(transform_dir: str) -> dict[str, int]:
    """The hashed OOV buckets after each id vocabulary's K entries (``{entity: n}``, ``platform``
    included), as the transform step recorded them; rows ``K .. K+n-1`` of the entity's tables."""
    stats = transform_stats(transform_dir)
    if stats is None:
        raise ValueError(f"{transform_dir} has no stats.json; is it a transform step output?")
    return {**_per_entity(stats["num_oov_buckets"]), "platform": PLATFORM_OOV_BUCKETS}


def transform_stats(transform_dir: str) -> dict | None:
    """The transform step's ``stats.json`` of a run (None when there is none)."""
    path = os.path.join(transform_dir, "stats.json")
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def split_rows(transform_dir: str, split: str, count: str = "rows") -> int | None:
    """Records (``count="clicks"``: clicked records) in a split as the transform step counted them
    (``stats.json``), e.g. for steps per epoch and the learning-rate schedule; None if unknown."""
    stats = transform_stats(transform_dir) or {}
    rows = stats.get("splits", {}).get(split, {}).get(count)
    return None if rows is None else int(rows)


def split_files(transform_dir: str, split: str) -> list[str]:
    """The sorted TFRecord shards of one split; a clear error if there are none."""
    directory = os.path.join(transform_dir, split)
    files = sorted(p for p in tf.io.gfile.glob(os.path.join(directory, "*"))
                   if not os.path.basename(p).startswith(("_", ".")))
    if not files:
        what = "is missing" if not tf.io.gfile.exists(directory) else "holds no TFRecord files"
        raise FileNotFoundError(f"the {split!r} split of the transform output {what}: {directory}; "
                                "run the transform step for this date first (adsformer run --steps transform)")
    return files


def _parse_spec(spec: dict, include_strings: bool) -> dict:
    out = {}
    for name, feature in spec.items():
        if feature.dtype == tf.string and not include_strings:
            continue
        if isinstance(feature, tf.io.VarLenFeature):
            feature = tf.io.RaggedFeature(feature.dtype, row_splits_dtype=tf.int64)
        out[name] = feature
    return out


def make_densify(max_seq_len: int, max_query_tokens: int):
    """A function parsed features (dense scalars, ragged sequences) -> dense tensors (see the module doc)."""

    def densify(parsed: dict) -> dict:
        out = {}
        for name, value in parsed.items():
            if isinstance(value, tf.RaggedTensor):
                width = max_query_tokens if name == QUERY_TOKENS else max_seq_len
                pad = PAD_STRING if value.dtype == tf.string else tf.constant(PAD_ID, value.dtype)
                # to_tensor with a fixed width keeps the first `width` entries (the newest) and pads the rest.
                out[name] = value.to_tensor(default_value=pad, shape=[None, width])
            elif name in LABELS or value.dtype.is_floating:
                out[name] = tf.cast(value, tf.float32)
            else:
                out[name] = value
        return out

    return densify


def make_dataset(transform_dir: str, split: str, batch_size: int, *, max_seq_len: int = 50,
                 max_query_tokens: int = 8, shuffle: bool, seed: int, epochs: int | None = 1,
                 drop_remainder: bool = False, include_strings: bool = True, shuffle_buffer: int = 50_000,
                 cycle_length: int | None = None, read_chunk: int = 256, deterministic: bool = True,
                 autotune: bool = False, input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Batches of dense features (labels included) from ``transform_dir/<split>/`` (see the module doc).

    ``shuffle`` shuffles the file order and the records (``shuffle_buffer`` records, ``seed``);
    every epoch of one dataset gets a new order, the same for the same seed. ``epochs=None``
    repeats forever. ``cycle_length`` files are read at once (default: all, at most 8).
    ``deterministic=False`` lets the interleave and the parse hand out whichever element is ready
    first (not reproducible). ``autotune`` turns on tf.data's model-based autotuning; off (the
    default), the ``AUTOTUNE`` parallelism of the interleave and the parse is the number of
    schedulable cores and the prefetch buffer still grows on demand. Measured on 2 cores
    (local preset, batch 1024): autotuning costs ~50% more CPU per record (1.75 -> 2.65
    CPU-seconds per pass over 181k records) for no throughput gain, and deleting an iterator
    waits for the autotuner's next tick, whose period doubles from 10 ms up to a minute (0.6-2.5 s
    after a pass here; the longer an iterator lived, the longer the wait).
    ``input_context`` (from ``strategy.distribute_datasets_from_function``) reads only this
    input pipeline's share of the files; ``batch_size`` is then the per-replica batch.
    """
    if min(batch_size, max_seq_len, max_query_tokens, read_chunk) < 1:
        raise ValueError(f"batch_size, max_seq_len, max_query_tokens and read_chunk must be >= 1, got "
                         f"{batch_size}, {max_seq_len}, {max_query_tokens}, {read_chunk}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1 or None (forever), got {epochs}")
    spec = _parse_spec(_tft_output(transform_dir).transformed_feature_spec(), include_strings)
    files = split_files(transform_dir, split)
    _feature_names_from_spec(spec)  # fail now, not inside the graph, on a feature we cannot densify
    densify = make_densify(max_seq_len, max_query_tokens)

    ds = tf.data.Dataset.from_tensor_slices(files)
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) < input_context.num_input_pipelines:
            raise ValueError(f"{len(files)} files in {split!r} cannot feed {input_context.num_input_pipelines} "
                             "input pipelines; raise transform.num_shards")
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    n_files = len(files) if input_context is None else -(-len(files) // max(input_context.num_input_pipelines, 1))
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    # Chunks of `read_chunk` records, not single records, cross the parallel interleave (module doc).
    ds = ds.interleave(lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP").batch(read_chunk),
                       cycle_length=max(1, min(cycle_length or 8, n_files)), block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if shuffle and shuffle_buffer > 1:
        ds = ds.unbatch().shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if epochs != 1:
            ds = ds.repeat(epochs)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    else:
        if epochs != 1:
            ds = ds.repeat(epochs)
        ds = ds.rebatch(batch_size, drop_remainder=drop_remainder)  # = unbatch().batch(), one copy
    ds = ds.map(lambda serialized: densify(tf.io.parse_example(serialized, spec)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = autotune
    if input_context is not None:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


def clicked_only(batch: dict) -> dict:
    """The clicked rows of one batch (every feature masked alike)."""
    keep = batch["clicked"] > 0
    return {k: tf.boolean_mask(v, keep) for k, v in batch.items()}


def clicked_rows(dataset: tf.data.Dataset, batch_size: int, seed: int, epochs: int | None = None) -> tf.data.Dataset:
    """The clicked rows of :func:`make_dataset` batches (the PCCVR training set, DESIGN §5), re-batched
    to ``batch_size`` and reshuffled every epoch with ``seed``.

    Clicks are a few percent of impressions: the rows are selected per batch with one boolean
    mask, then cached in memory after the first pass, so later epochs do not re-read and re-parse
    every impression (on the local preset, 10.5k clicked of 181k training rows). Pass ``dataset``
    unshuffled and for one epoch; the shuffle here covers all clicked rows.
    """
    rows = dataset.map(clicked_only, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch().cache()
    rows = rows.shuffle(1 << 20, seed=seed, reshuffle_each_iteration=True)  # buffer >= the cached rows
    rows = rows.repeat(epochs) if epochs != 1 else rows
    return rows.batch(batch_size).prefetch(tf.data.AUTOTUNE)
