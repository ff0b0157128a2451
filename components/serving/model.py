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
* ``request_id``: ``string [B]``: rows with the same id are one request's candidates (its request
  context is computed over them, so a request is scored in one call);
* ``session_ts`` (ms), ``session_action``, ``session_listing_id``, ``session_shop_id``,
  ``session_taxonomy_id``: ``[B, E]``, the user key's raw events before the impression (at least
  the session window's; any order; padded with action ``""``).

The engineered point-in-time features (``schemas.features``: request context, relevance, priors,
target-session identity) are not inputs: ``components.serving.features.ServingFeatures`` computes
them in the graph from the inputs above, the catalog text and the earlier days' counts frozen at
export. ``price`` is ``float64`` like the raw logs, so the request's price ratios come out as in
training.

Outputs: ``probability`` (calibrated, ``float32 [B]``) and ``logit`` (the main logit before Platt).
Labels and ids of the training records are not inputs: the TFT graph is pruned to what the
features need.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from components.serving.features import SESSION_INPUTS, ServingFeatures, inputs_needed
from components.sessionize.features import in_window, session_tables
from components.transform.arrow_input import FLOAT_SCALARS, INT_SCALARS, STRING_SCALARS, to_record_batch
from components.transform.features import LABELS, input_feature_spec
from schemas.examples import seq_column
from schemas.features import ENGINEERED_FEATURES
from schemas.raw import user_key

NOT_SERVED = ("impression_id", "sample_rate") + LABELS + ENGINEERED_FEATURES
"""Columns of the training records that are not serving inputs (ids, sampling, labels, and the
engineered features, which the graph computes)."""


def serving_input_spec(pairs, engineered=()) -> dict[str, tf.TensorSpec]:
    """``{name: TensorSpec}`` of the serving signature (see the module doc); ``engineered``: the
    engineered features the models read, whose raw inputs the signature adds."""
    spec = {}
    for name, feature in input_feature_spec(pairs).items():
        if name in NOT_SERVED:
            continue
        shape = [None] if isinstance(feature, tf.io.FixedLenFeature) else [None, None]
        spec[name] = tf.TensorSpec(shape, tf.float64 if name == "price" else feature.dtype, name=name)
    for name, dtype in inputs_needed(engineered).items():
        spec[name] = tf.TensorSpec([None] if name == "request_id" else [None, None], dtype, name=name)
    return spec


def raw_features(table: pa.Table, pairs, events: pa.Table | None = None, window_ms: int = 0) -> dict[str, np.ndarray]:
    """Rows of an examples table (``derived/examples``) as a serving request: numpy arrays of every
    input of :func:`serving_input_spec`, with the same null handling the transform step applies.
    ``events``: the raw events the rows' sessions come from (None: no ``session_*`` inputs)."""
    batch = to_record_batch(table, pairs)
    out = {}
    for name in STRING_SCALARS + INT_SCALARS + FLOAT_SCALARS:
        if name in NOT_SERVED:
            continue
        values = batch.column(name).flatten()  # lists of one -> scalars
        out[name] = values.to_numpy(zero_copy_only=False)
    out["price"] = pc.fill_null(table.column("price"), 0.0).to_numpy().astype(np.float64)
    out["request_id"] = pc.fill_null(table.column("request_id"), "").to_numpy(zero_copy_only=False).astype(object)
    for entity, action in pairs:
        name = seq_column(entity, action)
        out[name] = padded(pc.fill_null(batch.column(name), pa.scalar([], batch.column(name).type)), "")
    if events is not None:
        out.update(session_events(events, table, window_ms))
    # A serving model exported before its graph computed them (an incumbent blessed by an earlier
    # version) takes the engineered features as inputs; ``predict`` feeds each model what it takes.
    out.update({name: pc.cast(pc.fill_null(table.column(name), 0.0), pa.float32()).to_numpy()
                for name in ENGINEERED_FEATURES if name in table.column_names})
    return out


def padded(lists: pa.Array, fill) -> np.ndarray:
    """A list column as a ``[rows, longest]`` matrix padded with ``fill``, vectorized (a Python loop
    over rows made scoring a test day take minutes)."""
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
    out = np.full((len(lengths), int(lengths.max(initial=0))), fill, dtype=object if isinstance(fill, str) else values.dtype)
    starts = np.cumsum(lengths) - lengths
    out[np.repeat(np.arange(len(lengths)), lengths), np.arange(len(values)) - np.repeat(starts, lengths)] = values
    return out


def session_events(events: pa.Table, impressions: pa.Table, window_ms: int) -> dict[str, np.ndarray]:
    """The ``session_*`` inputs of each impression row (of an examples or raw impressions table): its
    user key's events of ``[t - window, t)`` as ``[rows, E]`` arrays (what a serving caller sends;
    ``events`` may hold more, the graph windows)."""
    n = impressions.num_rows
    imp, ev = session_tables(events, impressions)
    joined = in_window(imp.join(ev, ["key"], join_type="inner"), window_ms)
    joined = joined.sort_by([("row", "ascending"), ("ts", "ascending")])
    rows = joined.column("row").to_numpy()
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    out = {}
    for name in SESSION_INPUTS:
        column = joined.column(name[len("session_"):]).combine_chunks()
        if name == "session_ts":
            lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(column.to_numpy(), pa.int64()))
            out[name] = padded(lists, 0)
        else:
            out[name] = padded(pa.ListArray.from_arrays(pa.array(offsets), pc.fill_null(column, "")), "")
    return out


class ServingModel(tf.Module):
    """Raw features -> calibrated probability (module doc). ``score_model``: the trained ranker's
    ``score`` model (main logit); ``platt``: its calibration (``components.calibrate.platt.Platt``);
    ``features``: the engineered features the transform reads, computed from the raw inputs."""

    def __init__(self, transform_dir: str, score_model, platt, pairs, max_seq_len: int, max_query_tokens: int,
                 features: ServingFeatures):
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
        self.features = features
        self._spec = serving_input_spec(pairs, features.names)
        self._engineered_inputs = set(inputs_needed(features.names))
        self.platt_a = tf.Variable(float(platt.a), trainable=False, name="platt_a")
        self.platt_b = tf.Variable(float(platt.b), trainable=False, name="platt_b")
        self.serve = tf.function(self._serve)

    def _serve(self, **raw):
        features = {}
        for name, spec in self._spec.items():
            if name in self._engineered_inputs:
                continue
            value = tf.cast(raw[name], tf.float32) if name == "price" else raw[name]
            # The transform graph takes VarLen features as sparse; the padding "" is not a value.
            features[name] = tf.sparse.from_dense(value) if spec.shape.rank == 2 else value
        features.update(self.features(raw))
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


def request_batches(request_ids: np.ndarray, batch_size: int):
    """``(start, end)`` row ranges of about ``batch_size`` rows that never split a request (rows of a
    request must be adjacent; a request longer than ``batch_size`` is one batch of its own)."""
    n, start = len(request_ids), 0
    while start < n:
        end = min(start + batch_size, n)
        while end < n and request_ids[end] == request_ids[end - 1]:
            end += 1
        yield start, end
        start = end


def predict(fn, features: dict, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """Run a loaded serving signature over ``features`` (numpy, :func:`raw_features`, a request's rows
    adjacent) in batches of whole requests. Only the inputs the signature takes are fed, in its dtypes."""
    n = len(next(iter(features.values())))
    specs = fn.structured_input_signature[1]
    parts: dict[str, list] = {"logit": [], "probability": []}
    requests = features.get("request_id", np.arange(n))
    for start, end in request_batches(requests, batch_size):
        chunk = {k: tf.constant(features[k][start:end], spec.dtype) for k, spec in specs.items()}
        for name, value in fn(**chunk).items():
            parts[name].append(value.numpy())
    return {k: np.concatenate(v) if v else np.zeros(0, np.float32) for k, v in parts.items()}


def score_examples(fn, examples: pa.Table, impression_ids, pairs, events: pa.Table | None = None,
                   window_ms: int = 0, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """Serve the examples ``impression_ids`` (of an examples table) as a caller would: each with all the
    candidates of its request and its session's raw ``events``. Returns ``logit`` and ``probability``
    aligned with ``impression_ids``; raises ValueError when some are not in ``examples``."""
    ids = impression_ids.combine_chunks() if isinstance(impression_ids, pa.ChunkedArray) else pa.array(impression_ids)
    requests = pc.unique(examples.filter(pc.is_in(examples.column("impression_id"), value_set=ids)).column("request_id"))
    batch = examples.filter(pc.is_in(examples.column("request_id"), value_set=requests)).sort_by("request_id")
    where = pc.index_in(ids, value_set=batch.column("impression_id"))
    if where.null_count:
        raise ValueError(f"{where.null_count:,} of the {len(ids):,} rows to score are not in the examples")
    event_keys = user_key(events) if events is not None else None
    parts: dict[str, list] = {"logit": [], "probability": []}
    for start, end in request_batches(batch.column("request_id").to_numpy(zero_copy_only=False), batch_size):
        chunk = batch.slice(start, end - start)
        chunk_events = events.filter(pc.is_in(event_keys, value_set=pc.unique(chunk.column("user_key")))) \
            if events is not None else None
        for name, value in predict(fn, raw_features(chunk, pairs, chunk_events, window_ms), batch_size).items():
            parts[name].append(value)
    where = where.to_numpy(zero_copy_only=False)
    return {k: (np.concatenate(v) if v else np.zeros(0, np.float32))[where] for k, v in parts.items()}
