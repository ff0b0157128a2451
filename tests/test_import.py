"""``adsformer import``: real logs (../shared/data samples) and hand-made files into raw/events."""
from __future__ import annotations

import collections
import copy
import csv
import datetime as dt
import json
import os
import pathlib
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from components.importer import ImportFailed, Mapping, MappingError, import_events, load_mapping
from components.importer.convert import OUTPUT_SCHEMA
from components.importer.ids import hash_strings
from components.lake import Lake, atomic_dir, parquet
from components.validate import step as validate
from pipelines.cli import main
from pipelines.config import CONFIG_DIR
from schemas.raw import EVENTS, EVENTS_SCHEMA
from schemas.validation import check_batch

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
TAOBAO = DATA / "taobao_userbehavior_sample" / "UserBehavior_sample.csv"
OTTO = DATA / "otto_sample" / "train_sample.jsonl"
MAPPINGS = CONFIG_DIR / "import"
UTC = dt.timezone.utc
quiet = dict(progress=lambda *_: None)

needs_data = pytest.mark.skipif(not TAOBAO.exists() or not OTTO.exists(), reason="../shared/data is not there")


def utc_day(seconds: float) -> dt.date:
    return dt.datetime.fromtimestamp(seconds, UTC).date()


def day_counts(root, days=None) -> dict[dt.date, int]:
    lake = Lake(str(root))
    return {d: parquet.count_rows(lake.raw("events", d)) for d in (days or lake.raw_days("events"))}


def read_events(root) -> pa.Table:
    lake = Lake(str(root))
    return pa.concat_tables([parquet.read_partition(lake.raw("events", d)) for d in lake.raw_days("events")])


def snapshot(root) -> dict[str, bytes]:
    """Every file under raw/ by relative path, with its bytes."""
    base = pathlib.Path(root)
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted((base / "raw").rglob("*")) if p.is_file()}


BASE = {  # a csv-with-header mapping of columns id, u, item, act, t (ms)
    "input": {"format": "csv"},
    "time_unit": "ms",
    "fields": {"event_id": "id", "user_id": "u", "browser_id": "u", "ts": "t", "action": "act",
               "listing_id": "item", "shop_id": {"const": "unknown"}, "taxonomy_id": {"const": "unknown"},
               "query": None, "platform": {"const": "ios"}},
    "actions": {"v": "view", "b": "purchase"},
}


def mapping(**changes) -> Mapping:
    return Mapping.model_validate({**copy.deepcopy(BASE), **changes})


def write_csv(path, rows, header=("id", "u", "item", "act", "t")) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


# --- the two real samples -------------------------------------------------------------------

@pytest.fixture(scope="module")
def taobao_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("taobao")
    assert main(["import", "--root", str(root), "--mapping", "taobao", "--input", str(TAOBAO)]) == 0
    return root


@needs_data
def test_taobao_sample_rows_per_day_and_actions(taobao_lake):
    with open(TAOBAO, newline="") as f:
        rows = list(csv.reader(f))
    expected_days = collections.Counter(utc_day(int(r[4])) for r in rows)
    behavior = {"pv": "view", "cart": "cart_add", "fav": "favorite", "buy": "purchase"}
    expected_actions = collections.Counter(behavior[r[3]] for r in rows)

    assert day_counts(taobao_lake) == dict(expected_days) == {dt.date(2017, 11, 26): 110_300}
    lake = Lake(str(taobao_lake))
    assert lake.complete(lake.raw("events", dt.date(2017, 11, 26)))
    table = read_events(taobao_lake)
    assert table.schema == OUTPUT_SCHEMA  # the contract's types; nullability is validate's to judge
    assert collections.Counter(table.column("action").to_pylist()) == expected_actions
    first = table.slice(0, 1).to_pylist()[0]
    assert (first["user_id"], first["browser_id"], first["listing_id"], first["taxonomy_id"]) == \
        (rows[0][0], rows[0][0], rows[0][1], rows[0][2])
    assert first["ts"] == dt.datetime.fromtimestamp(int(rows[0][4]), UTC)
    assert (first["shop_id"], first["query"], first["platform"]) == ("unknown", None, "web")
    assert len(table.column("event_id").unique()) == len(rows)  # the sample has no repeated rows


@needs_data
def test_otto_sample_explodes_sessions_into_days(tmp_path):
    expected_days, expected, n = collections.Counter(), collections.Counter(), 0
    types = {"clicks": "view", "carts": "cart_add", "orders": "purchase"}
    with open(OTTO) as f:
        for line in f:
            record = json.loads(line)
            for e in record["events"]:
                expected_days[utc_day(e["ts"] / 1000)] += 1
                expected[(str(record["session"]), str(e["aid"]), e["ts"], types[e["type"]])] += 1
                n += 1
    summary = import_events(str(tmp_path), load_mapping(MAPPINGS / "otto.yaml"), [str(OTTO)], **quiet)
    assert day_counts(tmp_path) == dict(expected_days)
    assert summary.rows_read == summary.rows_written == n == 862
    assert len(summary.days) == 29 and min(summary.days) == dt.date(2022, 7, 31)
    table = read_events(tmp_path)
    got = collections.Counter(
        (r["user_id"], r["listing_id"], int(r["ts"].timestamp() * 1000), r["action"]) for r in table.to_pylist())
    assert got == expected


# --- mapping semantics on small hand-made files ---------------------------------------------

T0 = dt.datetime(2024, 5, 1, 23, 59, 59, 250000, tzinfo=UTC)


@pytest.mark.parametrize("unit, value", [
    ("s", "1714607999.25"), ("ms", "1714607999250"), ("us", "1714607999250999"), ("ns", "1714607999250999999"),
    ("iso", "2024-05-01T23:59:59.250999Z"), ("iso", "2024-05-02T01:59:59.25+02:00"), ("iso", "2024-05-01 23:59:59.25"),
])
def test_time_units(tmp_path, unit, value):
    src = write_csv(tmp_path / "in.csv", [["e1", "u1", "l1", "v", value], ["e2", "u1", "l1", "v", value]])
    import_events(str(tmp_path / "lake"), mapping(time_unit=unit), [src], **quiet)
    ts = read_events(tmp_path / "lake").column("ts").to_pylist()
    assert ts == [T0, T0]  # truncated to the millisecond, UTC


def test_rows_split_by_utc_day_and_unmapped_actions_reach_the_dead_letters(tmp_path):
    rows = [["e1", "u1", "l1", "v", "1714607999000"],   # 2024-05-01 23:59:59
            ["e2", "u1", "l2", "b", "1714608000000"],   # 2024-05-02 00:00:00
            ["e3", "u2", "l3", "share", "1714608001000"],  # not in actions: kept verbatim
            ["e4", "", "l3", "v", "1714608002000"]]     # no user: browser_id empty too
    src = write_csv(tmp_path / "in.csv", rows)
    import_events(str(tmp_path), mapping(), [src], **quiet)
    day2 = dt.date(2024, 5, 2)
    assert day_counts(tmp_path) == {dt.date(2024, 5, 1): 1, day2: 3}
    table = parquet.read_partition(Lake(str(tmp_path)).raw("events", day2))
    assert table.column("action").to_pylist() == ["purchase", "share", "view"]
    good, dead = check_batch(table, EVENTS, day2, "raw/events/dt=2024-05-02/part-00000.parquet")
    assert good.column("event_id").to_pylist() == ["e2"]
    reasons = dict(zip(dead.column("row").to_pylist(), dead.column("reason").to_pylist()))
    assert "action: unknown value" in reasons[1] and "browser_id: required value is missing" in reasons[2]


def test_hashed_ids_parquet_explode_and_numeric_ids(tmp_path):
    events = pa.array([[{"item": 7, "t": 1714608000, "kind": "v"}, {"item": 7, "t": 1714608000, "kind": "v"}],
                       [], None, [{"item": 8.0, "t": 1714608001, "kind": "b"}]],
                      pa.list_(pa.struct([("item", pa.float64()), ("t", pa.int64()), ("kind", pa.string())])))
    pq.write_table(pa.table({"user": [1, 2, 3, 4], "events": events}), tmp_path / "in.parquet")
    fields = {"event_id": {"hash": ["user", "item", "t", "kind"]}, "user_id": "user", "browser_id": "user",
              "ts": "t", "action": "kind", "listing_id": "item", "shop_id": {"const": "s"},
              "taxonomy_id": {"const": "t"}, "query": None, "platform": {"const": "android"}}
    by_content = mapping(input={"format": "parquet", "explode": "events"}, time_unit="s", fields=fields)
    import_events(str(tmp_path / "a"), by_content, [str(tmp_path / "in.parquet")], **quiet)
    table = read_events(tmp_path / "a")
    assert table.column("user_id").to_pylist() == ["1", "1", "4"]
    assert table.column("listing_id").to_pylist() == ["7", "7", "8"]  # ids are text, 8.0 -> "8"
    ids = table.column("event_id").to_pylist()
    assert ids[0] == ids[1] != ids[2] and all(len(i) == 32 for i in ids)  # identical events: one id
    good, dead = check_batch(table, EVENTS, dt.date(2024, 5, 2), "f")
    assert dead.num_rows == 0 and good.num_rows == 3  # the repeat is caught later, by the key

    by_row = mapping(input={"format": "parquet", "explode": "events"}, time_unit="s",
                     fields=dict(fields, event_id={"hash": ["_file", "_row"]}))
    import_events(str(tmp_path / "b"), by_row, [str(tmp_path / "in.parquet")], **quiet)
    assert len(read_events(tmp_path / "b").column("event_id").unique()) == 3


def test_hash_matches_a_plain_python_reference():
    m64 = 2**64

    def fnv(data, h, reverse=False):
        for b in reversed(data) if reverse else data:
            h = ((h ^ b) * 0x100000001B3) % m64
        return h

    def fmix(h):
        h ^= h >> 33
        h = (h * 0xFF51AFD7ED558CCD) % m64
        h ^= h >> 33
        h = (h * 0xC4CEB9FE1A85EC53) % m64
        return h ^ (h >> 33)

    keys = ["", "a", "ab", "ba", "123\x1f456\x1fpv\x1f1511658000", "ü" * 40]
    want = [f"{fmix(fnv(k.encode(), 0xCBF29CE484222325)):016x}"
            f"{fmix(fnv(k.encode(), fmix(len(k.encode()) ^ 0x84222325CBF29CE4), True)):016x}" for k in keys]
    assert hash_strings(pa.array(keys)).to_pylist() == want
    assert hash_strings(pa.array(["x"] + keys).slice(1)).to_pylist() == want  # array offsets respected


# --- streaming, determinism, re-import ------------------------------------------------------

@needs_data
def test_small_blocks_and_parts_give_the_same_rows(tmp_path):
    """Many read blocks, rolled parts and a cap of one open file: same rows, same order."""
    m = load_mapping(MAPPINGS / "otto.yaml")
    import_events(str(tmp_path / "a"), m, [str(OTTO)], max_open=64, **quiet)
    import_events(str(tmp_path / "a2"), m, [str(OTTO)], block_bytes=16384, max_open=64, **quiet)
    assert snapshot(tmp_path / "a2") == snapshot(tmp_path / "a")  # row groups do not follow read blocks
    import_events(str(tmp_path / "b"), m, [str(OTTO)], block_bytes=16384, part_rows=20, max_open=1, **quiet)
    lake_b = Lake(str(tmp_path / "b"))
    assert len(parquet.partition_files(lake_b.raw("events", dt.date(2022, 8, 8)))) > 1
    assert read_events(tmp_path / "a").equals(read_events(tmp_path / "b"))
    with pytest.raises(ImportFailed, match="a line is longer than the read block of 4096 bytes"):
        import_events(str(tmp_path / "c"), m, [str(OTTO)], block_bytes=4096, **quiet)
    assert not os.path.exists(tmp_path / "c" / "raw" / "events") or not os.listdir(tmp_path / "c" / "raw" / "events")


@needs_data
def test_reimport_needs_force_and_is_byte_identical(taobao_lake, capsys):
    before = snapshot(taobao_lake)
    assert main(["import", "--root", str(taobao_lake), "--mapping", "taobao", "--input", str(TAOBAO)]) == 2
    err = capsys.readouterr().err
    assert "dt=2017-11-26 already exists; pass --force" in err and len(err.strip().splitlines()) == 1
    assert snapshot(taobao_lake) == before
    assert main(["import", "--root", str(taobao_lake), "--mapping", "taobao", "--input", str(TAOBAO), "--force"]) == 0
    out = capsys.readouterr().out
    assert "110,300 rows in 1 file(s) (replaced)" in out and "imported 110,300 rows: 110,300 written to 1 day(s)" in out
    assert snapshot(taobao_lake) == before
    assert not [p for p in os.listdir(pathlib.Path(taobao_lake) / "raw" / "events") if ".tmp-" in p]


def test_object_store_roots_upload_the_staged_parts(tmp_path, monkeypatch):
    """The object-store branch of the writer (local scratch, then upload into the staged
    partition), run against a local path: only the writer is told the root is remote."""
    from components.importer import write
    from components.lake import fs

    src = write_csv(tmp_path / "in.csv", [["e1", "u1", "l1", "v", "1714607999000"]])
    import_events(str(tmp_path / "local"), mapping(), [src], **quiet)
    remote = types.SimpleNamespace(**{k: getattr(fs, k) for k in dir(fs) if not k.startswith("_")})
    remote.is_local = lambda path: False
    monkeypatch.setattr(write, "fs", remote)
    import_events(str(tmp_path / "remote"), mapping(), [src], **quiet)
    assert snapshot(tmp_path / "remote") == snapshot(tmp_path / "local")


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"fields": {"user_id": "u"}}, "fields.event_id: Field required"),
    ({"time_unit": "minutes"}, "time_unit: Input should be"),
    ({"actions": {"v": "look"}}, "actions.v: Input should be 'view'"),
    ({"input": {"format": "csv", "header": False}}, "needs columns"),
    ({"fields.shop_id": None}, "fields.shop_id is null, but the events schema requires it for listing actions"),
    ({"fields.platform": {"const": "tv"}}, "fields.platform: const 'tv' is not a platform"),
    ({"fields.query": {"column": "q", "const": "x"}}, "fields.query: give exactly one of"),
    ({"fields.ts": {"const": "0"}}, "fields.ts: ts must be a source column"),
    ({"fields.listing_id": {"colum": "item"}}, "fields.listing_id.colum: Extra inputs are not permitted"),
])
def test_bad_mappings_name_the_field(tmp_path, change, message):
    data = copy.deepcopy(BASE)
    for key, value in change.items():
        if key.startswith("fields."):
            data["fields"][key.split(".", 1)[1]] = value
        else:
            data[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MappingError, match="bad mapping .*bad.yaml: ") as err:
        load_mapping(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_errors_are_one_line_and_leave_the_lake_alone(tmp_path, capsys):
    bad_time = write_csv(tmp_path / "in.csv", [["e1", "u1", "l1", "v", "1714607999000"],
                                                ["e2", "u1", "l1", "v", "yesterday"]])
    good_time = write_csv(tmp_path / "ok.csv", [["e1", "u1", "l1", "v", "1714607999000"]])
    seconds_as_ms = tmp_path / "s.yaml"
    seconds_as_ms.write_text(yaml.safe_dump({**BASE, "time_unit": "s"}))
    good_mapping = tmp_path / "m.yaml"
    good_mapping.write_text(yaml.safe_dump(BASE))
    root = str(tmp_path / "lake")
    cases = [
        (["--mapping", "nosuch", "--input", bad_time], "unknown mapping 'nosuch'; available: otto, taobao"),
        (["--mapping", str(good_mapping), "--input", str(tmp_path / "missing.csv")], "input file not found"),
        (["--mapping", str(good_mapping), "--input", bad_time],
         "in.csv row 1: cannot parse time 'yesterday' in column 't'"),
        (["--mapping", "taobao", "--input", bad_time], "in.csv row 0: cannot parse time 't'"),  # header read as data
        (["--mapping", str(seconds_as_ms), "--input", good_time],
         "ok.csv row 0: time '1714607999000' in column 't' is outside the years 1..9999; is time_unit (s) right?"),
    ]
    for args, message in cases:
        assert main(["import", "--root", root] + args) == 2
        captured = capsys.readouterr()
        assert message in captured.err, captured.err
        assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
        assert not os.path.exists(os.path.join(root, "raw", "events")) or \
            os.listdir(os.path.join(root, "raw", "events")) == []


def test_csv_header_must_have_the_mapped_columns(tmp_path):
    src = write_csv(tmp_path / "in.csv", [["e1", "u1", "l1", "v", "1"]], header=("id", "user", "item", "act", "t"))
    with pytest.raises(ImportFailed, match=r"in.csv has no column\(s\) 'u' that the mapping uses"):
        import_events(str(tmp_path / "lake"), mapping(), [src], **quiet)


def test_import_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["import", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: adsformer import" in out and "--mapping" in out and "--force" in out


# --- validate on the imported sample --------------------------------------------------------

@needs_data
def test_validate_runs_on_the_imported_taobao_sample(taobao_lake, capsys):
    """The preset's window (D-1 and D) needs a second day; the sample holds one (2017-11-26),
    so D = 11-27 is landed here as an empty partition, standing in for the rest of the log."""
    lake = Lake(str(taobao_lake))
    day, stand_in = dt.date(2017, 11, 26), dt.date(2017, 11, 27)
    with atomic_dir(lake.raw("events", stand_in)) as tmp:
        parquet.write_table(OUTPUT_SCHEMA.empty_table(), os.path.join(tmp, "part-00000.parquet"))
    assert main(["run", "--root", str(taobao_lake), "--preset", "taobao", "--steps", "validate"]) == 0
    out = capsys.readouterr().out
    assert "date 2017-11-27" in out and "validate  succeeded" in out
    valid = parquet.read_partition(validate.validated_dir(lake, "events", day))
    assert valid.num_rows == 110_300 and valid.schema.equals(EVENTS_SCHEMA)
    assert parquet.count_rows(validate.dead_letter_dir(lake, "events", day)) == 0


@needs_data
def test_sessionize_corpora_and_skipgram_run_on_the_imported_taobao_sample(taobao_lake, capsys):
    """Events only: sessionize writes no examples (and says why), corpora still builds sessions,
    skip-gram vectors pass the quality checks against the items' categories, and the
    catalog-based representations are skipped with the reason in their manifests."""
    import collections
    import json

    lake = Lake(str(taobao_lake))
    stand_in = lake.raw("events", dt.date(2017, 11, 27))  # see the test above
    if not lake.complete(stand_in):
        with atomic_dir(stand_in) as tmp:
            parquet.write_table(OUTPUT_SCHEMA.empty_table(), os.path.join(tmp, "part-00000.parquet"))
    assert main(["run", "--root", str(taobao_lake), "--preset", "taobao",
                 "--steps", "validate,data_gate,sessionize,corpora,skipgram,text_vectors"]) == 0
    run = os.path.join(str(taobao_lake), "runs", "2017-11-27")
    quality = json.load(open(os.path.join(run, "skipgram", "manifest.json")))["metrics"]["quality"]["taxonomy_id"]
    assert quality["cosine_gap"] > 0.02 and quality["purity_ratio"] > 1.5
    text = json.load(open(os.path.join(run, "text_vectors", "manifest.json")))
    assert text["metrics"]["skipped"].startswith("no catalog") and "skipped: no catalog" in capsys.readouterr().out
    notes = json.load(open(os.path.join(run, "sessionize", "manifest.json")))["notes"]
    assert any("events-only" in n for n in notes)
    sessions = parquet.read_partition(lake.derived("sessions", dt.date(2017, 11, 26))).to_pylist()
    views = collections.Counter()
    for s in sessions:
        views[s["user_key"]] += len(s["listings"])
    assert sum(views.values()) == 98_361  # every 'pv' of the sample is in exactly one session
    lines = open(os.path.join(run, "corpora", "corpus", "skipgram.txt")).read().splitlines()
    assert len(lines) == sum(5 if s["purchased"] else 1 for s in sessions if len(s["listings"]) >= 2)
