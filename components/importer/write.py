"""Write imported events into ``raw/events/dt=D`` partitions, each committed atomically.

Each day's parts (``part-NNNNN.parquet``, zstd) are written into a staged sibling of the
partition (``components.lake.commit.stage``) as batches arrive, and the day is committed
(moved into place, ``_SUCCESS`` last, as every lake partition) only after the whole input
was read, so a failed import leaves the lake as it was. For object-store lakes the parts
are written to a local scratch directory and uploaded at commit.

Rows are buffered per day and written in row groups of exactly ``ROW_GROUP_ROWS``, so the
files do not depend on how the input was cut into read blocks (unless more than
``max_open`` days interleave, when part boundaries follow the batches). A part is closed after
``part_rows`` rows, and at most ``max_open`` days have an open part (the least recently
written is flushed and closed; that day continues in a new part), so memory (at most
``max_open`` row groups) and file handles stay bounded whatever the number of days.
Parquet files carry no write time: the same input gives byte-identical files.
"""
from __future__ import annotations

import collections
import datetime as dt
import os
import shutil
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq

from components.importer.mapping import ImportFailed
from components.lake import Lake, commit, fs, stage

PART_ROWS = 4_000_000
MAX_OPEN = 8
ROW_GROUP_ROWS = 128 * 1024
EPOCH = dt.date(1970, 1, 1)


class DayWriters:
    """Staged per-day Parquet parts of ``lake``'s raw events; :meth:`commit` or :meth:`abort` at the end."""

    def __init__(self, lake: Lake, schema: pa.Schema, force: bool = False,
                 part_rows: int = PART_ROWS, max_open: int = MAX_OPEN):
        self.lake, self.schema, self.force = lake, schema, force
        self.part_rows, self.max_open = part_rows, max_open
        self.local = fs.is_local(lake.root)
        self.scratch = None if self.local else tempfile.mkdtemp(prefix="adsformer-import-")
        self.staged: dict[dt.date, str] = {}
        self.parts: dict[dt.date, int] = collections.Counter()
        self.rows: dict[dt.date, int] = collections.Counter()
        self.replaced: list[dt.date] = []
        self._open: collections.OrderedDict[dt.date, _Part] = collections.OrderedDict()

    def write(self, day_number: int, table: pa.Table) -> None:
        day = EPOCH + dt.timedelta(days=int(day_number))
        if day not in self.staged:
            self._start(day)
        part = self._open.pop(day, None)
        if part is None:
            if len(self._open) >= self.max_open:
                self._open.popitem(last=False)[1].close()
            part = _Part(os.path.join(self.staged[day], f"part-{self.parts[day]:05d}.parquet"), self.schema)
            self.parts[day] += 1
        part.add(table)
        self.rows[day] += table.num_rows
        if part.rows >= self.part_rows:
            part.close()
        else:
            self._open[day] = part

    def _start(self, day: dt.date) -> None:
        final = self.lake.raw("events", day)
        if fs.exists(final):
            if not self.force:
                raise ImportFailed(f"{final} already exists; pass --force to replace the day "
                                   "(nothing was written)")
            self.replaced.append(day)
        if self.local:
            self.staged[day] = stage(final)
        else:
            self.staged[day] = os.path.join(self.scratch, f"dt={day.isoformat()}")
            os.makedirs(self.staged[day])

    def _close_all(self) -> None:
        while self._open:
            self._open.popitem(last=False)[1].close()

    def commit(self, progress=print) -> dict[dt.date, str]:
        """Move every staged day into place (``_SUCCESS`` last); returns ``{day: partition}``."""
        self._close_all()
        done = {}
        for day in sorted(self.staged):
            final = self.lake.raw("events", day)
            if self.local:
                commit(self.staged[day], final)
            else:
                tmp = stage(final)
                for name in sorted(os.listdir(self.staged[day])):
                    with open(os.path.join(self.staged[day], name), "rb") as f:
                        fs.write_bytes(fs.join(tmp, name), f.read())
                commit(tmp, final)
            done[day] = final
            progress(f"  {final}: {self.rows[day]:,} rows in {self.parts[day]} file(s)"
                     + (" (replaced)" if day in self.replaced else ""))
        self._cleanup_scratch()
        return done

    def abort(self) -> None:
        """Drop everything staged; the lake keeps what it had."""
        for part in self._open.values():
            try:
                part.writer.close()
            except Exception:  # already failing; the staged files are deleted anyway
                pass
        self._open.clear()
        if self.local:
            for tmp in self.staged.values():
                fs.delete_tree(tmp)
        self._cleanup_scratch()

    def _cleanup_scratch(self) -> None:
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


class _Part:
    """One open part file: rows buffered until a full row group, then written."""

    def __init__(self, path: str, schema: pa.Schema):
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        self.rows += table.num_rows
        if self.pending_rows >= ROW_GROUP_ROWS:
            rows = pa.concat_tables(self.pending).combine_chunks()  # pages must not follow input chunks
            full = rows.num_rows - rows.num_rows % ROW_GROUP_ROWS
            self.writer.write_table(rows.slice(0, full), row_group_size=ROW_GROUP_ROWS)
            self.pending, self.pending_rows = [rows.slice(full)], rows.num_rows - full

    def close(self) -> None:
        if self.pending_rows:
            self.writer.write_table(pa.concat_tables(self.pending).combine_chunks(), row_group_size=ROW_GROUP_ROWS)
        self.pending, self.pending_rows = [], 0
        self.writer.close()
