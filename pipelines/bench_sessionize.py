"""The ``sessionize`` bench entry: inputs of a chosen size, the real Beam step, and a DuckDB reference.

- :func:`prepare` cuts self-consistent inputs of about ``N`` events for one example day X
  out of a generated lake: every event of X-1, X and X+1 and every impression of X of
  the user keys whose stable hash (``schemas.validation.stable_bucket``) falls in the
  first ``k`` of :data:`HASH_BUCKETS` buckets, ``k`` chosen so that the rows day X reads
  (the last ``window`` of X-1, all of X, the purchases of X+1 before ``end(X) +
  attribution``) reach ``N``. They are written as validated partitions (checked with
  ``schemas.validation``, one file per ``validate.num_buckets`` key bucket, each sorted by
  the table's ``order_by``, ``_SUCCESS`` last), the layout the validate step writes.
- :func:`run_beam` runs ``components.sessionize.step.run`` on such a lake for day X only.
- :func:`run_duckdb` is the same job written in SQL for DuckDB over the same Parquet files:
  a hash join on the user key with the time window as a range condition, ``row_number()``
  per (impression, action) for the cap ``M``, ``list(... ORDER BY ...)`` per pair, a
  semi-join for the purchase labels; all cores; the examples written to one Parquet file
  (rows in DuckDB's order, where the Beam step sorts each of its files by
  ``(ts, impression_id)``). Its examples equal the step's (``tests/test_bench_sessionize.py``).
"""
from __future__ import annotations

import datetime as dt
import os
import time
import types

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.lake import Lake, mark_success, parquet
from components.sessionize.kernel import ENTITY_COLUMNS, SessionSpec
from components.sessionize.step import MINUTE_MS, session_spec
from components.validate.step import validated_dir
from schemas.examples import examples_schema, seq_column
from schemas.raw import MS_PER_DAY, RAW_TABLES, day_start_ms, user_key
from schemas.validation import PROVENANCE, check_batch, split_duplicates, stable_bucket

HASH_BUCKETS = 10_000  # granularity of the key subsets: ~1k events per bucket on a bench day


def read_bounds(day: dt.date, spec: SessionSpec) -> dict[int, tuple[int, int, tuple[str, ...] | None]]:
    """Rows example day ``day`` reads from the events of day ``day + offset``: ``lo <= ts < hi``, actions."""
    start = day_start_ms(day)
    return {-1: (start - spec.window_ms, start, None), 0: (start, start + MS_PER_DAY, None),
            1: (start + MS_PER_DAY, start + MS_PER_DAY + spec.attribution_ms, ("purchase",))}


def _read_mask(table: pa.Table, bounds) -> np.ndarray:
    lo, hi, actions = bounds
    ts = pc.cast(table.column("ts"), pa.int64())
    keep = pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi))
    if actions:
        keep = pc.and_(keep, pc.is_in(table.column("action"), pa.array(actions)))
    return keep.to_numpy(zero_copy_only=False) if isinstance(keep, pa.Array) else keep.combine_chunks().to_numpy(
        zero_copy_only=False)


def key_buckets(table: pa.Table) -> np.ndarray:
    return stable_bucket(user_key(table), HASH_BUCKETS)


def events_read(lake: Lake, day: dt.date, spec: SessionSpec) -> int:
    """The number of event rows example day ``day`` reads from the validated partitions of ``lake``."""
    total = 0
    for offset, bounds in read_bounds(day, spec).items():
        directory = validated_dir(lake, "events", day + dt.timedelta(days=offset))
        if lake.complete(directory):
            table = parquet.read_partition(directory, columns=["ts", "action"])
            total += int(_read_mask(table, bounds).sum())
    return total


def write_validated(lake: Lake, table_name: str, day: dt.date, table: pa.Table, num_files: int) -> str:
    """``table`` (raw rows of ``day``) as a validated partition: checked, deduplicated, bucketed, sorted."""
    spec = RAW_TABLES[table_name]
    good, dead = check_batch(table, spec, day, f"raw/{table_name}/dt={day}")
    unique, dups = split_duplicates(good, spec)
    if dead.num_rows or dups.num_rows:
        raise ValueError(f"bench input {table_name}/{day}: {dead.num_rows + dups.num_rows} invalid rows")
    unique = unique.drop_columns(list(PROVENANCE)).cast(spec.schema)
    directory = validated_dir(lake, table_name, day)
    buckets = stable_bucket(unique.column(spec.key), num_files)
    for b in range(num_files):
        part = unique.filter(pa.array(buckets == b)).sort_by([(c, "ascending") for c in spec.order_by])
        parquet.write_table(part, os.path.join(directory, f"part-{b:05d}.parquet"))
    mark_success(directory)
    return directory


def prepare(src_root: str, day: dt.date, targets: dict[str, int], work: str, spec: SessionSpec,
            num_files: int, progress=print) -> dict[str, dict]:
    """One scratch lake per target (name -> events), cut from the raw partitions under ``src_root``.

    Returns name -> ``{"root", "events", "impressions", "key_buckets"}``; ``events`` is the
    number of event rows day ``day`` reads there.
    """
    src = Lake(src_root)
    days = {offset: day + dt.timedelta(days=offset) for offset in (-1, 0, 1)}
    # Pass 1: how many rows of day X's read set each key bucket holds.
    per_bucket = np.zeros(HASH_BUCKETS, dtype=np.int64)
    for offset, bounds in read_bounds(day, spec).items():
        table = parquet.read_partition(src.raw("events", days[offset]), columns=["user_id", "browser_id", "ts", "action"])
        per_bucket += np.bincount(key_buckets(table)[_read_mask(table, bounds)], minlength=HASH_BUCKETS)
        del table
    cumulative = np.cumsum(per_bucket)
    cut = {name: int(min(np.searchsorted(cumulative, n) + 1, HASH_BUCKETS)) for name, n in targets.items()}
    out = {name: {"root": os.path.join(work, f"sessionize-{name}"), "key_buckets": k, "hash_buckets": HASH_BUCKETS}
           for name, k in cut.items()}
    # Pass 2: each day's rows of the chosen keys, written as validated partitions of every lake.
    for table_name, offsets in (("events", (-1, 0, 1)), ("impressions", (0,))):
        for offset in offsets:
            table = parquet.read_partition(src.raw(table_name, days[offset]))
            buckets = key_buckets(table)
            for name, k in cut.items():
                write_validated(Lake(out[name]["root"]), table_name, days[offset],
                                table.filter(pa.array(buckets < k)), num_files)
            progress(f"  bench inputs: {table_name}/{days[offset]} written for {', '.join(cut)}")
            del table, buckets
    for name, o in out.items():
        lake = Lake(o["root"])
        o["events"] = events_read(lake, day, spec)
        o["impressions"] = parquet.count_rows(validated_dir(lake, "impressions", day))
    return out


def one_day_config(cfg, day: dt.date):
    """The slice of the pipeline config the sessionize step reads, building only example day ``day``."""
    return types.SimpleNamespace(sessionize=cfg.sessionize, beam=cfg.beam, runtime=types.SimpleNamespace(force=True),
                                 window=types.SimpleNamespace(example_dates=lambda _date: [day]))


def run_beam(cfg, root: str, day: dt.date) -> dict:
    """The sessionize step on ``root`` for day ``day``; returns seconds and the output's rows."""
    from components.sessionize import step

    t = time.perf_counter()
    result = step.run(one_day_config(cfg, day), day, Lake(root), progress=lambda *_: None)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "examples": result.row_counts[f"examples/{day}"],
            "output": result.outputs[f"examples/{day}"]}


def _files(lake: Lake, table: str, day: dt.date) -> list[str]:
    directory = validated_dir(lake, table, day)
    return parquet.partition_files(directory) if lake.complete(directory) else []


def _ts_literal(ms: int) -> str:
    return f"TIMESTAMPTZ '{dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(sep=' ')}'"


def _list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def duckdb_sql(lake: Lake, day: dt.date, spec: SessionSpec, negative_rate: float, out_path: str) -> str:
    """The sessionize job of ``day`` as one DuckDB ``COPY (...) TO`` statement."""
    bounds = read_bounds(day, spec)
    event_columns = "coalesce(user_id, browser_id) AS k, epoch_ms(ts) AS t, event_id, action, " + \
        ", ".join(sorted(set(ENTITY_COLUMNS.values())))
    scans = []
    for offset, (lo, hi, actions) in bounds.items():
        files = _files(lake, "events", day + dt.timedelta(days=offset))
        if not files:
            continue
        where = [] if offset == 0 else [f"ts >= {_ts_literal(lo)}", f"ts < {_ts_literal(hi)}"]
        if actions:
            where.append("action IN (" + ", ".join(f"'{a}'" for a in actions) + ")")
        scans.append(f"SELECT {event_columns} FROM read_parquet({_list(files)})"
                     + (" WHERE " + " AND ".join(where) if where else ""))
    impressions = f"read_parquet({_list(_files(lake, 'impressions', day))})"
    actions = sorted({a for _, a in spec.pairs})
    seqs = ",\n      ".join(
        f"list({ENTITY_COLUMNS[e]} ORDER BY rn) FILTER (WHERE action = '{a}') AS {seq_column(e, a)}"
        for e, a in spec.pairs)
    schema = examples_schema(spec.pairs)
    computed = {
        "user_key": "coalesce(i.user_id, i.browser_id)",
        "logged_in": "i.user_id IS NOT NULL",
        "purchased": "b.impression_id IS NOT NULL",
        "sample_rate": f"CASE WHEN i.clicked THEN 1.0::DOUBLE ELSE {float(negative_rate)!r}::DOUBLE END",
    }
    computed.update({seq_column(e, a): f"coalesce(s.{seq_column(e, a)}, []::VARCHAR[])" for e, a in spec.pairs})
    select = ",\n    ".join(f"{computed.get(f.name, 'i.' + f.name)} AS {f.name}" for f in schema)
    return f"""
COPY (
  WITH ev AS (
    {" UNION ALL ".join(scans)}
  ),
  imp AS (
    SELECT impression_id, coalesce(user_id, browser_id) AS k, epoch_ms(ts) AS t, listing_id, clicked,
           epoch_ms(coalesce(click_ts, ts)) AS click_t
    FROM {impressions}
  ),
  hits AS (
    SELECT i.impression_id, e.action, {", ".join("e." + c for c in sorted(set(ENTITY_COLUMNS.values())))},
           row_number() OVER (PARTITION BY i.impression_id, e.action ORDER BY e.t DESC, e.event_id DESC) AS rn
    FROM imp i JOIN ev e ON e.k = i.k AND e.t >= i.t - {spec.window_ms} AND e.t < i.t
    WHERE e.action IN ({", ".join(f"'{a}'" for a in actions)})
  ),
  seqs AS (
    SELECT impression_id,
      {seqs}
    FROM hits WHERE rn <= {spec.max_len} GROUP BY impression_id
  ),
  buys AS (
    SELECT DISTINCT i.impression_id
    FROM imp i JOIN ev e ON e.k = i.k AND e.listing_id = i.listing_id
    WHERE i.clicked AND e.action = 'purchase' AND e.t >= i.click_t AND e.t < i.click_t + {spec.attribution_ms}
  )
  SELECT
    {select}
  FROM {impressions} i
  LEFT JOIN seqs s ON s.impression_id = i.impression_id
  LEFT JOIN buys b ON b.impression_id = i.impression_id
) TO '{out_path}' (FORMAT parquet, COMPRESSION zstd)
"""


def run_duckdb(cfg, root: str, day: dt.date, out_path: str, threads: int | None = None) -> dict:
    """The DuckDB reference on ``root`` for day ``day``, written to ``out_path``; seconds and rows."""
    import duckdb

    sql = duckdb_sql(Lake(root), day, session_spec(cfg.sessionize), cfg.sessionize.negative_sample_rate, out_path)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    t = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {threads or os.cpu_count()}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    rows = con.execute(sql).fetchone()[0]
    con.close()
    return {"seconds": time.perf_counter() - t, "examples": int(rows), "output": out_path}


def read_examples(path: str, schema: pa.Schema) -> pa.Table:
    """Examples from a Parquet file or partition, in the examples schema, sorted by impression id."""
    table = parquet.read_partition(path) if os.path.isdir(path) else parquet.read_file(path)
    return table.select(schema.names).cast(schema).sort_by("impression_id")
