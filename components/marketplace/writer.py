"""Atomic, deterministic partition writes: ``<root>/<dataset>/dt=YYYY-MM-DD/part-NNNNN.parquet``.

Parts go into a temporary sibling directory (``dt=...tmp-<pid>``); ``_SUCCESS`` is written
last and the directory is renamed into place, so a crash never leaves a half partition.
Parquet files carry no timestamps, so equal tables give byte-identical files.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from components.marketplace.config import OutputConfig

SUCCESS = "_SUCCESS"


def partition_dir(root: str, dataset: str, day: dt.date) -> str:
    """``<root>/<dataset>/dt=YYYY-MM-DD``."""
    return os.path.join(root, dataset, f"dt={day:%Y-%m-%d}")


class PartitionWriter:
    """Writes the parts of one partition into a temporary directory and commits it atomically."""

    def __init__(self, root: str, dataset: str, day: dt.date, output: OutputConfig):
        self.final = partition_dir(root, dataset, day)
        self.tmp = f"{self.final}.tmp-{os.getpid()}"
        self.output = output
        self.rows = 0
        self.parts = 0
        if os.path.exists(self.tmp):
            shutil.rmtree(self.tmp)
        os.makedirs(self.tmp)

    def write(self, table: pa.Table) -> None:
        """Writes ``table`` as the next part file (an empty table still gives a part, with the schema)."""
        path = os.path.join(self.tmp, f"part-{self.parts:05d}.parquet")
        pq.write_table(table, path, compression=self.output.compression, row_group_size=self.output.row_group_size)
        self.parts += 1
        self.rows += table.num_rows

    def commit(self) -> str:
        """Writes ``_SUCCESS`` and renames the partition into place (replacing an older one)."""
        with open(os.path.join(self.tmp, SUCCESS), "wb"):
            pass
        old = None
        if os.path.exists(self.final):
            old = f"{self.final}.old-{os.getpid()}"
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        if old:
            shutil.rmtree(old)
        return self.final

    def abort(self) -> None:
        """Removes the temporary directory."""
        shutil.rmtree(self.tmp, ignore_errors=True)
