"""``make bench``: measured figures, each with a reference measured in the same run.

Writes ``bench/results.json`` and ``bench/results.md``. Every entry runs its work in a
fresh subprocess so its peak memory (ru_maxrss) is its own. Entries:

- ``generate``: synthetic-marketplace events/s on the ``local`` and ``bench`` presets,
  against the rate of just writing the same events to Parquet (the I/O floor).
- ``validate``: the Beam validate job's rows/s on one ``bench`` day, against the same
  checks run by one process over the whole table (``schemas.validation`` without Beam).
- ``headroom``: ROC-AUC of the oracle click probabilities vs a non-personalized logistic
  regression on the ``local`` preset (issue 2 acceptance: the oracle leads by >= 0.05).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ENTRIES = ("generate", "validate", "headroom")


def _child(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it must print one JSON line last. Adds peak RSS."""
    wrapped = code + "\nimport resource as _r\n_out['peak_rss_mb'] = round(_r.getrusage(_r.RUSAGE_SELF).ru_maxrss / 1024, 1)\nprint(__import__('json').dumps(_out))\n"
    proc = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_generate(work: str) -> dict:
    out = {}
    for preset, days in (("local", 5), ("bench", 1)):
        root = os.path.join(work, preset)
        out[preset] = _child(f"""
import time, datetime as dt
from pipelines.config import load_config
from components.marketplace.step import generate_range
from components.lake import parquet
cfg = load_config({preset!r})
t = time.perf_counter()
generate_range(cfg, {root!r}, cfg.marketplace_start, {days}, progress=lambda *_: None)
seconds = time.perf_counter() - t
days = [cfg.marketplace_start + dt.timedelta(days=k) for k in range({days})]
events = sum(parquet.count_rows(f"{root}/raw/events/dt={{d}}") for d in days)
impressions = sum(parquet.count_rows(f"{root}/raw/impressions/dt={{d}}") for d in days)
# Reference: only writing the same events to Parquet (the I/O floor of generation).
tables = [parquet.read_partition(f"{root}/raw/events/dt={{d}}") for d in days]
t = time.perf_counter()
for k, table in enumerate(tables):
    parquet.write_table(table, f"{work}/ref-{preset}/part-{{k}}.parquet")
write_seconds = time.perf_counter() - t
_out = dict(days={days}, events=events, impressions=impressions, seconds=round(seconds, 2),
            events_per_s=round(events / seconds), parquet_write_events_per_s=round(events / write_seconds),
            ratio_vs_parquet_write=round(write_seconds / seconds, 3))
""")
    return out


def bench_validate(work: str) -> dict:
    root = os.path.join(work, "bench")
    return _child(f"""
import time, types
from pipelines.config import load_config
from components.lake import Lake, parquet
from components.validate import step as validate
from schemas.raw import EVENTS
from schemas.validation import check_batch, split_duplicates
cfg = load_config("bench")
day = cfg.marketplace_start
lake = Lake({root!r})
src = lake.raw("events", day)
rows = parquet.count_rows(src)
# Validate just this one day and table: a window of one day around it.
one = types.SimpleNamespace(validate=cfg.validate.model_copy(update=dict(tables=["events"])),
    window=types.SimpleNamespace(raw_dates=lambda d: ([day], [])), beam=cfg.beam,
    runtime=types.SimpleNamespace(force=True))
t = time.perf_counter()
validate.run(one, day, lake, progress=lambda *_: None)
beam_seconds = time.perf_counter() - t
# Reference: the same checks in one process over the whole table, no Beam.
table = parquet.read_partition(src)
t = time.perf_counter()
good, dead = check_batch(table, EVENTS, day, "ref")
unique, dups = split_duplicates(good, EVENTS)
ref_seconds = time.perf_counter() - t
_out = dict(rows=rows, beam_seconds=round(beam_seconds, 2), beam_rows_per_s=round(rows / beam_seconds),
            kernel_rows_per_s=round(rows / ref_seconds), ratio_vs_kernel=round(ref_seconds / beam_seconds, 3),
            runner=cfg.beam.runner, mode=cfg.beam.direct_running_mode)
""")


def bench_headroom(work: str) -> dict:
    root = os.path.join(work, "local")
    return _child(f"""
import datetime as dt
from pipelines.config import load_config
from components.marketplace.headroom import headroom
cfg = load_config("local")
d0 = cfg.marketplace_start
_out = headroom({root!r}, d0 + dt.timedelta(days=1), d0 + dt.timedelta(days=2))
""")


def machine() -> dict:
    import multiprocessing

    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // (1024 * 1024)
    except OSError:
        pass
    return {"cpus": multiprocessing.cpu_count(), "memory_gib": mem, "python": platform.python_version(),
            "platform": platform.platform()}


def to_markdown(results: dict) -> str:
    lines = [f"Measured {results['measured_at']} on {results['machine']['cpus']} cores, "
             f"{results['machine']['memory_gib']} GiB ({results['machine']['platform']}).", ""]
    lines += ["| entry | figure | value | reference (same run) | ratio |", "|---|---|---|---|---|"]
    g = results.get("generate")
    if g:
        for preset, r in g.items():
            lines.append(f"| generate ({preset}, {r['days']} d) | events/s | {r['events_per_s']:,} "
                         f"({r['events']:,} events, {r['seconds']} s, peak {r['peak_rss_mb']} MB) | "
                         f"Parquet write only: {r['parquet_write_events_per_s']:,} events/s | {r['ratio_vs_parquet_write']} |")
    v = results.get("validate")
    if v:
        lines.append(f"| validate (bench, 1 day, {v['runner']} {v['mode']}) | rows/s | {v['beam_rows_per_s']:,} "
                     f"({v['rows']:,} rows, {v['beam_seconds']} s, peak {v['peak_rss_mb']} MB) | "
                     f"same checks, one process: {v['kernel_rows_per_s']:,} rows/s | {v['ratio_vs_kernel']} |")
    h = results.get("headroom")
    if h:
        lines.append(f"| headroom (local, test day) | ROC-AUC | oracle {h['oracle_roc_auc']:.4f} | "
                     f"non-personalized LR {h['baseline_roc_auc']:.4f} | gap {h['gap']:+.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench", help="directory for results.json and results.md")
    parser.add_argument("--only", help=f"comma-separated entries (default: all of {', '.join(ENTRIES)})")
    parser.add_argument("--work", help="scratch directory (default: a temporary directory)")
    args = parser.parse_args(argv)
    entries = args.only.split(",") if args.only else list(ENTRIES)
    results_path = os.path.join(args.out, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    results.update(measured_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), machine=machine())
    with tempfile.TemporaryDirectory(prefix="adsformer-bench-", dir=args.work) as work:
        needs_data = {"validate": "generate", "headroom": "generate"}
        if any(needs_data.get(e) for e in entries) and "generate" not in entries:
            entries = ["generate"] + entries
        for name in entries:
            print(f"bench: {name} ...", flush=True)
            t = time.perf_counter()
            results[name] = globals()[f"bench_{name}"](work)
            print(f"bench: {name} done in {time.perf_counter() - t:.0f} s: {json.dumps(results[name])}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(results_path, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    table = to_markdown(results)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
