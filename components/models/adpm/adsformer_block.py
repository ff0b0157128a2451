"""The transformer part of the adSformer block (paper 000 §2.3, Figure 2 right; eqs. 1-6)."""
from __future__ import annotations

import math

import keras
from keras import ops

_MASKED_SCORE = -1e9
"""What a padded key's attention score becomes before the softmax (Keras' large negative number)."""


@keras.saving.register_keras_serializable(package="adsformer")
class AdsformerBlock(keras.layers.Layer):
    """Post-norm transformer block with a padding mask and a LeakyReLU feed-forward network.

    For ``x`` ``[B, L, d]`` and the valid positions ``m = valid`` ``[B, L]`` (bool)::

        A(Q, K, V)   = softmax(Q K^T / sqrt(d) + log m_keys) V                          (eq. 1)
        MHSA(x)      = Concat(head_1, ..., head_h) W^H,  head_i = A(x W_i^Q, x W_i^K, x W_i^V),
                       W_i^Q, W_i^K, W_i^V in R^{d x d}                                  (eq. 2)
        x            = LayerNorm(x + Dropout(MHSA(x)))                                   (eqs. 3-4)
        FFN(x)       = LeakyReLU(x W_1 + b_1) W_2 + b_2
        x            = LayerNorm(x + Dropout(FFN(x)))                                    (eqs. 5-6)

    A padded position is never attended to (its key gets probability 0), so valid outputs do not
    depend on what sits at padded positions; padded outputs are junk that the pooling ignores.

    Reading of the paper: eqs. (3)-(6) written literally add the residual twice
    (``g = x + Dropout(MHSA(x))`` then ``LayerNorm(x + g)``) and put the LeakyReLU before the
    FFN; the text says "residual connections, dropout and layer normalization in the usual
    sequence" with the FFN and LeakyReLU "as in [11]" (BST), whose block is the one above:
    ``F = LayerNorm(S' + Dropout(LeakyReLU(S' W1 + b1) W2 + b2))``. Each head projects to the full
    ``d`` (``key_dim = d``), as eq. (2) states, which is why 3 heads on d1 = 32 work.
    """

    def __init__(self, heads: int = 3, ff_dim: int = 64, dropout: float = 0.0, leaky_relu_alpha: float = 0.2,
                 layer_norm_epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.ff_dim, self.dropout = heads, ff_dim, dropout
        self.leaky_relu_alpha, self.layer_norm_epsilon = leaky_relu_alpha, layer_norm_epsilon

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.attention = keras.layers.MultiHeadAttention(self.heads, key_dim=d, name="attention")
        self.attention.build(input_shape, input_shape)
        q_shape = tuple(self.attention.query_dense.kernel.shape)
        o_shape = tuple(self.attention.output_dense.kernel.shape)
        if q_shape != (d, self.heads, d) or o_shape != (self.heads, d, d):  # the layout _self_attention reads
            raise RuntimeError(f"this Keras ({keras.__version__}) lays out MultiHeadAttention's kernels as query "
                               f"{q_shape} and output {o_shape}, not ({d}, {self.heads}, {d}) and ({self.heads}, {d}, "
                               f"{d}); update AdsformerBlock._self_attention")
        self.attention_dropout = keras.layers.Dropout(self.dropout, name="attention_dropout")
        self.attention_norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name="attention_norm")
        self.attention_norm.build(input_shape)
        self.ff_in = keras.layers.Dense(self.ff_dim, name="ff_in")
        self.ff_in.build(input_shape)
        self.ff_act = keras.layers.LeakyReLU(negative_slope=self.leaky_relu_alpha, name="ff_leaky_relu")
        self.ff_out = keras.layers.Dense(d, name="ff_out")
        self.ff_out.build(tuple(input_shape[:-1]) + (self.ff_dim,))
        self.ff_dropout = keras.layers.Dropout(self.dropout, name="ff_dropout")
        self.ff_norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name="ff_norm")
        self.ff_norm.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, valid, training=None, match_mask=None):
        """The block's output ``[B, L, d]``; with ``match_mask`` (a ``[B, L]`` bool mask of the
        positions that may match, e.g. ``valid``) also :meth:`target_match`'s ``[B, h]``."""
        mask = ops.cast(valid, "bool")
        attended, scores = self._self_attention(inputs, mask)
        x = self.attention_norm(inputs + self.attention_dropout(attended, training=training))
        ff = self.ff_out(self.ff_act(self.ff_in(x)))
        out = self.ff_norm(x + self.ff_dropout(ff, training=training))
        if match_mask is None:
            return out
        return out, self.target_match(scores, ops.cast(match_mask, "bool"))

    @staticmethod
    def target_match(scores, mask):
        """Per head, the largest pre-softmax score of position 0 (the target) over the positions
        ``1..L-1`` (the sequence) where ``mask`` holds, 0 where none does or ``mask[:, 0]`` (the target)
        does not: ``[B, h]``.

        Not in paper 000. The softmax of eq. (1) normalizes the target's scores, so how strongly the
        target matches its best sequence entry (e.g. the very listing viewed earlier in the session)
        does not survive into the attended values: a duplicate of the target attends to values equal
        to its own. The unnormalized score keeps that intensity, the argument of DIN (Zhou et al.
        2018, §4.3) for relaxing the softmax; ``component1.target_match`` appends it to the output.
        """
        import tensorflow as tf

        target_scores = scores[:, :, 0, 1:]                                      # [B, h, L-1]
        seq_mask = mask[:, None, 1:]
        best = tf.reduce_max(tf.where(seq_mask, target_scores, tf.cast(_MASKED_SCORE, scores.dtype)), axis=-1)
        usable = tf.reduce_any(seq_mask, axis=-1) & mask[:, None, 0]
        return tf.where(usable, best, tf.zeros_like(best))

    def _self_attention(self, x, mask):
        """MHSA(x) (eqs. 1-2) with the weights of ``self.attention`` (a Keras ``MultiHeadAttention``,
        which holds and serializes them) as plain 2-D and batched matmuls.

        Keras' layer projects with ``EinsumDense`` (``abc,cde->abde``), which TensorFlow runs as a
        matmul batched over the examples with the kernel broadcast: the kernel's gradient is then
        one ``[d, h k]`` product per example, summed afterwards. Flattening ``[B, L, d]`` to
        ``[B L, d]`` makes each projection and its gradients one matmul (forward + backward 2.7x
        faster at ``[1024, 51, 32]``, 3 heads), and ``softmax(Q K^T) V`` as ``tf.matmul`` on
        ``[B, h, L, k]`` was 1.45x faster than Keras' einsums. Same values (up to the order of
        floating-point sums); a padded key gets ``-1e9`` before the softmax, i.e. probability 0.
        Returns ``(MHSA(x) [B, L, d], masked scores [B, h, L, L])``.
        """
        import tensorflow as tf

        mha = self.attention
        q_kernel, o_kernel = mha.query_dense.kernel, mha.output_dense.kernel
        d = int(x.shape[-1])
        heads, key_dim = int(q_kernel.shape[1]), int(q_kernel.shape[2])
        length = tf.shape(x)[1]
        flat = tf.reshape(x, (-1, d))                                              # [B L, d]

        def weight(variable, shape):
            return tf.reshape(tf.cast(variable, x.dtype), shape)

        def project(dense):                                                        # -> [B, h, L, k]
            y = tf.matmul(flat, weight(dense.kernel, (d, heads * key_dim))) + weight(dense.bias, (-1,))
            return tf.transpose(tf.reshape(y, (-1, length, heads, key_dim)), (0, 2, 1, 3))

        query = project(mha.query_dense) * tf.cast(1.0 / math.sqrt(key_dim), x.dtype)
        scores = tf.matmul(query, project(mha.key_dense), transpose_b=True)        # [B, h, L, L]
        scores = tf.where(mask[:, None, None, :], scores, tf.cast(_MASKED_SCORE, scores.dtype))
        probs = tf.nn.softmax(scores, axis=-1)
        attended = tf.transpose(tf.matmul(probs, project(mha.value_dense)), (0, 2, 1, 3))  # [B, L, h, k]
        out = tf.matmul(tf.reshape(attended, (-1, heads * key_dim)), weight(o_kernel, (heads * key_dim, d)))
        return tf.reshape(out + weight(mha.output_dense.bias, (d,)), (-1, length, d)), scores

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "ff_dim": self.ff_dim, "dropout": self.dropout,
                "leaky_relu_alpha": self.leaky_relu_alpha, "layer_norm_epsilon": self.layer_norm_epsilon}
