"""AIR (paper 000 §3.2, A.6): the in-batch softmax against numpy, the shared tower, the feature
matrix and its saved statistics, learning on clustered pairs, and the step on a tiny lake."""
from __future__ import annotations

import datetime as dt
import json
import math
import os

import numpy as np
import pyarrow as pa
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from components.lake import Lake, fs, mark_success, parquet  # noqa: E402
from components.representations import store  # noqa: E402
from components.representations.air import features as feats  # noqa: E402
from components.representations.air.loss import MASKED, in_batch_logits, in_batch_softmax_loss, \
    sample_negatives  # noqa: E402
from components.representations.air.pairs import coclick_path, to_rows, top_pairs  # noqa: E402
from components.representations.air.step import AirRepresentation  # noqa: E402
from components.representations.air.step import run as run_air  # noqa: E402
from components.representations.air.tower import AirTower, pseudo_two_tower  # noqa: E402
from components.representations.air.train import embed, fit, in_batch_recall  # noqa: E402
from components.representations.config import AirConfig  # noqa: E402
from components.representations.store import Vectors  # noqa: E402
from schemas.raw import LISTINGS_SCHEMA  # noqa: E402

DAY = dt.date(2026, 3, 4)


# ---------------------------------------------------------------- loss

def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_loss(src, cand, src_ids, cand_ids, temperature, negatives):
    """Reference: per row, softmax over [S_ii] + [S_ij for j in negatives[i] unless a duplicate]."""
    s = src @ cand.T / temperature
    out = []
    for i in range(len(src)):
        logits = [s[i, i]] + [s[i, j] for j in negatives[i]
                              if cand_ids[j] != cand_ids[i] and cand_ids[j] != src_ids[i]]
        logits = np.array(logits)
        out.append(-(logits[0] - logits.max() - np.log(np.exp(logits - logits.max()).sum())))
    return float(np.mean(out))


def test_loss_hand_value_two_orthogonal_pairs():
    # S = I / 1: each row's logits are [1, 0] -> loss = log(1 + e^-1)
    e = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    ids = tf.constant([0, 1])
    loss = in_batch_softmax_loss(e, e, ids + 10, ids, 1.0, 5, tf.random.Generator.from_seed(0))
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_loss_with_all_negatives_equals_numpy():
    rng = np.random.default_rng(0)
    b = 6
    src, cand = unit(rng.normal(size=(b, 4))), unit(rng.normal(size=(b, 4)))
    src_ids, cand_ids = np.arange(100, 100 + b), np.arange(b)
    negatives = sample_negatives(b, 50, tf.random.Generator.from_seed(1)).numpy()
    assert negatives.shape == (b, b - 1)  # sampled_negatives >= B-1: every other candidate
    for i, row in enumerate(negatives):
        assert sorted(row) == [j for j in range(b) if j != i]
    got = in_batch_softmax_loss(tf.constant(src, tf.float32), tf.constant(cand, tf.float32), tf.constant(src_ids),
                                tf.constant(cand_ids), 0.1, 50, tf.random.Generator.from_seed(1))
    want = numpy_loss(src, cand, src_ids, cand_ids, 0.1, [[j for j in range(b) if j != i] for i in range(b)])
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_sampled_negatives_are_k_distinct_others_and_the_loss_uses_them():
    rng = np.random.default_rng(1)
    b, k = 9, 3
    src, cand = unit(rng.normal(size=(b, 5))), unit(rng.normal(size=(b, 5)))
    src_ids, cand_ids = np.arange(100, 100 + b), np.arange(b)
    negatives = sample_negatives(b, k, tf.random.Generator.from_seed(7)).numpy()
    assert negatives.shape == (b, k)
    for i, row in enumerate(negatives):
        assert len(set(row)) == k and i not in row and all(0 <= j < b for j in row)
    args = (tf.constant(src, tf.float32), tf.constant(cand, tf.float32), tf.constant(src_ids), tf.constant(cand_ids))
    logits = in_batch_logits(*args, 0.2, tf.constant(negatives)).numpy()
    assert logits.shape == (b, k + 1)  # exactly k negatives + the positive
    np.testing.assert_allclose(logits[:, 0], np.sum(src * cand, axis=1) / 0.2, rtol=1e-5)
    # the same generator state draws the same negatives inside the loss
    got = in_batch_softmax_loss(*args, 0.2, k, tf.random.Generator.from_seed(7))
    assert float(got) == pytest.approx(numpy_loss(src, cand, src_ids, cand_ids, 0.2, negatives), rel=1e-5)
    # and it is not the all-negatives loss
    everything = [[j for j in range(b) if j != i] for i in range(b)]
    assert float(got) != pytest.approx(numpy_loss(src, cand, src_ids, cand_ids, 0.2, everything), rel=1e-3)


def test_sampled_negatives_are_uniform_over_the_other_candidates():
    b, k, draws = 8, 3, 3000
    generator = tf.random.Generator.from_seed(3)
    draw = tf.function(lambda: sample_negatives(b, k, generator))
    counts = np.zeros((b, b))
    for _ in range(draws):
        np.add.at(counts, (np.repeat(np.arange(b), k), draw().numpy().reshape(-1)), 1)
    share = counts / draws
    assert np.all(np.diag(share) == 0)
    off = share[~np.eye(b, dtype=bool)]
    np.testing.assert_allclose(off, k / (b - 1), atol=0.04)  # each other candidate w.p. k/(B-1)


def test_duplicate_listings_in_the_batch_are_masked():
    # rows: 1->5, 2->5 (same candidate listing twice), 5->7 (candidate 5 is this row's source), 3->9
    src_ids, cand_ids = np.array([1, 2, 5, 3]), np.array([5, 5, 7, 9])
    rng = np.random.default_rng(2)
    src, cand = unit(rng.normal(size=(4, 3))), unit(rng.normal(size=(4, 3)))
    negatives = np.array([[j for j in range(4) if j != i] for i in range(4)])
    logits = in_batch_logits(tf.constant(src, tf.float32), tf.constant(cand, tf.float32), tf.constant(src_ids),
                             tf.constant(cand_ids), 1.0, tf.constant(negatives)).numpy()
    masked = logits[:, 1:] == MASKED
    want = np.array([[True, False, False],  # row 0: candidate 1 is listing 5 again
                     [True, False, False],  # row 1: candidate 0 is listing 5 again
                     [True, True, False],  # row 2: candidates 0 and 1 are listing 5, its own source
                     [False, False, False]])
    np.testing.assert_array_equal(masked, want)
    got = in_batch_softmax_loss(tf.constant(src, tf.float32), tf.constant(cand, tf.float32), tf.constant(src_ids),
                                tf.constant(cand_ids), 1.0, 10, tf.random.Generator.from_seed(0))
    assert float(got) == pytest.approx(numpy_loss(src, cand, src_ids, cand_ids, 1.0, negatives), rel=1e-5)


# ---------------------------------------------------------------- tower

def test_the_tower_is_shared_by_source_and_candidate():
    tower = AirTower(hidden=[8], dim=4)
    model = pseudo_two_tower(tower, 6)
    assert len(model.weights) == len(tower.weights) == 4  # one set: 2 Dense kernels + biases
    assert model.count_params() == tower.count_params() == 6 * 8 + 8 + 8 * 4 + 4
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    src, cand = model([x, x])
    np.testing.assert_array_equal(np.asarray(src), np.asarray(cand))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(src), axis=1), 1.0, rtol=1e-5)
    with tf.GradientTape() as tape:
        s, c = model([x, x[::-1]])
        loss = tf.reduce_sum(s * c)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)


def test_the_tower_formula_and_zero_input():
    tower = AirTower(hidden=[3], dim=2)
    tower.build((None, 2))
    w1, b1 = np.array([[1.0, -1.0, 0.5], [2.0, 0.0, -1.0]]), np.array([0.0, 1.0, 0.0])
    w2, b2 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), np.array([0.0, 0.0])
    tower.set_weights([w1, b1, w2, b2])
    x = np.array([[1.0, 1.0], [0.0, 0.0]], np.float32)
    h = np.maximum(x @ w1 + b1, 0)  # [[3, 0, 0], [0, 1, 0]]
    z = h @ w2 + b2  # [[3, 0], [0, 1]]
    np.testing.assert_allclose(np.asarray(tower(x)), z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-6)
    tower.set_weights([w1, b1, w2 * 0, b2])
    assert np.all(np.isfinite(np.asarray(tower(x))))  # all-zero z -> zeros, not NaN


def test_the_tower_round_trips_through_config_and_keras_save(tmp_path):
    tower = AirTower(hidden=[16, 8], dim=4, activation="tanh", name="air_tower")
    config = tower.get_config()
    assert config["hidden"] == [16, 8] and config["dim"] == 4 and config["activation"] == "tanh"
    clone = AirTower.from_config(config)
    assert clone.get_config() == config
    listing = keras.Input((5,))
    model = keras.Model(listing, tower(listing))
    x = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    path = str(tmp_path / "tower.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert any(isinstance(layer, AirTower) for layer in loaded.layers)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        AirTower(hidden=[0], dim=4)


# ---------------------------------------------------------------- features

def catalog_table(n, day=DAY, prices=None, ages=None, taxonomies=("a.x", "b.y")):
    """A catalog like ``store.catalog`` returns (sorted, with ``top_taxonomy``)."""
    prices = prices if prices is not None else [10.0 + i for i in range(n)]
    ages = ages if ages is not None else [1 + i for i in range(n)]
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
    paths = [taxonomies[i % len(taxonomies)] for i in range(n)]
    rows = [{"listing_id": f"L{i:04d}", "shop_id": "S1", "taxonomy_id": p.replace(".", "_"), "taxonomy_path": p,
             "title": "t", "tags": ["x"], "price": prices[i], "primary_color": "red", "material": None,
             "image_uri": None, "created_ts": end - dt.timedelta(days=ages[i]), "is_active": True,
             "has_active_campaign": True} for i, p in enumerate(paths)]
    table = pa.Table.from_pylist(rows, schema=LISTINGS_SCHEMA)
    return table.append_column("top_taxonomy", pa.array([p.split(".")[0] for p in paths]))


def test_numeric_features_reuse_the_training_statistics():
    train = catalog_table(3, prices=[0.0, math.e - 1, math.e ** 2 - 1], ages=[0, math.e - 1, math.e ** 2 - 1])
    spec = feats.fit_spec(train, DAY, None, {f: Vectors(["L0000"], np.ones((1, 2))) for f in store.TEXT_FIELDS})
    # log1p values 0, 1, 2 -> mean 1, std sqrt(2/3)
    assert spec.numeric["log_price"] == pytest.approx((1.0, math.sqrt(2 / 3)))
    assert spec.numeric["log_age_days"] == pytest.approx((1.0, math.sqrt(2 / 3)), rel=1e-6)
    restored = feats.FeatureSpec.from_json(spec.to_json())
    assert restored == spec
    # a later day's catalog is scaled with the saved statistics, not its own
    later = catalog_table(2, day=DAY + dt.timedelta(days=3), prices=[math.e ** 3 - 1, 0.0], ages=[math.e - 1, 0])
    matrix, _ = feats.build_matrix(restored, later, DAY + dt.timedelta(days=3), None, None)
    price, age = matrix[:, -2], matrix[:, -1]
    np.testing.assert_allclose(price, [(3 - 1) / math.sqrt(2 / 3), (0 - 1) / math.sqrt(2 / 3)], rtol=1e-5)
    np.testing.assert_allclose(age, [0.0, -1 / math.sqrt(2 / 3)], atol=1e-5)


def test_missing_modalities_get_zero_blocks_and_indicators():
    cat = catalog_table(3)
    visual = Vectors(["L0000", "L0002"], np.array([[3.0, 4.0], [0.0, 2.0]]))  # L0001 has no image
    fields = {f: Vectors(["L0000", "L0001", "L0002"], np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 5.0]]))
              for f in store.TEXT_FIELDS}  # L0001: no known token
    spec = feats.fit_spec(cat, DAY, visual, fields)
    assert [name for name, _ in spec.blocks] == ["visual", "has_visual", "title", "tags", "taxonomy", "has_title",
                                                  "has_tags", "has_taxonomy", "log_price", "log_age_days"]
    assert spec.input_dim == 2 + 1 + 3 * 2 + 3 + 2
    matrix, coverage = feats.build_matrix(spec, cat, DAY, visual, fields)
    np.testing.assert_allclose(matrix[:, :3], [[0.6, 0.8, 1], [0, 0, 0], [0, 1, 1]])  # L2-normalized + flag
    np.testing.assert_allclose(matrix[:, 3:5], [[1, 0], [0, 0], [0, 1]])
    np.testing.assert_allclose(matrix[:, 9:12], [[1, 1, 1], [0, 0, 0], [1, 1, 1]])
    assert coverage == {"listings": 3, "with_visual": 2, "with_title": 2, "with_tags": 2, "with_taxonomy": 2}
    # a day without visual vectors still builds the trained layout: zeros and has_visual = 0
    today, _ = feats.build_matrix(spec, cat, DAY, None, fields)
    assert today.shape == matrix.shape and not today[:, :3].any()
    np.testing.assert_allclose(today[:, 3:], matrix[:, 3:])
    # a model trained without text has no text columns at all
    no_text = feats.fit_spec(cat, DAY, visual, None)
    assert no_text.input_dim == 2 + 1 + 2 and no_text.modalities == ["visual", "numeric"]
    with pytest.raises(Exception, match="3-d"):
        feats.build_matrix(spec, cat, DAY, Vectors(["L0000"], np.ones((1, 3))), fields)


def test_pair_selection_is_deterministic_and_drops_unknown_listings():
    table = pa.table({"listing_a": ["L0000", "L0001", "L0000", "X", "L0002"],
                      "listing_b": ["L0001", "L0002", "L0002", "L0001", "L0002"],
                      "sessions": [5, 1, 1, 9, 3]})
    top = top_pairs(table, 3)
    assert top.column("sessions").to_pylist() == [9, 5, 3]
    reversed_top = top_pairs(table.take(pa.array([4, 3, 2, 1, 0])), 4)
    assert reversed_top.to_pylist() == top_pairs(table, 4).to_pylist()  # file order does not matter
    rows = to_rows(top_pairs(table, 5), pa.array(["L0000", "L0001", "L0002"]))
    assert rows.counts == {"selected": 5, "dropped_not_in_catalog": 1, "dropped_self_pairs": 1, "kept": 3}
    assert sorted(zip(rows.a.tolist(), rows.b.tolist())) == [(0, 1), (0, 2), (1, 2)]


# ---------------------------------------------------------------- learning

def test_training_on_clustered_pairs_beats_chance():
    rng = np.random.default_rng(0)
    clusters, per, dim = 16, 40, 24
    centers = rng.normal(size=(clusters, dim))
    label = np.repeat(np.arange(clusters), per)
    # features: the cluster signal lives in a random rotation mixed with strong noise dimensions
    x = np.concatenate([centers[label] + 0.8 * rng.normal(size=(len(label), dim)),
                        2.0 * rng.normal(size=(len(label), 16))], axis=1).astype(np.float32)
    n_pairs = 3000
    a = rng.integers(0, len(label), n_pairs)
    b = label[a] * per + rng.integers(0, per, n_pairs)
    keep = a != b
    a, b = a[keep].astype(np.int32), b[keep].astype(np.int32)
    held_a, held_b, train_a, train_b = a[:256], b[:256], a[256:], b[256:]
    keras.utils.set_random_seed(3)
    tower = AirTower(hidden=[32], dim=16)
    tower.build((None, x.shape[1]))
    cfg = AirConfig(dim=16, hidden=[32], batch_size=128, sampled_negatives=32, temperature=0.1,
                    learning_rate=3e-3, epochs=4)
    before = in_batch_recall(embed(tower, x), held_a, held_b, 128, k=5)
    lines = []
    history = fit(tower, x, np.concatenate([train_a, train_b]), np.concatenate([train_b, train_a]), cfg, 3,
                  lines.append)
    after = in_batch_recall(embed(tower, x), held_a, held_b, 128, k=5)
    assert len(lines) == 4 and "epoch 4/4" in lines[-1]
    assert history["loss_per_epoch"][-1] < history["loss_per_epoch"][0]
    # 16 clusters of ~8 same-cluster candidates per batch of 128: a perfect tower gets ~5/8
    assert after["chance"] == pytest.approx(5 / 128, abs=0.01)
    assert after["recall"] > 3 * after["chance"]
    assert after["recall"] > before["recall"] + 0.1


# ---------------------------------------------------------------- the step on a tiny lake

def write_lake(root, with_visual=True, with_text=True, unknown_pairs=False, n=120):
    lake = Lake(str(root))
    taxonomies = ("home.decor.vases", "home.decor.lamps", "art.prints.posters", "art.prints.maps")
    cat = catalog_table(n, taxonomies=taxonomies).drop_columns(["top_taxonomy"])
    listings_dir = lake.derived("validated/listings", DAY)
    parquet.write_table(cat, fs.join(listings_dir, "part-0.parquet"))
    mark_success(listings_dir)
    ids = np.array(cat.column("listing_id").to_pylist(), dtype=object)
    group = np.arange(n) % len(taxonomies)
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(len(taxonomies), 16))
    if with_visual:
        store.write_vectors(store.vectors_path(lake, DAY, "visual"),
                            Vectors(ids, centers[group] + 0.7 * rng.normal(size=(n, 16))))
    if with_text:
        store.write_fields(store.fields_path(lake, DAY), ids,
                           {f: (centers[group, :8] + 0.7 * rng.normal(size=(n, 8))).astype(np.float32)
                            for f in store.TEXT_FIELDS})
    a = rng.integers(0, n, 1500)
    b = (rng.integers(0, n // len(taxonomies), 1500) * len(taxonomies) + group[a])
    keep = a != b
    pairs = pa.table({"listing_a": [("Z" if unknown_pairs else "") + ids[i] for i in a[keep]],
                      "listing_b": ids[b[keep]].tolist(), "sessions": rng.integers(1, 4, int(keep.sum()))})
    parquet.write_table(pairs, coclick_path(lake, DAY))
    return lake


def tiny_config(**air):
    from pipelines.config import load_config

    overrides = [f"representations.air.{k}={v}" for k, v in
                 {"dim": 16, "hidden": "[32]", "batch_size": 64, "sampled_negatives": 16, "epochs": 3,
                  "learning_rate": 0.003, "temperature": 0.1, **air}.items()]
    return load_config("local", [*overrides, "representations.quality.sample=100",
                                 "representations.quality.neighbours=5"])


@pytest.mark.parametrize("kind, match", [
    ("no_catalog", "no catalog snapshot"),
    ("no_modality", "neither visual vectors"),
    ("no_pairs", "no usable co-clicked pair"),
])
def test_prepare_skip_reasons(tmp_path, kind, match):
    if kind == "no_catalog":
        lake = Lake(str(tmp_path))
    else:
        lake = write_lake(tmp_path, with_visual=kind != "no_modality", with_text=kind != "no_modality",
                          unknown_pairs=kind == "no_pairs")
    reason = AirRepresentation().prepare(tiny_config(), DAY, lake, lambda *_: None)
    assert reason is not None and match in reason
    result = run_air(tiny_config(), DAY, lake, lambda *_: None)
    assert match in result.metrics["skipped"]
    assert not fs.exists(fs.join(lake.run_dir(DAY, "air"), "vectors.parquet"))


def test_the_step_trains_without_visual_and_reuses_its_statistics(tmp_path):
    lake = write_lake(tmp_path, with_visual=False)
    lines = []
    result = run_air(tiny_config(), DAY, lake, lines.append)
    m = result.metrics
    assert m["model_inputs"] == ["text", "numeric"] and "visual" in m["missing_modalities"]
    training = m["training"]
    assert training["pairs"]["dropped_not_in_catalog"] == 0 and training["pairs"]["kept"] > 1000
    assert len(training["loss_per_epoch"]) == 3 and any("epoch 3/3" in line for line in lines)
    recall = training["heldout_recall_at_10"]
    assert recall["after"] > recall["chance"] and recall["after"] >= recall["before"]
    assert m["quality"]["taxonomy_id"]["cosine_gap"] > 0.02
    vectors = store.load_representation(lake, DAY, "air")
    assert len(vectors) == 120 and vectors.dim == 16
    np.testing.assert_allclose(np.linalg.norm(vectors.matrix, axis=1), 1.0, rtol=1e-5)
    model_dir = result.outputs["model"]
    spec = json.loads(open(os.path.join(model_dir, feats.SPEC_FILE)).read())
    assert spec["visual_dim"] is None and spec["text_dim"] == 8
    # a second representation object inferring from the saved model gives the same vectors
    again = AirRepresentation()
    assert again.prepare(tiny_config(), DAY, lake, lambda *_: None) is None
    np.testing.assert_array_equal(again.infer(model_dir, lambda *_: None).matrix, vectors.matrix)
