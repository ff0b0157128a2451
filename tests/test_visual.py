"""The visual representation (paper 000 §3.1, A.5): sampler, masked multitask loss, model surgery,
freezing phases, a tiny training that learns color, skipping without images, weights errors."""
from __future__ import annotations

import datetime as dt
import os
import types
import warnings

import numpy as np
import pyarrow as pa
import pytest

keras = pytest.importorskip("keras")

from components.lake import Lake  # noqa: E402
from components.representations import quality, store  # noqa: E402
from components.representations.config import QualityConfig, VisualConfig  # noqa: E402
from components.representations.visual import model as vm  # noqa: E402
from components.representations.visual.images import ImageLoader, resolve_uri  # noqa: E402
from components.representations.visual.sampler import MultiTaskSampler, TaskData, targets  # noqa: E402
from components.representations.visual.step import VisualRepresentation  # noqa: E402
from components.step import StepError  # noqa: E402

DAY = dt.date(2026, 3, 4)
COLORS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 215, 30)}


# --- sampler and loss -------------------------------------------------------------------------------------------
def _tasks():
    return [TaskData("big", np.arange(100, 200), np.arange(100) % 5, tuple("abcde")),
            TaskData("small", np.array([3, 7, 9]), np.array([0, 1, 0]), ("x", "y")),
            TaskData("mid", np.arange(0, 40), np.arange(40) % 2, ("p", "q"))]


def test_every_batch_has_the_same_number_of_examples_from_each_task():
    tasks = _tasks()
    sampler = MultiTaskSampler(tasks, batch_size=10, samples_per_task=30, seed=1)
    assert sampler.per_task == 3 and sampler.batch_size == 9 and sampler.steps == 10
    batches = list(sampler.epoch(0))
    assert len(batches) == 10
    for b in batches:
        assert np.bincount(b.task, minlength=3).tolist() == [3, 3, 3]
        for k, task in enumerate(tasks):  # rows and labels come from the example's own dataset
            lookup = dict(zip(task.rows.tolist(), task.labels.tolist()))
            mine = b.task == k
            assert all(lookup[r] == y for r, y in zip(b.rows[mine].tolist(), b.label[mine].tolist()))
    small = np.concatenate([b.rows[b.task == 1] for b in batches])
    assert len(small) == 30 and set(small.tolist()) == {3, 7, 9}  # drawn with replacement, every example used
    assert np.bincount(small)[[3, 7, 9]].tolist() == [10, 10, 10]  # cycled permutations: evenly
    big = np.concatenate([b.rows[b.task == 0] for b in batches])
    assert len(set(big.tolist())) == 30  # large dataset: no repeats within an epoch
    again = list(MultiTaskSampler(tasks, 10, 30, seed=1).epoch(0))
    assert all((a.rows == b.rows).all() for a, b in zip(batches, again))
    assert any((a.rows != b.rows).any() for a, b in zip(batches, sampler.epoch(1)))


def test_sampler_rejects_impossible_settings():
    with pytest.raises(ValueError, match="at least one example per task"):
        MultiTaskSampler(_tasks(), batch_size=2, samples_per_task=10, seed=0)
    with pytest.raises(ValueError, match="without examples"):
        MultiTaskSampler([TaskData("empty", np.array([], np.int64), np.array([], np.int64), ("a",))], 4, 4, 0)


def test_task_data_drops_rows_without_a_label():
    task = TaskData.from_values("color", np.arange(5), ["red", None, "blue", "red", None])
    assert task.rows.tolist() == [0, 2, 3] and task.classes == ("blue", "red") and task.labels.tolist() == [1, 0, 1]


def test_an_example_contributes_loss_only_through_its_own_head():
    tasks = _tasks()
    names = [t.name for t in tasks]
    inputs = keras.Input((4,))
    model = keras.Model(inputs, {t.name: keras.layers.Dense(t.n_classes, name=t.name)(inputs) for t in tasks})
    vm.compile_model(model, names, 1e-3)
    batch = next(MultiTaskSampler(tasks, 6, 2, seed=3).epoch(0))
    x = np.random.default_rng(0).normal(size=(len(batch.rows), 4)).astype(np.float32)
    y, w = targets(batch, names)
    assert all(w[n].tolist() == (batch.task == k).astype(float).tolist() for k, n in enumerate(names))
    got = float(model.test_on_batch(x, y, sample_weight=w, return_dict=True)["loss"])

    logits = {n: np.asarray(v) for n, v in model.predict_on_batch(x).items()}
    expected = []
    for i, (k, label) in enumerate(zip(batch.task, batch.label)):
        z = logits[names[k]][i]
        expected.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[label])  # own head's cross-entropy
    assert got == pytest.approx(float(np.mean(expected)), rel=1e-5)

    # Changing what another head would be asked for an example changes nothing.
    y2 = {n: np.where(w[n] > 0, y[n], (y[n] + 1) % tasks[k].n_classes) for k, n in enumerate(names)}
    assert float(model.test_on_batch(x, y2, sample_weight=w, return_dict=True)["loss"]) == pytest.approx(got, rel=1e-6)


# --- model surgery and freezing ---------------------------------------------------------------------------------
SMALL = VisualConfig(image_size=32, samples_per_task=240, batch_size=12, phase1_epochs=0, phase2_epochs=2,
                     unfreeze_last=234, inference_batch=32, learning_rate=3e-3)


@pytest.fixture(scope="module")
def embedding():
    keras.utils.set_random_seed(0)
    return vm.build_embedding_model(SMALL)


def test_embedding_is_efficientnetb0_with_its_top_conv_replaced_by_a_256_d_block(embedding):
    assert embedding.output_shape == (None, 256)
    backbone = vm.backbone_of(embedding)
    names = [layer.name for layer in backbone.layers]
    assert names[-1] == "block7a_project_bn" and "stem_conv" in names and "block6d_add" in names
    assert not set(vm.REPLACED_LAYERS) & set(names)
    assert backbone.output_shape == (None, 1, 1, 320)
    conv = embedding.get_layer("embedding_conv")
    assert conv.filters == 256 and conv.kernel_size == (1, 1)
    assert embedding.predict_on_batch(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 256)


def test_phase_1_freezes_the_backbone_and_phase_2_unfreezes_the_last_n_layers_but_batchnorm(embedding):
    backbone = vm.backbone_of(embedding)
    model = vm.build_training_model(embedding, {"a": 3, "b": 5}, SMALL, seed=0)
    vm.set_phase(embedding, 1, 20)
    assert not backbone.trainable and backbone.trainable_weights == []
    own = {id(v) for v in backbone.weights}
    assert model.trainable_weights and all(id(v) not in own for v in model.trainable_weights)

    trainable = vm.set_phase(embedding, 2, 20)
    tail = backbone.layers[-20:]
    want = [layer.name for layer in tail if not isinstance(layer, keras.layers.BatchNormalization)]
    assert trainable == want and 0 < len(want) < 20  # the tail holds BatchNorm layers, which stay frozen
    assert [layer.name for layer in backbone.layers if layer.trainable] == want
    want_weights = {id(v) for layer in tail if layer.name in want for v in layer.trainable_weights}
    assert {id(v) for v in backbone.trainable_weights} == want_weights
    assert {id(v) for v in model.trainable_weights} & own == want_weights
    vm.set_phase(embedding, 1, 20)


def test_a_local_weights_file_is_loaded_into_the_cut_backbone(tmp_path):
    keras.utils.set_random_seed(1)
    source = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = str(tmp_path / "efficientnetb0_notop.weights.h5")
    source.save_weights(path)
    keras.utils.set_random_seed(2)
    backbone = vm.build_backbone(32, path)  # conv weights do not depend on the image size
    for name in ("stem_conv", "block4a_expand_conv", "block7a_project_conv"):
        loaded, saved = backbone.get_layer(name).get_weights()[0], source.get_layer(name).get_weights()[0]
        np.testing.assert_array_equal(loaded, saved)


def test_missing_or_unfitting_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(StepError, match="does not exist.*null"):
        vm.build_backbone(32, str(tmp_path / "efficientnetb0_notop.h5"))
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = str(tmp_path / "other.weights.h5")
    other.save_weights(path)
    with warnings.catch_warnings(), pytest.raises(StepError, match="does not fit"):
        warnings.simplefilter("ignore")  # Keras warns about every layer it cannot match before it raises
        vm.build_backbone(32, path)


# --- the representation on a tiny lake of colored shapes -------------------------------------------------------
def _render(rng, color, shape, size=48):
    image = np.full((size, size, 3), 235, np.float32) + rng.normal(0, 4, (size, size, 3))
    half = rng.uniform(0.3, 0.4) * size
    cy, cx = rng.uniform(0.4, 0.6, 2) * size
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    inside = (np.maximum(abs(yy - cy), abs(xx - cx)) <= half) if shape == "square" else (
        (yy - cy) ** 2 + (xx - cx) ** 2 <= half ** 2)
    image[inside] = np.asarray(COLORS[color]) + rng.normal(0, 8, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def _tiny_lake(root, n=96, with_images=True):
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    os.makedirs(os.path.join(root, "raw", "images"), exist_ok=True)
    for i in range(n):
        color, shape = list(COLORS)[i % 4], ("square", "circle")[(i // 4) % 2]
        uri = f"raw/images/L{i:04d}.png"
        if with_images:
            Image.fromarray(_render(rng, color, shape)).save(os.path.join(root, uri))
        rows.append({"listing_id": f"L{i:04d}", "taxonomy_id": f"{shape}.{i % 3}", "top_taxonomy": shape,
                     "primary_color": None if i % 12 == 11 else color, "image_uri": uri})
    return Lake(str(root)), pa.Table.from_pylist(rows)


def _config(cfg=SMALL):
    return types.SimpleNamespace(seed=7, representations=types.SimpleNamespace(visual=cfg))


@pytest.fixture
def fake_catalog(monkeypatch):
    tables = {}
    monkeypatch.setattr(store, "catalog", lambda lake, date: tables.get(lake.root))
    return tables


def test_prepare_skips_with_a_reason_without_catalog_or_images(tmp_path, fake_catalog):
    rep = VisualRepresentation()
    lake, table = _tiny_lake(tmp_path / "a", n=8, with_images=False)
    assert "no validated catalog" in rep.prepare(_config(), DAY, lake, print)
    fake_catalog[lake.root] = table
    assert "images are missing" in rep.prepare(_config(), DAY, lake, print)
    fake_catalog[lake.root] = table.set_column(4, "image_uri", pa.nulls(table.num_rows, pa.string()))
    assert "has an image_uri" in rep.prepare(_config(), DAY, lake, print)


def test_tiny_training_learns_color_and_a_later_day_infers_with_the_saved_model(tmp_path, fake_catalog):
    lake, table = _tiny_lake(tmp_path / "lake")
    os.remove(os.path.join(lake.root, "raw", "images", "L0005.png"))  # one image file missing
    fake_catalog[lake.root] = table
    rep = VisualRepresentation()
    assert rep.prepare(_config(), DAY, lake, print) is None
    assert rep.facts["images_missing"] == 1 and len(rep.ids) == 95
    assert {t.name: len(t.rows) for t in rep.tasks()} == {"top_taxonomy": 95, "fine_taxonomy": 95,
                                                          "primary_color": 87}  # colors are sometimes null
    model_dir = str(tmp_path / "model")
    lines = []
    metrics = rep.train(model_dir, lines.append)
    assert any("phase 2 epoch 2/2" in line for line in lines)
    assert metrics["phases"]["2"]["primary_color_accuracy"] > 0.4  # 4 colors: chance is 0.25

    later = VisualRepresentation()  # another day: fresh process state, model read from disk
    assert later.prepare(_config(), DAY + dt.timedelta(days=1), lake, print) is None
    vectors = later.infer(model_dir, print)
    assert vectors.matrix.shape == (95, 256) and vectors.matrix.dtype == np.float32
    assert np.isfinite(vectors.matrix).all() and "L0005" not in set(vectors.ids)
    described = later.describe()
    assert described["weights"] == "random init" and described["image_size"] == 32
    assert described["tasks"] == {"top_taxonomy": 2, "fine_taxonomy": 6, "primary_color": 4}
    report = quality.evaluate(vectors, table.select(["listing_id", "primary_color"]), ["primary_color"],
                              QualityConfig(sample=95, neighbours=5), seed=0)
    assert report["primary_color"]["purity_ratio"] > 1.5, report


def test_image_uris_are_relative_to_the_lake_unless_they_have_a_scheme(tmp_path):
    lake = Lake(str(tmp_path))
    assert resolve_uri(lake, "raw/images/L1.png") == os.path.join(str(tmp_path), "raw", "images", "L1.png")
    assert resolve_uri(lake, "gs://bucket/x.png") == "gs://bucket/x.png"
    pixels, ok = ImageLoader([resolve_uri(lake, "raw/images/nope.png")], 32).load([0])
    assert pixels.shape == (1, 32, 32, 3) and not ok[0]
