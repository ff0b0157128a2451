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
- ``training``: CTR training examples/s on CPU through the trainer itself (step callbacks),
  its FLOP/s (executed FLOPs per example x examples/s) and ``fraction_of_matmul_peak`` against
  the float32 matmul peak measured in the same process (``pipelines.bench_models``).
- ``tfdata``: records/s of the trainer's tf.data pipeline (``make_dataset``) over the whole
  train split without training, against the training rate: ``tfdata_over_training``.
- ``models``: training seconds of every model of the lake's DAG run, read from its step
  manifests: the rankers' fits (``train_<model>``) and the reference models' (``train_references``,
  per reference); the ratio is the ranker with the ADPM's fit over that of the reference
  ``evaluate`` compared it with (chosen on validation), per task. Both sides come from the same run
  on the same training split.
- ``serving``: p50/p99 latency of requests of 500 candidates through the exported serving
  SavedModel, against the trained score model alone on the same transformed features.
- ``scaling``: end-to-end ``adsformer run`` time and peak memory of the process tree at 1x,
  4x and 16x the user keys (``pipelines.bench_scaling``), and time growth / data growth: the
  ``local`` preset at 11,250, 45,000 (= ``local``) and 180,000 user keys, images off, steps
  generate, validate, data_gate, sessionize, transform and train_ctr_baseline (the personalized
  ``train_ctr`` needs the representation steps; the baseline ranker stands for training).
  About 1.5, 3.5 and 9 minutes on 2 cores.

``training``, ``tfdata``, ``models`` and ``serving`` read a lake with a finished run: ``--lake DIR`` (with its
``--preset`` and ``--date``; only read), or else the bench runs the whole DAG of the preset into
its scratch directory first. ``--scale small`` (``--quick``) makes every new entry small enough
for a test. Top-level keys of results.json summarize the entries: ``ratio_vs_duckdb``,
``fraction_of_matmul_peak``, ``tfdata_over_training``, ``serving_p99_ms``, ``scaling_growth``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ENTRIES = ("generate", "validate", "headroom", "sessionize", "training", "tfdata", "models", "serving", "scaling")
RUN_ENTRIES = ("training", "tfdata", "models", "serving")  # they read a lake with a finished run
BENCH_DAYS = 3  # bench days generated: sessionize builds the middle one (it reads both neighbours)
SESSIONIZE_SIZES = {"1M": 1_000_000, "4M": 4_000_000}  # events the example day reads
SESSIONIZE_REPEATS = 3
SCALES = {
    # Sizes of the new entries. Scaling: the preset with n_user_keys = base x factor; images off (no
    # step run here reads them, and rendering them is a fixed cost of the catalog, not of the keys).
    "full": dict(run_preset="local", matmul_n=4096, matmul_repeats=5, tfdata_passes=3, serving_requests=300,
                 serving_warmup=20, scaling_preset="local", scaling_base_keys=11_250, scaling_factors=(1, 4, 16),
                 scaling_steps=("generate", "validate", "data_gate", "sessionize", "transform", "train_ctr_baseline")),
    "small": dict(run_preset="tiny", matmul_n=1024, matmul_repeats=3, tfdata_passes=1, serving_requests=100,
                  serving_warmup=5, scaling_preset="tiny", scaling_base_keys=450, scaling_factors=(1, 2),
                  scaling_steps=("generate", "validate", "data_gate", "sessionize")),
}
SCALING_OVERRIDES = ("marketplace.images.enabled=false",)
SERVING_CANDIDATES = 500
HEADLINE_KEYS = ("ratio_vs_duckdb", "fraction_of_matmul_peak", "tfdata_over_training", "serving_p99_ms",
                 "scaling_growth")


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
schema = examples_schema(session_spec(load_config("bench").sessionize).pairs, engineered=False)
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


class Context:
    """What the new entries share within one bench invocation: the scale, the lake with a finished
    run (``--lake`` or built once on demand) and the training result ``tfdata`` compares with."""

    def __init__(self, work: str, scale: str, lake: str | None, preset: str | None, date: str | None):
        self.work, self.scale, self.settings = work, scale, SCALES[scale]
        self.preset = preset or self.settings["run_preset"]
        self._lake, self.date, self.lake_info, self.training = lake, date, None, None

    def lake(self) -> tuple[str, str, str]:
        """(root, preset, date) of a lake with a finished run of the whole DAG."""
        if self.lake_info is None:
            from pipelines.config import load_config

            date = load_config(self.preset).resolved_date(dt.date.fromisoformat(self.date) if self.date else None)
            if self._lake:
                root, built = os.path.abspath(self._lake), None
            else:  # the whole DAG into the scratch directory (generate's partitions are reused when there)
                root = os.path.join(self.work, self.preset)
                t = time.perf_counter()
                command = [sys.executable, "-m", "pipelines", "run", "--root", root, "--preset", self.preset,
                           "--date", date.isoformat()]
                print(f"bench: building the lake: {' '.join(command)}", flush=True)
                proc = subprocess.run(command, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"bench: the {self.preset} run failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
                built = round(time.perf_counter() - t, 1)
            self.lake_info = {"root": root, "preset": self.preset, "date": date.isoformat(), "built_seconds": built}
        return self.lake_info["root"], self.lake_info["preset"], self.lake_info["date"]


def _training_child(ctx: Context) -> dict:
    root, preset, date = ctx.lake()
    scratch = tempfile.mkdtemp(prefix="train-", dir=ctx.work)
    out = _child(f"""
import datetime as dt
from pipelines.config import load_config
from pipelines.bench_models import measure_training
_out = measure_training(load_config({preset!r}), dt.date.fromisoformat({date!r}), {root!r}, {scratch!r},
                        peak_n={ctx.settings["matmul_n"]}, peak_repeats={ctx.settings["matmul_repeats"]})
""")
    shutil.rmtree(scratch, ignore_errors=True)
    out.update(lake=ctx.lake_info, measured_at=_now())
    return out


def bench_training(work: str, ctx: Context) -> dict:
    ctx.training = _training_child(ctx)
    return ctx.training


def bench_tfdata(work: str, ctx: Context) -> dict:
    root, preset, date = ctx.lake()
    out = _child(f"""
import datetime as dt
from pipelines.config import load_config
from pipelines.bench_models import measure_tfdata
_out = measure_tfdata(load_config({preset!r}), dt.date.fromisoformat({date!r}), {root!r},
                      passes={ctx.settings["tfdata_passes"]})
""")
    training = ctx.training or _training_child(ctx)  # the reference: this invocation's training entry
    out.update(training_examples_per_s=training["examples_per_s"], training_batch_size=training["preset_batch_size"],
               training_measured_at=training["measured_at"], lake=ctx.lake_info, measured_at=_now(),
               tfdata_over_training=round(out["records_per_s"] / training["examples_per_s"], 3))
    return out


def bench_models(work: str, ctx: Context) -> dict:
    from pipelines.bench_models import model_training_seconds

    root, preset, date = ctx.lake()
    out = model_training_seconds(root, date)
    out.update(lake=ctx.lake_info, measured_at=_now())
    return out


def bench_serving(work: str, ctx: Context) -> dict:
    root, preset, date = ctx.lake()
    out = _child(f"""
import datetime as dt
from pipelines.config import load_config
from pipelines.bench_models import measure_serving
_out = measure_serving(load_config({preset!r}), dt.date.fromisoformat({date!r}), {root!r},
                       candidates={SERVING_CANDIDATES}, requests={ctx.settings["serving_requests"]},
                       warmup={ctx.settings["serving_warmup"]})
""")
    out.update(lake=ctx.lake_info, measured_at=_now())
    return out


def bench_scaling(work: str, ctx: Context) -> dict:
    s = ctx.settings
    out = {"preset": s["scaling_preset"], "base_user_keys": s["scaling_base_keys"], "steps": list(s["scaling_steps"]),
           "overrides": list(SCALING_OVERRIDES), "sizes": {}, "measured_at": _now()}
    for factor in s["scaling_factors"]:
        root = os.path.join(work, f"scaling-{factor}x")
        size = out["sizes"][f"{factor}x"] = _child(f"""
from pipelines.bench_scaling import run_scaled
_out = run_scaled({root!r}, {s["scaling_preset"]!r}, {s["scaling_base_keys"] * factor}, {list(s["scaling_steps"])!r},
                  {list(SCALING_OVERRIDES)!r})
""")
        del size["peak_rss_mb"]  # the bench child's own; the run's is peak_tree_rss_mb
        shutil.rmtree(root, ignore_errors=True)  # the next size's lake may be large
    from pipelines.bench_scaling import growth

    (_, first), *larger = _by_size(out["sizes"], "user_keys")
    out["growth"] = {name: growth(first, r) for name, r in larger}
    return out


def _by_size(sizes: dict, key: str) -> list[tuple[str, dict]]:
    """``sizes``' items from the smallest to the largest ``key`` (results.json sorts keys as text: 16x < 1x)."""
    return sorted(sizes.items(), key=lambda item: item[1][key])


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def headline(results: dict) -> dict:
    """The top-level summary keys from whichever entries ``results`` holds (module doc)."""
    out = {}
    se = results.get("sessionize")
    if se and se.get("sizes"):
        out["ratio_vs_duckdb"] = _by_size(se["sizes"], "events")[-1][1]["ratio_vs_duckdb"]  # the largest size
    if results.get("training"):
        out["fraction_of_matmul_peak"] = results["training"]["fraction_of_matmul_peak"]
    if results.get("tfdata"):
        out["tfdata_over_training"] = results["tfdata"]["tfdata_over_training"]
    if results.get("serving"):
        out["serving_p99_ms"] = results["serving"]["serving"]["p99_ms"]
    if results.get("scaling") and results["scaling"].get("growth"):
        largest = _by_size(results["scaling"]["growth"], "events")[-1][1]
        out["scaling_growth"] = largest["growth"]  # from the smallest size to the largest
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
    tr = results.get("training")
    if tr:
        lake = tr["lake"]
        head = (f"| training ({tr['model']}, {lake['preset']} {lake['date']}, batch {tr['preset_batch_size']}, CPU) | "
                f"examples/s; achieved FLOP/s | {round(tr['examples_per_s']):,} examples/s")
        missing = tr.get("flops_uncounted") or []
        partial = f", {len(missing)} matmuls of unknown shape not counted: a lower bound" if missing else ""
        lines.append(
            f"{head} x {tr['flops_per_example']:,} FLOP/example executed{partial} = {tr['achieved_gflops']} GFLOP/s "
            f"({tr['steps']} steps, peak {tr['peak_rss_mb']} MB; the padded model's {tr['nominal_flops_per_example']:,} "
            f"FLOP/example at this rate: {tr['nominal_fraction_of_matmul_peak']} of peak) | float32 matmul peak "
            f"{tr['matmul_peak_gflops']} GFLOP/s ({tr['matmul_peak_n']}x{tr['matmul_peak_n']}, best of "
            f"{tr['matmul_peak_repeats']}) | {tr['fraction_of_matmul_peak']} of peak |")
        shares = tr.get("op_time_shares")
        if shares:
            split = ", ".join(f"{k} {v:.1%}" for k, v in shares.items())
            lines.append(
                f"| training step, where the op time goes ({tr['profile_steps']} steps profiled) | share of summed "
                f"op time | {split} ({tr['op_seconds_per_step'] * 1e3:.0f} ms of ops a step) | matmuls alone, at "
                f"their shapes (fraction / matmul share) | {tr['matmul_fraction_while_running']} of peak |")
        if "matmul_replay_fraction" in tr:
            lines.append(
                f"| training step's matmuls alone ({tr['matmul_replay_matmuls']} products of the padded step on random "
                f"operands of their shapes) | GFLOP/s | {tr['matmul_replay_gflops']} GFLOP/s | float32 matmul peak | "
                f"{tr['matmul_replay_fraction']} of peak (a ceiling: the padded step's matmuls with nothing else to run) |")
        if "length_split_speedup" in tr:
            lines.append(
                f"| training step A/B: encoders' length split vs full width ({tr['ab_steps']} interleaved steps each, "
                f"same batches) | ms per step | split {tr['ab_split_step_ms']} ms ({tr['ab_split_fraction_of_matmul_peak']} "
                f"of peak) | full width {tr['full_width_step_ms']} ms = {round(tr['full_width_examples_per_s']):,} "
                f"examples/s ({tr['full_width_fraction_of_matmul_peak']} of peak) | split {tr['length_split_speedup']}x "
                f"faster |")
    td = results.get("tfdata")
    if td:
        lake = td["lake"]
        lines.append(
            f"| tfdata ({lake['preset']} {lake['date']}, {td['split']} split, batch {td['batch_size']}, shuffled) | "
            f"records/s | {round(td['records_per_s']):,} ({td['records']:,} records, {td['files']} files, "
            f"{td['seconds']} s, peak {td['peak_rss_mb']} MB) | CTR training consumes "
            f"{round(td['training_examples_per_s']):,} examples/s | {td['tfdata_over_training']} |")
    mo = results.get("models")
    if mo:
        lake = mo["lake"]
        for task, r in mo["tasks"].items():
            rankers = ", ".join(f"{m} {s} s" for m, s in r["rankers"].items())
            lines.append(
                f"| model training ({task}, {lake['preset']} {lake['date']}, same DAG run) | fit seconds | {rankers} | "
                f"{len(r['references'])} references {r['references_total']} s in all, {r['reference']} "
                f"(chosen on validation) {r['references'][r['reference']]} s | "
                f"{r['ranker_over_reference']} (ranker / that reference) |")
    sv = results.get("serving")
    if sv:
        lake, a, b = sv["lake"], sv["serving"], sv["model_only"]
        lines.append(
            f"| serving ({sv['task']}, {lake['preset']} {sv['test_day']}, {sv['candidates']} candidates/request) | "
            f"latency per request | p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms "
            f"({round(a['candidates_per_s']):,} candidates/s; {sv['requests']} requests) | "
            f"score model alone on transformed features: "
            f"p50 {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms ({round(b['candidates_per_s']):,} candidates/s; "
            f"max logit diff {sv['max_abs_diff_logit']:.1e}) | {sv['p50_ratio']} (p50) |")
    sc = results.get("scaling")
    if sc:
        sizes = _by_size(sc["sizes"], "user_keys")
        first = sizes[0][1]
        steps = "steps " + "+".join(sc["steps"])
        for name, r in sizes:
            lines.append(
                f"| scaling ({sc['preset']}, {name} = {r['user_keys']:,} user keys; {steps}) | end-to-end run s | "
                f"{r['seconds']} s ({r['events']:,} events, peak tree RSS {r['peak_tree_rss_mb']} MB) | "
                f"{sizes[0][0]}: {first['seconds']} s ({first['events']:,} events) | "
                f"time x{round(r['seconds'] / first['seconds'], 3)} |")
        for name, g in _by_size(sc["growth"], "events"):
            lines.append(
                f"| scaling {sizes[0][0]} -> {name} (events x{g['events']}) | time growth / event growth "
                f"(1 = linear) | {g['growth']} (time x{g['time']}) | peak memory x{g['memory']} "
                f"(memory growth {g['memory_growth']}) | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench", help="directory for results.json and results.md")
    parser.add_argument("--only", "--entries", dest="only",
                        help=f"comma-separated entries (default: all of {', '.join(ENTRIES)})")
    parser.add_argument("--work", help="scratch directory (default: a temporary directory)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="full",
                        help="sizes of the training, tfdata, serving and scaling entries (small: for tests)")
    parser.add_argument("--quick", dest="scale", action="store_const", const="small", help="the same as --scale small")
    parser.add_argument("--lake", help="a lake with a finished run for training, tfdata and serving (only read); "
                                       "default: run the whole DAG of --preset into the scratch directory")
    parser.add_argument("--preset", help="the preset of --lake's run (default: local, or tiny with --scale small)")
    parser.add_argument("--date", help="the date of --lake's run (default: the preset's default_date)")
    args = parser.parse_args(argv)
    entries = args.only.split(",") if args.only else list(ENTRIES)
    unknown = [e for e in entries if e not in ENTRIES]
    if unknown:
        parser.error(f"unknown entries {unknown}; choose from {', '.join(ENTRIES)}")
    results_path = os.path.join(args.out, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    results.update(measured_at=_now(), machine=machine())
    with tempfile.TemporaryDirectory(prefix="adsformer-bench-", dir=args.work) as work:
        ctx = Context(work, args.scale, args.lake, args.preset, args.date)
        needs_data = {"validate": "generate", "headroom": "generate", "sessionize": "generate"}
        if any(needs_data.get(e) for e in entries) and "generate" not in entries:
            entries = ["generate"] + entries
        entries = sorted(entries, key=ENTRIES.index)  # training before tfdata, which compares with it
        for name in entries:
            print(f"bench: {name} ...", flush=True)
            t = time.perf_counter()
            fn = globals()[f"bench_{name}"]
            results[name] = fn(work, ctx) if name in RUN_ENTRIES + ("scaling",) else fn(work)
            print(f"bench: {name} done in {time.perf_counter() - t:.0f} s: {json.dumps(results[name])}", flush=True)
    for key in HEADLINE_KEYS:  # recomputed from the entries now in results
        results.pop(key, None)
    results.update(headline(results))
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
