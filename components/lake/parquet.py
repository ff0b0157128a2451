"""Parquet reading and writing through the lake's file systems."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from components.lake import fs


def write_table(table: pa.Table, path: str, row_group_size: int = 128 * 1024) -> None:
    """Write one Parquet file (zstd); deterministic for the same table."""
    if fs.is_local(path):
        fs.makedirs(path.rsplit("/", 1)[0])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=row_group_size)
    fs.write_bytes(path, sink.getvalue().to_pybytes())


def partition_files(directory: str) -> list[str]:
    return fs.list_files(directory, "*.parquet")


def read_partition(directory: str, columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
    """All Parquet files of a partition as one table (files in name order)."""
    tables = [read_file(p, columns) for p in partition_files(directory)]
    if not tables:
        if schema is None:
            raise FileNotFoundError(f"no Parquet files in {directory}")
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def read_file(path: str, columns: list[str] | None = None) -> pa.Table:
    if fs.is_local(path):
        return pq.read_table(path, columns=columns)
    return pq.read_table(pa.BufferReader(fs.read_bytes(path)), columns=columns)


def count_rows(directory: str) -> int:
    """Row count from Parquet footers, without reading the data."""
    total = 0
    for p in partition_files(directory):
        if fs.is_local(p):
            total += pq.ParquetFile(p).metadata.num_rows
        else:
            total += pq.ParquetFile(pa.BufferReader(fs.read_bytes(p))).metadata.num_rows
    return total
