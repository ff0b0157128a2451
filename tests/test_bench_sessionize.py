"""The sessionize bench is a fair comparison: its inputs are self-consistent key subsets, and the
DuckDB reference writes exactly the examples the Beam step writes (rows, lists, labels)."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from components.lake import Lake
from components.sessionize.step import session_spec
from pipelines import bench_sessionize as bs
from pipelines.config import load_config
from schemas.examples import examples_schema
from tests.rawdata import write_partition

X = dt.date(2026, 3, 2)
UTC = dt.timezone.utc
LISTINGS = [f"l{i}" for i in range(4)]


def _keys(rng, n):
    users = [("u1", "b1"), (None, "b1"), ("u2", "b2"), ("u2", "b3"), (None, "b4"), ("u5", "b5"), ("u6", "b6")]
    return [users[i] for i in rng.integers(0, len(users), n)]


def _ts(day, seconds):
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC) + dt.timedelta(seconds=int(seconds))


def raw_events(day: dt.date, seconds: np.ndarray, rng) -> list[dict]:
    """Events at the given seconds of ``day``; coarse seconds give equal timestamps on purpose."""
    rows = []
    for i, ((user, browser), s) in enumerate(zip(_keys(rng, len(seconds)), seconds)):
        action = ("view", "view", "favorite", "cart_add", "purchase", "search")[rng.integers(0, 6)]
        search = action == "search"
        listing = LISTINGS[rng.integers(0, len(LISTINGS))]
        rows.append({"event_id": f"e{day:%d}-{rng.integers(0, 10**6):06d}-{i}", "user_id": user, "browser_id": browser,
                     "ts": _ts(day, s), "action": action, "listing_id": None if search else listing,
                     "shop_id": None if search else f"s{listing[1:]}", "taxonomy_id": None if search else "t1",
                     "query": f"q{rng.integers(0, 3)}" if search else None, "platform": "web"})
    return rows


def raw_impressions(day: dt.date, seconds: np.ndarray, rng) -> list[dict]:
    rows = []
    for i, ((user, browser), s) in enumerate(zip(_keys(rng, len(seconds)), seconds)):
        clicked = bool(rng.random() < 0.5)
        click_after = rng.choice([-1, 0, 2, 600])
        rows.append({"impression_id": f"i{i:04d}", "request_id": f"r{i // 3}", "user_id": user, "browser_id": browser,
                     "ts": _ts(day, s), "query": "q", "listing_id": LISTINGS[rng.integers(0, len(LISTINGS))],
                     "shop_id": "s1", "taxonomy_id": "t1", "position": int(i % 4), "platform": "web",
                     "price": float(i), "clicked": clicked,
                     "click_ts": _ts(day, s + click_after) if clicked and click_after >= 0 else None})
    return rows


@pytest.fixture(scope="module")
def raw_lake(tmp_path_factory):
    """Three raw days around X, dense near both midnights so windows and labels cross them."""
    root = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(5)
    grid = lambda lo, hi, n: rng.integers(lo // 60, hi // 60, n) * 60  # noqa: E731 - minute grid: many ties
    write_partition(str(root), "events", X - dt.timedelta(days=1),
                    [raw_events(X - dt.timedelta(days=1), grid(79_200, 86_400, 300), rng)])
    write_partition(str(root), "events", X, [raw_events(X, np.concatenate(
        [grid(0, 7_200, 300), grid(7_200, 79_200, 200), grid(79_200, 86_400, 300)]), rng)])
    write_partition(str(root), "events", X + dt.timedelta(days=1),
                    [raw_events(X + dt.timedelta(days=1), grid(0, 10_800, 400), rng)])
    write_partition(str(root), "impressions", X, [raw_impressions(X, np.concatenate(
        [grid(0, 7_200, 80), grid(7_200, 79_200, 40), grid(79_200, 86_400, 80)]), rng)])
    return str(root)


def events_read_by_hand(root: str) -> int:
    """Tail hour of X-1 + all of X + purchases of X+1 in its first hour (window = attribution = 1 h)."""
    lake, n = Lake(root), 0
    for offset, keep in ((-1, lambda r: r["ts"] >= _ts(X, -3600)), (0, lambda r: True),
                         (1, lambda r: r["action"] == "purchase" and r["ts"] < _ts(X, 86_400 + 3600))):
        rows = pq.read_table(lake.raw("events", X + dt.timedelta(days=offset))).to_pylist()
        n += sum(1 for r in rows if keep(r))
    return n


@pytest.fixture(scope="module")
def inputs(raw_lake, tmp_path_factory):
    cfg = load_config("tiny", ["sessionize.max_len=3"])
    spec = session_spec(cfg.sessionize)
    out = bs.prepare(raw_lake, X, {"all": 10**9, "part": 600}, str(tmp_path_factory.mktemp("work")), spec,
                     num_files=2, progress=lambda *_: None)
    return cfg, out


def beam_examples_dir(lake: dict) -> str:
    return Lake(lake["root"]).derived("examples", X)


@pytest.fixture(scope="module")
def beam_examples(inputs):
    """The Beam step's examples of each input, in the examples schema."""
    cfg, lakes = inputs
    schema = examples_schema(session_spec(cfg.sessionize).pairs, engineered=False)
    out = {}
    for name, lake in lakes.items():
        run = bs.run_beam(cfg, lake["root"], X)
        assert run["examples"] == lake["impressions"]
        out[name] = bs.read_examples(run["output"], schema)
    return out


@pytest.mark.parametrize("method", ["max_by", "slice"])
def test_duckdb_reference_writes_the_examples_of_the_beam_step(inputs, beam_examples, tmp_path, method):
    cfg, lakes = inputs
    schema = examples_schema(session_spec(cfg.sessionize).pairs, engineered=False)
    for name, lake in lakes.items():
        # Small passes, so the partitioning by user key is exercised too.
        duck = bs.run_duckdb(cfg, lake["root"], X, str(tmp_path / name), method=method, events_per_part=500)
        got, want = bs.read_examples(duck["output"], schema), beam_examples[name]
        assert duck["examples"] == lake["impressions"] == want.num_rows > 0
        assert duck["parts"] == (-(-lake["events"] // 500) if method == "max_by" else 1)
        assert got.equals(want), (name, method)
        assert bs.same_examples(str(tmp_path / name), beam_examples_dir(lake), schema)
        # The data exercises what matters: lists at the cap, empty lists, purchase labels.
        lengths = pc.list_value_length(want.column("seq_listing_view")).to_numpy()
        assert lengths.max() == 3 and (lengths == 0).any()
        assert pc.sum(want.column("purchased")).as_py() > 0


def test_inputs_are_self_consistent_key_subsets(raw_lake, inputs, beam_examples):
    """A key subset's examples are exactly the full input's examples of those keys."""
    cfg, lakes = inputs
    assert lakes["part"]["key_buckets"] < lakes["all"]["key_buckets"]
    assert 600 <= lakes["part"]["events"] < lakes["all"]["events"]
    assert lakes["all"]["events"] == events_read_by_hand(raw_lake)
    full, part = beam_examples["all"], beam_examples["part"]
    mine = pa.array(bs.stable_bucket(full.column("user_key"), bs.HASH_BUCKETS) < lakes["part"]["key_buckets"])
    assert 0 < part.num_rows < full.num_rows
    assert part.equals(full.filter(mine))
    assert Lake(lakes["part"]["root"]).complete(bs.validated_dir(Lake(lakes["part"]["root"]), "events", X))
