"""``adsformer backfill``: the daily DAG over a range of logical dates, oldest first (DESIGN §9).

Each date is an ordinary run (:func:`pipelines.runner.run_dag`): finished steps are skipped,
so a rerun of a finished range does nothing, and a range that stopped half-way resumes where
it stopped. Dates run in order because a date can reuse what an earlier one trained
(representations inside their ``retrain_every_days`` cadence). A failed date stops the
backfill unless ``keep_going``; the remaining dates are reported as not run.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from components.lake import Lake
from components.step import StepError
from pipelines.runner import RunSummary, run_dag

STATE_CODES = {"succeeded": "ran", "skipped": "ok", "failed": "FAIL", "not run": "-"}
"""How the table shows each state: ``ran`` this time, ``ok`` already succeeded, ``FAIL``, ``-`` not run."""


@dataclasses.dataclass
class BackfillSummary:
    dates: list[dt.date]
    runs: dict[dt.date, RunSummary]  # dates that ran (in order); the others were not run

    @property
    def ok(self) -> bool:
        return len(self.runs) == len(self.dates) and all(r.ok for r in self.runs.values())

    @property
    def did_nothing(self) -> bool:
        return self.ok and all(o.state == "skipped" for r in self.runs.values() for o in r.outcomes)

    def render(self) -> str:
        steps = next((([o.name for o in r.outcomes]) for r in self.runs.values()), [])
        header = ["date"] + [str(i) for i in range(1, len(steps) + 1)] + ["seconds", "state"]
        rows = []
        for date in self.dates:
            run = self.runs.get(date)
            if run is None:
                rows.append([date.isoformat()] + ["-"] * len(steps) + ["", "not run"])
                continue
            states = {o.name: STATE_CODES[o.state] for o in run.outcomes}
            seconds = sum(o.seconds for o in run.outcomes if o.state == "succeeded" or o.state == "failed")
            rows.append([date.isoformat()] + [states.get(s, "-") for s in steps]
                        + [f"{seconds:.1f}", "ok" if run.ok else "FAILED"])
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        lines = [f"backfill {self.dates[0]}..{self.dates[-1]}: {len(self.dates)} date(s)"]
        lines += ["  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                  for r in [header] + rows]
        lines.append("  steps: " + ", ".join(f"{i} {s}" for i, s in enumerate(steps, 1)))
        lines.append("  ran = computed now, ok = already succeeded (skipped), FAIL = failed, - = not run")
        for date, run in self.runs.items():
            for o in run.outcomes:
                if o.state == "failed":
                    lines.append(f"\n{date} step {o.name} failed:\n{o.message}")
        if self.did_nothing:
            lines.append(f"\nnothing to do: every step of the {len(self.dates)} date(s) had already succeeded "
                         "(use --force to recompute)")
        return "\n".join(lines)


def dates_between(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise StepError(f"--end {end} is before --start {start}")
    return [start + dt.timedelta(days=k) for k in range((end - start).days + 1)]


def backfill(config, start: dt.date, end: dt.date, lake: Lake, only: list[str] | None = None,
             keep_going: bool = False, progress=print) -> BackfillSummary:
    """Run the DAG for every date in ``start..end`` (inclusive), oldest first."""
    dates = dates_between(start, end)
    runs: dict[dt.date, RunSummary] = {}
    for n, date in enumerate(dates, 1):
        progress(f"=== backfill date {n}/{len(dates)}: {date}")
        runs[date] = summary = run_dag(config, date, lake, only=only, progress=progress)
        if not summary.ok and not keep_going:
            progress(f"=== {date} failed: stopping (--keep-going runs the remaining dates anyway)")
            break
    return BackfillSummary(dates, runs)
