"""The AIR listing tower, shared by source and candidate (paper 000 §3.2.1, Figure 6)."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="adsformer")
class AirTower(keras.layers.Layer):
    """Multimodal listing features -> unit-norm AIR vector (paper 000 §3.2.1-3.2.2).

        h_0 = x,   h_l = act(W_l h_{l-1} + b_l)  for each width in ``hidden``,
        z   = W_o h_L + b_o                      (``dim`` outputs, 256 in the paper),
        e   = z / max(||z||_2, eps)

    The *pseudo-two-tower* of the paper is this one layer applied to the source and to the
    candidate listing (:func:`pseudo_two_tower`), so both sides share every weight and a
    listing gets the same vector whichever side it is on. Since ``e`` has unit norm, the
    dot product of two outputs is their cosine similarity, the score the in-batch softmax
    (``loss.py``) is computed from.

    Args:
        hidden: widths of the hidden Dense layers (may be empty: a linear projection).
        dim: output width.
        activation: activation of the hidden layers.
        epsilon: floor of the norm (an all-zero ``z`` maps to zeros, not NaN).
    """

    def __init__(self, hidden=(512,), dim: int = 256, activation: str = "relu", epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        hidden = [int(h) for h in hidden]
        if any(h < 1 for h in hidden) or int(dim) < 1:
            raise ValueError(f"AirTower: hidden widths {hidden} and dim {dim} must be positive")
        self.hidden = hidden
        self.dim = int(dim)
        self.activation = activation
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        width = input_shape[-1]
        if width is None:
            raise ValueError("AirTower: the last input dimension (the feature width) must be known")
        self.hidden_layers = []
        for i, units in enumerate(self.hidden):
            layer = keras.layers.Dense(units, activation=self.activation, name=f"hidden_{i}")
            layer.build((None, width))
            self.hidden_layers.append(layer)
            width = units
        self.output_layer = keras.layers.Dense(self.dim, name="output")
        self.output_layer.build((None, width))
        super().build(input_shape)

    def call(self, inputs):
        h = inputs
        for layer in self.hidden_layers:
            h = layer(h)
        z = self.output_layer(h)
        norm = ops.sqrt(ops.maximum(ops.sum(ops.square(z), axis=-1, keepdims=True), self.epsilon ** 2))
        return z / norm

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.dim)

    def get_config(self):
        return {**super().get_config(), "hidden": list(self.hidden), "dim": self.dim,
                "activation": self.activation, "epsilon": self.epsilon}


def pseudo_two_tower(tower: AirTower, input_dim: int) -> keras.Model:
    """The paper's Figure 6: one ``tower`` object called on the source and on the candidate
    features, so the model has exactly the tower's weights. Outputs ``[source, candidate]``."""
    source = keras.Input((input_dim,), name="source")
    candidate = keras.Input((input_dim,), name="candidate")
    return keras.Model([source, candidate], [tower(source), tower(candidate)], name="air_pseudo_two_tower")
