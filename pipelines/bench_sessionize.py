"""The ``sessionize`` bench entry: inputs of a chosen size, the real Beam step, and a DuckDB reference.

- :func:`prepare` cuts self-consistent inputs of about ``N`` events for one example day X
  out of a generated lake: every event of X-1, X and X+1 and every impression of X of
  the user keys whose stable hash (``schemas.validation.stable_bucket``) falls in the
  first ``k`` of :data:`HASH_BUCKETS` buckets, ``k`` chosen so that the rows day X reads
  (the last ``window`` of X-1, all of X, the purchases of X+1 before ``end(X) +
  attribution``) reach ``N``. They are written as validated partitions (checked with
  ``schemas.validation``; ``validate.num_buckets`` files of rows spread at random, each
  sorted by the table's ``order_by``; ``_SUCCESS`` last): the validate step's layout.
- :func:`run_beam` runs ``components.sessionize.step.run`` on such a lake for day X only.
- :func:`run_duckdb` is the same job in SQL for DuckDB over the same Parquet files, as a
  DuckDB user would write it: the rows X reads loaded into temporary tables, events
  numbered once in (ts, event_id) order; a hash join on the user key with the window as a
  range condition; per impression and pair the top-M aggregate ``max_by(id, ord, M)``
  (most recent first); a semi-join for the purchase labels; all cores. ``max_by`` keeps a
  heap of M per impression and pair (~7 GB per 1M events in one pass; at 4M it exhausts
  memory and the spill limit), so the job runs in passes over partitions of user keys of
  :data:`DUCKDB_EVENTS_PER_PART` events, each ``COPY``-ing its examples to one Parquet file
  (rows in DuckDB's order; the Beam step also sorts each of its files by
  ``(ts, impression_id)``). Its examples equal the step's (``tests/test_bench_sessionize.py``
  on hand-made data, :func:`same_examples` in the bench).
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
from components.sessionize.step import session_spec
from components.validate.step import validated_dir
from schemas.examples import examples_schema, seq_column
from schemas.raw import MS_PER_DAY, RAW_TABLES, day_start_ms, user_key
from schemas.validation import PROVENANCE, check_batch, stable_bucket

HASH_BUCKETS = 10_000  # granularity of the key subsets: ~1k events per bucket on a bench day
# DuckDB runs the job in passes over partitions of user keys of about this many events: the
# fastest of 250k/500k/1M/2M on the bench machine (4M events: 50 s / 45 s / 50 s / 65 s), and
# memory stays bounded (one pass over 4M events fails: out of memory).
DUCKDB_EVENTS_PER_PART = 500_000


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
    """``stable_bucket`` of each row's user key among :data:`HASH_BUCKETS` (each distinct key hashed once)."""
    keys = user_key(table).dictionary_encode()
    return stable_bucket(keys.dictionary, HASH_BUCKETS)[keys.indices.to_numpy()].astype(np.int32)


def events_read(lake: Lake, day: dt.date, spec: SessionSpec) -> int:
    """The number of event rows example day ``day`` reads from the validated partitions of ``lake``."""
    total = 0
    for offset, bounds in read_bounds(day, spec).items():
        directory = validated_dir(lake, "events", day + dt.timedelta(days=offset))
        if lake.complete(directory):
            table = parquet.read_partition(directory, columns=["ts", "action"])
            total += int(_read_mask(table, bounds).sum())
    return total


def validated(table: pa.Table, table_name: str, day: dt.date) -> pa.Table:
    """``table`` (raw rows of ``day``) checked as the validate step checks them; all must be valid."""
    spec = RAW_TABLES[table_name]
    good, dead = check_batch(table, spec, day, f"raw/{table_name}/dt={day}")
    duplicates = good.num_rows - pc.count_distinct(good.column(spec.key)).as_py()
    if dead.num_rows or duplicates:
        raise ValueError(f"bench input {table_name}/{day}: {dead.num_rows} invalid rows, {duplicates} duplicate ids")
    return good.drop_columns(list(PROVENANCE)).cast(spec.schema)


def write_validated(lake: Lake, table_name: str, day: dt.date, table: pa.Table, files: np.ndarray,
                    num_files: int) -> str:
    """Validated rows as a validated partition: file ``b`` holds the rows with ``files == b``,
    sorted by the table's ``order_by``; ``_SUCCESS`` last."""
    spec = RAW_TABLES[table_name]
    directory = validated_dir(lake, table_name, day)
    for b in range(num_files):
        part = table.filter(pa.array(files == b)).sort_by([(c, "ascending") for c in spec.order_by])
        parquet.write_table(part, os.path.join(directory, f"part-{b:05d}.parquet"))
    mark_success(directory)
    return directory


def prepare(src_root: str, day: dt.date, targets: dict[str, int], work: str, spec: SessionSpec,
            num_files: int, progress=print) -> dict[str, dict]:
    """One scratch lake per target (name -> events), cut from the raw partitions under ``src_root``.

    Returns name -> ``{"root", "events", "impressions", "key_buckets", "hash_buckets"}``;
    ``events`` is the number of event rows day ``day`` reads there. The key sets are nested
    (a smaller target's keys are among a larger one's).
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
    # Pass 2: each day's rows of the chosen keys, validated once (for the largest key set) and
    # written as a validated partition of every lake.
    for table_name, offsets in (("events", (-1, 0, 1)), ("impressions", (0,))):
        for offset in offsets:
            table = parquet.read_partition(src.raw(table_name, days[offset]))
            table = validated(table.filter(pa.array(key_buckets(table) < max(cut.values()))), table_name, days[offset])
            keys = key_buckets(table)
            # Rows spread over the files at random (seeded), as the validate step's hash of the row id does.
            files = np.random.default_rng(offset + 1).integers(0, num_files, table.num_rows)
            for name, k in cut.items():
                mine = keys < k
                write_validated(Lake(out[name]["root"]), table_name, days[offset], table.filter(pa.array(mine)),
                                files[mine], num_files)
            progress(f"  bench inputs: {table_name}/{days[offset]} written for {', '.join(cut)}")
            del table
    for name, o in out.items():
        lake = Lake(o["root"])
        o["events"] = events_read(lake, day, spec)
        o["impressions"] = parquet.count_rows(validated_dir(lake, "impressions", day))
    return out


def one_day_config(cfg, day: dt.date):
    """The slice of the pipeline config the sessionize step reads, building only example day ``day``."""
    return types.SimpleNamespace(sessionize=cfg.sessionize, validate=cfg.validate, beam=cfg.beam,
                                 runtime=types.SimpleNamespace(force=True),
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


def duckdb_inputs(lake: Lake, day: dt.date, spec: SessionSpec) -> list[str]:
    """Statements loading the rows day ``day`` reads into temporary tables ``ev`` and ``imp``.

    ``ev.ord`` numbers the events in (ts, event_id) order, the kernel's order; ``h`` hashes
    the user key, to split the job into partitions of keys.
    """
    event_columns = ("coalesce(user_id, browser_id) AS k, epoch_ms(ts) AS t, event_id, action, "
                     + ", ".join(sorted(set(ENTITY_COLUMNS.values()))))
    scans = []
    for offset, (lo, hi, actions) in read_bounds(day, spec).items():
        files = _files(lake, "events", day + dt.timedelta(days=offset))
        if not files:
            continue
        where = [] if offset == 0 else [f"ts >= {_ts_literal(lo)}", f"ts < {_ts_literal(hi)}"]
        if actions:
            where.append("action IN (" + ", ".join(f"'{a}'" for a in actions) + ")")
        scans.append(f"SELECT {event_columns} FROM read_parquet({_list(files)})"
                     + (" WHERE " + " AND ".join(where) if where else ""))
    return [
        f"""CREATE TEMP TABLE ev AS
        SELECT *, row_number() OVER (ORDER BY t, event_id) AS ord, hash(k) AS h
        FROM ({" UNION ALL ".join(scans)})""",
        f"""CREATE TEMP TABLE imp AS
        SELECT *, row_number() OVER () AS irow, coalesce(user_id, browser_id) AS k, epoch_ms(ts) AS t,
               epoch_ms(coalesce(click_ts, ts)) AS click_t, hash(coalesce(user_id, browser_id)) AS h
        FROM read_parquet({_list(_files(lake, 'impressions', day))})""",
    ]


def duckdb_examples(spec: SessionSpec, negative_rate: float, out_path: str, part: int = 0, parts: int = 1,
                    method: str = "max_by") -> str:
    """The examples of the user keys of partition ``part`` of ``parts``, written by one ``COPY``.

    ``method``: ``max_by``, the top-M aggregate ``max_by(id, ord, M)`` per (impression, pair),
    or ``slice``, ``list(id ORDER BY ord DESC)[1:M]`` in one pass (slower on the bench machine:
    15 s vs 10-11 s at 1M events, 62 s vs 45 s at 4M; the ``row_number()`` formulation was
    slower still and spilled past the disk at 4M).
    """
    actions = ", ".join(f"'{a}'" for a in sorted({a for _, a in spec.pairs}))
    if method == "max_by":
        lists = [f"max_by(e.{ENTITY_COLUMNS[e]}, e.ord, {spec.max_len}) FILTER (WHERE e.action = '{a}')"
                 for e, a in spec.pairs]
    elif method == "slice":
        lists = [f"(list(e.{ENTITY_COLUMNS[e]} ORDER BY e.ord DESC) FILTER (WHERE e.action = '{a}'))[1:{spec.max_len}]"
                 for e, a in spec.pairs]
    else:
        raise ValueError(f"unknown method {method!r}")
    mine = lambda alias: f"{alias}.h % {parts} = {part}"  # noqa: E731
    seqs = ",\n        ".join(f"{expr} AS {seq_column(e, a)}" for expr, (e, a) in zip(lists, spec.pairs))
    computed = {
        "user_key": "i.k",
        "logged_in": "i.user_id IS NOT NULL",
        "purchased": "b.irow IS NOT NULL",
        "sample_rate": f"CASE WHEN i.clicked THEN 1.0::DOUBLE ELSE {float(negative_rate)!r}::DOUBLE END",
    }
    computed.update({seq_column(e, a): f"coalesce(s.{seq_column(e, a)}, []::VARCHAR[])" for e, a in spec.pairs})
    select = ",\n      ".join(f"{computed.get(f.name, 'i.' + f.name)} AS {f.name}" for f in examples_schema(spec.pairs, engineered=False))
    return f"""
    COPY (
      WITH seqs AS (
        SELECT i.irow,
        {seqs}
        FROM imp i JOIN ev e ON e.k = i.k AND e.t >= i.t - {spec.window_ms} AND e.t < i.t
        WHERE e.action IN ({actions}) AND {mine("i")} AND {mine("e")}
        GROUP BY i.irow
      ),
      buys AS (
        SELECT DISTINCT i.irow
        FROM imp i JOIN ev e ON e.k = i.k AND e.listing_id = i.listing_id
        WHERE i.clicked AND e.action = 'purchase' AND e.t >= i.click_t AND e.t < i.click_t + {spec.attribution_ms}
          AND {mine("i")} AND {mine("e")}
      )
      SELECT
      {select}
      FROM imp i LEFT JOIN seqs s USING (irow) LEFT JOIN buys b USING (irow)
      WHERE {mine("i")}
    ) TO '{out_path}' (FORMAT parquet, COMPRESSION zstd)
    """


def run_duckdb(cfg, root: str, day: dt.date, out_dir: str, threads: int | None = None, method: str = "max_by",
               events_per_part: int = DUCKDB_EVENTS_PER_PART) -> dict:
    """The DuckDB reference on ``root`` for day ``day``, written as ``part-*.parquet`` in ``out_dir``."""
    import duckdb

    spec = session_spec(cfg.sessionize)
    os.makedirs(out_dir, exist_ok=True)
    t = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {threads or os.cpu_count()}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = '{os.path.join(out_dir, '.spill')}'")
    con.execute("SET max_temp_directory_size = '8GB'")  # may spill, but never fill the disk
    for statement in duckdb_inputs(Lake(root), day, spec):
        con.execute(statement)
    events = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    parts = max(1, -(-events // events_per_part)) if method == "max_by" else 1
    rows = 0
    for part in range(parts):
        path = os.path.join(out_dir, f"part-{part:05d}.parquet")
        rows += con.execute(duckdb_examples(spec, cfg.sessionize.negative_sample_rate, path, part, parts,
                                            method)).fetchone()[0]
    con.close()
    return {"seconds": time.perf_counter() - t, "examples": int(rows), "output": out_dir, "parts": parts,
            "method": method}


def same_examples(beam_dir: str, duckdb_dir: str, schema: pa.Schema, sample: int = 1) -> bool:
    """Whether two example partitions hold the same rows (lists, labels, carried columns); with
    ``sample > 1``, only the rows whose impression id hashes to bucket 0 of ``sample`` (less memory)."""
    def load(directory):
        parts = []
        for path in parquet.partition_files(directory):
            table = parquet.read_file(path)
            if sample > 1:
                table = table.filter(pa.array(stable_bucket(table.column("impression_id"), sample) == 0))
            parts.append(table.select(schema.names).cast(schema))
        return pa.concat_tables(parts).sort_by("impression_id")

    return load(beam_dir).equals(load(duckdb_dir))


def read_examples(path: str, schema: pa.Schema) -> pa.Table:
    """Examples from a Parquet file or partition, in the examples schema, sorted by impression id."""
    table = parquet.read_partition(path) if os.path.isdir(path) else parquet.read_file(path)
    return table.select(schema.names).cast(schema).sort_by("impression_id")
