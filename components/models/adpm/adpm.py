"""The adSformer diversifiable personalization module, ADPM (paper 000 §2, Figure 2, Table 1; eq. 12)."""
from __future__ import annotations

import keras
from keras import ops

from components.models.adpm.adsformer_encoder import AdsformerEncoder
from components.models.adpm.config import TARGET_IDX, AdpmConfig, adpm_inputs, seq_ids_key, seq_idx_key, seq_rows_key
from components.models.adpm.learned_pool import LearnedPool
from components.models.adpm.pretrained_pool import PretrainedPool


@keras.saving.register_keras_serializable(package="adsformer")
class ADPM(keras.layers.Layer):
    """Short-term dynamic user representation from the one-hour action sequences::

        o_1 = Concat_{(listing, a) in component1.pairs} AdsformerEncoder(listing_id_idx, seq_listing_a_idx)   (§2.3)
        o_2 = PretrainedPool(seq_listing_<a> for a in component2.actions; component2.lookups)           (§2.4)
        o_3 = LearnedPool(seq_<e>_<a>_idx for (e, a) in component3.pairs)                                (§2.5)
        u   = Concat(o_1, o_2, o_3)                                                                       (eq. 12)

    of size ``output_dim = d1 x |pairs_1| + sum_r d_r x |actions_2| + sum_{(e,a)} d_e`` (§2.6).
    Switched-off components are left out of ``u``; at least one must be on.

    With ``last_k = k`` every sequence input (all but ``listing_id_idx``) is first cut to its first
    ``k`` entries, ``s <- s[:, :k]``: sequences are newest first, so the components see the last ``k``
    actions instead of the one-hour window (paper 000 §5.1, Table 2: ADPM k = 5, k = 20). The cut
    is inside the layer, so the input pipeline and the serving signature do not change.

    Constructor: ``config`` (an :class:`AdpmConfig` or its dict) and ``vocabulary_sizes``
    (entity -> K + n including the n OOV rows, e.g. ``{"listing": 11000, "shop": 1600, ...}``) and
    ``num_oov_buckets`` (``{entity: n}``, or an int for all: the last rows of each vocabulary that
    are hashed OOV buckets; component 1's target-match readout treats them all as unknown and
    does not let unknown listings match each other, as different ids share a bucket).
    All three components index the same per-entity vocabularies (paper 000 A.2). Input: a dict
    with (at least) the features of :attr:`input_specs` (see :mod:`.config`); it is dense,
    sequences padded with -1 (indices) or ``""`` (raw listing ids).

    Component 2 holds frozen lookup SavedModels (string tables). With ``component2.input_mode = "ids"``
    the model reads raw strings: XLA cannot compile it (``jit_compile`` must stay off) and Keras'
    ``fit`` under a ``tf.distribute`` strategy rejects string inputs; ``component2.input_mode = "rows"``
    moves the string lookup out of the model (:meth:`add_lookup_rows`, in ``tf.data``) for both.
    """

    def __init__(self, config: AdpmConfig | dict, vocabulary_sizes: dict[str, int],
                 num_oov_buckets: int | dict[str, int] = 1, **kwargs):
        super().__init__(**kwargs)
        cfg = config if isinstance(config, AdpmConfig) else AdpmConfig.model_validate(config)
        self.cfg = cfg
        self.vocabulary_sizes = {str(k): int(v) for k, v in vocabulary_sizes.items()}
        if isinstance(num_oov_buckets, dict):
            self.num_oov_buckets = {str(k): int(v) for k, v in num_oov_buckets.items()}
        else:
            self.num_oov_buckets = {k: int(num_oov_buckets) for k in self.vocabulary_sizes}
        if not (cfg.component1.enabled or cfg.component2.enabled or cfg.component3.enabled):
            raise ValueError("ADPM: every component is switched off; enable at least one of component1 (adSformer "
                             "encoder), component2 (pretrained) or component3 (learned on the fly), or build the "
                             "non-personalized baseline without the ADPM")
        missing = [e for e in cfg.entities() if e not in self.vocabulary_sizes]
        if missing:
            raise ValueError(f"ADPM: vocabulary_sizes has no size for {missing} "
                             f"(it has {sorted(self.vocabulary_sizes)})")
        unsized = sorted({e for e, _ in cfg.component1.pairs} - set(self.num_oov_buckets)) if cfg.component1.enabled \
            else []
        if unsized:
            raise ValueError(f"ADPM: num_oov_buckets has no count for {unsized} "
                             f"(it has {sorted(self.num_oov_buckets)})")
        c1, c2, c3 = cfg.component1, cfg.component2, cfg.component3
        if c2.enabled and not c2.lookups:
            raise ValueError("ADPM: component2 is on but component2.lookups is empty; fill it with the lookup "
                             "SavedModels to pool (name -> path, the export_lookups outputs, e.g. "
                             "cfg.with_lookups(paths)) or set component2.enabled to false")
        self.encoders = []
        if c1.enabled:
            for entity, action in c1.pairs:
                self.encoders.append(AdsformerEncoder(
                    self.vocabulary_sizes[entity], embedding_dim=c1.embedding_dim, max_len=c1.max_len,
                    heads=c1.heads, blocks=c1.blocks, ff_dim=c1.ff_dim, dropout=c1.dropout, pooling=c1.pooling,
                    leaky_relu_alpha=c1.leaky_relu_alpha, layer_norm_epsilon=c1.layer_norm_epsilon,
                    length_buckets=c1.length_buckets, target_match=c1.target_match,
                    embedding_init_stddev=c1.embedding_init_stddev,
                    known_ids=self.vocabulary_sizes[entity] - self.num_oov_buckets[entity],
                    name=f"encoder_{entity}_{action}"))
        self.pretrained = (PretrainedPool(c2.lookups, c2.actions, c2.input_mode, name="pretrained")
                           if c2.enabled else None)
        self.learned = (LearnedPool(c3.pairs, self.vocabulary_sizes, c3.dims, c3.share_tables, name="learned")
                        if c3.enabled else None)
        self.dropout_seed = keras.random.SeedGenerator(name="sequence_dropout_seed") if cfg.sequence_dropout else None

    @property
    def component_dims(self) -> dict[str, int]:
        """Output size of each enabled component."""
        dims = {}
        if self.encoders:
            dims["component1"] = sum(encoder.output_dim for encoder in self.encoders)
        if self.pretrained is not None:
            dims["component2"] = self.pretrained.output_dim
        if self.learned is not None:
            dims["component3"] = self.learned.output_dim
        return dims

    @property
    def output_dim(self) -> int:
        return sum(self.component_dims.values())

    @property
    def input_specs(self) -> dict[str, tuple[str, tuple]]:
        """``{feature: (dtype, shape without batch)}`` this layer reads (for ``keras.Input``)."""
        return adpm_inputs(self.cfg)

    def add_lookup_rows(self, features: dict, drop_ids: bool = False) -> dict:
        """``features`` plus the int64 lookup rows component 2 reads when ``component2.input_mode == "rows"``
        (see :meth:`PretrainedPool.add_lookup_rows`); ``features`` unchanged otherwise. Use it outside
        the model, e.g. ``dataset.map(adpm.add_lookup_rows)`` and in the serving signature.
        ``drop_ids`` removes the string sequences it read (``fit`` under a strategy needs a batch
        without string features)."""
        if self.pretrained is None or self.pretrained.input_mode != "rows":
            return dict(features)
        out = self.pretrained.add_lookup_rows(features)
        if drop_ids:
            for action in self.pretrained.actions:
                out.pop(seq_ids_key(action), None)
        return out

    def _pretrained_keys(self) -> list[str]:
        if self.pretrained.input_mode == "ids":
            return [seq_ids_key(a) for a in self.pretrained.actions]
        return [seq_rows_key(a, name) for name in self.pretrained.lookups for a in self.pretrained.actions]

    def build(self, input_shape):
        missing = sorted(set(self.input_specs) - set(input_shape))
        if missing:
            raise ValueError(f"ADPM: the input dict lacks {missing}")
        target_shape = tuple(input_shape[TARGET_IDX]) if self.encoders else None
        for (entity, action), encoder in zip(self.cfg.component1.pairs, self.encoders):
            encoder.build(target_shape, tuple(input_shape[seq_idx_key(entity, action)]))
        if self.pretrained is not None:
            self.pretrained.build(input_shape)
        if self.learned is not None:
            self.learned.build(input_shape)
        self.built = True

    def _sequence_dtypes(self) -> dict[str, str]:
        """``{feature: dtype}`` of the sequence inputs (all but the target ``listing_id_idx``)."""
        return {key: dtype for key, (dtype, shape) in self.input_specs.items() if shape}

    def _last_k(self, inputs: dict) -> dict:
        """``inputs`` with every sequence cut to its first ``last_k`` entries (the target untouched)."""
        k = self.cfg.last_k
        if k is None:
            return inputs
        sequences = self._sequence_dtypes()
        return {key: value[:, :k] if key in sequences else value for key, value in inputs.items()}

    def _drop_entries(self, inputs: dict, training) -> dict:
        """In training, ``inputs`` with each sequence entry turned into padding (-1, or ``""`` for raw ids)
        with probability ``sequence_dropout``; unchanged at inference."""
        import tensorflow as tf

        p = self.cfg.sequence_dropout
        if not p or not training:
            return inputs
        out = dict(inputs)
        for key, dtype in self._sequence_dtypes().items():
            value = inputs[key]
            keep = keras.random.uniform(tf.shape(value), seed=self.dropout_seed) >= p
            out[key] = tf.where(keep, value, tf.constant("" if dtype == "string" else -1, value.dtype))
        return out

    def call(self, inputs, training=None):
        inputs = self._drop_entries(self._last_k(inputs), training)
        parts = []
        for (entity, action), encoder in zip(self.cfg.component1.pairs, self.encoders):
            parts.append(encoder(inputs[TARGET_IDX], inputs[seq_idx_key(entity, action)], training=training))
        if self.pretrained is not None:
            parts.append(self.pretrained({k: inputs[k] for k in self._pretrained_keys()}))
        if self.learned is not None:
            parts.append(self.learned({seq_idx_key(e, a): inputs[seq_idx_key(e, a)] for e, a in self.learned.pairs}))
        parts = [ops.cast(p, self.compute_dtype) for p in parts]
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        batch = next(iter(input_shape.values()))[0] if isinstance(input_shape, dict) and input_shape else None
        return (batch, self.output_dim)

    def get_config(self):
        return {**super().get_config(), "config": self.cfg.model_dump(mode="json"),
                "vocabulary_sizes": dict(self.vocabulary_sizes), "num_oov_buckets": dict(self.num_oov_buckets)}
