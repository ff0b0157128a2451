"""ADPM component 2: average-pooled frozen pretrained listing vectors (paper 000 §2.4, §2.7.2; eq. 9)."""
from __future__ import annotations

import keras
from keras import ops

from components.models.adpm.config import seq_ids_key, seq_rows_key
from components.models.adpm.pooling import masked_mean_lookup
from components.representations.lookup import load_lookup, read_meta


@keras.saving.register_keras_serializable(package="adsformer")
class PretrainedPool(keras.layers.Layer):
    """Mean of the frozen pretrained vectors of each raw listing-id sequence, per lookup and action.

    Input (``input_mode="ids"``, the default): a dict holding ``seq_listing_<action>`` string ``[B, M]``
    (padding ``""``) for every action in ``actions``. For each lookup ``r`` (in the order of
    ``lookups``) and each action ``a`` (in the order of ``actions``), with ``m = ids != ""``::

        o_2[r, a] = sum_l m[l] e_r(ids[l]) / max(sum_l m[l], 1)     (eq. 9; zeros for an empty row)
        o_2       = stop_gradient(Concat_r Concat_a o_2[r, a])      size sum_r d_r x len(actions)

    ``e_r`` is the frozen lookup SavedModel of ``r`` (:mod:`components.representations.lookup`),
    whose ``pool`` does the masked mean; an unknown id counts as a zero vector. The layer has no
    weights of its own and the vectors get no gradient (they stay as trained offline, §2.4).

    ``input_mode="rows"``: the layer reads ``seq_listing_<action>_rows_<r>`` int64 ``[B, M]`` instead
    (-1 = padding, 0 = unknown id, else the lookup's row), made outside the model by
    :meth:`add_lookup_rows` (e.g. in ``tf.data``), and pools the lookup's ``lookup_rows`` vectors of
    the valid entries (:func:`.pooling.masked_mean_lookup`: the mean of the lookup's ``pool_rows``,
    without gathering all ``[B, M, d]`` vectors, padding included: 4 x 50 x 256 floats per example
    for AIR, most of them padding); the output is the same. Two reasons for the mode: XLA cannot
    compile the string-to-row table lookup, so only this mode can run under ``jit_compile=True``;
    and Keras 3's ``Model.fit`` under a
    ``tf.distribute`` strategy averages the first input batch across replicas to build the model,
    which fails on string features (``AddN`` of strings), so ``fit`` under ``MirroredStrategy``
    needs this mode (a custom ``strategy.run`` loop works with either).

    Serialization: the config stores the lookup *paths* (``{name: path}``); the SavedModels are
    loaded in :meth:`build` (so under a ``tf.distribute`` strategy scope when the model is built
    in one) and are tracked as attributes of the layer, so ``model.export()`` and
    ``tf.saved_model.save`` carry them (tables, vectors and the ids asset) and the serving model
    uses the same vectors as training (§2.7.2). Output sizes come from each lookup's
    ``assets.extra/lookup.json`` and need no TensorFlow load.
    """

    def __init__(self, lookups: dict[str, str], actions: list[str] | tuple[str, ...], input_mode: str = "ids",
                 **kwargs):
        super().__init__(**kwargs)
        if input_mode not in ("ids", "rows"):
            raise ValueError(f"PretrainedPool input_mode must be 'ids' or 'rows', got {input_mode!r}")
        self.input_mode = input_mode
        if not lookups:
            raise ValueError("PretrainedPool needs at least one lookup (name -> lookup SavedModel path); "
                             "pass the export_lookups outputs or switch component 2 off")
        if not actions:
            raise ValueError("PretrainedPool needs at least one listing action to pool")
        self.lookups = {str(k): str(v) for k, v in lookups.items()}
        self.actions = [str(a) for a in actions]
        self.dims = {}
        for name, path in self.lookups.items():
            try:
                self.dims[name] = int(read_meta(path)["dim"])
            except Exception as e:  # noqa: BLE001 - re-raised with what to do
                raise ValueError(f"lookup {name!r}: cannot read {path}/assets.extra/lookup.json ({e}); "
                                 "is it a lookup exported by export_lookups?") from e
        self._attr = {name: f"lookup_{i}" for i, name in enumerate(self.lookups)}

    @property
    def output_dim(self) -> int:
        return sum(self.dims.values()) * len(self.actions)

    def build(self, input_shape=None):
        self._load()
        self.built = True

    def _load(self):
        if getattr(self, "_loaded", False):
            return
        for name, path in self.lookups.items():
            module = load_lookup(path)
            got = int(module.vectors.shape[-1])
            if got != self.dims[name]:
                raise ValueError(f"lookup {name!r} at {path}: its vectors are {got}-d but lookup.json says "
                                 f"{self.dims[name]}; re-export it")
            setattr(self, self._attr[name], module)  # tracked: saved with the model
        self._loaded = True

    def lookup_modules(self) -> dict:
        """``{name: loaded lookup module}`` (loads them if :meth:`build` has not yet)."""
        self._load()
        return {name: getattr(self, attr) for name, attr in self._attr.items()}

    def add_lookup_rows(self, features: dict) -> dict:
        """``features`` plus ``seq_listing_<action>_rows_<lookup>`` (int64, -1 = padding ``""``, 0 = unknown
        id) for every lookup and action, from the string features ``seq_listing_<action>``; for the
        ``rows`` input mode, outside the model (a ``tf.data`` map or a serving signature)."""
        import tensorflow as tf

        out = dict(features)
        for name, module in self.lookup_modules().items():
            for action in self.actions:
                ids = tf.convert_to_tensor(features[seq_ids_key(action)])
                rows = module.rows(ids)
                out[seq_rows_key(action, name)] = tf.where(tf.equal(ids, ""), tf.constant(-1, rows.dtype), rows)
        return out

    def call(self, inputs):
        parts = []
        for name, module in self.lookup_modules().items():
            for action in self.actions:
                if self.input_mode == "ids":
                    ids = inputs[seq_ids_key(action)]
                    pooled = module.pool(ids, ops.not_equal(ids, ""))
                else:
                    rows = ops.cast(inputs[seq_rows_key(action, name)], "int64")
                    pooled = masked_mean_lookup(module.lookup_rows, ops.maximum(rows, 0), ops.greater_equal(rows, 0))
                parts.append(ops.stop_gradient(ops.cast(pooled, self.compute_dtype)))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        batch = next(iter(input_shape.values()))[0] if isinstance(input_shape, dict) else None
        return (batch, self.output_dim)

    def get_config(self):
        return {**super().get_config(), "lookups": dict(self.lookups), "actions": list(self.actions),
                "input_mode": self.input_mode}
