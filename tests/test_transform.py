"""The transform step on tiny lakes: vocabularies, indices, sampling, splits, determinism."""
from __future__ import annotations

import collections
import glob
import hashlib
import os
import types

import pytest

from schemas.examples import seq_column

LISTING_K = 60
UP_TO_TRANSFORM = ["generate", "validate", "data_gate", "sessionize", "transform"]


def _run(root, overrides, date=None, steps=None):
    from components.lake import Lake
    from pipelines.config import load_config
    from pipelines.runner import run_dag

    cfg = load_config("tiny", overrides)
    date = date or cfg.default_date
    summary = run_dag(cfg, date, Lake(root), only=steps, progress=lambda *_: None)
    assert summary.ok, summary.render()
    return cfg, date


def read_split(root, date, split):
    """Every record of a split as a dict of numpy values (sparse features as lists)."""
    import tensorflow as tf
    import tensorflow_transform as tft

    out_dir = os.path.join(root, "runs", str(date), "transform")
    spec = tft.TFTransformOutput(out_dir).transformed_feature_spec()
    files = sorted(glob.glob(os.path.join(out_dir, split, "*.tfrecord.gz")))
    rows = []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024):
        parsed = tf.io.parse_example(batch, spec)
        columns = {k: (tf.RaggedTensor.from_sparse(v).to_list() if isinstance(v, tf.SparseTensor) else v.numpy().tolist())
                   for k, v in parsed.items()}
        for i in range(len(columns["impression_id"])):
            rows.append({k: _decode(v[i]) for k, v in columns.items()})
    return rows


def _decode(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def vocabulary(root, date, name):
    import tensorflow_transform as tft

    out = tft.TFTransformOutput(os.path.join(root, "runs", str(date), "transform"))
    return [w.decode() if isinstance(w, bytes) else w for w in out.vocabulary_by_name(name)]


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("transform") / "lake")
    cfg, date = _run(root, [f"transform.top_k={{listing: {LISTING_K}}}"], steps=UP_TO_TRANSFORM)
    return root, cfg, date


def test_listing_vocabulary_is_the_top_k_of_training_targets_and_sequences(lake):
    root, cfg, date = lake
    train = read_split(root, date, "train")
    counts = collections.Counter()
    for row in train:
        counts[row["listing_id"]] += 1
        for e, a in cfg.sessionize.pairs:
            if e == "listing":
                counts.update(row[seq_column(e, a)])
    vocab = vocabulary(root, date, "vocab_listing")
    assert len(vocab) == LISTING_K < len(counts)
    cutoff = sorted(counts.values(), reverse=True)[LISTING_K - 1]
    assert all(counts[w] >= cutoff for w in vocab)  # nothing rarer than the K-th made it in
    assert {w for w, c in counts.items() if c > cutoff} <= set(vocab)  # everything more frequent did
    assert [counts[w] for w in vocab] == sorted((counts[w] for w in vocab), reverse=True)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_indices_follow_the_vocabulary_with_one_oov_bucket(lake, split):
    root, cfg, date = lake
    index = {w: i for i, w in enumerate(vocabulary(root, date, "vocab_listing"))}
    rows = read_split(root, date, split)
    oov = 0
    for row in rows:
        assert row["listing_id_idx"] == index.get(row["listing_id"], LISTING_K)
        oov += row["listing_id"] not in index
        for e, a in cfg.sessionize.pairs:
            if e == "listing":
                assert row[seq_column(e, a) + "_idx"] == [index.get(w, LISTING_K) for w in row[seq_column(e, a)]]
    assert 0 < oov < len(rows)


def test_splits_and_sampling(lake):
    from components.lake import parquet

    root, cfg, date = lake
    examples = {}
    for day in cfg.window.example_dates(date):
        examples[day] = parquet.read_partition(os.path.join(root, "derived", "examples", f"dt={day}"),
                                               columns=["impression_id", "clicked"]).to_pylist()
    train_day, = cfg.window.train_dates(date)
    train = read_split(root, date, "train")
    ids = {r["impression_id"] for r in train}
    clicks = {e["impression_id"] for e in examples[train_day] if e["clicked"]}
    assert clicks <= ids  # every training click is kept
    negatives = [e for e in examples[train_day] if not e["clicked"]]
    kept = sum(e["impression_id"] in ids for e in negatives) / len(negatives)
    assert abs(kept - cfg.sessionize.negative_sample_rate) < 0.05
    assert all(r["sample_rate"] == (1.0 if r["clicked"] else cfg.sessionize.negative_sample_rate) for r in train)
    for split, day in (("validation", cfg.window.validation_date(date)), ("test", cfg.window.test_date(date))):
        rows = read_split(root, date, split)
        assert sorted(r["impression_id"] for r in rows) == sorted(e["impression_id"] for e in examples[day])
        assert all(r["sample_rate"] == 1.0 for r in rows)


def _digests(directory):
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "**", "*"), recursive=True)):
        if os.path.isfile(path) and not path.endswith(("manifest.json", "_SUCCESS", "fingerprint.pb")):
            out[os.path.relpath(path, directory)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def test_forced_rerun_gives_identical_records_and_vocabularies(lake):
    from components.lake import Lake
    from components.transform import step

    root, cfg, date = lake
    out = os.path.join(root, "runs", str(date), "transform")
    keep = lambda d: {k: v for k, v in d.items() if not k.startswith(("transform_fn/saved_model", "transform_fn/variables"))}
    before = keep(_digests(out))
    forced = cfg.model_copy(update={"runtime": types.SimpleNamespace(force=True)})
    step.run(forced, date, Lake(root), progress=lambda *_: None)
    after = keep(_digests(out))
    assert before == after and any(k.startswith("train/") for k in after)


def test_two_days_of_data_train_on_the_first_with_a_validation_fraction(tmp_path):
    root = str(tmp_path / "lake")
    overrides = ["marketplace_days=2", "window.validation=fraction", "window.validation_fraction=0.2",
                 "sessionize.allow_immature_labels=true"]
    cfg, date = _run(root, overrides, date=__import__("datetime").date(2026, 3, 2), steps=UP_TO_TRANSFORM)
    assert sorted(os.listdir(os.path.join(root, "raw", "events"))) == ["dt=2026-03-01", "dt=2026-03-02"]
    train, validation = read_split(root, date, "train"), read_split(root, date, "validation")
    test = read_split(root, date, "test")
    assert train and validation and test
    assert not {r["impression_id"] for r in train} & {r["impression_id"] for r in validation}
    from components.lake import parquet
    n1 = parquet.count_rows(os.path.join(root, "derived", "examples", "dt=2026-03-01"))
    assert abs(len(validation) / n1 - 0.2) < 0.05
    n2 = parquet.count_rows(os.path.join(root, "derived", "examples", "dt=2026-03-02"))
    assert len(test) == n2


@pytest.mark.slow
@pytest.mark.parametrize("beam_args", [
    ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
])
def test_other_runners_give_identical_records(lake, tmp_path, beam_args):
    import shutil

    from components.lake import Lake
    from components.transform import step

    root, cfg, date = lake
    copy = str(tmp_path / "lake")
    shutil.copytree(os.path.join(root, "derived", "examples"), os.path.join(copy, "derived", "examples"))
    other = cfg.model_copy(deep=True)
    other.beam.extra_args = list(beam_args)
    step.run(other, date, Lake(copy), progress=lambda *_: None)
    for sub in ("train", "validation", "test", "transform_fn/assets"):
        mine = _digests(os.path.join(copy, "runs", str(date), "transform", sub))
        assert mine and mine == _digests(os.path.join(root, "runs", str(date), "transform", sub))
