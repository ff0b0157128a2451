"""The ``scaling`` bench entry: end-to-end ``adsformer run`` time and peak memory as the data grows.

:func:`run_scaled` runs the CLI (``python -m pipelines run``) in a fresh process on a fresh lake
for a preset whose population is set to ``user_keys`` (``marketplace.population.n_user_keys``;
the catalog and every other setting stay the preset's, so the events, impressions and examples
grow with the keys), for the chosen steps only, while sampling the resident memory of the whole
process tree (the CLI and anything it starts) with psutil. It returns the wall time, the peak of
the tree's summed RSS, each step's seconds from its manifest, and the data sizes.

:func:`growth` compares two sizes as the sessionize entry does: time ratio / data ratio
(1 = linear; below 1, fixed costs such as imports and graph building are still a large share).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time

SAMPLE_SECONDS = 0.2


def _tree_rss(proc) -> int:
    """Summed RSS of ``proc`` and its descendants (bytes; processes that ended meanwhile count 0)."""
    import psutil

    total = 0
    try:
        members = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in members:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_scaled(root: str, preset: str, user_keys: int, steps: list[str], overrides: list[str] = (),
               date: str | None = None) -> dict:
    """``adsformer run`` of ``steps`` on a new lake ``root`` with ``user_keys`` user keys (see the module doc)."""
    import psutil

    from components.lake import Lake, parquet
    from pipelines.config import load_config

    sets = [f"marketplace.population.n_user_keys={user_keys}", *overrides]
    cfg = load_config(preset, sets)
    day = cfg.resolved_date(dt.date.fromisoformat(date) if date else None)
    command = [sys.executable, "-m", "pipelines", "run", "--root", root, "--preset", preset, "--date", day.isoformat(),
               "--steps", ",".join(steps)]
    for assignment in sets:
        command += ["--set", assignment]
    log_path = root.rstrip("/") + ".log"
    peak, stop = [0], threading.Event()
    load = os.getloadavg()[0]
    with open(log_path, "w") as log:
        t = time.perf_counter()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        watched = psutil.Process(proc.pid)

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _tree_rss(watched))
                stop.wait(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        seconds = time.perf_counter() - t
        stop.set()
        sampler.join()
    if code != 0:
        with open(log_path) as f:
            tail = f.read()[-4000:]
        raise RuntimeError(f"scaling: {' '.join(command)} exited with {code}; its log {log_path} ends with:\n{tail}")
    lake = Lake(root)
    days = [cfg.marketplace_start + dt.timedelta(days=k) for k in range(cfg.marketplace_days)]
    step_seconds = {}
    for step in steps:
        with open(os.path.join(lake.run_dir(day, step), "manifest.json")) as f:
            step_seconds[step] = json.load(f)["seconds"]
    examples = sum(parquet.count_rows(lake.derived("examples", d)) for d in cfg.window.example_dates(day)
                   if lake.complete(lake.derived("examples", d))) if "sessionize" in steps else None
    return {
        "user_keys": user_keys, "date": day.isoformat(), "steps": list(steps),
        "events": sum(parquet.count_rows(lake.raw("events", d)) for d in days),
        "impressions": sum(parquet.count_rows(lake.raw("impressions", d)) for d in days),
        "examples": examples, "seconds": round(seconds, 2), "step_seconds": step_seconds,
        "peak_tree_rss_mb": round(peak[0] / 2 ** 20, 1), "load_before": round(load, 2),
    }


def growth(small: dict, large: dict) -> dict:
    """Time and memory growth from ``small`` to ``large`` against the data (events) growth."""
    data = large["events"] / small["events"]
    time_ratio = large["seconds"] / small["seconds"]
    memory = large["peak_tree_rss_mb"] / small["peak_tree_rss_mb"]
    return {"events": round(data, 3), "time": round(time_ratio, 3), "growth": round(time_ratio / data, 3),
            "memory": round(memory, 3), "memory_growth": round(memory / data, 3),
            "steps": {s: round(large["step_seconds"][s] / small["step_seconds"][s] / data, 3)
                      for s in small["step_seconds"] if small["step_seconds"][s] > 0}}
