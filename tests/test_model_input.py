"""The trainers' tf.data input (components/models/input.py) on a hand-made transform output.

The fixture writes what the transform step leaves in ``runs/D/transform/``: GZIP TFRecord
shards of transformed tf.Examples per split, ``transformed_metadata/`` (schema + asset map),
vocabulary files under ``transform_fn/assets/`` and ``stats.json``; every record's expected
dense tensors are computed here in plain Python.
"""
from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from components.models import input as mi  # noqa: E402

M, Q = 6, 3                           # max_seq_len, max_query_tokens used in the tests
FILE_ROWS = (13, 12, 12)              # three shards of different sizes
N = sum(FILE_ROWS)
INT_SEQS = ("seq_listing_view_idx", "seq_listing_cart_add_idx", "seq_shop_view_idx", "seq_query_search_idx")
RAW_SEQS = ("seq_listing_view", "seq_listing_cart_add")
INT_SCALARS = ("listing_id_idx", "shop_id_idx", "taxonomy_id_idx", "query_idx", "platform_idx", "position",
               "logged_in", "hour_of_day", "day_of_week")
FLOAT_SCALARS = ("price_log_z", "sample_rate")
STRINGS = ("impression_id", "listing_id", "query")
VOCABS = {"listing": 5, "shop": 3, "taxonomy": 2, "query": 4, "query_token": 6, "platform": 3}
DOMAIN_OF = {"listing": ("listing_id_idx", "seq_listing_view_idx", "seq_listing_cart_add_idx"),
             "shop": ("shop_id_idx", "seq_shop_view_idx"), "taxonomy": ("taxonomy_id_idx",),
             "query": ("query_idx", "seq_query_search_idx"), "query_token": ("query_tokens_idx",),
             "platform": ("platform_idx",)}


def _spec():
    spec = {name: tf.io.FixedLenFeature([], tf.int64) for name in INT_SCALARS + ("clicked", "purchased")}
    spec.update({name: tf.io.FixedLenFeature([], tf.float32) for name in FLOAT_SCALARS})
    spec.update({name: tf.io.FixedLenFeature([], tf.string) for name in STRINGS})
    spec.update({name: tf.io.VarLenFeature(tf.int64) for name in INT_SEQS + ("query_tokens_idx",)})
    spec.update({name: tf.io.VarLenFeature(tf.string) for name in RAW_SEQS})
    return spec


def _row(i: int) -> dict:
    """Record i: sequence lengths cycle through 0..10 (past M) and query tokens through 0..4 (past Q)."""
    n, k = (i * 5) % 11, i % 5
    return {
        "impression_id": f"imp-{i:03d}", "listing_id": f"L{i}", "query": f"q {i}",
        **{name: (i * (j + 3)) % 7 for j, name in enumerate(INT_SCALARS)},
        "logged_in": i % 2, "clicked": int(i % 3 == 0), "purchased": int(i % 6 == 0),
        "price_log_z": i / 8 - 2.0, "sample_rate": 0.25 if i % 3 else 1.0,
        # newest first: position 0 is the most recent action
        "seq_listing_view_idx": [100 * i + j for j in range(n)],
        "seq_listing_cart_add_idx": [200 * i + j for j in range((n + 2) % 4)],
        "seq_shop_view_idx": [300 * i + j for j in range(n)],
        "seq_query_search_idx": [400 * i + j for j in range(k)],
        "query_tokens_idx": [500 * i + j for j in range(k)],
        "seq_listing_view": [f"L{i}-{j}" for j in range(n)],
        "seq_listing_cart_add": [f"C{i}-{j}" for j in range((n + 2) % 4)],
    }


def _example(row: dict) -> bytes:
    spec = _spec()

    def feature(name, v):
        v = v if isinstance(v, list) else [v]
        dtype = spec[name].dtype
        if dtype == tf.string:
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[s.encode() for s in v]))
        if dtype == tf.float32:
            return tf.train.Feature(float_list=tf.train.FloatList(value=v))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

    return tf.train.Example(features=tf.train.Features(
        feature={k: feature(k, v) for k, v in row.items()})).SerializeToString()


def _write_transform_output(root: str, splits=("train", "test"), stats=True, domains=True, oov=1) -> str:
    """A transform output; ``oov``: OOV buckets per entity (an int: the same for all, as in stats.json
    before the per-entity counts)."""
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    out = os.path.join(root, "transform")
    schema = schema_utils.schema_from_feature_spec(_spec())
    if domains:
        for feature in schema.feature:
            for entity, names in DOMAIN_OF.items():
                if feature.name in names:
                    n = 1 if entity == "platform" else oov if isinstance(oov, int) else oov[entity]
                    feature.int_domain.min, feature.int_domain.max = 0, VOCABS[entity] + n - 1
                    feature.int_domain.is_categorical = True
    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(schema), os.path.join(out, "transformed_metadata"))
    assets = os.path.join(out, "transform_fn", "assets")
    os.makedirs(assets)
    for entity, size in VOCABS.items():
        with open(os.path.join(assets, f"vocab_{entity}"), "w") as f:
            f.write("".join(f"{entity}{j}\n" for j in range(size)))
    with open(os.path.join(out, "transformed_metadata", "asset_map"), "w") as f:
        json.dump({f"vocab_{e}": f"vocab_{e}" for e in VOCABS}, f)
    if stats:
        with open(os.path.join(out, "stats.json"), "w") as f:
            json.dump({"num_oov_buckets": oov, "top_k": {}, "splits": {s: {"rows": N, "files": 3} for s in splits}}, f)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for split in splits:
        os.makedirs(os.path.join(out, split))
        start = 0
        for shard, rows in enumerate(FILE_ROWS):
            path = os.path.join(out, split, f"part-{shard:05d}-of-{len(FILE_ROWS):05d}.tfrecord.gz")
            with tf.io.TFRecordWriter(path, options=options) as writer:
                for i in range(start, start + rows):
                    writer.write(_example(_row(i)))
            start += rows
        open(os.path.join(out, split, "_SUCCESS"), "w").close()  # not a shard: must be skipped
    return out


@pytest.fixture(scope="module")
def transform_dir(tmp_path_factory):
    return _write_transform_output(str(tmp_path_factory.mktemp("model_input")))


def _expected(i: int) -> dict:
    """Record i as make_dataset(max_seq_len=M, max_query_tokens=Q) must return it."""
    row = _row(i)

    def pad(values, width, fill):
        return (values[:width] + [fill] * width)[:width]

    out = {name: row[name] for name in INT_SCALARS}
    out.update({name: np.float32(row[name]) for name in FLOAT_SCALARS + ("clicked", "purchased")})
    out.update({name: row[name].encode() for name in STRINGS})
    out.update({name: pad(row[name], M, -1) for name in INT_SEQS})
    out["query_tokens_idx"] = pad(row["query_tokens_idx"], Q, -1)
    out.update({name: pad([s.encode() for s in row[name]], M, b"") for name in RAW_SEQS})
    return out


def _rows(batch: dict) -> list[dict]:
    """A batch of numpy arrays -> one dict per record."""
    size = len(batch["impression_id"])
    return [{k: (v[r].tolist() if v.ndim > 1 else v[r].item() if v.dtype != object else v[r])
             for k, v in batch.items()} for r in range(size)]


def _ids(ds) -> list[list[bytes]]:
    return [b["impression_id"].numpy().tolist() for b in ds]


def _make(transform_dir, split="train", batch_size=8, **kw):
    kw.setdefault("shuffle", False)
    kw.setdefault("seed", 7)
    return mi.make_dataset(transform_dir, split, batch_size, max_seq_len=M, max_query_tokens=Q, **kw)


def test_every_key_is_dense_with_the_documented_shape_and_dtype(transform_dir):
    ds = _make(transform_dir, batch_size=8)
    expected = {**{k: ((None,), tf.int64) for k in INT_SCALARS},
                **{k: ((None,), tf.float32) for k in FLOAT_SCALARS + ("clicked", "purchased")},
                **{k: ((None,), tf.string) for k in STRINGS},
                **{k: ((None, M), tf.int64) for k in INT_SEQS}, "query_tokens_idx": ((None, Q), tf.int64),
                **{k: ((None, M), tf.string) for k in RAW_SEQS}}
    assert {k: (tuple(s.shape), s.dtype) for k, s in ds.element_spec.items()} == expected
    batches = list(ds)
    assert [len(b["clicked"]) for b in batches] == [8, 8, 8, 8, 5]
    for batch in batches:
        for key, tensor in batch.items():
            assert isinstance(tensor, tf.Tensor), key  # no SparseTensor / RaggedTensor left
            assert tensor.dtype == expected[key][1]
            assert tensor.shape[1:] == expected[key][0][1:]

    names = mi.feature_names(transform_dir)
    assert set(names.all()) == set(expected)
    assert set(names.all(include_strings=False)) == {k for k, (_, d) in expected.items() if d != tf.string}
    assert names.sequences == {("listing", "cart_add"): "seq_listing_cart_add_idx",
                               ("listing", "view"): "seq_listing_view_idx",
                               ("shop", "view"): "seq_shop_view_idx", ("query", "search"): "seq_query_search_idx"}
    assert list(names.sequences)[:2] == [("listing", "cart_add"), ("listing", "view")]
    assert names.raw_sequences == {("listing", "cart_add"): "seq_listing_cart_add",
                                   ("listing", "view"): "seq_listing_view"}
    assert names.labels == ("clicked", "purchased") and names.query_tokens == "query_tokens_idx"


def test_values_padding_and_truncation_keep_the_newest_entries(transform_dir):
    got = {}
    for batch in _make(transform_dir, batch_size=5):
        for row in _rows({k: v.numpy() for k, v in batch.items()}):
            got[row["impression_id"].decode()] = row
    assert len(got) == N
    for i in range(N):
        row, want = got[f"imp-{i:03d}"], _expected(i)
        assert row.keys() == want.keys()
        for key in want:
            assert row[key] == want[key], (i, key, row[key], want[key])
    # the data really exercises empty, short and longer-than-M sequences, and labels of both kinds
    lengths = {(i * 5) % 11 for i in range(N)}
    assert 0 in lengths and min(lengths - {0}) < M < max(lengths)
    assert {_expected(i)["clicked"] for i in range(N)} == {0.0, 1.0}
    assert got["imp-006"]["seq_listing_view_idx"] == [600, 601, 602, 603, 604, 605]  # 2 of 8 dropped: the oldest
    assert got["imp-006"]["seq_listing_view"] == [b"L6-0", b"L6-1", b"L6-2", b"L6-3", b"L6-4", b"L6-5"]
    assert got["imp-007"]["seq_shop_view_idx"] == [2100, 2101, -1, -1, -1, -1]
    assert got["imp-007"]["seq_listing_view"] == [b"L7-0", b"L7-1", b"", b"", b"", b""]
    assert got["imp-004"]["query_tokens_idx"] == [2000, 2001, 2002]  # 4 tokens, the first 3 kept
    assert got["imp-006"]["query_tokens_idx"] == [3000, -1, -1]


def test_without_strings_and_with_drop_remainder(transform_dir):
    ds = _make(transform_dir, batch_size=10, include_strings=False, drop_remainder=True)
    assert not {k for k, s in ds.element_spec.items() if s.dtype == tf.string}
    assert ds.element_spec["seq_shop_view_idx"].shape == (10, M)
    assert ds.element_spec["clicked"].shape == (10,)
    assert [len(b["clicked"]) for b in ds] == [10, 10, 10]


def test_unshuffled_passes_are_identical_and_follow_the_files_in_order(transform_dir):
    ds = _make(transform_dir, batch_size=4, read_chunk=3)
    first, second = _ids(ds), _ids(ds)
    assert first == second
    assert _ids(_make(transform_dir, batch_size=4, read_chunk=3)) == first
    # the interleave takes read_chunk records from each file in turn, in file order
    files = [[f"imp-{i:03d}".encode() for i in range(sum(FILE_ROWS[:f]), sum(FILE_ROWS[:f + 1]))] for f in range(3)]
    order = []
    for start in range(0, max(FILE_ROWS), 3):
        for f in files:
            order += f[start:start + 3]
    assert sum(first, []) == order
    # the batches of a full pass are identical too, not only the ids
    a, b = list(ds), list(ds)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key].numpy(), y[key].numpy())


def test_seeded_shuffle_is_reproducible_and_reshuffles_every_epoch(transform_dir):
    make = lambda seed, **kw: _make(transform_dir, batch_size=8, shuffle=True, seed=seed, read_chunk=4, **kw)
    one, two = make(3), make(3)
    pass1, pass2 = _ids(one), _ids(one)
    assert _ids(two) == pass1 and _ids(two) == pass2  # same seed: same sequence of epoch orders
    flat = sum(pass1, [])
    assert sorted(flat) == sorted(f"imp-{i:03d}".encode() for i in range(N))  # each record once per epoch
    assert flat != sorted(flat)
    assert pass1 != pass2  # every iteration is a new order
    assert _ids(make(4)) != pass1  # another seed, another order
    two_epochs = sum(_ids(make(3, epochs=2)), [])
    assert collections.Counter(two_epochs) == collections.Counter(flat * 2)
    assert two_epochs[:N] != two_epochs[N:]


def test_options_deterministic_without_model_autotuning_by_default(transform_dir):
    options = _make(transform_dir).options()
    assert options.deterministic is True and options.autotune.enabled is False
    options = _make(transform_dir, deterministic=False, autotune=True).options()
    assert options.deterministic is False and options.autotune.enabled is True


def test_repeat_forever_and_per_pipeline_file_shards(transform_dir):
    forever = _make(transform_dir, batch_size=8, epochs=None)
    assert len(list(forever.take(12))) == 12  # 96 records > 37: it kept going
    context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=1, num_replicas_in_sync=3)
    ids = sum(_ids(_make(transform_dir, batch_size=8, input_context=context)), [])
    assert ids == [f"imp-{i:03d}".encode() for i in range(FILE_ROWS[0], FILE_ROWS[0] + FILE_ROWS[1])]


def test_missing_split_or_transform_output_names_the_path_and_the_step(transform_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'validation'.*validation.*transform step"):
        _make(transform_dir, split="validation")
    os.makedirs(os.path.join(transform_dir, "empty"), exist_ok=True)
    with pytest.raises(FileNotFoundError, match=r"holds no TFRecord files.*empty.*transform step"):
        _make(transform_dir, split="empty")
    with pytest.raises(FileNotFoundError, match=r"no transform output.*transform step"):
        _make(str(tmp_path / "nothing"), split="train")
    with pytest.raises(ValueError, match="epochs"):
        _make(transform_dir, epochs=0)


def test_vocabulary_sizes_are_the_vocabularies_plus_the_oov_buckets(transform_dir, tmp_path):
    want = {e: n + 1 for e, n in VOCABS.items()}
    assert mi.vocabulary_sizes(transform_dir) == want
    # a disagreement between stats.json and the schema's id domain is an error, not a silent overflow
    with pytest.raises(ValueError, match="listing_id_idx ranges over 0..5"):
        mi.vocabulary_sizes(transform_dir, num_oov_buckets=2)
    # without stats.json, the OOV buckets come from the schema's id domain
    bare = _write_transform_output(str(tmp_path), splits=(), stats=False)
    assert mi.vocabulary_sizes(bare) == want
    undetermined = _write_transform_output(str(tmp_path / "x"), splits=(), stats=False, domains=False)
    with pytest.raises(ValueError, match="pass num_oov_buckets"):
        mi.vocabulary_sizes(undetermined)
    assert mi.vocabulary_sizes(undetermined, num_oov_buckets=2)["shop"] == VOCABS["shop"] + 2


def test_vocabulary_sizes_and_oov_buckets_per_entity(tmp_path):
    oov = {"listing": 7, "shop": 2, "taxonomy": 1, "query": 5, "query_token": 3}
    out = _write_transform_output(str(tmp_path / "per_entity"), splits=(), oov=oov)
    assert mi.vocabulary_sizes(out) == {**{e: VOCABS[e] + n for e, n in oov.items()}, "platform": VOCABS["platform"] + 1}
    assert mi.num_oov_buckets(out) == {**oov, "platform": 1}
    with pytest.raises(ValueError, match="listing_id_idx ranges over 0..11"):
        mi.vocabulary_sizes(out, num_oov_buckets={**oov, "listing": 1})
    # a stats.json of before the per-entity counts (one int) means that count for every vocabulary
    old = _write_transform_output(str(tmp_path / "old"), splits=(), oov=2)
    assert mi.num_oov_buckets(old) == {"listing": 2, "shop": 2, "taxonomy": 2, "query": 2, "query_token": 2,
                                       "platform": 1}
    assert mi.vocabulary_sizes(old)["query_token"] == VOCABS["query_token"] + 2


def test_split_rows_come_from_the_transform_stats(transform_dir, tmp_path):
    assert mi.split_rows(transform_dir, "train") == N == sum(len(b["clicked"]) for b in _make(transform_dir))
    assert mi.split_rows(transform_dir, "validation") is None
    assert mi.split_rows(_write_transform_output(str(tmp_path), splits=(), stats=False), "train") is None


def test_clicked_rows_are_all_clicked_rows_reshuffled_every_epoch(transform_dir):
    clicked = {r["impression_id"] for b in _make(transform_dir, batch_size=8) for r in _rows(
        {k: v.numpy() for k, v in b.items()}) if r["clicked"] > 0}
    assert 0 < len(clicked) < N
    make = lambda seed: mi.clicked_rows(_make(transform_dir, batch_size=8), 4, seed, epochs=2)
    batches = [{k: v.numpy() for k, v in b.items()} for b in make(5)]
    assert all(len(b["clicked"]) <= 4 and (b["clicked"] > 0).all() for b in batches)
    ids = [i for b in batches for i in b["impression_id"].tolist()]
    first, second = ids[:len(clicked)], ids[len(clicked):]
    assert set(first) == set(second) == clicked and len(second) == len(clicked)
    assert first != second  # a new order each epoch
    assert ids == [i for b in make(5) for i in b["impression_id"].numpy().tolist()]  # same seed, same orders


def test_id_dropout_hides_ids_behind_their_oov_bucket_in_training_only():
    """``IdDropout``: identity at inference; in training about ``rate`` of the rows read as a random
    OOV index in ``K .. K+n-1`` that does not name the id, the others unchanged."""
    import keras

    from components.models.wide import IdDropout

    keras.utils.set_random_seed(5)
    ids = np.arange(20_000, dtype=np.int64) % 1000  # K = 1000 known ids, n = 7 OOV buckets
    layer = IdDropout(0.3, first_oov=1000, num_oov=7)
    np.testing.assert_array_equal(np.asarray(layer(ids, training=False)), ids)
    out = np.asarray(layer(ids, training=True))
    dropped = out != ids
    assert abs(dropped.mean() - 0.3) < 0.02
    assert set(out[dropped].tolist()) == set(range(1000, 1007))  # every bucket, whatever the id
    assert len(set(out[dropped & (ids == 3)].tolist())) > 1
    assert IdDropout.from_config(layer.get_config()).get_config() == layer.get_config()


def test_a_ranker_with_id_dropout_needs_the_oov_buckets():
    from components.models.config import RankerConfig, WideConfig
    from components.models.ranker import build_ranker
    from tests.distributed_train_worker import VOCAB

    cfg = RankerConfig(personalized=False, cross_layers=0, deep=[4], debias=False)
    with pytest.raises(ValueError, match="num_oov"):
        build_ranker(cfg, WideConfig(id_dropout=0.5), VOCAB)
    oov = {entity: 2 for entity in VOCAB}
    ranker = build_ranker(cfg, WideConfig(id_dropout=0.5), VOCAB, num_oov=oov)
    assert {layer.name for layer in ranker.score.layers} >= {"listing_id_dropout", "shop_id_dropout", "query_id_dropout"}
