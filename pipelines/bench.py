"""``make bench``: measured figures, each with a reference measured in the same run.

Writes ``bench/results.json`` and ``bench/results.md``. Every entry runs its work in a
fresh subprocess so its peak memory (ru_maxrss) is its own. Entries:

- ``generate``: synthetic-marketplace events/s on the ``local`` (5 days) and ``bench`` (3
  days, ~10M events each) presets, against the rate of just writing the same events to
  Parquet (the I/O floor).
- ``validate``: the Beam validate job's rows/s on one ``bench`` day, against the same
  checks run by one process over the whole table (``schemas.validation`` without Beam).
- ``headroom``: ROC-AUC of the oracle click probabilities vs a non-personalized logistic
  regression on the ``local`` preset (issue 2 acceptance: the oracle leads by >= 0.05).
- ``sessionize``: the sessionize step (Beam, the ``bench`` preset's runner: DirectRunner
  in_memory) on one example day of ~1M and ~4M events (the rows the day reads: the last
  hour of the day before, the day, the next day's purchases in its first hour), cut from
  the generated ``bench`` days as self-consistent subsets of user keys
  (``pipelines.bench_sessionize``). Reference, same run, same Parquet inputs: the same job
  written in SQL for DuckDB (all cores), whose examples are checked equal to the step's.
  Per size: events/s of each (median of ``SESSIONIZE_REPEATS`` runs, each in a fresh
  process, with its peak RSS), ``ratio_vs_duckdb`` = Beam events/s / DuckDB events/s, and
  how time grows from 1M to 4M events (``growth`` = time ratio / event ratio; 1 is linear).
  The load average is recorded: the machine may be shared.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ENTRIES = ("generate", "validate", "headroom", "sessionize")
BENCH_DAYS = 3  # bench days generated: sessionize builds the middle one (it reads both neighbours)
SESSIONIZE_SIZES = {"1M": 1_000_000, "4M": 4_000_000}  # events the example day reads
SESSIONIZE_REPEATS = 3


def _child(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it must print one JSON line last. Adds peak RSS."""
    wrapped = code + "\nimport resource as _r\n_out['peak_rss_mb'] = round(_r.getrusage(_r.RUSAGE_SELF).ru_maxrss / 1024, 1)\nprint(__import__('json').dumps(_out))\n"
    proc = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_generate(work: str) -> dict:
    out = {}
    for preset, days in (("local", 5), ("bench", BENCH_DAYS)):
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
# Reference: only writing the same events to Parquet (the I/O floor of generation), a day at a time.
write_seconds = 0.0
for k, d in enumerate(days):
    table = parquet.read_partition(f"{root}/raw/events/dt={{d}}")
    t = time.perf_counter()
    parquet.write_table(table, f"{work}/ref-{preset}/part-{{k}}.parquet")
    write_seconds += time.perf_counter() - t
    del table
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


def bench_sessionize(work: str) -> dict:
    root = os.path.join(work, "bench")
    setup = _child(f"""
import datetime as dt, time
from pipelines.config import load_config
from pipelines.bench_sessionize import prepare
from components.sessionize.step import session_spec
cfg = load_config("bench")
day = cfg.marketplace_start + dt.timedelta(days=1)
t = time.perf_counter()
inputs = prepare({root!r}, day, {SESSIONIZE_SIZES!r}, {work!r}, session_spec(cfg.sessionize),
                 cfg.validate.num_buckets, progress=lambda *_: None)
_out = dict(day=day.isoformat(), inputs=inputs, seconds=round(time.perf_counter() - t, 1))
""")
    day = setup["day"]
    out = {"day": day, "runner": None, "repeats": SESSIONIZE_REPEATS, "input_seconds": setup["seconds"], "sizes": {}}
    for name, inputs in setup["inputs"].items():
        lake, runs = inputs["root"], {"beam": [], "duckdb": []}
        for _ in range(SESSIONIZE_REPEATS):  # interleaved, so a change in the machine's load hits both
            runs["beam"].append(_child(f"""
import datetime as dt, os
from pipelines.config import load_config
from pipelines.bench_sessionize import run_beam
cfg = load_config("bench")
load = os.getloadavg()[0]
_out = run_beam(cfg, {lake!r}, dt.date.fromisoformat({day!r}))
_out.update(load_before=load, runner=cfg.beam.runner, mode=cfg.beam.direct_running_mode,
            num_buckets=cfg.sessionize.num_buckets)
"""))
            runs["duckdb"].append(_child(f"""
import datetime as dt, os, shutil
import duckdb
from pipelines.config import load_config
from pipelines.bench_sessionize import run_duckdb
cfg = load_config("bench")
out_dir = os.path.join({work!r}, "duckdb-{name}")
shutil.rmtree(out_dir, ignore_errors=True)
load = os.getloadavg()[0]
_out = run_duckdb(cfg, {lake!r}, dt.date.fromisoformat({day!r}), out_dir)
_out.update(load_before=load, version=duckdb.__version__, threads=os.cpu_count())
"""))
        beam, duck = runs["beam"][-1], runs["duckdb"][-1]
        sample = 16 if inputs["events"] > 2_000_000 else 1  # compare 1/16 of the rows at 4M (memory)
        check = _child(f"""
from components.sessionize.step import session_spec
from pipelines.config import load_config
from pipelines.bench_sessionize import same_examples
from schemas.examples import examples_schema
schema = examples_schema(session_spec(load_config("bench").sessionize).pairs)
_out = dict(equal=same_examples({beam["output"]!r}, {duck["output"]!r}, schema, sample={sample}))
""")
        events = inputs["events"]
        beam_s = statistics.median(r["seconds"] for r in runs["beam"])
        duck_s = statistics.median(r["seconds"] for r in runs["duckdb"])
        out["runner"] = f"{beam['runner']} {beam['mode']}"
        out["sizes"][name] = dict(
            events=events, impressions=inputs["impressions"],
            user_key_share=round(inputs["key_buckets"] / inputs["hash_buckets"], 4), examples=beam["examples"],
            examples_equal=check["equal"] and beam["examples"] == duck["examples"] == inputs["impressions"],
            examples_compared=f"1/{sample} of the rows" if sample > 1 else "all rows",
            beam_seconds=round(beam_s, 2), beam_events_per_s=round(events / beam_s),
            beam_peak_rss_mb=max(r["peak_rss_mb"] for r in runs["beam"]), beam_num_buckets=beam["num_buckets"],
            duckdb_seconds=round(duck_s, 2), duckdb_events_per_s=round(events / duck_s),
            duckdb_peak_rss_mb=max(r["peak_rss_mb"] for r in runs["duckdb"]), duckdb_version=duck["version"],
            duckdb_threads=duck["threads"], duckdb_passes=duck["parts"],
            ratio_vs_duckdb=round(duck_s / beam_s, 3),
            beam_seconds_all=[round(r["seconds"], 2) for r in runs["beam"]],
            duckdb_seconds_all=[round(r["seconds"], 2) for r in runs["duckdb"]],
            beam_load_average=[round(r["load_before"], 2) for r in runs["beam"]],
            duckdb_load_average=[round(r["load_before"], 2) for r in runs["duckdb"]],
        )
    small, large = (out["sizes"][n] for n in SESSIONIZE_SIZES)
    scale = large["events"] / small["events"]
    out["growth"] = {
        "events": round(scale, 3),
        "beam_time": round(large["beam_seconds"] / small["beam_seconds"], 3),
        "duckdb_time": round(large["duckdb_seconds"] / small["duckdb_seconds"], 3),
    }
    out["growth"]["beam"] = round(out["growth"]["beam_time"] / scale, 3)
    out["growth"]["duckdb"] = round(out["growth"]["duckdb_time"] / scale, 3)
    return out


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
    se = results.get("sessionize")
    if se:
        for name, r in se["sizes"].items():
            lines.append(
                f"| sessionize (bench, 1 day, {name} events, {se['runner']}) | events/s | {r['beam_events_per_s']:,} "
                f"({r['events']:,} events, {r['impressions']:,} examples, {r['beam_seconds']} s, "
                f"peak {r['beam_peak_rss_mb']} MB) | same job in DuckDB {r['duckdb_version']} SQL, "
                f"{r['duckdb_threads']} threads: {r['duckdb_events_per_s']:,} events/s ({r['duckdb_seconds']} s, "
                f"peak {r['duckdb_peak_rss_mb']} MB; same examples: {'yes' if r['examples_equal'] else 'NO'}) "
                f"| {r['ratio_vs_duckdb']} |")
        g = se["growth"]
        lines.append(f"| sessionize 1M -> 4M events (x{g['events']}) | time growth / event growth (1 = linear) | "
                     f"Beam {g['beam']} (time x{g['beam_time']}) | DuckDB {g['duckdb']} (time x{g['duckdb_time']}) | |")
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
        needs_data = {"validate": "generate", "headroom": "generate", "sessionize": "generate"}
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
