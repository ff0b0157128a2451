"""Validation of raw record batches against a :class:`schemas.raw.TableSpec` (DESIGN §4).

``check_batch`` splits an Arrow table into rows that satisfy the contract (coerced to the
exact schema) and dead-letter rows that say which column failed, on which row of which
file, and why. The common path is vectorized with ``pyarrow.compute``; only the values
that fail a vectorized cast or UTF-8 check are examined one by one, to name them.
``split_duplicates`` handles the unique key once rows of one key meet in one place.
"""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.raw import MS_PER_DAY, TS, TableSpec, day_start_ms

PROVENANCE = ("_file", "_row")  # where a row came from; kept until the output is written

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("column", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("record", pa.string(), nullable=False),  # the original row as JSON
    ]
)


class _Problems:
    """Accumulates (row mask, column, reason) triples for one batch."""

    def __init__(self, n: int):
        self.n = n
        self.any = np.zeros(n, dtype=bool)
        self.items: list[tuple[np.ndarray, str, object]] = []

    def add(self, mask, column: str, reason) -> None:
        mask = _as_mask(mask, self.n)
        if mask.any():
            self.any |= mask
            self.items.append((mask, column, reason))

    def describe(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        """First failing column and the joined reasons for each of ``rows``."""
        columns, reasons = [], []
        for r in rows:
            cols, msgs = [], []
            for mask, column, reason in self.items:
                if mask[r]:
                    cols.append(column)
                    msgs.append(reason[r] if isinstance(reason, dict) else reason)
            columns.append(cols[0])
            reasons.append("; ".join(f"{c}: {m}" for c, m in zip(cols, msgs)))
        return columns, reasons


def _as_mask(mask, n: int) -> np.ndarray:
    if isinstance(mask, np.ndarray):
        return mask
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool, copy=False) if n else np.zeros(0, bool)


def _cast_values(arr: pa.Array, target: pa.DataType) -> tuple[pa.Array, dict[int, str]]:
    """Cast ``arr`` to ``target``; values that cannot be cast become null and are reported by row."""
    if arr.type == target:
        return arr, {}
    # Sub-millisecond precision is dropped on purpose: the contract is timestamp[ms, UTC].
    safe = not (pa.types.is_timestamp(arr.type) and pa.types.is_timestamp(target))
    try:
        return pc.cast(arr, target, safe=safe), {}
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    values, failed = [], {}
    for i in range(len(arr)):
        one = arr.slice(i, 1)
        try:
            values.append(pc.cast(one, target, safe=safe)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            values.append(None)
            failed[i] = f"cannot convert {_show(one[0].as_py())} ({arr.type}) to {target}"
    return pa.array(values, type=target), failed


def _check_utf8(arr: pa.Array) -> tuple[pa.Array, dict[int, str]]:
    """Null out and report strings that are not valid UTF-8 (Parquet readers do not check)."""
    try:
        if pa.types.is_string(arr.type):
            arr.validate(full=True)
            return arr, {}
        return pc.cast(arr, pa.string()), {}  # binary -> string checks UTF-8
    except pa.ArrowInvalid:
        pass
    raw = (arr.view(pa.binary()) if pa.types.is_string(arr.type) else pc.cast(arr, pa.binary())).to_pylist()
    values, failed = [], {}
    for i, b in enumerate(raw):
        try:
            values.append(None if b is None else b.decode("utf-8"))
        except UnicodeDecodeError as err:
            values.append(None)
            failed[i] = f"malformed UTF-8 at byte {err.start}: {_show(b)}"
    return pa.array(values, type=pa.string()), failed


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce_column(table: pa.Table, field: pa.Field, problems: _Problems) -> pa.Array:
    n = table.num_rows
    if field.name not in table.column_names:
        if not field.nullable:
            problems.add(np.ones(n, bool), field.name, "column is missing from the file")
        return pa.nulls(n, type=field.type)
    arr = table.column(field.name).combine_chunks()
    if pa.types.is_binary(arr.type) and pa.types.is_string(field.type):
        arr, failed = _check_utf8(arr)
    else:
        arr, failed = _cast_values(arr, field.type)
        if pa.types.is_string(field.type):
            arr, bad_utf8 = _check_utf8(arr)
            failed.update(bad_utf8)
    if failed:
        problems.add(_rows_mask(failed, n), field.name, failed)
    if not field.nullable:
        missing = pc.is_null(arr)
        if pa.types.is_string(field.type):
            missing = pc.or_kleene(missing, pc.equal(arr, ""))
        problems.add(_as_mask(missing, n) & ~_rows_mask(failed, n), field.name, "required value is missing")
    return arr


def _rows_mask(rows: dict[int, str], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    if rows:
        mask[list(rows)] = True
    return mask


def _day_bounds(day: dt.date) -> tuple[pa.Scalar, pa.Scalar]:
    start = day_start_ms(day)
    return pa.scalar(start, type=TS), pa.scalar(start + MS_PER_DAY, type=TS)


def check_batch(
    table: pa.Table, spec: TableSpec, day: dt.date, source_file: str, first_row: int = 0
) -> tuple[pa.Table, pa.Table]:
    """Split ``table`` (rows ``first_row``.. of ``source_file``) into valid rows and dead letters.

    Returns ``(good, dead)``: ``good`` has ``spec.schema`` plus the provenance columns
    ``_file``/``_row``; ``dead`` has :data:`DEAD_LETTER_SCHEMA`. Every input row lands in
    exactly one of the two. The unique key is checked later by :func:`split_duplicates`.
    """
    n = table.num_rows
    problems = _Problems(n)
    columns = {f.name: _coerce_column(table, f, problems) for f in spec.schema}

    for name, allowed in spec.enums.items():
        arr = columns[name]
        unknown = pc.and_kleene(pc.is_valid(arr), pc.invert(pc.is_in(arr, value_set=pa.array(allowed))))
        problems.add(unknown, name, f"unknown value (allowed: {', '.join(allowed)})")
    for rule in spec.required_when:
        applies = pc.is_in(columns[rule.when_column], value_set=pa.array(rule.when_values))
        for name in rule.columns:
            missing = pc.and_kleene(applies, pc.or_kleene(pc.is_null(columns[name]), pc.equal(columns[name], "")))
            problems.add(missing, name, f"required when {rule.when_column} is {'/'.join(rule.when_values)}")
    start, end = _day_bounds(day)
    for name in spec.day_bound:
        outside = pc.or_kleene(pc.less(columns[name], start), pc.greater_equal(columns[name], end))
        problems.add(outside, name, f"timestamp outside the partition day {day.isoformat()}")
    for name in spec.not_after_day:
        problems.add(pc.greater_equal(columns[name], end), name, f"timestamp after the partition day {day.isoformat()}")

    rows = np.arange(first_row, first_row + n, dtype=np.int64)
    good_mask = ~problems.any
    good = pa.table(columns, schema=spec.schema).filter(pa.array(good_mask))
    good = good.append_column("_file", pa.array([source_file] * int(good_mask.sum()), pa.string()))
    good = good.append_column("_row", pa.array(rows[good_mask]))

    bad_rows = np.flatnonzero(problems.any)
    bad_columns, bad_reasons = problems.describe(bad_rows)
    records = [_to_json(r) for r in table.take(pa.array(bad_rows, pa.int64())).to_pylist()] if len(bad_rows) else []
    dead = pa.table(
        {
            "source_file": pa.array([source_file] * len(bad_rows), pa.string()),
            "row": pa.array(rows[bad_rows], pa.int64()),
            "column": pa.array(bad_columns, pa.string()),
            "reason": pa.array(bad_reasons, pa.string()),
            "record": pa.array(records, pa.string()),
        },
        schema=DEAD_LETTER_SCHEMA,
    )
    return good, dead


def _to_json(record: dict) -> str:
    def default(value):
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="backslashreplace")
        return str(value)

    return json.dumps(record, default=default, sort_keys=True, ensure_ascii=False)


def split_duplicates(good: pa.Table, spec: TableSpec) -> tuple[pa.Table, pa.Table]:
    """Keep the first row of each ``spec.key`` (by source file, then row) and dead-letter the rest.

    ``good`` is a union of :func:`check_batch` outputs that holds every row of its keys.
    Returns ``(unique, dead)``; ``unique`` is sorted by ``spec.order_by`` and keeps provenance.
    """
    if good.num_rows == 0:
        return good, DEAD_LETTER_SCHEMA.empty_table()
    ordered = good.sort_by([(spec.key, "ascending"), ("_file", "ascending"), ("_row", "ascending")])
    keys = ordered.column(spec.key).combine_chunks()
    repeat = np.zeros(ordered.num_rows, dtype=bool)
    if ordered.num_rows > 1:
        repeat[1:] = _as_mask(pc.equal(keys.slice(1), keys.slice(0, len(keys) - 1)), ordered.num_rows - 1)
    # Index of the first occurrence of each row's key, to say where the kept copy is.
    first = np.maximum.accumulate(np.where(repeat, 0, np.arange(ordered.num_rows)))
    unique = ordered.filter(pa.array(~repeat)).sort_by([(c, "ascending") for c in spec.order_by])
    dup_idx = np.flatnonzero(repeat)
    if not len(dup_idx):
        return unique, DEAD_LETTER_SCHEMA.empty_table()
    dups = ordered.take(pa.array(dup_idx, pa.int64()))
    files = ordered.column("_file").to_pylist()
    rows = ordered.column("_row").to_pylist()
    reasons = [f"duplicate {spec.key} (kept the copy at {files[first[i]]} row {rows[first[i]]})" for i in dup_idx]
    data = dups.drop_columns(list(PROVENANCE)).to_pylist()
    dead = pa.table(
        {
            "source_file": dups.column("_file"),
            "row": dups.column("_row"),
            "column": pa.array([spec.key] * len(dup_idx), pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "record": pa.array([_to_json(r) for r in data], pa.string()),
        },
        schema=DEAD_LETTER_SCHEMA,
    )
    return unique, dead


def stable_bucket(keys: pa.Array, num_buckets: int) -> np.ndarray:
    """A hash of each string, stable across processes and machines, modulo ``num_buckets``.

    Python's ``hash`` is salted per process and pyarrow exposes no stable string hash, so
    this is a vectorized polynomial hash over the UTF-8 bytes (numpy ``reduceat``).
    """
    keys = pc.cast(keys, pa.string()).combine_chunks() if isinstance(keys, pa.ChunkedArray) else pc.cast(keys, pa.string())
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = pc.fill_null(keys, "")
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int32)[keys.offset : keys.offset + n + 1]
    data = np.frombuffer(keys.buffers()[2], dtype=np.uint8) if keys.buffers()[2] is not None else np.zeros(0, np.uint8)
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = data[lo:hi].astype(np.uint64)
    starts = (offsets[:-1] - lo).astype(np.int64)
    lengths = np.diff(offsets).astype(np.int64)
    if len(data) == 0:
        return np.zeros(n, dtype=np.int64)
    pos = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)
    with np.errstate(over="ignore"):
        weights = np.power(np.uint64(1099511628211), pos.astype(np.uint64) + np.uint64(1))
        mixed = data * weights + np.uint64(0x9E3779B97F4A7C15)
        sums = np.add.reduceat(mixed, np.minimum(starts, len(data) - 1))
    sums = np.where(lengths > 0, sums, np.uint64(0))
    sums ^= sums >> np.uint64(29)
    return (sums % np.uint64(num_buckets)).astype(np.int64)
