"""The ``generate`` step: make sure the synthetic marketplace's raw partitions exist (DESIGN §10).

Generation is deterministic by (seed, preset, start), so regenerating a range rewrites
identical files; the step only generates when a partition of the configured range is
missing. For object-store roots the marketplace is generated into a local scratch
directory and copied up.
"""
from __future__ import annotations

import datetime as dt
import os
import tempfile
import time

from components.lake import Lake, fs
from components.step import StepError, StepResult

RAW_TABLES = ("events", "impressions", "listings")


def _days(start: dt.date, n: int) -> list[dt.date]:
    return [start + dt.timedelta(days=k) for k in range(n)]


def generate_range(config, root: str, start: dt.date, days: int, progress=print) -> dict:
    """Generate ``days`` days from ``start`` under ``root`` with ``config.marketplace`` and ``config.seed``."""
    from components.marketplace import generate

    t0 = time.perf_counter()
    if fs.is_local(root):
        summary = generate(config.marketplace, root, start, days, config.seed, progress=progress)
    else:
        with tempfile.TemporaryDirectory(prefix="adsformer-generate-") as scratch:
            summary = generate(config.marketplace, scratch, start, days, config.seed, progress=progress)
            _upload(scratch, root, progress)
    summary["seconds"] = time.perf_counter() - t0
    return summary


def _upload(local_dir: str, root: str, progress) -> None:
    """Copy a generated tree to an object store; each partition's ``_SUCCESS`` goes last."""
    files = sorted(os.path.join(b, f) for b, _, fs_ in os.walk(local_dir) for f in fs_)
    files.sort(key=lambda p: os.path.basename(p) == "_SUCCESS")
    progress(f"  uploading {len(files)} files to {root}")
    for path in files:
        with open(path, "rb") as f:
            fs.write_bytes(fs.join(root, os.path.relpath(path, local_dir)), f.read())


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    """Generate the configured marketplace range if any of its raw partitions is missing."""
    start, n = config.marketplace_start, config.marketplace_days
    covered = set(_days(start, n))
    required, _ = config.window.raw_dates(date)
    outside = [d for d in required if d not in covered]
    if outside:
        raise StepError(
            f"generate: the run for {date} needs raw days {required[0]}..{required[-1]}, but the synthetic "
            f"marketplace covers {start}..{start + dt.timedelta(days=n - 1)}. Pick a --date inside it or "
            "widen it with --set marketplace_start=YYYY-MM-DD --set marketplace_days=N.")
    partitions = [lake.raw(t, d) for d in sorted(covered) for t in RAW_TABLES]
    result = StepResult(outputs={"raw": lake.path("raw"), "oracle": lake.path("oracle")})
    missing = [p for p in partitions if not lake.complete(p)]
    if not missing and not config.runtime.force:
        result.notes.append(f"all {len(partitions)} raw partitions of {start}..+{n}d already exist")
        return result
    progress(f"  generating {n} day(s) from {start} (preset {config.preset}, seed {config.seed}): "
             f"{len(missing)} of {len(partitions)} partitions missing")
    summary = generate_range(config, lake.root, start, n, progress=progress)
    result.metrics["seconds"] = round(summary["seconds"], 3)
    for key, value in summary.get("rows", {}).items():
        result.row_counts[key] = int(value)
    result.notes.append(f"generated {n} day(s) from {start} with seed {config.seed}")
    return result
