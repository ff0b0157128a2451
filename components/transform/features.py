"""The preprocessing function: what tensorflow-transform computes over the training window (paper 000 §2.7.1).

Every entity has one top-K vocabulary built from the training examples' targets *and* all
their sequences of that entity, shared by all ADPM components; ids outside it map to one of
the entity's ``n`` hashed OOV indices ``K + fingerprint64(id) mod n``. Raw strings the frozen
representation lookups need (the target listing, the listing sequences, the query) pass
through untouched, so serving can feed raw features.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from schemas.examples import seq_column
from schemas.features import ENGINEERED_FEATURES, MIN_RATIO, scaling

ID_COLUMNS = {"listing": "listing_id", "shop": "shop_id", "taxonomy": "taxonomy_id", "query": "query"}
LABELS = ("clicked", "purchased")
MS_PER_HOUR, MS_PER_DAY = 3_600_000, 86_400_000


def input_feature_spec(pairs) -> dict:
    """Feature spec of the examples as fed to TFT (see ``arrow_input.to_record_batch``)."""
    spec = {name: tf.io.FixedLenFeature([], tf.string)
            for name in ("impression_id", "listing_id", "shop_id", "taxonomy_id", "query", "platform")}
    spec.update({name: tf.io.FixedLenFeature([], tf.int64)
                 for name in ("ts", "position", "logged_in", "clicked", "purchased")})
    spec.update({name: tf.io.FixedLenFeature([], tf.float32) for name in ("price", "sample_rate") + ENGINEERED_FEATURES})
    spec.update({seq_column(e, a): tf.io.VarLenFeature(tf.string) for e, a in pairs})
    return spec


def engineered_name(feature: str) -> str:
    """The transformed (scaled, standardized) model input of an engineered feature."""
    return f"eng_{feature}"


def bucketized_name(feature: str) -> str:
    """The quantile-bucket index (int64) of an engineered feature."""
    return f"engb_{feature}"


def scaled(x, kind: str):
    """A feature's scaling (``schemas.features.scaling``) in TensorFlow, as the references apply it in numpy."""
    if kind == "log1p":
        return tf.math.log1p(tf.maximum(x, 0.0))
    if kind == "hours":
        return x / 3600.0
    if kind == "log":
        return tf.math.log(tf.maximum(x, MIN_RATIO))
    return x


def vocabulary_name(entity: str) -> str:
    return f"vocab_{entity}"


def make_preprocessing_fn(pairs, top_k: dict, frequency_threshold: int, num_oov_buckets: dict | int,
                          engineered: tuple[str, ...] = (), engineered_buckets: int = 0):
    """A TFT ``preprocessing_fn`` for the configured (entity, action) pairs. ``top_k`` and
    ``num_oov_buckets`` (an int: the same for all) per vocabulary of ``transform.config.VOCABULARIES``;
    each ``engineered`` feature becomes ``eng_<name>``, scaled and z-scored over the training split, and
    with ``engineered_buckets`` also ``engb_<name>``, its quantile bucket (0 .. buckets-1)."""
    pairs = tuple(tuple(p) for p in pairs)
    if isinstance(num_oov_buckets, int):
        num_oov_buckets = {entity: num_oov_buckets for entity in top_k}

    def vocabulary(entity, tensors):
        values = tf.concat([t.values if isinstance(t, tf.SparseTensor) else tf.reshape(t, [-1]) for t in tensors], 0)
        return tft.vocabulary(values, top_k=top_k[entity], frequency_threshold=frequency_threshold if frequency_threshold > 1 else None,
                              vocab_filename=vocabulary_name(entity))

    def lookup(x, vocab, entity):
        return tft.apply_vocabulary(x, vocab, num_oov_buckets=num_oov_buckets[entity])

    def preprocessing_fn(inputs):
        out = {}
        for entity, column in ID_COLUMNS.items():
            seqs = [seq_column(e, a) for e, a in pairs if e == entity]
            vocab = vocabulary(entity, [inputs[column]] + [inputs[s] for s in seqs])
            out[f"{column}_idx"] = lookup(inputs[column], vocab, entity)
            for s in seqs:
                out[f"{s}_idx"] = lookup(inputs[s], vocab, entity)
        tokens = tf.strings.split(inputs["query"]).to_sparse()
        out["query_tokens_idx"] = lookup(tokens, vocabulary("query_token", [tokens]), "query_token")
        out["platform_idx"] = tft.compute_and_apply_vocabulary(inputs["platform"], num_oov_buckets=1,
                                                              vocab_filename="vocab_platform")
        out["price_log_z"] = tft.scale_to_z_score(tf.math.log1p(tf.maximum(inputs["price"], 0.0)))
        for name in engineered:
            value = scaled(inputs[name], scaling(name))
            out[engineered_name(name)] = tft.scale_to_z_score(value)
            if engineered_buckets:
                out[bucketized_name(name)] = tft.bucketize(value, engineered_buckets, elementwise=False)
        out["hour_of_day"] = (inputs["ts"] // MS_PER_HOUR) % 24
        out["day_of_week"] = (inputs["ts"] // MS_PER_DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        for name in ("position", "logged_in", "sample_rate", "impression_id", "listing_id", "query") + LABELS:
            out[name] = tf.identity(inputs[name])
        for e, a in pairs:
            if e == "listing":
                out[seq_column(e, a)] = tf.SparseTensor(inputs[seq_column(e, a)].indices,
                                                        inputs[seq_column(e, a)].values,
                                                        inputs[seq_column(e, a)].dense_shape)
        return out

    return preprocessing_fn
