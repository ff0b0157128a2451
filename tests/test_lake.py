"""Lake I/O: layout, atomic commits, _SUCCESS last, deterministic Parquet."""
from __future__ import annotations

import datetime as dt
import hashlib
import os

import pyarrow as pa
import pytest

from components.lake import Lake, atomic_dir, fs, is_complete, parquet
from components.lake.commit import stage


def test_layout_paths():
    lake = Lake("gs://bucket/lake/")
    day = dt.date(2026, 3, 4)
    assert lake.raw("events", day) == "gs://bucket/lake/raw/events/dt=2026-03-04"
    assert lake.derived("validated/events", "2026-03-04") == "gs://bucket/lake/derived/validated/events/dt=2026-03-04"
    assert lake.oracle("impressions", day) == "gs://bucket/lake/oracle/impressions/dt=2026-03-04"
    assert lake.run_dir(day, "validate") == "gs://bucket/lake/runs/2026-03-04/validate"
    assert lake.model("ctr") == "gs://bucket/lake/models/ctr"


def test_atomic_dir_commits_with_success_last(tmp_path):
    target = str(tmp_path / "derived" / "x" / "dt=2026-03-01")
    with atomic_dir(target) as tmp:
        assert ".tmp-" in tmp and not os.path.exists(target)
        fs.write_text(fs.join(tmp, "a.txt"), "one")
    assert is_complete(target) and fs.read_text(fs.join(target, "a.txt")) == "one"
    assert [p for p in os.listdir(tmp_path / "derived" / "x") if ".tmp-" in p] == []


def test_failed_write_leaves_previous_output(tmp_path):
    target = str(tmp_path / "out")
    with atomic_dir(target) as tmp:
        fs.write_text(fs.join(tmp, "a.txt"), "old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            fs.write_text(fs.join(tmp, "a.txt"), "half")
            raise RuntimeError("crash mid-write")
    assert fs.read_text(fs.join(target, "a.txt")) == "old" and is_complete(target)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_replacing_an_output_and_cleaning_stale_temporaries(tmp_path):
    target = str(tmp_path / "out")
    stale = stage(target)  # a crashed writer's leftovers
    fs.write_text(fs.join(stale, "junk"), "x")
    with atomic_dir(target) as tmp:
        fs.write_text(fs.join(tmp, "b.txt"), "new")
    assert sorted(os.listdir(target)) == ["_SUCCESS", "b.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_parquet_roundtrip_is_deterministic(tmp_path):
    table = pa.table({"a": pa.array(range(1000)), "b": pa.array([str(i) for i in range(1000)])})
    p1, p2 = str(tmp_path / "d1" / "part-0.parquet"), str(tmp_path / "d2" / "part-0.parquet")
    parquet.write_table(table, p1)
    parquet.write_table(table, p2)
    assert hashlib.sha256(open(p1, "rb").read()).digest() == hashlib.sha256(open(p2, "rb").read()).digest()
    assert parquet.read_partition(str(tmp_path / "d1")).equals(table)
    assert parquet.count_rows(str(tmp_path / "d1")) == 1000


def test_read_missing_partition(tmp_path):
    with pytest.raises(FileNotFoundError):
        parquet.read_partition(str(tmp_path))
    schema = pa.schema([("a", pa.int64())])
    assert parquet.read_partition(str(tmp_path), schema=schema).num_rows == 0


def test_raw_days_lists_partitions_not_temporaries(tmp_path):
    lake = Lake(str(tmp_path))
    for name in ("dt=2026-03-02", "dt=2026-03-01", "dt=2026-03-03.tmp-abc", "notes"):
        os.makedirs(tmp_path / "raw" / "events" / name)
    assert lake.raw_days("events") == [dt.date(2026, 3, 1), dt.date(2026, 3, 2)]
