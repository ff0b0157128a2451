"""ADPM component 1 for one sequence: the adSformer encoder (paper 000 §2.3, Figure 2; eqs. 1-8)."""
from __future__ import annotations

import keras
from keras import ops

from components.models.adpm.adsformer_block import AdsformerBlock
from components.models.adpm.pooling import MaskedGlobalPooling


@keras.saving.register_keras_serializable(package="adsformer")
class AdsformerEncoder(keras.layers.Layer):
    """Target listing + its padded listing sequence -> a ``d1`` vector (``d1 + heads`` with ``target_match``).

    Inputs: ``target`` int64 ``[B]`` (vocabulary index of the target listing, ``0..K+n-1`` with ``n`` OOV buckets) and
    ``sequence`` int64 ``[B, M]`` (vocabulary indices, newest first, padding -1; only the first
    ``max_len`` positions are kept)::

        t        = [target, s_1, ..., s_M]                      (target at position 0, length M+1)
        m        = [True, s_1 >= 0, ..., s_M >= 0]              (the target is never masked)
        x_0      = E[t + 1] + P[0..M]                           (EP = E + P; E row 0 = padding,
                                                                 P learned, paper ref. [15])
        x_n      = AdsformerBlock(x_{n-1}, m),  n = 1..N        (eqs. 1-6)
        o_1      = GlobalMaxPooling_m(x_N)   or   GlobalAveragePooling_m(x_N)   (eq. 8, §5.1 ablation)
                   or   x_N[:, 0]                                (pooling="target": BST)
        o_1      = Concat(o_1, max_{j: m_j, s_j < known_ids} q_0 . k_j / sqrt(d) per head)
                                                                (target_match, not in the paper:
                                                                 AdsformerBlock.target_match of block 1)

    ``target_match`` adds ``heads`` outputs (0 when no entry qualifies or the target is OOV,
    index >= ``known_ids``) and starts block 1 with ``W_K = W_Q``; ``embedding_init_stddev``
    replaces Keras' uniform(-0.05, 0.05) embedding initializer with a normal one.

    Pooling runs over the valid positions only, so padding never wins the max; the target is
    always valid, so no row is empty. ``pooling="target"`` is the Behavior Sequence Transformer
    (BST, Chen et al. 2019, paper 000 ref. [11]) that paper 000 §5.1 / Table 2 compares against: no
    pooling, the output is the encoded target item's vector, which has attended to the sequence.
    Embedding ``E`` has ``vocabulary_size + 1`` rows: the vocabulary (``K + n`` rows including the
    ``n`` hashed OOV rows) shifted by one, row 0 for padding.

    ``length_buckets`` (widths ``w_1 < ... < w_k``, target position included) only changes how the
    output is computed, not its value: outside XLA each row goes to the group of the smallest
    ``w_i`` that holds its last valid position (the rest to the full width), and each group is
    encoded cut to its width. Positions past a row's last valid one are padding, which attention
    never attends to and pooling ignores, so cutting them changes no valid output. The one-hour
    sequences are short with a long tail (local preset: median 1 listing view, ~10 on average,
    >10% at the cap of 50): self-attention costs ~L^2 per row, and the split made the encoder's
    forward + backward pass ~4x faster there at batch 1024 (the widths (8), (4, 16), (2, 8, 24) and
    (2, 4, 8, 16, 32) were within ~30% of each other). Under XLA (static shapes) the whole batch is
    encoded at full width; ``()`` = never split.
    """

    def __init__(self, vocabulary_size: int, embedding_dim: int = 32, max_len: int = 50, heads: int = 3,
                 blocks: int = 1, ff_dim: int = 64, dropout: float = 0.0, pooling: str = "max",
                 leaky_relu_alpha: float = 0.2, layer_norm_epsilon: float = 1e-6,
                 length_buckets: tuple[int, ...] | list[int] = (), target_match: bool = False,
                 embedding_init_stddev: float | None = None, known_ids: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if vocabulary_size < 1 or embedding_dim < 1 or max_len < 1 or blocks < 1:
            raise ValueError(f"AdsformerEncoder needs vocabulary_size, embedding_dim, max_len and blocks >= 1, got "
                             f"{vocabulary_size}, {embedding_dim}, {max_len}, {blocks}")
        self.vocabulary_size, self.embedding_dim, self.max_len = vocabulary_size, embedding_dim, max_len
        self.heads, self.blocks, self.ff_dim, self.dropout = heads, blocks, ff_dim, dropout
        self.pooling, self.leaky_relu_alpha, self.layer_norm_epsilon = pooling, leaky_relu_alpha, layer_norm_epsilon
        self.target_match = bool(target_match)
        self.embedding_init_stddev = None if embedding_init_stddev is None else float(embedding_init_stddev)
        self.known_ids = None if known_ids is None else int(known_ids)
        if pooling not in ("max", "avg", "target"):
            raise ValueError(f"AdsformerEncoder pooling must be 'max', 'avg' or 'target', got {pooling!r}")
        self.pool = None if pooling == "target" else MaskedGlobalPooling(pooling, name="pool")
        self.length_buckets = tuple(sorted({int(w) for w in length_buckets}))
        if any(w < 1 for w in self.length_buckets):
            raise ValueError(f"AdsformerEncoder length_buckets must be >= 1, got {list(length_buckets)}")

    def build(self, target_shape, sequence_shape):
        init = ("uniform" if self.embedding_init_stddev is None
                else keras.initializers.RandomNormal(stddev=self.embedding_init_stddev))
        self.embedding = keras.layers.Embedding(self.vocabulary_size + 1, self.embedding_dim, name="listing_embedding",
                                                embeddings_initializer=init)
        self.embedding.build((None, None))
        self.position_embedding = self.add_weight(shape=(self.max_len + 1, self.embedding_dim),
                                                  initializer="uniform", name="position_embedding")
        x_shape = (target_shape[0], None, self.embedding_dim)
        self.block_layers = []
        for n in range(self.blocks):
            block = AdsformerBlock(self.heads, self.ff_dim, self.dropout, self.leaky_relu_alpha,
                                   self.layer_norm_epsilon, name=f"block_{n}")
            block.build(x_shape)
            self.block_layers.append(block)
        if self.target_match:
            # W_K = W_Q at initialization: every head's score q_0 . k_j = x_0 W W^T x_j^T then starts
            # largest for x_j = x_0, so the readout carries the target's identity from the first step;
            # with independent random kernels the local CTR day (354 steps) taught it nothing (component 1
            # alone: ROC-AUC 0.7475 with the untied readout, 0.7498 without any, seed 7).
            attention = self.block_layers[0].attention
            attention.key_dense.kernel.assign(attention.query_dense.kernel)
        self.built = True

    def call(self, target, sequence, training=None):
        from components.models.xla import in_xla_context

        sequence = ops.cast(sequence[:, : self.max_len], "int64")
        target = ops.cast(target, "int64")
        tokens = ops.concatenate([target[:, None], sequence], axis=1)          # [B, L+1]
        valid = ops.concatenate([ops.ones_like(target[:, None], dtype="bool"),
                                 ops.greater_equal(sequence, 0)], axis=1)
        if not self.length_buckets or in_xla_context():
            return self._encode(tokens, valid, training)
        return self._encode_by_length(tokens, valid, training)

    def _encode(self, tokens, valid, training):
        rows = ops.where(valid, tokens + 1, ops.zeros_like(tokens))
        positions = ops.take(self.position_embedding, ops.arange(ops.shape(tokens)[1]), axis=0)
        x = self.embedding(rows) + ops.cast(positions, self.compute_dtype)[None]
        match = None
        for n, block in enumerate(self.block_layers):
            if n == 0 and self.target_match:
                # unknown listings share the hashed OOV rows: different ids in one bucket would match
                known = valid if self.known_ids is None else valid & (tokens < self.known_ids)
                x, match = block(x, valid, training=training, match_mask=known)
            else:
                x = block(x, valid, training=training)
        out = x[:, 0] if self.pool is None else self.pool(x, valid)  # pool None: BST, the encoded target
        return out if match is None else ops.concatenate([out, ops.cast(match, out.dtype)], axis=-1)

    def _encode_by_length(self, tokens, valid, training):
        """:meth:`_encode` of each group of rows cut to its bucket width, stitched back in row order."""
        import tensorflow as tf

        width = tf.shape(tokens)[1]
        last = tf.reduce_max(tf.where(valid, tf.range(1, width + 1)[None, :], 0), axis=1)  # width a row needs
        group = tf.searchsorted(tf.constant(self.length_buckets, tf.int32), last, side="left")
        groups = len(self.length_buckets) + 1                                  # the last: full width
        index = tf.dynamic_partition(tf.range(tf.shape(tokens)[0]), group, groups)
        parts = []
        for i in range(groups):
            cut = self.length_buckets[i] if i < len(self.length_buckets) else width
            parts.append(self._encode(tf.gather(tokens, index[i])[:, :cut], tf.gather(valid, index[i])[:, :cut],
                                      training))
        return tf.dynamic_stitch(index, parts)

    @property
    def output_dim(self) -> int:
        return self.embedding_dim + (self.heads if self.target_match else 0)

    def compute_output_shape(self, target_shape, sequence_shape):
        return (target_shape[0], self.output_dim)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "embedding_dim": self.embedding_dim, "max_len": self.max_len, "heads": self.heads,
                "blocks": self.blocks, "ff_dim": self.ff_dim, "dropout": self.dropout, "pooling": self.pooling,
                "leaky_relu_alpha": self.leaky_relu_alpha, "layer_norm_epsilon": self.layer_norm_epsilon,
                "length_buckets": list(self.length_buckets), "target_match": self.target_match,
                "embedding_init_stddev": self.embedding_init_stddev, "known_ids": self.known_ids}
