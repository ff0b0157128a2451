"""The transformer part of the adSformer block (paper 000 §2.3, Figure 2 right; eqs. 1-6)."""
from __future__ import annotations

import keras
from keras import ops


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

    def call(self, inputs, valid, training=None):
        mask = ops.cast(valid, "bool")
        attention_mask = ops.repeat(mask[:, None, :], ops.shape(mask)[1], axis=1)  # [B, query, key]
        attended = self.attention(inputs, inputs, attention_mask=attention_mask, training=training)
        x = self.attention_norm(inputs + self.attention_dropout(attended, training=training))
        ff = self.ff_out(self.ff_act(self.ff_in(x)))
        return self.ff_norm(x + self.ff_dropout(ff, training=training))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "ff_dim": self.ff_dim, "dropout": self.dropout,
                "leaky_relu_alpha": self.leaky_relu_alpha, "layer_norm_epsilon": self.layer_norm_epsilon}
