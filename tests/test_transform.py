"""The transform step on tiny lakes: vocabularies (top-K and coverage-sized), hashed OOV indices, OOV
shares, sampling, splits, determinism."""
from __future__ import annotations

import collections
import glob
import hashlib
import os
import types

import pytest

from schemas.examples import seq_column

LISTING_K = 60
OOV_BUCKETS = {"listing": 64, "shop": 8, "taxonomy": 4, "query": 32, "query_token": 16}  # the tiny preset's
TARGETS = {"listing": "listing_id", "shop": "shop_id", "taxonomy": "taxonomy_id", "query": "query"}
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
    cfg, date = _run(root, [f"transform.top_k={{listing: {LISTING_K}}}", "transform.listing_coverage=null"],
                     steps=UP_TO_TRANSFORM)
    assert cfg.transform.num_oov_buckets == OOV_BUCKETS
    return root, cfg, date


def stats(root, date) -> dict:
    import json

    with open(os.path.join(root, "runs", str(date), "transform", "stats.json")) as f:
        return json.load(f)


def hashed_bucket(ids, n):
    """The OOV bucket tf.lookup.StaticVocabularyTable gives ids outside the vocabulary: Fingerprint64 mod n."""
    import tensorflow as tf

    return tf.strings.to_hash_bucket_fast(list(ids), n).numpy().tolist() if len(ids) else []


def raw_targets(root, cfg, date, rows) -> list[dict]:
    """The raw target ids (``TARGETS`` columns, null as "" like the transform's input) of transformed
    ``rows``, from the examples by impression id (the records keep only the raw listing and query)."""
    from components.lake import parquet

    by_id = {}
    for day in cfg.window.example_dates(date):
        table = parquet.read_partition(os.path.join(root, "derived", "examples", f"dt={day}"),
                                       columns=["impression_id", *TARGETS.values()])
        for row in table.to_pylist():
            by_id[row["impression_id"]] = {c: row[c] or "" for c in TARGETS.values()}
    return [by_id[row["impression_id"]] for row in rows]


def listing_counts(rows, pairs) -> collections.Counter:
    """What the listing vocabulary counts: the target and every listing sequence entry of each row."""
    counts = collections.Counter()
    for row in rows:
        counts[row["listing_id"]] += 1
        for e, a in pairs:
            if e == "listing":
                counts.update(row[seq_column(e, a)])
    return counts


def test_listing_vocabulary_is_the_top_k_of_training_targets_and_sequences(lake):
    root, cfg, date = lake
    counts = listing_counts(read_split(root, date, "train"), cfg.sessionize.pairs)
    vocab = vocabulary(root, date, "vocab_listing")
    assert len(vocab) == LISTING_K < len(counts)
    cutoff = sorted(counts.values(), reverse=True)[LISTING_K - 1]
    assert all(counts[w] >= cutoff for w in vocab)  # nothing rarer than the K-th made it in
    assert {w for w, c in counts.items() if c > cutoff} <= set(vocab)  # everything more frequent did
    assert [counts[w] for w in vocab] == sorted((counts[w] for w in vocab), reverse=True)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_indices_follow_the_vocabulary_with_hashed_oov_buckets(lake, split):
    """In-vocabulary ids get their rank; every other id K + Fingerprint64(id) mod n, the same for the same
    id wherever it appears (target or sequence, any split), and the unknown ids spread over the buckets."""
    root, cfg, date = lake
    index = {w: i for i, w in enumerate(vocabulary(root, date, "vocab_listing"))}
    n = OOV_BUCKETS["listing"]
    rows = read_split(root, date, split)
    unknown = sorted({row["listing_id"] for row in rows if row["listing_id"] not in index})
    want = dict(zip(unknown, (LISTING_K + b for b in hashed_bucket(unknown, n))))
    seen = {}
    for row in rows:
        got = row["listing_id_idx"]
        assert got == index.get(row["listing_id"], want.get(row["listing_id"]))
        assert seen.setdefault(row["listing_id"], got) == got  # deterministic per id
        for e, a in cfg.sessionize.pairs:
            if e == "listing":
                seq = row[seq_column(e, a)]
                buckets = hashed_bucket(seq, n)
                assert row[seq_column(e, a) + "_idx"] == [index[w] if w in index else LISTING_K + b
                                                          for w, b in zip(seq, buckets)]
    assert 0 < len(unknown) < len({row["listing_id"] for row in rows})
    used = {want[w] for w in unknown}
    assert all(LISTING_K <= i < LISTING_K + n for i in used)
    # the unknown listings do not collapse into one index: they fill about as many buckets as ids thrown
    # at random into n buckets would (1 - (1 - 1/n)^u of them)
    expected = n * (1 - (1 - 1 / n) ** len(unknown))
    assert len(unknown) > n and len(used) >= 0.85 * expected, (len(unknown), len(used), expected)
    # the other entities: same rule with their own K and bucket counts
    raw = raw_targets(root, cfg, date, rows)
    assert [r["listing_id"] for r in raw] == [row["listing_id"] for row in rows]
    for entity, column in TARGETS.items():
        vocab = {w: i for i, w in enumerate(vocabulary(root, date, f"vocab_{entity}"))}
        k, m = len(vocab), OOV_BUCKETS[entity]
        ids = [r[column] for r in raw]
        buckets = hashed_bucket(ids, m)
        assert [row[f"{column}_idx"] for row in rows] == [vocab[w] if w in vocab else k + b
                                                          for w, b in zip(ids, buckets)], entity


def test_oov_shares_per_split_and_entity_match_a_plain_python_count(lake):
    root, cfg, date = lake
    found = stats(root, date)
    assert found["num_oov_buckets"] == OOV_BUCKETS and "listing_coverage" not in found
    vocabs = {e: set(vocabulary(root, date, f"vocab_{e}")) for e in TARGETS}
    assert found["vocabulary_sizes"]["listing"] == LISTING_K
    for split in ("train", "validation", "test"):
        rows = read_split(root, date, split)
        raw = raw_targets(root, cfg, date, rows)
        want = {e: sum(r[c] not in vocabs[e] for r in raw) for e, c in TARGETS.items()}
        got = found["splits"][split]
        assert got["rows"] == len(rows) and got["oov"] == want, split
        assert got["oov_share"] == {e: round(n / len(rows), 4) for e, n in want.items()}
        assert got["listing_oov_share"] == got["oov_share"]["listing"]
    assert found["splits"]["test"]["oov"]["listing"] > 0  # the top-60 vocabulary leaves test targets out


def test_coverage_sizes_the_listing_vocabulary(lake, tmp_path):
    """With transform.listing_coverage, K is the fewest listings that cover that share of the training
    split's listing occurrences (targets + sequences), capped by top_k; stats.json records both."""
    import shutil

    from components.lake import Lake
    from components.transform import step

    root, cfg, date = lake
    copy = str(tmp_path / "lake")
    shutil.copytree(os.path.join(root, "derived", "examples"), os.path.join(copy, "derived", "examples"))
    counts = listing_counts(read_split(root, date, "train"), cfg.sessionize.pairs)
    ranked = sorted(counts.values(), reverse=True)
    total = sum(ranked)
    for coverage, cap in ((0.6, 50_000), (0.9, 25)):
        want_k = next(k for k in range(1, len(ranked) + 1) if sum(ranked[:k]) >= coverage * total)
        other = cfg.model_copy(deep=True)
        other.transform.listing_coverage, other.transform.top_k["listing"] = coverage, cap
        step.run(other, date, Lake(copy), progress=lambda *_: None)
        found = stats(copy, date)
        k = min(want_k, cap)
        assert found["vocabulary_sizes"]["listing"] == found["listing_coverage"]["k"] == k, (coverage, cap)
        assert found["listing_coverage"]["achieved"] == round(sum(ranked[:k]) / total, 6)
        assert found["listing_coverage"]["occurrences"] == total
        assert found["listing_coverage"]["limited_by"] == ("cap" if want_k > cap else "coverage")
        vocab = vocabulary(copy, date, "vocab_listing")
        assert sorted((counts[w] for w in vocab), reverse=True) == ranked[:k]  # the K most frequent
    assert 25 < want_k < len(ranked)  # the last case: the cap, not the coverage, set K


def test_choose_k_by_hand():
    from components.transform.transforms import choose_k

    # ids a:5 b:3 c:1 d:1 occurrences (10); as a histogram of (frequency, ids seen that often)
    hist = [(5, 1), (3, 1), (1, 2)]
    got = choose_k(hist, 0.8, cap=100)
    assert got == {"k": 2, "achieved": 0.8, "coverage": 0.8, "occurrences": 10, "distinct": 4, "eligible": 4,
                   "limited_by": "coverage"}                       # a + b = 8 of 10, exactly 0.8
    assert choose_k(hist, 0.5, cap=100)["k"] == 1                  # a alone: 5 of 10
    assert choose_k(hist, 0.81, cap=100)["k"] == 3                 # 8 < 8.1 <= 9
    assert choose_k(hist, 1.0, cap=100)["k"] == 4
    assert choose_k([(5, 1), (3, 1), (1, 1), (1, 1)], 0.7, cap=100)["k"] == 2  # 0.7 * 10 is 7, not 7.000001
    capped = choose_k(hist, 0.95, cap=1)
    assert (capped["k"], capped["achieved"], capped["limited_by"]) == (1, 0.5, "cap")
    # frequency_threshold 2: c and d cannot enter, so 0.9 is out of reach
    short = choose_k(hist, 0.9, cap=100, frequency_threshold=2)
    assert (short["k"], short["achieved"], short["eligible"], short["limited_by"]) == (2, 0.8, 2, "threshold")
    # ties: four ids seen 2 times after one seen 12 (20 in all): 0.7 needs 14 -> 12 + one of the ties
    assert choose_k([(12, 1), (2, 4)], 0.7, cap=100)["k"] == 2
    assert choose_k([], 0.9, cap=100)["k"] == 1 and choose_k([], 0.9, cap=100)["achieved"] == 0.0


@pytest.mark.parametrize("beam_args", [
    [],
    pytest.param(["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
                 marks=pytest.mark.slow),
])
def test_vocabulary_coverage_job_on_hand_made_batches(beam_args):
    """The Beam job: per-batch counts summed across batches, targets and sequences together, empty strings
    and strings with a newline skipped (tft.vocabulary filters them), then the K for the coverage."""
    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from components.transform.transforms import VocabularyCoverage

    def batch(targets, sequences):
        return pa.RecordBatch.from_arrays([pa.array([[t] for t in targets]), pa.array(sequences)],
                                          names=["listing_id", "seq_listing_view"])

    batches = [batch(["a", "b", ""], [["a", "a", "c"], [], ["b", "x\ny"]]),   # a:3 b:2 c:1
               batch(["a", "d"], [["b", "a"], ["e"]])]                       # a:5 b:3 c:1 d:1 e:1 in all
    with TestPipeline(options=PipelineOptions(beam_args) if beam_args else None) as p:
        got = (p | beam.Create(batches)
               | VocabularyCoverage(["listing_id", "seq_listing_view"], coverage=0.8, cap=10))
        # 0.8 of 11 needs 9 occurrences: a (5) + b (3) are 8, one of the ids seen once makes 9
        assert_that(got, equal_to([{"k": 3, "achieved": 0.818182, "coverage": 0.8, "occurrences": 11, "distinct": 5,
                                    "eligible": 5, "limited_by": "coverage"}]))


def test_num_oov_buckets_config_takes_an_int_or_a_dict_per_entity():
    from pydantic import ValidationError

    from components.transform.config import DEFAULT_NUM_OOV_BUCKETS, VOCABULARIES, TransformConfig

    assert TransformConfig(num_oov_buckets=3).num_oov_buckets == {e: 3 for e in VOCABULARIES}
    assert TransformConfig(num_oov_buckets={"listing": 500}).num_oov_buckets == {**DEFAULT_NUM_OOV_BUCKETS,
                                                                                 "listing": 500}
    for bad in ({"listings": 5}, {"shop": 0}, 0):
        with pytest.raises(ValidationError):
            TransformConfig(num_oov_buckets=bad)
    with pytest.raises(ValidationError):
        TransformConfig(listing_coverage=1.5)
    assert TransformConfig().listing_coverage is None


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
