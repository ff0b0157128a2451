"""Frozen lookup SavedModels (paper 000 §2.7.2): exact vectors in a fresh process, masked pooling, frozen in Keras."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from components.lake import Lake, fs
from components.representations import export_lookups, store
from components.representations.lookup import export_lookup, load_lookup, read_meta, vectors_sha256
from components.step import StepError
from pipelines.config import PipelineConfig

tf = pytest.importorskip("tensorflow")

DATE = dt.date(2026, 3, 4)


@pytest.fixture(scope="module")
def random_vectors():
    rng = np.random.default_rng(3)
    ids = np.array([f"L{i:07d}" for i in rng.permutation(50)], dtype=object)
    return store.Vectors(ids, rng.normal(size=(50, 8)).astype(np.float32))


@pytest.fixture(scope="module")
def exported(random_vectors, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("lookup") / "skipgram")
    info = export_lookup(random_vectors, path, "skipgram")
    return path, info


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Three ids with hand-picked 2-d vectors, for hand-computed pooling."""
    path = str(tmp_path_factory.mktemp("tiny") / "tiny")
    vectors = store.Vectors(np.array(["a", "b", "c"], dtype=object),
                            np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32))
    export_lookup(vectors, path, "tiny")
    return load_lookup(path)


def test_a_fresh_process_gets_exactly_the_trained_vectors(exported, random_vectors, tmp_path):
    path, info = exported
    out = tmp_path / "out.npy"
    ids = list(random_vectors.ids) + ["L9999999", ""]
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        module = tf.saved_model.load({path!r})
        ids = json.load(open({str(tmp_path / 'ids.json')!r}))
        flat = module.lookup(tf.constant(ids)).numpy()
        padded = module.lookup(tf.constant([ids[:3], ids[-3:]])).numpy()
        served = module.signatures["serving_default"](ids=tf.constant([ids[:2]]),
                                                      mask=tf.constant([[True, True]]))["pooled"].numpy()
        np.save({str(out)!r}, flat)
        np.save({str(tmp_path / 'padded.npy')!r}, padded)
        np.save({str(tmp_path / 'served.npy')!r}, served)
        print(int(module.dim.numpy()), int(module.size.numpy()), module.vectors.trainable)
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-3:] == ["8", "50", "False"]
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (52, 8)
    assert np.array_equal(got[:50], random_vectors.matrix)
    assert not got[50:].any()  # unknown id and padding ""
    padded = np.load(tmp_path / "padded.npy")
    assert np.array_equal(padded[0], random_vectors.matrix[:3])
    assert np.array_equal(padded[1, 0], random_vectors.matrix[49]) and not padded[1, 1:].any()
    served = np.load(tmp_path / "served.npy")
    np.testing.assert_allclose(served[0], random_vectors.matrix[:2].mean(axis=0), rtol=1e-6)
    assert info["rows"] == 50 and info["dim"] == 8
    assert info["sha256"] == vectors_sha256(random_vectors.matrix)
    assert read_meta(path)["mask_dtype"] == "bool"


def test_pool_is_the_mean_over_unmasked_positions(tiny):
    ids = tf.constant([["a", "b", "c"],      # c masked out: (1+3)/2, (2+4)/2
                       ["a", "", "zz"],      # "" never counts even if unmasked; unknown "zz" counts as zeros
                       ["b", "c", ""],       # everything masked: zeros
                       ["c", "c", "a"]])
    mask = tf.constant([[True, True, False],
                        [True, True, True],
                        [False, False, False],
                        [True, True, True]])
    want = np.array([[2.0, 3.0], [0.5, 1.0], [0.0, 0.0], [11 / 3, 14 / 3]], np.float32)
    np.testing.assert_allclose(tiny.pool(ids, mask).numpy(), want, rtol=1e-6)
    assert tiny.lookup(tf.constant(["b", "", "nope"])).numpy().tolist() == [[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]]
    assert tiny.representation.numpy() == b"tiny"


def test_row_functions_compile_with_xla(tiny):
    ids = tf.constant([["a", "zz", ""], ["c", "b", "a"]])
    mask = tf.constant([[True, True, True], [True, False, True]])
    rows = tiny.rows(ids)  # strings stay outside XLA
    assert rows.numpy().tolist() == [[1, 0, 0], [3, 2, 1]]

    @tf.function(jit_compile=True)
    def inside(rows, mask):
        return tiny.pool_rows(rows, mask), tiny.lookup_rows(rows[:, 0])

    pooled, first = inside(rows, tf.logical_and(mask, tf.not_equal(ids, "")))
    np.testing.assert_allclose(pooled.numpy(), tiny.pool(ids, mask).numpy(), rtol=1e-6)
    np.testing.assert_allclose(pooled.numpy(), [[0.5, 1.0], [3.0, 4.0]], rtol=1e-6)
    assert first.numpy().tolist() == [[1.0, 2.0], [5.0, 6.0]]


def test_padding_id_in_the_vectors_still_maps_to_zeros(tmp_path):
    vectors = store.Vectors(np.array(["", "x"], dtype=object), np.array([[9.0, 9.0], [1.0, 2.0]], np.float32))
    info = export_lookup(vectors, str(tmp_path / "lk"), "p")
    module = load_lookup(str(tmp_path / "lk"))
    assert info["rows"] == 1 and int(module.size.numpy()) == 1
    assert module.lookup(tf.constant(["", "x"])).numpy().tolist() == [[0.0, 0.0], [1.0, 2.0]]
    with pytest.raises(ValueError, match="line break"):
        export_lookup(store.Vectors(np.array(["a\nb"], dtype=object), np.ones((1, 2))), str(tmp_path / "bad"), "b")


def test_frozen_inside_a_keras_model_and_carried_by_its_savedmodel(tiny, tmp_path):
    import keras

    class Pooled(keras.layers.Layer):
        def __init__(self, table, **kwargs):
            super().__init__(**kwargs)
            self.table = table

        def call(self, ids, mask):
            return self.table.pool(ids, mask)

    ids_in = keras.Input((None,), dtype="string")
    mask_in = keras.Input((None,), dtype="bool")
    model = keras.Model([ids_in, mask_in], keras.layers.Dense(1)(Pooled(tiny)(ids_in, mask_in)))
    assert not tiny.vectors.trainable
    assert len(model.trainable_weights) == 2  # the Dense kernel and bias only
    ids = tf.constant([["a", "b"], ["c", ""]])
    mask = tf.constant([[True, True], [True, False]])

    @tf.function
    def step(ids, mask):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model([ids, mask]))
        return tape.gradient(loss, model.trainable_weights)

    grads = step(ids, mask)
    assert all(g is not None for g in grads)
    before = tiny.vectors.numpy().copy()
    model.compile(optimizer="adam", loss="mse")
    model.fit([ids, mask], np.ones((2, 1)), epochs=1, verbose=0)
    assert np.array_equal(tiny.vectors.numpy(), before)
    model.export(str(tmp_path / "serving"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "serving"))
    np.testing.assert_allclose(served.serve([ids, mask]).numpy(), model.predict([ids, mask], verbose=0), rtol=1e-6)


def _config(names):
    return PipelineConfig.model_validate({"representations": {"lookups": {"representations": names}}})


def test_step_exports_what_exists_and_notes_what_was_skipped(tmp_path, random_vectors):
    lake = Lake(str(tmp_path / "lake"))
    store.write_vectors(store.vectors_path(lake, DATE, "skipgram"), random_vectors)
    small = store.Vectors(random_vectors.ids[:10], random_vectors.matrix[:10, :4])
    store.write_vectors(store.vectors_path(lake, DATE, "text"), small)
    fs.write_text(fs.join(lake.run_dir(DATE, "visual"), "manifest.json"),
                  json.dumps({"metrics": {"skipped": "the catalog has no images"}}))
    lines = []
    result = export_lookups.run(_config(["skipgram", "text", "visual", "air"]), DATE, lake, progress=lines.append)
    assert set(result.outputs) == {"skipgram", "text"}
    assert result.row_counts == {"skipgram": 50, "text": 10}
    assert result.metrics["lookups"]["text"]["dim"] == 4
    assert result.metrics["lookups"]["skipgram"]["sha256"] == vectors_sha256(random_vectors.sorted().matrix)
    assert set(result.metrics["skipped"]) == {"visual", "air"}
    assert "the catalog has no images" in result.metrics["skipped"]["visual"]
    assert any(n.startswith("skipped visual:") for n in result.notes)
    assert any(n.startswith("skipped air:") for n in result.notes)
    module = load_lookup(export_lookups.lookup_dir(lake, DATE, "text"))
    assert np.array_equal(module.lookup(tf.constant(list(small.ids))).numpy(), small.matrix)


def test_step_fails_when_the_export_does_not_return_the_vectors(tmp_path, random_vectors, monkeypatch):
    lake = Lake(str(tmp_path / "lake"))
    store.write_vectors(store.vectors_path(lake, DATE, "air"), random_vectors)
    real = export_lookups.lookup_lib.export_lookup

    def corrupted(vectors, path, name):
        return real(store.Vectors(vectors.ids, vectors.matrix + 1e-6), path, name)

    monkeypatch.setattr(export_lookups.lookup_lib, "export_lookup", corrupted)
    with pytest.raises(StepError, match="different vectors"):
        export_lookups.run(_config(["air"]), DATE, lake, progress=lambda _: None)


def test_an_object_store_root(tmp_path, random_vectors):
    from tests.test_ann_index import MemoryStore  # an in-memory gs://-like filesystem for Beam's FileSystems

    try:
        lake = Lake("memstore://bucket/lake")
        store.write_vectors(store.vectors_path(lake, DATE, "visual"), random_vectors)
        result = export_lookups.run(_config(["visual"]), DATE, lake, progress=lambda _: None)
        target = export_lookups.lookup_dir(lake, DATE, "visual")
        assert result.outputs == {"visual": target}
        assert any(k.startswith(target + "/variables/") for k in MemoryStore.objects)
        module = load_lookup(target)
        assert np.array_equal(module.lookup(tf.constant(list(random_vectors.ids))).numpy(), random_vectors.matrix)

        # A forced rerun where the visual step wrote nothing: the runner clears the step's run
        # directory (a prefix of objects here) first, so no stale lookup survives.
        fs.delete_tree(store.vectors_path(lake, DATE, "visual"))
        assert fs.delete_tree(lake.run_dir(DATE, "export_lookups"))
        result = export_lookups.run(_config(["visual"]), DATE, lake, progress=lambda _: None)
        assert result.outputs == {} and "visual" in result.metrics["skipped"]
        assert not [k for k in MemoryStore.objects if k.startswith(target + "/")]
    finally:
        MemoryStore.objects.clear()
