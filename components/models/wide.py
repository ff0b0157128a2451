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


ID_DROPOUT = ("listing", "shop", "query")  # the high-cardinality ids ``WideConfig.id_dropout`` drops

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
        vector = keras.layers.Embedding(vocab[entity], getattr(cfg, entity), name=f"wide_{entity}")(inputs[column])
        if cfg.id_dropout and entity in ID_DROPOUT:
            # noise_shape (batch, 1): a row's whole vector is dropped (Gal & Ghahramani 2016, embedding dropout)
            vector = keras.layers.Dropout(cfg.id_dropout, noise_shape=(None, 1), name=f"wide_{entity}_dropout")(vector)
        parts.append(vector)
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


def engineered_values(inputs: dict, engineered: tuple[str, ...]):
    """The standardized engineered features (``eng_<name>``) as one ``[B, n]`` float vector, or None."""
    names = [name for name in engineered if name.startswith("eng_")]
    if not names:
        return None
    return ops.stack([ops.cast(inputs[name], "float32") for name in names], axis=-1)


def position_embedding(position, cfg: WideConfig, name: str):
    clipped = ops.clip(position, 0, cfg.max_position - 1)
    return keras.layers.Embedding(cfg.max_position, cfg.position, name=name)(clipped)
