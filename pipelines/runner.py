"""Runs the DAG for one logical date in process (DESIGN §3, §9).

Steps run in topological order; a step whose ``runs/D/<step>/_SUCCESS`` exists is skipped
unless forced. After a step returns, the runner writes its ``manifest.json`` and then
``_SUCCESS``. A failing step stops the run with its message; later steps do not run.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import pathlib
import re
import subprocess
import time
import traceback

from components.lake import Lake, fs
from components.lake.commit import clear_success, is_complete, mark_success
from components.models.strategy import is_chief
from components.step import StepError, StepResult, rows_text
from pipelines.dag import Step, downstream, steps_for
from pipelines.run_lock import RunLock
from schemas.manifest import StepManifest


@dataclasses.dataclass
class StepOutcome:
    name: str
    state: str  # succeeded | skipped | failed | not run
    seconds: float = 0.0
    row_counts: dict = dataclasses.field(default_factory=dict)
    outputs: dict = dataclasses.field(default_factory=dict)
    message: str = ""
    notes: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RunSummary:
    date: dt.date
    root: str
    outcomes: list[StepOutcome]

    @property
    def ok(self) -> bool:
        return all(o.state in ("succeeded", "skipped") for o in self.outcomes)

    def render(self) -> str:
        width = max([len(o.name) for o in self.outcomes] + [4])
        lines = [f"run {self.date} on {self.root}", f"  {'step':<{width}}  {'state':<10} {'seconds':>8}  rows per output"]
        for o in self.outcomes:
            # A step that ran and did nothing says ``skipped: <why>`` (components.step.StepResult): shown as skipped.
            skip = next((n for n in o.notes if n.startswith("skipped:")), None)
            rows = skip if skip and not o.row_counts else rows_text(o.row_counts)
            state = "skipped" if skip and o.state == "succeeded" else o.state
            lines.append(f"  {o.name:<{width}}  {state:<10} {o.seconds:>8.1f}  {rows}")
        for o in self.outcomes:
            places = sorted({re.sub(r"/dt=[^/]*$", "", path) for path in o.outputs.values()})
            if places:
                lines.append(f"  {o.name} outputs: " + ", ".join(places))
        failed = [o for o in self.outcomes if o.state == "failed"]
        for o in failed:
            lines.append(f"\nstep {o.name} failed:\n{o.message}")
        lines.append(f"\nartifacts: {fs.join(self.root, 'runs', self.date.isoformat())}")
        return "\n".join(lines)


_CODE_VERSION = None


def code_version() -> str:
    """Package version plus the git commit (and ``-dirty``) when run from a checkout."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            base = version("adsformer")
        except PackageNotFoundError:
            base = "0+unknown"
        try:
            here = str(pathlib.Path(__file__).resolve().parent)
            sha = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, timeout=5, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            base += f"+g{sha}" + (".dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
        _CODE_VERSION = base
    return _CODE_VERSION


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_dag(config, date: dt.date, lake: Lake, only: list[str] | None = None, progress=print) -> RunSummary:
    """Run the DAG's steps for ``date`` (all, or ``only`` those), skipping finished ones.

    Recomputing is transitive: ``config.runtime.force`` recomputes the selected steps and every
    step downstream of them, and ``config.runtime.from_step`` runs the DAG (upstream steps as
    usual) and recomputes that step and everything downstream, so no output is left computed
    from inputs that changed. Holds the date's :class:`RunLock` while it runs.
    """
    steps = steps_for(config)
    names = [s.name for s in steps]
    asked = set(only or names)
    from_step = config.runtime.from_step
    unknown = (asked | ({from_step} if from_step else set())) - set(names)
    if unknown:
        raise StepError(f"unknown step(s) {', '.join(sorted(unknown))}; the DAG has: {', '.join(names)}")
    forced = downstream(steps, {from_step}) if from_step else downstream(steps, asked) if config.runtime.force else set()
    selected = asked | forced
    if not is_chief():  # a non-chief training worker: the chief holds the lock and writes
        return _run_steps(steps, selected, forced, config, date, lake, progress, lock=None)
    with RunLock(lake, date, config.runtime.lock_ttl_hours * 3600).acquire(progress) as lock:
        write_dag(steps, lake, date)
        return _run_steps(steps, selected, forced, config, date, lake, progress, lock)


DAG_FILE = "_dag.json"


def write_dag(steps: list[Step], lake: Lake, date: dt.date) -> str:
    """``runs/D/_dag.json``: the DAG of the run (name, deps, description of every step), so readers of
    the lake (the report, which must not import ``pipelines``) know the steps that did not run too."""
    path = fs.join(lake.run_dir(date), DAG_FILE)
    dag = [{"name": s.name, "deps": list(s.deps), "description": s.description} for s in steps]
    fs.write_text(path, json.dumps(dag, indent=2) + "\n")
    return path


def _run_steps(steps, selected, forced, config, date, lake, progress, lock) -> RunSummary:
    outcomes, stopped = [], False
    for i, step in enumerate(steps, 1):
        if step.name not in selected:
            continue
        run_dir = lake.run_dir(date, step.name)
        if stopped:
            outcomes.append(StepOutcome(step.name, "not run"))
            continue
        if is_complete(run_dir) and step.name not in forced:
            outcomes.append(_skipped(step, run_dir))
            progress(f"[{i}/{len(steps)}] {step.name}: already succeeded for {date}, skipped")
            continue
        blocker = next((d for d in step.deps if d not in selected and not is_complete(lake.run_dir(date, d))), None)
        if blocker:
            outcomes.append(StepOutcome(step.name, "failed", message=(
                f"it needs step {blocker!r}, which has not succeeded for {date}; "
                f"run without --steps, or add {blocker} to --steps")))
            stopped = True
            continue
        progress(f"[{i}/{len(steps)}] {step.name}: {step.description}")
        outcome = _execute(step, config, date, lake, run_dir, progress)
        progress(f"[{i}/{len(steps)}] {step.name}: {outcome.state} in {outcome.seconds:.1f} s")
        outcomes.append(outcome)
        stopped = outcome.state == "failed"
        if lock is not None:
            lock.refresh()
    return RunSummary(date, lake.root, outcomes)


def _skipped(step: Step, run_dir: str) -> StepOutcome:
    try:
        m = json.loads(fs.read_text(fs.join(run_dir, "manifest.json")))
        return StepOutcome(step.name, "skipped", 0.0, m.get("row_counts", {}), m.get("outputs", {}),
                           notes=m.get("notes", []))
    except (OSError, ValueError):
        return StepOutcome(step.name, "skipped")


def _execute(step: Step, config, date: dt.date, lake: Lake, run_dir: str, progress) -> StepOutcome:
    if not is_chief():
        return _execute_as_worker(step, config, date, lake, progress)
    clear_success(run_dir)
    # A step's run directory is its own: outputs of an earlier attempt must not outlive it
    # (a step that now skips, e.g. no images, would otherwise leave stale vectors behind).
    fs.delete_tree(run_dir)
    fs.makedirs(run_dir)
    started = _now()
    result, seconds = _call(step, config, date, lake, progress, fs.join(run_dir, "error.log"))
    if isinstance(result, StepOutcome):
        return result
    manifest = StepManifest(
        step=step.name, logical_date=date.isoformat(), status="success", started_at=started,
        finished_at=_now(), seconds=round(seconds, 3), config_hash=config.config_hash(),
        code_version=code_version(), inputs=result.inputs, outputs=result.outputs,
        row_counts=result.row_counts, metrics=result.metrics, notes=result.notes)
    fs.write_text(fs.join(run_dir, "manifest.json"), manifest.model_dump_json(indent=2) + "\n")
    mark_success(run_dir)
    return StepOutcome(step.name, "succeeded", seconds, result.row_counts, result.outputs, notes=result.notes)


def _call(step: Step, config, date: dt.date, lake: Lake, progress, error_log: str | None):
    """``(StepResult, seconds)`` of the step's function, or ``(failed StepOutcome, seconds)``. An
    unexpected crash keeps its traceback: in ``error_log``, or in the message when there is no log
    (a non-chief worker writes nothing)."""
    t0 = time.perf_counter()
    try:
        result: StepResult = step.load()(config, date, lake, progress=progress)
    except StepError as err:
        if error_log:  # so the run report (and a later reader) can say why, not only that, it failed
            fs.write_text(error_log, f"{err}\n")
        return StepOutcome(step.name, "failed", time.perf_counter() - t0, message=str(err)), 0.0
    except Exception as err:  # an unexpected crash: keep the traceback, say where it is
        trace = traceback.format_exc()
        if error_log:
            fs.write_text(error_log, trace)
        where = f"full traceback: {error_log}" if error_log else trace
        return StepOutcome(step.name, "failed", time.perf_counter() - t0,
                           message=f"{type(err).__name__}: {err}\n{where}"), 0.0
    return result, time.perf_counter() - t0


def _execute_as_worker(step: Step, config, date: dt.date, lake: Lake, progress) -> StepOutcome:
    """A non-chief worker of multi-worker training (TF_CONFIG): it trains in lockstep with the chief,
    which alone clears, writes and commits the step's outputs."""
    if not step.name.startswith("train_"):
        return StepOutcome(step.name, "failed", 0.0, message=(
            f"TF_CONFIG names this process a non-chief worker, which only joins multi-worker training; run "
            f"{step.name} on the chief (or without TF_CONFIG) and only train_* steps here (--steps train_ctr)"))
    result, seconds = _call(step, config, date, lake, progress, error_log=None)
    if isinstance(result, StepOutcome):
        return result
    return StepOutcome(step.name, "succeeded", seconds,
                       notes=result.notes + ["non-chief worker: the chief writes and commits the outputs"])
