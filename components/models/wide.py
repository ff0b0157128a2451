"""The non-personalized ("wide") input of the rankers: target listing, query and context (paper 000 §4.2).

Embeddings of the target listing, shop and taxonomy indices, the query index and its tokens
(masked average), platform, hour of day, day of week and (when no debias tower takes it)
the ad position, concatenated with the z-scored log price, the logged-in flag and the
standardized engineered point-in-time features (``schemas.features``; DESIGN §5).
"""
from __future__ import annotations

import keras
from keras import ops

from components.models.adpm.pooling import masked_mean_lookup
from components.models.config import WideConfig


@keras.saving.register_keras_serializable(package="adsformer")
class MaskedMeanEmbedding(keras.layers.Layer):
    """Mean of the embeddings of a padded index sequence (padding = -1); zeros for an empty row.

        out[b] = sum_l m[b,l] E[x[b,l]] / max(sum_l m[b,l], 1),   m = (x >= 0)

    (:func:`components.models.adpm.pooling.masked_mean_lookup`: outside XLA only valid ids are looked up.)
    """

    def __init__(self, vocabulary_size: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size, self.dim = vocabulary_size, dim
        self.embedding = keras.layers.Embedding(vocabulary_size + 1, dim, name="embedding")

    def build(self, input_shape):
        self.embedding.build((None,))
        super().build(input_shape)

    def call(self, ids):
        valid = ops.greater_equal(ids, 0)
        return masked_mean_lookup(self.embedding, ops.maximum(ids + 1, 0), valid)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.dim,)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size, "dim": self.dim}


WIDE_INPUTS = {  # feature -> (dtype, shape without batch)
    "listing_id_idx": ("int64", ()), "shop_id_idx": ("int64", ()), "taxonomy_id_idx": ("int64", ()),
    "query_idx": ("int64", ()), "query_tokens_idx": ("int64", (None,)), "platform_idx": ("int64", ()),
    "hour_of_day": ("int64", ()), "day_of_week": ("int64", ()), "position": ("int64", ()),
    "price_log_z": ("float32", ()), "logged_in": ("int64", ()),
}


def wide_features(inputs: dict, vocab: dict[str, int], cfg: WideConfig, with_position: bool,
                  engineered: tuple[str, ...] = (), engineered_buckets: int = 0):
    """The wide vector from Keras inputs (``inputs`` holds :data:`WIDE_INPUTS` and the ``engineered``
    features: standardized ``eng_<name>``, appended as they are, and quantile buckets ``engb_<name>``
    in ``[0, engineered_buckets)``, embedded)."""
    parts = []
    for column, entity in (("listing_id_idx", "listing"), ("shop_id_idx", "shop"),
                           ("taxonomy_id_idx", "taxonomy"), ("query_idx", "query"), ("platform_idx", "platform")):
        parts.append(keras.layers.Embedding(vocab[entity], getattr(cfg, entity), name=f"wide_{entity}")(inputs[column]))
    parts.append(MaskedMeanEmbedding(vocab["query_token"], cfg.query_token, name="wide_query_tokens")(
        inputs["query_tokens_idx"]))
    parts.append(keras.layers.Embedding(24, cfg.hour_of_day, name="wide_hour")(inputs["hour_of_day"]))
    if cfg.day_of_week:
        parts.append(keras.layers.Embedding(7, cfg.day_of_week, name="wide_day")(inputs["day_of_week"]))
    if with_position:
        parts.append(position_embedding(inputs["position"], cfg, "wide_position"))
    parts.append(ops.expand_dims(ops.cast(inputs["price_log_z"], "float32"), -1))
    parts.append(ops.expand_dims(ops.cast(inputs["logged_in"], "float32"), -1))
    values = engineered_values(inputs, engineered)
    if values is not None:
        parts.append(values)
    for name in engineered:
        if name.startswith("engb_"):
            clipped = ops.clip(inputs[name], 0, engineered_buckets)
            parts.append(keras.layers.Embedding(engineered_buckets + 1, cfg.engineered_bucket, name=f"wide_{name}")(clipped))
    return keras.layers.Concatenate(name="wide")(parts)


ID_DROPOUT = {"listing": "listing_id_idx", "shop": "shop_id_idx", "query": "query_idx"}
"""The high-cardinality target ids :class:`IdDropout` hides in training (``WideConfig.id_dropout``)."""


@keras.saving.register_keras_serializable(package="adsformer")
class IdDropout(keras.layers.Layer):
    """In training, each row's id index becomes a random hashed OOV index with probability ``rate``:

        out = K + u,  u ~ Uniform{0 .. n-1}   with probability rate,   else x        (identity at inference)

    where ``K`` is the vocabulary's size and ``n`` its hashed OOV buckets (rows ``K .. K+n-1``).
    A model that reads the index (the wide embedding, the ADPM's target) then learns on rows whose
    id it cannot tell, as it meets ids outside the vocabulary at serving (new and tail listings),
    instead of memorizing the ids of the training days; the OOV rows learn what an unknown id is
    worth. The bucket is drawn at random, not hashed from the id: with about as many buckets as
    tail ids, a hashed bucket would still name the id. Not in the paper: an id-level form of
    embedding dropout (Gal & Ghahramani 2016).
    """

    def __init__(self, rate: float, first_oov: int, num_oov: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1 or num_oov < 1:
            raise ValueError(f"IdDropout needs 0 <= rate < 1 and at least one OOV bucket, got {rate}, {num_oov}")
        self.rate, self.first_oov, self.num_oov, self.seed = float(rate), int(first_oov), int(num_oov), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, ids, training=None):
        if not training or not self.rate:
            return ids
        ids = ops.cast(ids, "int64")
        drop = keras.random.uniform(ops.shape(ids), seed=self.seed_generator) < self.rate
        bucket = keras.random.randint(ops.shape(ids), 0, self.num_oov, seed=self.seed_generator, dtype="int64")
        return ops.where(drop, self.first_oov + bucket, ids)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "first_oov": self.first_oov, "num_oov": self.num_oov,
                "seed": self.seed}


def engineered_values(inputs: dict, engineered: tuple[str, ...]):
    """The standardized engineered features (``eng_<name>``) as one ``[B, n]`` float vector, or None."""
    names = [name for name in engineered if name.startswith("eng_")]
    if not names:
        return None
    return ops.stack([ops.cast(inputs[name], "float32") for name in names], axis=-1)


def position_embedding(position, cfg: WideConfig, name: str):
    clipped = ops.clip(position, 0, cfg.max_position - 1)
    return keras.layers.Embedding(cfg.max_position, cfg.position, name=name)(clipped)
