"""The corpora kernels against a simple reference, the text normalizer, and the step on a tiny lake."""
from __future__ import annotations

import collections
import datetime as dt
import hashlib
import os
import types

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.corpora.config import CorporaConfig
from components.corpora.sessions import coclick_pairs, split_sessions
from components.corpora.step import _skipgram_lines
from components.corpora.text import normalize
from schemas.raw import EVENTS_SCHEMA
from tests import reference_corpora as ref
from tests.rawdata import loose

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.timezone.utc)
HOUR_MS = 3_600_000


def event(i, ms, action="view", user=None, browser="b1", listing="l1"):
    return {"event_id": f"e{i:04d}", "user_id": user, "browser_id": browser,
            "ts": T0 + dt.timedelta(milliseconds=ms), "action": action, "listing_id": listing,
            "shop_id": "s1", "taxonomy_id": "t1", "query": None, "platform": "web"}


def table(events):
    return pa.Table.from_pylist(events, schema=loose(EVENTS_SCHEMA))


def as_set(rows):
    return sorted((r["user_key"], r["start_ts"], tuple(r["listings"]), r["purchased"]) for r in rows)


USERS = st.sampled_from([(None, "b1"), (None, "b2"), ("u1", "b1"), ("u1", "b3"), ("u2", "b2")])
ACTIONS = st.sampled_from(["view", "view", "view", "purchase", "favorite", "search"])
TIMES = st.sampled_from([0, 1, HOUR_MS - 1, HOUR_MS, HOUR_MS + 1, 2 * HOUR_MS]) | st.integers(0, 3 * HOUR_MS)


@st.composite
def logs(draw):
    n = draw(st.integers(0, 40))
    rows = []
    for i in range(n):
        (user, browser), action = draw(USERS), draw(ACTIONS)
        rows.append(event(i, draw(TIMES), action, user, browser, draw(st.sampled_from(["a", "b", "c", "d", "e"]))))
    return draw(st.permutations(rows))  # input order must not matter


@settings(max_examples=200, deadline=None)
@given(logs(), st.integers(2, 4))
def test_sessions_and_pairs_equal_the_reference(rows, max_listings):
    got = split_sessions(table(rows), HOUR_MS)
    want = ref.sessions(rows, HOUR_MS)
    assert as_set(got.to_pylist()) == as_set(want)
    pairs = coclick_pairs(got, max_listings).to_pylist()
    assert {(p["listing_a"], p["listing_b"]): p["sessions"] for p in pairs} == dict(ref.pairs(want, max_listings))


def test_session_boundary_is_one_hour_after_the_first_event():
    rows = [event(0, 0, listing="a"), event(1, HOUR_MS - 1, listing="b"), event(2, HOUR_MS, listing="c"),
            event(3, HOUR_MS + 5, "purchase", listing="c")]
    got = split_sessions(table(rows), HOUR_MS).to_pylist()
    assert [(s["listings"], s["purchased"]) for s in got] == [(["a", "b"], False), (["c"], True)]


def test_equal_timestamps_are_ordered_by_event_id_and_keys_by_user_then_browser():
    rows = [event(2, 10, listing="z"), event(1, 10, listing="y"), event(3, 10, user="u9", listing="x")]
    got = {s["user_key"]: s["listings"] for s in split_sessions(table(rows), HOUR_MS).to_pylist()}
    assert got == {"b1": ["y", "z"], "u9": ["x"]}


def test_a_bot_key_gives_bounded_pairs_and_one_session_per_hour():
    rows = [event(i, i * 36, listing=f"l{i % 500}") for i in range(100_000)]  # 100k views in 1 h
    sessions = split_sessions(table(rows), HOUR_MS)
    assert sessions.num_rows == 1 and len(sessions.column("listings")[0]) == 100_000
    assert coclick_pairs(sessions, 10).num_rows == 45  # the first 10 distinct listings only


def test_skipgram_lines_upsample_purchase_sessions_and_drop_single_views():
    sessions = pa.table({
        "user_key": ["u1", "u2", "u3"], "start_ts": pa.array([T0] * 3, pa.timestamp("ms", tz="UTC")),
        "listings": [["a", "b"], ["c", "d", "c"], ["e"]], "purchased": [False, True, True]})
    cfg = CorporaConfig(purchase_upsample=5, min_skipgram_views=2)
    lines = _skipgram_lines(sessions, cfg, seed=1)
    assert collections.Counter(lines) == {"a b": 1, "c d c": 5}
    assert _skipgram_lines(sessions, cfg, seed=1) == lines
    assert sorted(_skipgram_lines(sessions, cfg, seed=2)) == sorted(lines)


@pytest.mark.parametrize("text, want", [
    ("Handmade BLUE Lamp, 3 pcs!", "handmade blue lamp <num> pcs"),
    ("The lamp for the KIDS' room", "<stop> lamp <stop> <stop> kids room"),
    ("12x16in   print -- 2024", "<num> print <num>"),
    ("café—crème", "café crème"),
    (None, ""),
])
def test_normalize(text, want):
    assert normalize(pa.array([text], pa.string()), "<stop>", "<num>").to_pylist() == [want]


def test_normalize_without_stop_word_masking():
    assert normalize(pa.array(["the lamp"]), None, "<num>").to_pylist() == ["the lamp"]


# --- the step on a tiny synthetic lake -------------------------------------------------------------

def _digests(directory):
    out = {}
    for base, _, files in os.walk(directory):
        for f in files:
            if f not in ("manifest.json",):
                path = os.path.join(base, f)
                out[os.path.relpath(path, directory)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tiny_lake(tmp_path_factory):
    from components.lake import Lake
    from pipelines.config import load_config
    from pipelines.runner import run_dag

    root = str(tmp_path_factory.mktemp("corpora") / "lake")
    cfg = load_config("tiny")
    summary = run_dag(cfg, cfg.default_date, Lake(root), only=["generate", "validate", "data_gate", "corpora"],
                      progress=lambda *_: None)
    assert summary.ok, summary.render()
    return root, cfg


def test_step_reads_only_training_days_and_writes_the_corpus(tiny_lake):
    from components.lake import parquet

    root, cfg = tiny_lake
    date = cfg.default_date
    days = cfg.window.corpus_dates(date)
    assert max(days) < min(cfg.window.validation_date(date), cfg.window.test_date(date))
    built = sorted(os.listdir(os.path.join(root, "derived", "sessions")))
    assert built == [f"dt={d}" for d in days]
    corpus = os.path.join(root, "runs", str(date), "corpora", "corpus")
    lines = open(os.path.join(corpus, "skipgram.txt")).read().splitlines()
    sessions = parquet.read_partition(os.path.join(root, "derived", "sessions", f"dt={days[-1]}")).to_pylist()
    want = collections.Counter()
    for s in sessions:
        if len(s["listings"]) >= cfg.corpora.min_skipgram_views:
            want[" ".join(s["listings"])] += cfg.corpora.purchase_upsample if s["purchased"] else 1
    assert collections.Counter(lines) == want and len(lines) > 100
    text = open(os.path.join(corpus, "text.txt")).read().splitlines()
    assert len(text) == parquet.count_rows(os.path.join(root, "derived", "validated", "listings", f"dt={days[-1]}"))
    assert all(t == t.lower() and "," not in t for t in text)


def test_forced_rerun_is_byte_identical(tiny_lake):
    from components.corpora import step
    from components.lake import Lake

    root, cfg = tiny_lake
    before = _digests(os.path.join(root, "derived")), _digests(os.path.join(root, "runs", str(cfg.default_date), "corpora", "corpus"))
    forced = cfg.model_copy(update={"runtime": types.SimpleNamespace(force=True)})
    step.run(forced, cfg.default_date, Lake(root), progress=lambda *_: None)
    after = _digests(os.path.join(root, "derived")), _digests(os.path.join(root, "runs", str(cfg.default_date), "corpora", "corpus"))
    assert before == after


@pytest.mark.slow
@pytest.mark.parametrize("beam_args", [
    ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
])
def test_other_runners_give_identical_corpora(tiny_lake, tmp_path, beam_args):
    import shutil

    from components.corpora import step
    from components.lake import Lake

    root, cfg = tiny_lake
    copy = str(tmp_path / "lake")
    shutil.copytree(os.path.join(root, "derived", "validated"), os.path.join(copy, "derived", "validated"))
    other = cfg.model_copy(deep=True)
    other.beam.extra_args = list(beam_args)
    step.run(other, cfg.default_date, Lake(copy), progress=lambda *_: None)
    for sub in ("sessions", "coclick", "listing_text"):
        assert _digests(os.path.join(copy, "derived", sub)) == _digests(os.path.join(root, "derived", sub))
    corpus = ("runs", str(cfg.default_date), "corpora", "corpus")
    assert _digests(os.path.join(copy, *corpus)) == _digests(os.path.join(root, *corpus))
