"""schemas.validation: every row lands in exactly one of valid / dead letters, with the right reason."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.raw import EVENTS, LISTINGS
from schemas.validation import DEAD_LETTER_SCHEMA, check_batch, split_duplicates, stable_bucket
from tests import rawdata as rd

CORRUPTIONS = {
    "null_id": ("event_id", lambda r: r.update(event_id=None)),
    "empty_browser": ("browser_id", lambda r: r.update(browser_id="")),
    "unknown_action": ("action", lambda r: r.update(action="teleport")),
    "unknown_platform": ("platform", lambda r: r.update(platform="fax")),
    "before_day": ("ts", lambda r: r.update(ts=rd.at(23, 59, rd.DAY - dt.timedelta(days=1)))),
    "after_day": ("ts", lambda r: r.update(ts=rd.at(0, 0, rd.DAY + dt.timedelta(days=1)))),
    "search_without_query": ("query", lambda r: r.update(action="search", query=None)),
    "view_without_listing": ("listing_id", lambda r: r.update(action="view", listing_id=None, query=None)),
}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([None] + sorted(CORRUPTIONS)), min_size=0, max_size=40))
def test_every_row_lands_once_with_its_reason(plan):
    rows = rd.events(len(plan))
    for row, corruption in zip(rows, plan):
        if corruption:
            CORRUPTIONS[corruption][1](row)
    table = pa.Table.from_pylist(rows, schema=rd.loose(rd.EVENTS_SCHEMA))
    good, dead = check_batch(table, EVENTS, rd.DAY, "f.parquet", first_row=5)
    assert good.num_rows + dead.num_rows == len(plan)
    assert dead.schema.equals(DEAD_LETTER_SCHEMA)
    expected_bad = {i + 5: CORRUPTIONS[c][0] for i, c in enumerate(plan) if c}
    assert dict(zip(dead.column("row").to_pylist(), dead.column("column").to_pylist())) == expected_bad
    assert sorted(good.column("_row").to_pylist()) == [i + 5 for i, c in enumerate(plan) if not c]


def test_boundaries_of_the_day_are_half_open():
    rows = rd.events(3)
    rows[0]["ts"] = rd.at(0, 0)  # first instant of the day: in
    rows[1]["ts"] = dt.datetime(2026, 3, 1, 23, 59, 59, 999000, tzinfo=rd.UTC)  # last ms: in
    rows[2]["ts"] = rd.at(0, 0, rd.DAY + dt.timedelta(days=1))  # next midnight: out
    good, dead = check_batch(pa.Table.from_pylist(rows, schema=rd.EVENTS_SCHEMA), EVENTS, rd.DAY, "f")
    assert good.num_rows == 2 and dead.column("row").to_pylist() == [2]


def test_listing_created_after_the_snapshot_day_is_rejected():
    rows = rd.listings(2)
    rows[1]["created_ts"] = rd.at(0, 0, rd.DAY + dt.timedelta(days=1))
    good, dead = check_batch(pa.Table.from_pylist(rows, schema=rd.LISTINGS_SCHEMA), LISTINGS, rd.DAY, "f")
    assert good.num_rows == 1 and "after the partition day" in dead.column("reason")[0].as_py()


def test_timestamp_units_and_naive_timestamps_are_coerced():
    rows = rd.events(2)
    table = pa.Table.from_pylist(rows, schema=rd.EVENTS_SCHEMA)
    naive_ns = pa.array([r["ts"].replace(tzinfo=None) for r in rows], pa.timestamp("ns"))
    table = table.set_column(table.schema.get_field_index("ts"), "ts", naive_ns)
    good, dead = check_batch(table, EVENTS, rd.DAY, "f")
    assert dead.num_rows == 0 and good.column("ts").type == pa.timestamp("ms", tz="UTC")
    assert good.column("ts").to_pylist() == [r["ts"] for r in rows]


def test_split_duplicates_keeps_first_by_file_then_row():
    rows = rd.events(4)
    rows[2]["event_id"] = rows[0]["event_id"]
    a, _ = check_batch(pa.Table.from_pylist(rows[:2], schema=rd.EVENTS_SCHEMA), EVENTS, rd.DAY, "b.parquet")
    b, _ = check_batch(pa.Table.from_pylist(rows[2:], schema=rd.EVENTS_SCHEMA), EVENTS, rd.DAY, "a.parquet")
    unique, dead = split_duplicates(pa.concat_tables([a, b]), EVENTS)
    assert unique.num_rows == 3 and dead.num_rows == 1
    # "a.parquet" sorts first, so its copy is kept and b.parquet's row 0 is the duplicate.
    assert dead.column("source_file")[0].as_py() == "b.parquet" and dead.column("row")[0].as_py() == 0
    assert unique.column("ts").to_pylist() == sorted(unique.column("ts").to_pylist())


def test_stable_bucket_is_stable_across_processes_and_spreads_keys():
    keys = [f"key-{i}" for i in range(2000)] + ["", "ü-ñ"]
    here = stable_bucket(pa.array(keys), 16).tolist()
    code = ("import pyarrow as pa, sys; from schemas.validation import stable_bucket; "
            f"print(stable_bucket(pa.array({keys!r}), 16).tolist())")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=str(rd.__file__).rsplit("/tests/", 1)[0])
    assert eval(there.stdout) == here
    counts = np.bincount(here[:2000], minlength=16)
    assert counts.min() > 2000 / 16 * 0.6  # no starved bucket
    # Sliced arrays (non-zero offset) hash the same as fresh ones.
    assert stable_bucket(pa.array(keys).slice(5, 10), 16).tolist() == here[5:15]
