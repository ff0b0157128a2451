"""The serving model of one task: raw features -> calibrated probability (DESIGN §8 "Serving export";
paper 000 §4, A.3).

One ``tf.Module`` SavedModel carries everything between a request and a probability:

    raw features (strings, padded string lists, numbers)
      -> the run's TFT transform graph (vocabularies, z-scores, time features)
      -> densify as in training (``models.input.make_densify``)
      -> frozen lookup rows for ADPM component 2 (``ADPM.add_lookup_rows``)
      -> the ranker's main logit (``score`` model: ADPM + wide + cross + deep; no debias tower)
      -> Platt: ``p = sigmoid(a * logit + b)``

Training and serving share each piece of code rather than a re-implementation, so their outputs
agree to float tolerance (checked by the export step and ``tests/test_serving.py``).

Signature ``serving_default`` (all tensors batch-major, ``B`` candidates):

* ``listing_id``, ``shop_id``, ``taxonomy_id``, ``query``, ``platform``: ``string [B]``
  (``""`` for none);
* ``ts`` (ms since the epoch, UTC), ``position``, ``logged_in``: ``int64 [B]``; ``price``: ``float32 [B]``;
* every configured sequence ``seq_<entity>_<action>``: ``string [B, L]``, newest first, padded
  with ``""`` (any ``L``; only the first ``max_seq_len`` are used, as in training);
* every engineered point-in-time feature of ``schemas.features`` (request context, relevance,
  priors, target-session identity): ``float32 [B]``, computed by the caller as ``sessionize`` does.

Outputs: ``probability`` (calibrated, ``float32 [B]``) and ``logit`` (the main logit before Platt).
Labels and ids of the training records are not inputs: the TFT graph is pruned to what the
features need.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from components.transform.arrow_input import FLOAT_SCALARS, INT_SCALARS, STRING_SCALARS, to_record_batch
from components.transform.features import LABELS, input_feature_spec
from schemas.examples import seq_column

NOT_SERVED = ("impression_id", "sample_rate") + LABELS
"""Raw columns of the training records that are not features (ids, sampling, labels)."""


def serving_input_spec(pairs) -> dict[str, tf.TensorSpec]:
    """``{name: TensorSpec}`` of the serving signature (see the module doc)."""
    spec = {}
    for name, feature in input_feature_spec(pairs).items():
        if name in NOT_SERVED:
            continue
        shape = [None] if isinstance(feature, tf.io.FixedLenFeature) else [None, None]
        spec[name] = tf.TensorSpec(shape, feature.dtype, name=name)
    return spec


def raw_features(table: pa.Table, pairs) -> dict[str, np.ndarray]:
    """Rows of an examples table (``derived/examples``) as a serving request: numpy arrays per
    :func:`serving_input_spec`, with the same null handling the transform step applies."""
    batch = to_record_batch(table, pairs)
    out = {}
    for name in STRING_SCALARS + INT_SCALARS + FLOAT_SCALARS:
        if name in NOT_SERVED:
            continue
        values = batch.column(name).flatten()  # lists of one -> scalars
        out[name] = values.to_numpy(zero_copy_only=False)
    for entity, action in pairs:
        name = seq_column(entity, action)
        out[name] = _padded(pc.fill_null(batch.column(name), pa.scalar([], batch.column(name).type)))
    return out


def _padded(lists: pa.Array) -> np.ndarray:
    """A list<string> column as a ``[rows, longest]`` object matrix padded with ``""``, vectorized
    (a Python loop over rows made scoring a test day take minutes)."""
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
    out = np.full((len(lengths), int(lengths.max(initial=0))), "", dtype=object)
    starts = np.cumsum(lengths) - lengths
    out[np.repeat(np.arange(len(lengths)), lengths), np.arange(len(values)) - np.repeat(starts, lengths)] = values
    return out


class ServingModel(tf.Module):
    """Raw features -> calibrated probability (module doc). ``score_model``: the trained ranker's
    ``score`` model (main logit); ``platt``: its calibration (``components.calibrate.platt.Platt``)."""

    def __init__(self, transform_dir: str, score_model, platt, pairs, max_seq_len: int, max_query_tokens: int):
        import tensorflow_transform as tft

        from components.models.adpm import ADPM
        from components.models.input import make_densify

        super().__init__(name="serving")
        self.transform = tft.TFTransformOutput(transform_dir).transform_features_layer()
        self.model = score_model
        adpms = [layer for layer in score_model.layers if isinstance(layer, ADPM)]
        self._adpm = adpms[0] if adpms else None
        self._input_names = [t.name for t in score_model.inputs]
        self._densify = make_densify(max_seq_len, max_query_tokens)
        self._spec = serving_input_spec(pairs)
        self.platt_a = tf.Variable(float(platt.a), trainable=False, name="platt_a")
        self.platt_b = tf.Variable(float(platt.b), trainable=False, name="platt_b")
        self.serve = tf.function(self._serve)

    def _serve(self, **raw):
        features = {}
        for name, spec in self._spec.items():
            value = raw[name]
            # The transform graph takes VarLen features as sparse; the padding "" is not a value.
            features[name] = tf.sparse.from_dense(value) if spec.shape.rank == 2 else value
        transformed = self.transform(features)
        dense = self._densify({k: tf.RaggedTensor.from_sparse(v) if isinstance(v, tf.SparseTensor) else v
                               for k, v in transformed.items()})
        if self._adpm is not None:
            dense = self._adpm.add_lookup_rows(dense)
        logit = tf.cast(self.model({k: dense[k] for k in self._input_names}, training=False), tf.float32)
        return {"logit": logit, "probability": tf.sigmoid(self.platt_a * logit + self.platt_b)}

    def signature(self):
        return self.serve.get_concrete_function(**self._spec)

    def save(self, path: str) -> None:
        tf.saved_model.save(self, path, signatures={"serving_default": self.signature()})


def load_serving(path: str):
    """The ``serving_default`` function of an exported serving model (call it with keyword tensors)."""
    return tf.saved_model.load(path).signatures["serving_default"]


def predict(fn, features: dict, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """Run a loaded serving signature over ``features`` (numpy, :func:`raw_features`) in batches."""
    n = len(next(iter(features.values())))
    parts: dict[str, list] = {"logit": [], "probability": []}
    for start in range(0, n, batch_size):
        chunk = {k: tf.constant(v[start:start + batch_size]) for k, v in features.items()}
        for name, value in fn(**chunk).items():
            parts[name].append(value.numpy())
    return {k: np.concatenate(v) if v else np.zeros(0, np.float32) for k, v in parts.items()}
