"""DCN-v2 cross layer (Wang et al. 2021, "DCN V2"; paper 000 §4.2, Tables 5 and 9: the CTR and
PCCVR models stack cross layers on the wide input and the ADPM output).

    x_{l+1} = x_0 ⊙ (W x_l + b) + x_l

with an optional low-rank ``W = U V`` (``rank``), which DCN-v2 recommends for wide inputs.
Written here rather than taken from tensorflow-recommenders because TFRS targets Keras 2
(``tf_keras``) while this project runs Keras 3.
"""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="adsformer")
class Cross(keras.layers.Layer):
    """One cross layer: ``call((x0, x))`` returns ``x0 * (W x + b) + x``."""

    def __init__(self, rank: int | None = None, kernel_initializer="glorot_uniform", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.rank = rank
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        dim = int(input_shape[0][-1])
        if self.rank is None or self.rank >= dim:
            self.dense = keras.layers.Dense(dim, kernel_initializer=self.kernel_initializer,
                                            kernel_regularizer=self.kernel_regularizer, name="w")
        else:
            self.dense = keras.Sequential([
                keras.layers.Dense(self.rank, use_bias=False, kernel_initializer=self.kernel_initializer,
                                   kernel_regularizer=self.kernel_regularizer, name="v"),
                keras.layers.Dense(dim, kernel_initializer=self.kernel_initializer,
                                   kernel_regularizer=self.kernel_regularizer, name="u"),
            ], name="w")
        self.dense.build(input_shape[1])
        super().build(input_shape)

    def call(self, inputs):
        x0, x = inputs
        return x0 * self.dense(x) + x

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(), "rank": self.rank,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer)}
