"""The validate step end to end on Beam, with the bad-input suite of issue 2: nothing is lost."""
from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.lake import Lake, parquet
from components.step import StepError
from components.validate import step as validate
from tests import rawdata as rd

D = rd.DAY + dt.timedelta(days=2)  # window: DAY, DAY+1, D
WINDOW = [rd.DAY, rd.DAY + dt.timedelta(days=1), D]


def write_clean_window(root: str, skip=()) -> None:
    for day in WINDOW:
        for table, make in (("events", rd.events), ("impressions", rd.impressions), ("listings", rd.listings)):
            if (table, day) not in skip:
                rd.write_partition(root, table, day, [make(20, day)])


def dead_letters(lake: Lake, table: str, day) -> list[dict]:
    return parquet.read_partition(validate.dead_letter_dir(lake, table, day), schema=None).to_pylist() \
        if parquet.partition_files(validate.dead_letter_dir(lake, table, day)) else []


def valid_rows(lake: Lake, table: str, day) -> pa.Table:
    return parquet.read_partition(validate.validated_dir(lake, table, day))


def assert_nothing_lost(result, table: str, day) -> None:
    m = result.metrics[f"{table}/{day}"]
    assert m["valid_rows"] + m["dead_rows"] == m["input_rows"]


def test_clean_window_is_all_valid(tmp_path):
    write_clean_window(str(tmp_path))
    lake = Lake(str(tmp_path))
    result = validate.run(rd.validate_config(), D, lake, progress=lambda *_: None)
    for day in WINDOW:
        for table in ("events", "impressions", "listings"):
            assert lake.complete(validate.validated_dir(lake, table, day))
            assert result.metrics[f"{table}/{day}"]["dead_rows"] == 0
            got = valid_rows(lake, table, day)
            assert got.num_rows == 20
            assert got.schema.equals(rd.SCHEMAS[table])
    # A second run finds everything validated and does no work.
    again = validate.run(rd.validate_config(), D, lake, progress=lambda *_: None)
    assert not [k for k in again.metrics if "/" in k] and len(again.notes) == 9


def hostile_events() -> tuple[list[pa.Table], dict[int, str]]:
    """Two files of events with planted problems; returns the files and {global row: column}."""
    good = rd.events(30, D)
    bad = [dict(r) for r in rd.events(12, D, prefix="x")]
    planted = {}
    bad[0]["event_id"] = None; planted[0] = "event_id"
    bad[1]["action"] = "teleport"; planted[1] = "action"
    bad[2]["ts"] = rd.at(23, 0, D - dt.timedelta(days=1)); planted[2] = "ts"
    bad[3]["ts"] = rd.at(0, 0, D + dt.timedelta(days=1)); planted[3] = "ts"
    bad[4]["browser_id"] = None; planted[4] = "browser_id"
    bad[5]["action"] = "search"; bad[5]["query"] = None; planted[5] = "query"
    bad[6]["action"] = "view"; bad[6]["listing_id"] = None; planted[6] = "listing_id"
    bad[7]["platform"] = "fax"; planted[7] = "platform"
    bad[8]["event_id"] = good[3]["event_id"]; planted[8] = "event_id"  # duplicate across files
    bad[10]["event_id"] = bad[9]["event_id"]; planted[10] = "event_id"  # duplicate within a file: the first row is kept
    table = pa.Table.from_pylist(bad, schema=rd.loose(rd.EVENTS_SCHEMA))
    # Malformed UTF-8 in a query needs a binary column: Arrow strings must be valid UTF-8.
    queries = [r["query"].encode() if r["query"] else None for r in bad]
    queries[11] = b"blue \xff\xfe lamp"; planted[11] = "query"
    bad[11]["action"] = "search"
    table = table.set_column(table.schema.get_field_index("action"), "action",
                             pa.array([r["action"] for r in bad], pa.string()))
    table = table.set_column(table.schema.get_field_index("query"), "query", pa.array(queries, pa.binary()))
    return [pa.Table.from_pylist(good, schema=rd.loose(rd.EVENTS_SCHEMA)), table], planted


def test_hostile_events_nothing_lost(tmp_path):
    write_clean_window(str(tmp_path), skip={("events", D)})
    files, planted = hostile_events()
    rd.write_partition(str(tmp_path), "events", D, files)
    lake = Lake(str(tmp_path))
    result = validate.run(rd.validate_config(), D, lake, progress=lambda *_: None)
    assert_nothing_lost(result, "events", D)
    dead = dead_letters(lake, "events", D)
    second = [r for r in dead if r["source_file"].endswith("part-00001.parquet")]
    by_row = {r["row"]: r for r in second}
    expected = planted
    assert set(by_row) == set(expected)
    for row, column in expected.items():
        assert by_row[row]["column"] == column, by_row[row]
        json.loads(by_row[row]["record"])  # the original row is kept, as JSON
    assert "duplicate event_id" in by_row[8]["reason"] and "part-00000.parquet row 3" in by_row[8]["reason"]
    assert "malformed UTF-8" in by_row[11]["reason"]
    assert "outside the partition day" in by_row[2]["reason"]
    valid = valid_rows(lake, "events", D)
    assert valid.num_rows == 30 + 12 - len(expected)
    assert valid.column("event_id").unique().to_pylist() == valid.column("event_id").to_pylist()


def test_wrong_types_are_coerced_or_dead_lettered(tmp_path):
    write_clean_window(str(tmp_path), skip={("impressions", D)})
    rows = rd.impressions(10, D)
    table = pa.Table.from_pylist(rows, schema=rd.loose(rd.IMPRESSIONS_SCHEMA))
    # price as strings (two unparsable), position as int64, ts as ISO strings with one garbage value.
    prices = [str(r["price"]) for r in rows]
    prices[2], prices[5] = "cheap", ""
    stamps = [r["ts"].isoformat() for r in rows]
    stamps[7] = "yesterday-ish"
    table = table.set_column(table.schema.get_field_index("price"), "price", pa.array(prices))
    table = table.set_column(table.schema.get_field_index("position"), "position", pa.array([r["position"] for r in rows], pa.int64()))
    table = table.set_column(table.schema.get_field_index("ts"), "ts", pa.array(stamps))
    rd.write_partition(str(tmp_path), "impressions", D, [table])
    lake = Lake(str(tmp_path))
    result = validate.run(rd.validate_config(), D, lake, progress=lambda *_: None)
    assert_nothing_lost(result, "impressions", D)
    dead = {r["row"]: r for r in dead_letters(lake, "impressions", D)}
    assert set(dead) == {2, 5, 7}
    assert "cannot convert 'cheap'" in dead[2]["reason"]
    valid = valid_rows(lake, "impressions", D)
    assert valid.schema.equals(rd.IMPRESSIONS_SCHEMA) and valid.num_rows == 7


def test_missing_column_dead_letters_every_row(tmp_path):
    write_clean_window(str(tmp_path), skip={("listings", D)})
    table = pa.Table.from_pylist(rd.listings(6, D), schema=rd.loose(rd.LISTINGS_SCHEMA)).drop_columns(["taxonomy_path"])
    rd.write_partition(str(tmp_path), "listings", D, [table])
    lake = Lake(str(tmp_path))
    result = validate.run(rd.validate_config(), D, lake, progress=lambda *_: None)
    assert result.metrics[f"listings/{D}"]["dead_rows"] == 6
    assert all("column is missing" in r["reason"] for r in dead_letters(lake, "listings", D))


def test_empty_partition(tmp_path):
    write_clean_window(str(tmp_path), skip={("events", D)})
    rd.write_partition(str(tmp_path), "events", D, [[]])  # one file, zero rows
    os.makedirs(tmp_path / "raw" / "impressions" / f"dt={D}", exist_ok=True)
    lake = Lake(str(tmp_path))
    import shutil
    shutil.rmtree(tmp_path / "raw" / "impressions" / f"dt={D}")
    os.makedirs(tmp_path / "raw" / "impressions" / f"dt={D}")  # a partition with no files at all
    result = validate.run(rd.validate_config(), D, lake, progress=lambda *_: None)
    for table in ("events", "impressions"):
        assert result.metrics[f"{table}/{D}"]["input_rows"] == 0
        assert lake.complete(validate.validated_dir(lake, table, D))
        assert f"{table}/{D}: the raw partition is empty" in result.notes


def test_missing_partition_is_a_clear_error(tmp_path):
    write_clean_window(str(tmp_path), skip={("impressions", rd.DAY)})
    with pytest.raises(StepError) as err:
        validate.run(rd.validate_config(), D, Lake(str(tmp_path)), progress=lambda *_: None)
    assert f"raw/impressions/dt={rd.DAY}" in str(err.value) and "adsformer generate" in str(err.value)


def test_unreadable_file_is_a_clear_error(tmp_path):
    write_clean_window(str(tmp_path))
    (tmp_path / "raw" / "events" / f"dt={D}" / "part-00009.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(StepError, match="part-00009.parquet is not a readable Parquet file"):
        validate.run(rd.validate_config(), D, Lake(str(tmp_path)), progress=lambda *_: None)
    # Nothing half-written is left behind.
    leftovers = [p for p in (tmp_path / "derived").rglob("*") if ".tmp-" in p.name] if (tmp_path / "derived").exists() else []
    assert leftovers == []


def test_threshold_fails_with_reasons_and_keeps_dead_letters(tmp_path):
    write_clean_window(str(tmp_path), skip={("events", D)})
    files, _ = hostile_events()
    rd.write_partition(str(tmp_path), "events", D, files)
    cfg = rd.validate_config()
    cfg.validate.max_bad_fraction = 0.05
    lake = Lake(str(tmp_path))
    with pytest.raises(StepError) as err:
        validate.run(cfg, D, lake, progress=lambda *_: None)
    text = str(err.value)
    assert f"events/{D}" in text and "max_bad_fraction=0.05" in text and "event_id" in text
    assert lake.complete(validate.dead_letter_dir(lake, "events", D))
    assert not lake.complete(validate.validated_dir(lake, "events", D))


def test_output_is_deterministic(tmp_path):
    import hashlib

    def digest(root):
        h = {}
        for p in sorted((root / "derived").rglob("*.parquet")):
            h[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        return h

    outs = []
    for k in range(2):
        root = tmp_path / f"r{k}"
        write_clean_window(str(root), skip={("events", D)})
        rd.write_partition(str(root), "events", D, hostile_events()[0])
        validate.run(rd.validate_config(), D, Lake(str(root)), progress=lambda *_: None)
        outs.append(digest(root))
    assert outs[0] == outs[1] and len(outs[0]) > 9


@pytest.mark.slow
@pytest.mark.parametrize("beam", [
    {"direct_running_mode": "multi_processing", "direct_num_workers": 2},
    {"runner": "PortableRunner", "extra_args": ["--job_endpoint=embed", "--environment_type=LOOPBACK"]},
], ids=["multi_processing", "portable_embed"])
def test_same_output_on_other_runners(tmp_path, beam):
    outputs = []
    for name, options in (("in_memory", {}), ("other", beam)):
        root = tmp_path / name
        write_clean_window(str(root), skip={("events", D)})
        rd.write_partition(str(root), "events", D, hostile_events()[0])
        validate.run(rd.validate_config(**options), D, Lake(str(root)), progress=lambda *_: None)
        outputs.append({str(p.relative_to(root)): pq.read_table(p).to_pylist()
                        for p in sorted((root / "derived").rglob("*.parquet"))})
    assert outputs[0] == outputs[1]
