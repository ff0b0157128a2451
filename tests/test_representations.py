"""Shared representation machinery: quality checks, retrain cadence, the step driver,
and the fastText skip-gram / text representations (issue 4)."""
from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pyarrow as pa
import pytest

from components.lake import Lake, fs
from components.representations import driver, fasttext_train, quality, skipgram
from components.representations.cadence import reusable_model
from components.representations.config import QualityConfig, SkipgramConfig
from components.representations.store import Vectors, read_vectors, vectors_path, write_vectors
from components.representations.text_vectors import keep_tokens, pool_fields, token_counts
from components.step import StepError
from pipelines.config import load_config

D = dt.date(2026, 3, 4)


def labelled(n=600, groups=12, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, groups, n)
    ids = np.array([f"L{i:05d}" for i in range(n)], dtype=object)
    table = pa.table({"listing_id": ids.tolist(), "taxonomy_id": [f"t{g}" for g in label]})
    return ids, label, table


# ---- quality ---------------------------------------------------------------------------------

def test_quality_passes_clustered_vectors_and_fails_random_ones():
    ids, label, table = labelled()
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((12, 16))
    good = Vectors(ids, centers[label] + 0.5 * rng.standard_normal((len(ids), 16)))
    bad = Vectors(ids, rng.standard_normal((len(ids), 16)))
    cfg = QualityConfig(sample=300)
    ok = quality.evaluate(good, table, ["taxonomy_id"], cfg, seed=7)
    rnd = quality.evaluate(bad, table, ["taxonomy_id"], cfg, seed=7)
    assert quality.failures(ok, ["taxonomy_id"], ["taxonomy_id"], cfg) == []
    assert ok["taxonomy_id"]["purity_ratio"] > 5
    problems = quality.failures(rnd, ["taxonomy_id"], ["taxonomy_id"], cfg)
    assert len(problems) == 2, problems  # both the cosine gap and the purity say "random"
    assert abs(rnd["taxonomy_id"]["cosine_gap"]) < 0.02
    assert 0.5 < rnd["taxonomy_id"]["purity_ratio"] < 1.5


def test_quality_numbers_equal_a_brute_force_computation():
    ids, label, table = labelled(n=80, groups=4, seed=3)
    rng = np.random.default_rng(4)
    matrix = np.eye(4)[label] + 0.8 * rng.standard_normal((80, 4))
    cfg = QualityConfig(sample=80, neighbours=5)
    report = quality.evaluate(Vectors(ids, matrix), table, ["taxonomy_id"], cfg, seed=0)["taxonomy_id"]
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    cos = unit @ unit.T
    same = (label[:, None] == label[None, :]) & ~np.eye(80, dtype=bool)
    diff = label[:, None] != label[None, :]
    assert report["cosine_gap"] == pytest.approx(cos[same].mean() - cos[diff].mean(), abs=1e-4)
    np.fill_diagonal(cos, -np.inf)
    nearest = np.argsort(-cos, axis=1, kind="stable")[:, :5]
    assert report["purity_at_5"] == pytest.approx((label[nearest] == label[:, None]).mean(), abs=0.02)
    assert report["chance_purity"] == pytest.approx(((np.bincount(label) / 80) ** 2).sum(), abs=1e-4)


def test_zero_vectors_do_not_count_and_missing_listings_are_ignored():
    ids, label, table = labelled(n=100, groups=2)
    matrix = np.eye(2)[label].astype(np.float32)
    matrix[:10] = 0
    report = quality.evaluate(Vectors(ids[:90], matrix[:90]), table, ["taxonomy_id"], QualityConfig(sample=50), seed=0)
    assert report["listings_with_vector"] == 80 and report["catalog_listings"] == 100
    assert report["taxonomy_id"]["purity_at_10"] == 1.0


# ---- vector tables ---------------------------------------------------------------------------

def test_vector_tables_round_trip_sorted_and_refuse_nan(tmp_path):
    v = Vectors(np.array(["b", "a", "c"], dtype=object), np.arange(6, dtype=np.float32).reshape(3, 2))
    write_vectors(str(tmp_path / "v.parquet"), v)
    back = read_vectors(str(tmp_path / "v.parquet"))
    assert back.ids.tolist() == ["a", "b", "c"]
    assert back.matrix.tolist() == [[2, 3], [0, 1], [4, 5]]
    assert back.take(["c", "zz"]).tolist() == [[4, 5], [0, 0]]
    v.matrix[1, 0] = np.nan
    with pytest.raises(StepError, match="NaN"):
        write_vectors(str(tmp_path / "w.parquet"), v)
    assert not os.path.exists(tmp_path / "w.parquet")
    assert read_vectors(str(tmp_path / "missing.parquet")) is None


# ---- cadence ---------------------------------------------------------------------------------

def fake_run(lake: Lake, day: dt.date, step: str, origin: dt.date, model=True):
    run_dir = lake.run_dir(day, step)
    os.makedirs(run_dir, exist_ok=True)
    if model and origin == day:
        os.makedirs(os.path.join(run_dir, "model"), exist_ok=True)
    fs.write_text(os.path.join(run_dir, "manifest.json"), json.dumps({"metrics": {"model_origin": origin.isoformat()}}))
    fs.write_text(os.path.join(run_dir, "_SUCCESS"), "")


def test_cadence_reuses_within_the_window_and_follows_reuse_chains(tmp_path):
    lake = Lake(str(tmp_path))
    d1, d2 = D - dt.timedelta(days=3), D - dt.timedelta(days=1)
    fake_run(lake, d1, "visual", d1)
    fake_run(lake, d2, "visual", d1)  # D-1 reused the model trained for D-3
    assert reusable_model(lake, D, "visual", 7) == (d1, lake.path("runs", d1.isoformat(), "visual", "model"))
    assert reusable_model(lake, D, "visual", 3) is None  # D-3 is too old for a 3-day cadence
    assert reusable_model(lake, D, "visual", 1) is None  # daily: always retrain


def test_cadence_ignores_unfinished_runs(tmp_path):
    lake = Lake(str(tmp_path))
    d1 = D - dt.timedelta(days=1)
    fake_run(lake, d1, "skipgram", d1)
    os.remove(os.path.join(lake.run_dir(d1, "skipgram"), "_SUCCESS"))
    assert reusable_model(lake, D, "skipgram", 7) is None


# ---- text filter and pooling -----------------------------------------------------------------

def test_rare_token_filter_keeps_listed_tokens_only():
    lines = pa.array(["a b c a", "", "c d", "b b"])
    assert token_counts(lines) == {"a": 2, "b": 3, "c": 2, "d": 1}
    assert keep_tokens(lines, pa.array(["a", "d"])).to_pylist() == ["a a", "", "d", ""]


def test_field_pooling_averages_known_tokens_per_field():
    texts = pa.table({"listing_id": ["x", "y"], "title": ["red ring zzz", ""], "tags": ["ring", None],
                      "taxonomy": ["jewelry rings", "red"]})
    vocab = ["red", "ring", "jewelry"]
    matrix = np.array([[1, 0], [0, 2], [4, 4]], dtype=np.float32)
    pooled = pool_fields(texts, vocab, matrix)
    assert pooled["title"][0].tolist() == [[0.5, 1.0], [0, 0]]
    assert pooled["title"][1].tolist() == [2, 0]
    assert pooled["tags"][0].tolist() == [[0, 2], [0, 0]]
    assert pooled["taxonomy"][0].tolist() == [[4, 4], [1, 0]]  # "rings" is not in the vocabulary


# ---- fastText --------------------------------------------------------------------------------

def session_corpus(path, seed=0, lines=3000):
    """Sessions that stay inside one of 8 groups of 20 listings each."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for _ in range(lines):
            g = rng.integers(8)
            f.write(" ".join(f"g{g}_{i}" for i in rng.integers(0, 20, rng.integers(2, 8))) + "\n")


def test_skipgram_training_is_finite_deterministic_and_learns_groups(tmp_path):
    corpus = str(tmp_path / "c.txt")
    session_corpus(corpus)
    params = dict(model="skipgram", loss="hs", dim=16, ws=5, epoch=5, lr=0.05, minCount=1, minn=0, maxn=0, thread=1)
    m1 = fasttext_train.train(corpus, str(tmp_path / "m1"), **params)
    m2 = fasttext_train.train(corpus, str(tmp_path / "m2"), **params)
    words = sorted(fasttext_train.vocabulary(m1))
    v1, v2 = fasttext_train.word_vectors(m1, words), fasttext_train.word_vectors(m2, words)
    assert np.isfinite(v1).all() and np.array_equal(v1, v2)
    loaded = fasttext_train.load(str(tmp_path / "m1"))
    assert np.array_equal(fasttext_train.word_vectors(loaded, words), v1)
    table = pa.table({"listing_id": words, "taxonomy_id": [w.split("_")[0] for w in words]})
    report = quality.evaluate(Vectors(words, v1), table, ["taxonomy_id"], QualityConfig(sample=160), seed=0)
    assert report["taxonomy_id"]["cosine_gap"] > 0.2 and report["taxonomy_id"]["purity_ratio"] > 3


def test_an_empty_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "c.txt").write_text("")
    with pytest.raises(StepError, match="empty"):
        fasttext_train.train(str(tmp_path / "c.txt"), str(tmp_path / "m"), model="skipgram")


# ---- the driver, through the skipgram step ---------------------------------------------------

@pytest.fixture
def skipgram_lake(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path / "lake"))
    for day in (D - dt.timedelta(days=1), D):
        path = skipgram.corpus_file(lake, day, "skipgram.txt")
        os.makedirs(os.path.dirname(path))
        session_corpus(path, seed=day.day)
    words = [f"g{g}_{i}" for g in range(8) for i in range(20)]
    labels = pa.table({"listing_id": words, "taxonomy_id": [w.split("_")[0] for w in words]})
    monkeypatch.setattr(driver, "quality_labels", lambda config, date, lake: labels)
    return lake


def config_with(*overrides):
    return load_config("tiny", ["representations.skipgram.dim=16", *overrides])


def test_skipgram_step_reuses_its_model_within_the_cadence(skipgram_lake):
    lake = skipgram_lake
    cfg = config_with("representations.skipgram.retrain_every_days=2")
    first = skipgram.run(cfg, D - dt.timedelta(days=1), lake, progress=lambda *_: None)
    fs.write_text(fs.join(lake.run_dir(D - dt.timedelta(days=1), "skipgram"), "manifest.json"),
                  json.dumps({"metrics": first.metrics}))
    fs.write_text(fs.join(lake.run_dir(D - dt.timedelta(days=1), "skipgram"), "_SUCCESS"), "")
    second = skipgram.run(cfg, D, lake, progress=lambda *_: None)
    assert first.metrics["retrained"] and not second.metrics["retrained"]
    assert second.metrics["model_origin"] == (D - dt.timedelta(days=1)).isoformat()
    assert any("reused" in n for n in second.notes)
    assert np.array_equal(read_vectors(vectors_path(lake, D, "skipgram")).matrix,
                          read_vectors(vectors_path(lake, D - dt.timedelta(days=1), "skipgram")).matrix)
    assert not os.path.exists(os.path.join(lake.run_dir(D, "skipgram"), "model"))


def test_disabled_representation_is_skipped_and_says_so(skipgram_lake):
    result = skipgram.run(config_with("representations.skipgram.enabled=false"), D, skipgram_lake)
    assert result.metrics["skipped"].startswith("skipgram disabled by config")
    assert not fs.exists(vectors_path(skipgram_lake, D, "skipgram"))


def test_a_broken_trainer_fails_the_step(skipgram_lake, monkeypatch):
    rng = np.random.default_rng(0)
    monkeypatch.setattr(skipgram.SkipgramRepresentation, "infer",
                        lambda self, model_dir, progress: Vectors([f"g{g}_{i}" for g in range(8) for i in range(20)],
                                                                  rng.standard_normal((160, 16))))
    with pytest.raises(StepError, match="no better than random"):
        skipgram.run(config_with(), D, skipgram_lake, progress=lambda *_: None)


def test_rare_tokens_of_recently_clicked_ads_survive_the_filter(tmp_path):
    from components.lake import parquet
    from components.representations.text_vectors import TextRepresentation
    from components.validate.step import validated_dir

    lake = Lake(str(tmp_path / "lake"))
    common = " ".join(f"w{i}" for i in range(12))
    lines = [common] * 12 + ["clickedrare " + common, "unclickedrare " + common, ""]
    corpus = skipgram.corpus_file(lake, D, "text.txt")
    fs.write_text(corpus, "\n".join(lines) + "\n")
    day = D - dt.timedelta(days=2)
    parquet.write_table(pa.table({"listing_id": ["A", "B"], "query": ["Query-Word!", "ignored"],
                                  "clicked": [True, False]}), fs.join(validated_dir(lake, "impressions", day), "p.parquet"))
    fs.write_text(fs.join(validated_dir(lake, "impressions", day), "_SUCCESS"), "")
    rep = TextRepresentation()
    cfg = load_config("tiny", ["representations.text.dim=8", "representations.text.epochs=1"])
    rep.cfg, rep.corpora, rep.corpus, rep.lake, rep.ad_days = cfg.representations.text, cfg.corpora, corpus, lake, [day]
    rep.texts = pa.table({"listing_id": ["A", "B"], "title": ["clickedrare", "unclickedrare"], "tags": ["", ""],
                          "taxonomy": ["", ""], "text": ["clickedrare", "unclickedrare"]})
    metrics = rep.train(str(tmp_path / "model"), progress=lambda *_: None)
    vocab = set(fasttext_train.vocabulary(fasttext_train.load(str(tmp_path / "model"))))
    assert "clickedrare" in vocab and "unclickedrare" not in vocab
    assert metrics["kept_below_min_count_as_ad_tokens"] == 1 and metrics["dropped_tokens"] == 1
