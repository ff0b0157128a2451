"""The ``adsformer`` command line (``python -m pipelines`` works too).

Heavy libraries (Beam, TensorFlow) are imported only by the commands that need them.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="local", help="config preset name (pipelines/configs/*.yaml) or a YAML path (default: local)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set validate.max_bad_fraction=0.05 (repeatable)")


def _root_and_date_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, help="lake root (local path or gs:// URI)")
    p.add_argument("--date", type=_date, help="logical date D (default: the preset's default_date)")


def _step_args(p: argparse.ArgumentParser) -> None:
    """What to (re)compute of a date's run, and the config (``run`` and ``backfill``)."""
    p.add_argument("--steps", help="comma-separated subset of steps to run (their dependencies must have succeeded)")
    p.add_argument("--force", action="store_true",
                   help="recompute the selected steps (default: all) and everything downstream of them")
    p.add_argument("--from-step", metavar="STEP",
                   help="run the DAG, recomputing STEP and everything downstream of it even if they succeeded")
    _config_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adsformer",
        description="adSformer ads-personalization pipeline: generate data, run the daily DAG, inspect it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="write the synthetic marketplace's raw partitions",
                       description="Write N days of the embedded synthetic marketplace (raw/, oracle/) under --root. "
                                   "Deterministic: the same seed and preset give byte-identical files.")
    g.add_argument("--root", required=True, help="lake root (local path or gs://, s3:// URI)")
    g.add_argument("--start", type=_date, help="first day (default: the preset's marketplace_start)")
    g.add_argument("--days", type=int, help="number of days (default: the preset's marketplace_days)")
    g.add_argument("--seed", type=int, help="random seed (default: the preset's seed)")
    _config_args(g)

    r = sub.add_parser("run", help="run the DAG for one logical date",
                       description="Run the DAG's steps for --date in topological order, skipping steps that already "
                                   "succeeded. Unrecognized --flags are passed to Beam (e.g. --runner DataflowRunner).")
    _root_and_date_args(r)
    _step_args(r)

    b = sub.add_parser("backfill", help="run the DAG for every date of a range, oldest first",
                       description="Run the DAG for each logical date from --start to --end (inclusive), oldest "
                                   "first, skipping steps that already succeeded, and print a table of dates x steps. "
                                   "A failed date stops the backfill unless --keep-going. Unrecognized --flags are "
                                   "passed to Beam.")
    b.add_argument("--root", required=True, help="lake root (local path or gs:// URI)")
    b.add_argument("--start", type=_date, required=True, help="first logical date (YYYY-MM-DD)")
    b.add_argument("--end", type=_date, required=True, help="last logical date (YYYY-MM-DD, inclusive)")
    b.add_argument("--keep-going", action="store_true", help="run the remaining dates after a failed one")
    _step_args(b)

    c = sub.add_parser("check-raw", help="exit 0 when the raw partitions a date needs are all there (a sensor)",
                       description="Check that every raw partition the run of --date reads is complete, including "
                                   "the day after for the purchase labels; list the missing ones and exit 1 otherwise.")
    _root_and_date_args(c)
    _config_args(c)

    a = sub.add_parser("airflow-dag", help="write the Airflow DAG file generated from the DAG declaration",
                       description="Write OUT/adsformer_<preset>.py: one Airflow task per step (same dependencies), "
                                   "each calling this CLI for the run's logical date, a raw-data sensor, @daily "
                                   "schedule, retries. Regenerate after changing the DAG or the preset.")
    a.add_argument("--root", required=True, help="lake root the scheduled runs use")
    a.add_argument("--out", required=True, help="Airflow dags folder to write into")
    a.add_argument("--adsformer", default=None,
                   help="path of the adsformer executable the tasks call (default: the one running now)")
    a.add_argument("--start", default="2026-03-01", help="the DAG's start_date (YYYY-MM-DD)")
    _config_args(a)

    d = sub.add_parser("dag", help="print the DAG as text and as Graphviz dot",
                       description="Print the DAG declared in pipelines/dag.py for a preset.")
    d.add_argument("--format", choices=["text", "dot", "both"], default="both")
    _config_args(d)

    rp = sub.add_parser("report", help="render the run report of a date (also of a failed run)",
                        description="Render the human-readable report of the run of --date from what is in the lake "
                                    "(runs/D/*/manifest.json, error.log, evaluation, blessing, ...) into "
                                    "runs/D/report/index.html, or --out. Works for a failed or partial run: sections "
                                    "whose inputs are missing say why; failed and not-run steps are shown as such.")
    _root_and_date_args(rp)
    rp.add_argument("--out", help="write the page here instead of runs/D/report/index.html (a local path or URI)")
    _config_args(rp)

    ab = sub.add_parser("ablate", help="train an ablation suite of paper 000 §5.1 (Tables 2-4) on a run's data",
                        description="Train every variant of --suite and its non-personalized baseline on the run of "
                                    "--date (its transform and export_lookups steps must have succeeded) with the "
                                    "same seeds and training budget, and write runs/D/ablate/<suite>/results.json "
                                    "and results.md: test-day ROC-AUC and PR-AUC, lifts over the baseline of the same "
                                    "seed (mean, standard deviation, per seed) and headroom captured on synthetic "
                                    "lakes. Each (variant, seed) result is kept as it finishes and reused by a rerun "
                                    "(an interrupted ablation resumes); --force retrains. Suites: table2 (CTR: ADPM "
                                    "components, pooling, last k, BST, eBay), table3 (PCCVR: components, pooling), "
                                    "table4 (CTR and PCCVR: pretrained representations of component 2).")
    _root_and_date_args(ab)
    ab.add_argument("--suite", required=True, choices=["table2", "table3", "table4"], help="which ablation table")
    ab.add_argument("--seeds", type=int, default=3,
                    help="number of seeds: config seed, seed + 1, ... (default: 3)")
    ab.add_argument("--variants", help="comma-separated subset of the suite's variants (the baselines are always "
                                       "trained), e.g. baseline,c3,ebay_k5")
    ab.add_argument("--force", action="store_true", help="retrain (variant, seed) results that already exist")
    _config_args(ab)

    i = sub.add_parser("import", help="import a real event log (CSV, JSONL, Parquet) into raw/events",
                       description="Map a real event log to the raw events schema with a YAML mapping and write "
                                   "{root}/raw/events/dt=D per UTC day (atomic, _SUCCESS last; byte-identical on "
                                   "re-import). Then validate it: adsformer run --preset taobao --date D --steps validate.")
    i.add_argument("--root", required=True, help="lake root (local path or gs://, s3:// URI)")
    i.add_argument("--mapping", required=True,
                   help="mapping name (pipelines/configs/import/*.yaml: taobao, otto) or a path to a YAML mapping")
    i.add_argument("--input", dest="inputs", action="append", required=True, metavar="FILE",
                   help="local source file; repeat for several files (read in the order given)")
    i.add_argument("--force", action="store_true", help="replace days that already exist under raw/events")

    h = sub.add_parser("headroom", help="oracle vs non-personalized ROC-AUC on a synthetic lake",
                       description="Train a logistic regression on non-personalized features of --train-day and "
                                   "compare its ROC-AUC on --test-day with the oracle click probabilities'.")
    h.add_argument("--root", required=True)
    h.add_argument("--train-day", type=_date, required=True)
    h.add_argument("--test-day", type=_date, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and args.command not in ("run", "backfill"):
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pipelines.config import ConfigError
    from components.step import StepError

    try:
        return _COMMANDS[args.command](args, beam_args)
    except (ConfigError, StepError) as err:
        print(f"adsformer {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _generate(args, _beam_args) -> int:
    from pipelines.config import load_config
    from components.marketplace.step import generate_range

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    cfg = load_config(args.preset, overrides)
    start = args.start or cfg.marketplace_start
    days = args.days or cfg.marketplace_days
    summary = generate_range(cfg, args.root, start, days, progress=print)
    print(f"wrote {days} day(s) from {start} under {args.root} in {summary['seconds']:.1f} s")
    return 0


def _run(args, beam_args) -> int:
    from components.lake import Lake
    from pipelines.runner import run_dag

    cfg, steps = _run_config(args, beam_args)
    date = cfg.resolved_date(args.date)
    print(f"adsformer run: preset {cfg.preset}, date {date}, root {args.root}")
    summary = run_dag(cfg, date, Lake(args.root), only=steps)
    print()
    print(summary.render())
    return 0 if summary.ok else 1


def _run_config(args, beam_args):
    from pipelines.config import load_config

    cfg = load_config(args.preset, args.overrides, force=args.force, from_step=args.from_step)
    if beam_args:
        cfg.beam.extra_args = list(cfg.beam.extra_args) + beam_args
    steps = [s.strip() for s in args.steps.split(",")] if args.steps else None
    return cfg, steps


def _backfill(args, beam_args) -> int:
    from components.lake import Lake
    from pipelines.backfill import backfill

    cfg, steps = _run_config(args, beam_args)
    print(f"adsformer backfill: preset {cfg.preset}, {args.start}..{args.end}, root {args.root}")
    summary = backfill(cfg, args.start, args.end, Lake(args.root), only=steps, keep_going=args.keep_going)
    print()
    print(summary.render())
    return 0 if summary.ok else 1


def _check_raw(args, _beam_args) -> int:
    from components.lake import Lake
    from components.validate.step import missing_raw
    from pipelines.config import load_config

    cfg = load_config(args.preset, args.overrides)
    date = cfg.resolved_date(args.date)
    missing = missing_raw(cfg, date, Lake(args.root))
    if missing:
        print(f"{len(missing)} raw partition(s) of the run of {date} are not there yet:\n  " + "\n  ".join(missing))
        return 1
    print(f"every raw partition the run of {date} needs is there")
    return 0


def _airflow_dag(args, _beam_args) -> int:
    import os

    from pipelines.airflow_dag import write
    from pipelines.config import load_config

    cfg = load_config(args.preset, args.overrides)
    adsformer = args.adsformer or os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "adsformer")
    path = write(cfg, args.out, os.path.abspath(args.root) if "://" not in args.root else args.root, adsformer,
                 args.overrides, args.start)
    print(f"wrote {path}")
    return 0


def _dag(args, _beam_args) -> int:
    from pipelines.config import load_config
    from pipelines.dag import steps_for, to_dot, to_text

    steps = steps_for(load_config(args.preset, args.overrides))
    if args.format in ("text", "both"):
        print(to_text(steps))
    if args.format == "both":
        print()
    if args.format in ("dot", "both"):
        print(to_dot(steps))
    return 0


def _headroom(args, _beam_args) -> int:
    import json

    from components.marketplace.headroom import headroom

    print(json.dumps(headroom(args.root, args.train_day, args.test_day), indent=2))
    return 0


def _report(args, _beam_args) -> int:
    from components.lake import Lake
    from components.report.step import render, report_path, write_report
    from pipelines.config import load_config
    from pipelines.dag import steps_for

    cfg = load_config(args.preset, args.overrides)
    date = cfg.resolved_date(args.date)
    lake = Lake(args.root)
    dag = [{"name": s.name, "deps": list(s.deps), "description": s.description} for s in steps_for(cfg)]
    report = render(cfg, date, lake, dag=dag, progress=print)
    path = write_report(report.html, args.out or report_path(lake, date))
    m = report.metrics()
    print(f"wrote {path} ({m['images']} images): {m['sections_rendered']} sections rendered, "
          f"{m['sections_partial']} partial, {m['sections_unavailable']} not available")
    for line in report.notes():
        print(f"  {line}")
    return 0


def _ablate(args, _beam_args) -> int:
    from components.ablate.run import ablate
    from components.lake import Lake
    from pipelines.config import load_config

    cfg = load_config(args.preset, args.overrides)
    date = cfg.resolved_date(args.date)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    ablate(cfg, date, Lake(args.root), args.suite, seeds=args.seeds, variants=variants, force=args.force,
           progress=print)
    return 0


def _import(args, _beam_args) -> int:
    from components.importer import ImportFailed, import_events, load_mapping, resolve
    from pipelines.config import CONFIG_DIR

    try:
        mapping = load_mapping(resolve(args.mapping, CONFIG_DIR / "import"))
        print(f"adsformer import: mapping {mapping.name}, {len(args.inputs)} file(s) into {args.root}")
        summary = import_events(args.root, mapping, args.inputs, force=args.force)
    except ImportFailed as err:
        print(f"adsformer import: {err}", file=sys.stderr)
        return 2
    print(summary.render())
    return 0


_COMMANDS = {"generate": _generate, "run": _run, "backfill": _backfill, "check-raw": _check_raw,
             "airflow-dag": _airflow_dag, "dag": _dag, "headroom": _headroom, "import": _import,
             "report": _report, "ablate": _ablate}

if __name__ == "__main__":
    sys.exit(main())
