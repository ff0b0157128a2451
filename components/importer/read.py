"""Stream a source file as Arrow tables of the columns a mapping needs.

CSV (``pyarrow.csv.open_csv``) and JSONL (``pyarrow.json.open_json``) are read in blocks of
``block_bytes``, Parquet in batches of ``batch_rows`` (``iter_batches``), so memory is
bounded by the block (and the readers' fixed read-ahead), not the file. For JSONL the same
holds per block of lines (a line must fit in a block); ``explode`` multiplies a block's
rows by its events, still bounded by the block's bytes. CSV columns are read as strings,
so ids keep their exact text (leading zeros, no float rounding); JSON and Parquet values
keep their types (a JSON field must have one type throughout the file) and are cast later.
"""
from __future__ import annotations

import os
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from components.importer.mapping import ImportFailed, InputSpec

# Arrow's CSV and JSON readers read a few dozen blocks ahead of the consumer, so the block
# size sets the memory bound: 1 MiB blocks keep the reader near 50 MB (16 MiB ones: 650 MB).
BLOCK_BYTES = 1 << 20
BATCH_ROWS = 65536


def batches(path: str, spec: InputSpec, columns: list[str], block_bytes: int = BLOCK_BYTES,
            batch_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """Tables of ``columns`` in file order (one row per event, after ``spec.explode``)."""
    name = os.path.basename(path)
    try:
        if spec.format == "csv":
            yield from _csv(path, spec, columns, block_bytes)
        elif spec.format == "jsonl":
            reader = pajson.open_json(path, read_options=pajson.ReadOptions(block_size=block_bytes))
            for batch in reader:
                yield _select(pa.Table.from_batches([batch]), spec, columns, name)
        else:
            with pq.ParquetFile(path) as pf:
                top = [c for c in ([spec.explode] if spec.explode else []) + columns if c in pf.schema_arrow.names]
                for batch in pf.iter_batches(batch_size=batch_rows, columns=top):
                    yield _select(pa.Table.from_batches([batch]), spec, columns, name)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowKeyError, pa.ArrowNotImplementedError) as err:
        text = " ".join(str(err).split())
        if "straddl" in text:
            text += f" (a line is longer than the read block of {block_bytes} bytes)"
        raise ImportFailed(f"cannot read {path} as {spec.format}: {text}") from None


def _csv(path: str, spec: InputSpec, columns: list[str], block_bytes: int) -> Iterator[pa.Table]:
    names = spec.columns
    if names is None:  # a header: check the mapping's columns against it before reading
        with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=block_bytes, use_threads=False),
                            parse_options=pacsv.ParseOptions(delimiter=spec.delimiter)) as probe:
            _require(columns, probe.schema.names, os.path.basename(path))
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=block_bytes, column_names=spec.columns, use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=spec.delimiter),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns, column_types={c: pa.string() for c in columns},
            null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True),
    )
    for batch in reader:
        yield pa.Table.from_batches([batch])


def _require(columns: list[str], available: list[str], name: str) -> None:
    missing = [c for c in columns if c not in available]
    if missing:
        raise ImportFailed(f"{name} has no column(s) {', '.join(map(repr, missing))} that the mapping uses "
                           f"(it has: {', '.join(available)})")


def _select(table: pa.Table, spec: InputSpec, columns: list[str], name: str) -> pa.Table:
    if spec.explode:
        if spec.explode not in table.column_names:
            raise ImportFailed(f"{name} has no column {spec.explode!r} to explode")
        table = explode(table, spec.explode, columns)
    _require(columns, table.column_names, name)
    return table.select(columns)


def explode(table: pa.Table, column: str, wanted: list[str]) -> pa.Table:
    """One row per element of list-of-struct ``column``; the struct's fields become columns and
    the record's other ``wanted`` columns are repeated for each of its elements."""
    lists = table.column(column).combine_chunks()
    if not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)) \
            or not pa.types.is_struct(lists.type.value_type):
        raise ImportFailed(f"explode: column {column!r} is {lists.type}, not a list of objects")
    parents = pc.list_parent_indices(lists)
    events = pc.list_flatten(lists)
    out = {}
    for name in wanted:
        if name in table.column_names and name != column:
            out[name] = table.column(name).take(parents)
    for field, values in zip(events.type, events.flatten()):
        if field.name in wanted:
            if field.name in out:
                raise ImportFailed(f"explode: {field.name!r} is both a record field and a field of "
                                   f"{column!r}; the mapping cannot tell which one it means")
            out[field.name] = values
    return pa.table(out)
