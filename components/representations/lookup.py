"""Frozen lookup tables of the listing representations (paper 000 §2.7.2; DESIGN §7).

Paper 000 §2.7.2: the pretrained vectors are read by the ADPM "through the use of lookup
tables and a mapping between vocabulary and index positions", wrapped "in a TensorFlow
SavedModel which includes average pooling layers and handling of default padding values",
and saved with the downstream model so training and serving use the same vectors.

:func:`export_lookup` writes one such SavedModel (a ``tf.Module``) per representation:

- ``assets/<name>_ids.txt``: the listing ids, one per line (row ``r`` of the matrix is line ``r``), fed
  to a ``tf.lookup.StaticHashTable`` through a ``TextFileInitializer``, so a vocabulary of any
  size costs no graph constant;
- a non-trainable ``tf.Variable`` ``vectors`` of shape ``(size + 1, dim)`` whose row 0 is zeros:
  an id maps to row ``line + 1``; unknown ids and the padding id ``""`` map to row 0.

Functions of the loaded module (all usable inside ``tf.function`` graphs and Keras models; no
trainable weights, and the outputs carry ``tf.stop_gradient``):

- ``lookup(ids)``: string ``[batch]`` or ``[batch, length]`` -> float32 ``[..., dim]``;
  ``vectors[i] = table[ids[i]]``, zeros for unknown ids and ``""``;
- ``pool(ids, mask)``: string ``[batch, length]``, **bool** ``[batch, length]`` (True = a real
  position; cast a 0/1 mask with ``tf.cast(mask, tf.bool)``) -> float32 ``[batch, dim]``::

      w[b, l]   = mask[b, l] and ids[b, l] != ""
      pool[b]   = sum_l w[b, l] * lookup(ids)[b, l] / max(sum_l w[b, l], 1)

  i.e. the mean over the positions where ``mask`` is True (padding ``""`` never counts, even when
  the mask says so); an unknown id counts as a zero vector; a row with no position left is zeros;
- XLA cannot compile string ops, so a model trained with ``jit_compile=True`` splits the work:
  ``rows(ids)`` (string ``[batch]`` or ``[batch, length]`` -> int64 rows, 0 for unknown ids and
  ``""``) outside XLA, e.g. in ``tf.data``; then ``lookup_rows(rows)`` (-> ``[..., dim]``) and
  ``pool_rows(rows, mask)`` (mean over the True positions of ``mask``, int64 and bool
  ``[batch, length]``) inside; ``pool(ids, mask) == pool_rows(rows(ids), mask & (ids != ""))``;
- signatures ``serving_default`` (= ``pool``, output ``pooled``), ``pool`` and ``lookup``
  (output ``vectors``, ``[batch, length]`` ids);
- non-trainable scalar variables ``dim`` and ``size`` (int64) and ``representation`` (string).

``assets.extra/lookup.json`` repeats name, dim, size and the sha256 of the vectors for readers
that do not load TensorFlow.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import tempfile

import numpy as np

from components.lake import atomic_dir, fs
from components.representations.store import Vectors

META_FILE = "assets.extra/lookup.json"
PADDING = ""


def vectors_sha256(matrix: np.ndarray) -> str:
    """sha256 of a float32 ``(n, dim)`` matrix as little-endian C-order bytes (rows in id order)."""
    return hashlib.sha256(np.ascontiguousarray(matrix, dtype="<f4").tobytes()).hexdigest()


def table_rows(vectors: Vectors) -> Vectors:
    """The rows a lookup table holds: every id but the padding id ``""`` (which always maps to zeros)."""
    ids = np.asarray(vectors.ids, dtype=object)
    keep = ids != PADDING
    ids = ids[keep]
    bad = [i for i in ids if not isinstance(i, str) or "\n" in i or "\r" in i]
    if bad:
        raise ValueError(f"{len(bad)} listing ids are not strings or contain a line break (e.g. {bad[0]!r}); "
                         "the lookup vocabulary is a text file with one id per line")
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate listing ids: a lookup table maps each id to one vector")
    return Vectors(ids, vectors.matrix[keep])


def _module(vectors: Vectors, ids_file: str, name: str):
    import tensorflow as tf

    dim = vectors.dim

    class ListingLookup(tf.Module):
        def __init__(self):
            super().__init__(name=f"{name}_lookup")
            self.ids_file = tf.saved_model.Asset(ids_file)
            init = tf.lookup.TextFileInitializer(
                self.ids_file, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER)
            self.table = tf.lookup.StaticHashTable(init, default_value=-1)
            matrix = np.concatenate([np.zeros((1, dim), np.float32), vectors.matrix])
            self.vectors = tf.Variable(matrix, trainable=False, name="vectors")
            self.dim = tf.Variable(dim, dtype=tf.int64, trainable=False, name="dim")
            self.size = tf.Variable(len(vectors), dtype=tf.int64, trainable=False, name="size")
            self.representation = tf.Variable(name, dtype=tf.string, trainable=False, name="representation")

        @tf.function
        def rows(self, ids):
            rows = self.table.lookup(ids) + 1  # unknown: -1 + 1 = row 0 (zeros)
            return tf.where(tf.equal(ids, PADDING), tf.zeros_like(rows), rows)

        @tf.function
        def lookup_rows(self, rows):
            return tf.stop_gradient(tf.gather(self.vectors, rows))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64), tf.TensorSpec([None, None], tf.bool)])
        def pool_rows(self, rows, mask):
            weights = tf.cast(mask, tf.float32)
            total = tf.einsum("bl,bld->bd", weights, self.lookup_rows(rows))
            return total / tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1.0)

        @tf.function
        def lookup(self, ids):
            return self.lookup_rows(self.rows(ids))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string), tf.TensorSpec([None, None], tf.bool)])
        def pool(self, ids, mask):
            return self.pool_rows(self.rows(ids), tf.logical_and(mask, tf.not_equal(ids, PADDING)))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string), tf.TensorSpec([None, None], tf.bool)])
        def pool_signature(self, ids, mask):
            return {"pooled": self.pool(ids, mask)}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string)])
        def lookup_signature(self, ids):
            return {"vectors": self.lookup(ids)}

    module = ListingLookup()
    for shape in ([None], [None, None]):
        module.rows.get_concrete_function(tf.TensorSpec(shape, tf.string))
        module.lookup_rows.get_concrete_function(tf.TensorSpec(shape, tf.int64))
        module.lookup.get_concrete_function(tf.TensorSpec(shape, tf.string))
    return module


def export_lookup(vectors: Vectors, path: str, name: str) -> dict:
    """Write the lookup SavedModel of ``vectors`` to ``path`` (local or remote, atomically); return
    ``{"rows", "dim", "path", "sha256", "ids_sha256"}`` (``sha256``: :func:`vectors_sha256` of the
    table's rows, ``ids_sha256``: of the ids file)."""
    import tensorflow as tf

    rows = table_rows(vectors)
    body = "".join(f"{i}\n" for i in rows.ids).encode("utf-8")
    meta = {"name": name, "dim": rows.dim, "size": len(rows), "sha256": vectors_sha256(rows.matrix),
            "ids_sha256": hashlib.sha256(body).hexdigest(), "padding": PADDING, "mask_dtype": "bool"}
    with tempfile.TemporaryDirectory(prefix="adsformer-lookup-") as scratch:
        ids_file = os.path.join(scratch, re.sub(r"[^A-Za-z0-9_.-]", "_", name) + "_ids.txt")
        with open(ids_file, "wb") as f:
            f.write(body)
        module = _module(rows, ids_file, name)
        signatures = {"serving_default": module.pool_signature, "pool": module.pool_signature,
                      "lookup": module.lookup_signature}
        with atomic_dir(path, success=False) as tmp, fs.local_dir(tmp, "w") as local:
            tf.saved_model.save(module, local, signatures=signatures)
            os.makedirs(os.path.join(local, os.path.dirname(META_FILE)), exist_ok=True)
            with open(os.path.join(local, META_FILE), "w") as f:
                json.dump(meta, f, indent=2, sort_keys=True)
    return {"rows": len(rows), "dim": rows.dim, "path": path, "sha256": meta["sha256"],
            "ids_sha256": meta["ids_sha256"]}


def load_lookup(path: str):
    """The lookup module exported at ``path`` (``tf.saved_model.load``); see the module docstring.

    A remote ``path`` is copied to a local directory kept for the life of the process, since the
    table's ids file is an asset that a model saving the module again copies from there.
    """
    import tensorflow as tf

    if fs.is_local(path):
        return tf.saved_model.load(path)
    local = tempfile.mkdtemp(prefix="adsformer-lookup-")
    atexit.register(shutil.rmtree, local, True)
    fs.download_tree(path, local)
    return tf.saved_model.load(local)


def read_meta(path: str) -> dict:
    """``assets.extra/lookup.json`` of an exported lookup (no TensorFlow needed)."""
    return json.loads(fs.read_text(fs.join(path, META_FILE)))
