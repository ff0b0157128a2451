"""Turn one batch of source rows into raw events rows, vectorized with ``pyarrow.compute``.

The output has the raw events columns (schemas/raw.py) with every field nullable: a real
log can break the contract (a missing browser id, an unknown action), and judging that is
the validate step's job, which dead-letters such rows with a reason. The one thing the
importer must know per row is its UTC day, so a missing or unparsable time stops the import.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.importer.ids import hash_strings, key_strings
from components.importer.mapping import ImportFailed, Mapping, Source
from schemas.raw import EVENTS_SCHEMA, MS_PER_DAY, TS

# What import writes: the contract's columns and types, nullability left to validate.
OUTPUT_SCHEMA = pa.schema([f.with_nullable(True) for f in EVENTS_SCHEMA])

_FIRST_DAY = (dt.date(1, 1, 1) - dt.date(1970, 1, 1)).days  # partition names need a calendar date
_LAST_DAY = (dt.date(9999, 12, 31) - dt.date(1970, 1, 1)).days
_UNITS = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
_OFFSET = r"(Z|z|[+-]\d\d(:?\d\d)?)$"


class Where:
    """Names rows in messages: ``<file> row <n>`` (0-based rows of the input, after explode)."""

    def __init__(self, file_name: str, first_row: int):
        self.file_name, self.first_row = file_name, first_row

    def __call__(self, i: int) -> str:
        return f"{self.file_name} row {self.first_row + i}"


def to_events(batch: pa.Table, mapping: Mapping, where: Where) -> tuple[pa.Table, np.ndarray]:
    """``(events, day)``: the mapped rows and each row's UTC day number (days since 1970-01-01)."""
    n = batch.num_rows
    columns = {}
    for field in OUTPUT_SCHEMA:
        source: Source | None = getattr(mapping.fields, field.name)
        if field.name == "ts":
            columns["ts"] = to_timestamp(batch.column(source.column).combine_chunks(), mapping.time_unit,
                                         source.column, where)
        else:
            columns[field.name] = _string_field(batch, source, n, where)
    if mapping.actions:
        columns["action"] = map_values(columns["action"], mapping.actions)
    events = pa.table(columns, schema=OUTPUT_SCHEMA)
    day = np.floor_divide(pc.cast(columns["ts"], pa.int64()).to_numpy(zero_copy_only=False), MS_PER_DAY)
    outside = (day < _FIRST_DAY) | (day > _LAST_DAY)
    if outside.any():
        i = int(np.argmax(outside))
        column = mapping.fields.ts.column
        raise ImportFailed(f"{where(i)}: time {batch.column(column)[i].as_py()!r} in column {column!r} is outside "
                           f"the years 1..9999; is time_unit ({mapping.time_unit}) right?")
    return events, day


def _string_field(batch: pa.Table, source: Source | None, n: int, where: Where) -> pa.Array:
    if source is None:
        return pa.nulls(n, pa.string())
    if source.const is not None:
        return pa.repeat(pa.scalar(source.const, pa.string()), n)
    if source.column is not None:
        return _as_string(batch.column(source.column).combine_chunks(), source.column, where)
    parts = []
    for name in source.hash:
        if name == "_file":
            parts.append(pa.repeat(pa.scalar(where.file_name, pa.string()), n))
        elif name == "_row":
            parts.append(pa.array(np.arange(where.first_row, where.first_row + n, dtype=np.int64)))
        else:
            parts.append(_as_string(batch.column(name).combine_chunks(), name, where))
    return hash_strings(key_strings(parts))


def _as_string(arr: pa.Array, name: str, where: Where) -> pa.Array:
    """Ids and enums as strings: ``123`` -> ``"123"`` (the raw schema's ids are strings)."""
    if arr.type == pa.string():
        return arr
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_floating(arr.type):
        whole = pc.equal(arr, pc.trunc(arr))
        if pc.all(pc.fill_null(whole, True)).as_py():  # 1.0 -> "1", as the JSON/Parquet writer meant
            arr = pc.cast(arr, pa.int64())
    try:
        return pc.cast(arr, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ImportFailed(f"{where.file_name}: column {name!r} ({arr.type}) cannot be read as text: "
                           f"{' '.join(str(err).split())}") from None


def map_values(values: pa.Array, mapping: dict[str, str]) -> pa.Array:
    """Translate values found in ``mapping``; others (and nulls) are kept as they are."""
    keys = pa.array(list(mapping), pa.string())
    targets = pa.array(list(mapping.values()), pa.string())
    return pc.coalesce(pc.take(targets, pc.index_in(values, value_set=keys)), values)


def to_timestamp(arr: pa.Array, unit: str, name: str, where: Where) -> pa.Array:
    """Source times as timestamp[ms, UTC]. Numbers are counts of ``unit`` since the epoch
    (fractions truncated to the millisecond); ``iso`` strings with an offset are converted to
    UTC, without one are taken as UTC; a column that already is a timestamp is kept (naive = UTC)."""
    if arr.null_count:
        first = pc.index(pc.is_null(arr), True).as_py()
        raise ImportFailed(f"{where(first)}: the time column {name!r} is empty")
    if pa.types.is_timestamp(arr.type):
        if arr.type.tz is None:
            arr = pc.assume_timezone(arr, "UTC")
        return pc.cast(arr, TS, safe=False)
    if unit == "iso":
        return _iso(_as_string(arr, name, where), name, where)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = _parse_numbers(arr, name, where, unit)
    if pa.types.is_integer(arr.type):
        try:
            return pc.cast(pc.cast(pc.cast(arr, pa.int64()), pa.timestamp(unit, "UTC")), TS, safe=unit == "s")
        except pa.ArrowInvalid as err:
            raise ImportFailed(f"{where.file_name}: time column {name!r} out of range in unit {unit}: {err}") from None
    if pa.types.is_floating(arr.type):
        ms = pc.floor(pc.multiply(arr, _UNITS[unit]))
        return pc.cast(pc.cast(ms, pa.int64()), TS)
    raise ImportFailed(f"the time column {name!r} is {arr.type}; time_unit {unit} expects numbers")


def _parse_numbers(arr: pa.Array, name: str, where: Where, unit: str) -> pa.Array:
    for target in (pa.int64(), pa.float64()):
        try:
            return pc.cast(arr, target)
        except pa.ArrowInvalid:
            continue
    bad = _first_failure(arr, pa.float64()) or 0
    raise ImportFailed(f"{where(bad)}: cannot parse time {arr[bad].as_py()!r} in column {name!r} "
                       f"as a number of {unit} since the epoch")


def _iso(arr: pa.Array, name: str, where: Where) -> pa.Array:
    has_offset = pc.match_substring_regex(arr, _OFFSET)
    try:
        # Through ns so fractions finer than ms parse; then truncated to ms like the numbers.
        aware = pc.cast(pc.if_else(has_offset, arr, None), pa.timestamp("ns", "UTC"))
        naive = pc.cast(pc.if_else(has_offset, None, arr), pa.timestamp("ns"))
    except pa.ArrowInvalid:
        with_offset = pc.if_else(has_offset, arr, None)
        bad = _first_failure(with_offset, pa.timestamp("ns", "UTC"))
        if bad is None:
            bad = _first_failure(pc.if_else(has_offset, None, arr), pa.timestamp("ns")) or 0
        raise ImportFailed(f"{where(bad)}: cannot parse time {arr[bad].as_py()!r} in column {name!r} "
                           "as an ISO 8601 date-time") from None
    return pc.cast(pc.coalesce(aware, pc.assume_timezone(naive, "UTC")), TS, safe=False)


def _first_failure(arr: pa.Array, target: pa.DataType) -> int | None:
    """Index of the first value that does not cast (only called once a cast has failed)."""
    for i in range(len(arr)):
        if arr[i].is_valid:
            try:
                pc.cast(arr.slice(i, 1), target)
            except pa.ArrowInvalid:
                return i
    return None
