"""``adsformer import``: read source files with a mapping and write the lake's raw events days."""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time

import numpy as np
import pyarrow as pa

from components.importer.convert import OUTPUT_SCHEMA, Where, to_events
from components.importer.mapping import ImportFailed, Mapping
from components.importer.read import BATCH_ROWS, BLOCK_BYTES, batches
from components.importer.write import DayWriters
from components.lake import Lake, fs

PROGRESS_EVERY = 1_000_000  # rows between "read ..." lines


@dataclasses.dataclass
class ImportSummary:
    rows_read: int = 0  # source rows (events, after explode)
    rows_written: int = 0
    days: dict[dt.date, int] = dataclasses.field(default_factory=dict)  # rows per day
    partitions: dict[dt.date, str] = dataclasses.field(default_factory=dict)
    replaced: list[dt.date] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def render(self) -> str:
        span = f" ({min(self.days)}..{max(self.days)})" if self.days else ""
        return (f"imported {self.rows_read:,} rows: {self.rows_written:,} written to {len(self.days)} day(s){span} "
                f"in {self.seconds:.1f} s")


def import_events(root: str, mapping: Mapping, inputs: list[str], force: bool = False, progress=print,
                  block_bytes: int = BLOCK_BYTES, batch_rows: int = BATCH_ROWS, **writer_options) -> ImportSummary:
    """Import ``inputs`` (read in order) into ``root``'s ``raw/events``; all days or none are committed.

    Raises :class:`ImportFailed` (missing file, unreadable input, unparsable time, a day that
    already exists without ``force``); the lake is then unchanged.
    """
    t0 = time.perf_counter()
    for path in inputs:
        if not os.path.isfile(path):
            raise ImportFailed(f"input file not found: {path}" + (" (inputs must be local files)" if "://" in path else ""))
    lake = Lake(root)
    writers = DayWriters(lake, OUTPUT_SCHEMA, force=force, **writer_options)
    summary = ImportSummary()
    columns = mapping.source_columns()
    try:
        for path in inputs:
            name, row, next_report = os.path.basename(path), 0, PROGRESS_EVERY
            for batch in batches(path, mapping.input, columns, block_bytes, batch_rows):
                events, day = to_events(batch, mapping, Where(name, row))
                days = np.unique(day)
                for d in days:
                    writers.write(int(d), events if len(days) == 1 else events.filter(pa.array(day == d)))
                row += batch.num_rows
                if row >= next_report:
                    progress(f"  {name}: read {row:,} rows")
                    next_report = row + PROGRESS_EVERY
            progress(f"  {name}: {row:,} rows read")
            summary.rows_read += row
    except BaseException:
        writers.abort()
        raise
    summary.partitions = writers.commit(progress)
    summary.days = {d: writers.rows[d] for d in sorted(writers.rows)}
    summary.rows_written = sum(summary.days.values())
    summary.replaced = sorted(writers.replaced)
    for day in summary.replaced:
        validated = lake.derived("validated/events", day)
        if fs.exists(validated):
            progress(f"  note: {validated} predates this import; rerun validate with --force for {day}")
    summary.seconds = time.perf_counter() - t0
    return summary
