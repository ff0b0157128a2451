"""The ``data_gate`` step: no model trains or publishes on an anomalous day (DESIGN §4; issue "data gates").

Every day the run of D reads for examples and corpora is compared with the validated days
before it (``gates.history_days``, default 7): its volume of events, impressions and listings,
its click rate and each table's dead-letter share, each against the median of the reference
days. A day with too few reference days (a young lake) is reported as not judged. Any check
out of its limits fails the step, so sessionize, the representations and every model after it
do not run; ``runs/D/data_gate/gate.json`` keeps every figure and verdict either way.

An operator who accepts a day as it is (a holiday, a known outage) lists it in
``gates.skip_days``; ``gates.enabled=false`` records the figures without failing.
"""
from __future__ import annotations

import datetime as dt
import json

from components.gates.stats import day_figures, judge
from components.lake import Lake, fs
from components.step import StepError, StepResult


def gate_path(lake: Lake, date) -> str:
    return fs.join(lake.run_dir(date, "data_gate"), "gate.json")


def checked_days(config, date: dt.date) -> list[dt.date]:
    """The days whose data the run of ``date`` learns from or evaluates on (corpus and example days)."""
    return config.window.raw_dates(date)[0]


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    cfg = config.gates
    tables = list(config.validate.tables)
    days = checked_days(config, date)
    first = days[0] - dt.timedelta(days=cfg.history_days)
    figures = {}
    for k in range((days[-1] - first).days + 1):
        day = first + dt.timedelta(days=k)
        found = day_figures(lake, day, tables)
        if found is not None:
            figures[day] = found
    entries, failures, waived = [], [], []
    for day in days:
        if day not in figures:
            raise StepError(f"data_gate: no validated partition of {day}; run the validate step first")
        history = [figures[d] for d in sorted(figures) if day - dt.timedelta(days=cfg.history_days) <= d < day]
        entry = {"day": day.isoformat(), "figures": figures[day], "reference_days": len(history), "judged": False,
                 "ok": None}
        if len(history) < cfg.min_history_days:
            entry["why"] = (f"only {len(history)} validated day(s) in the {cfg.history_days} before it "
                            f"(gates.min_history_days = {cfg.min_history_days})")
            progress(f"  {day}: not judged: {entry['why']}")
        else:
            checks = judge(figures[day], history, cfg)
            bad = [f"{day}: {c.describe()}" for c in checks if not c.ok]
            accepted = day in cfg.skip_days
            entry.update(judged=True, ok=not bad, accepted_by_operator=accepted, checks=[c.to_dict() for c in checks])
            (waived if accepted or not cfg.enabled else failures).extend(bad)
            progress(f"  {day}: {len(checks) - len(bad)} of {len(checks)} checks within limits against "
                     f"{len(history)} reference day(s)" + (" (accepted by the operator)" if bad and accepted else ""))
        entries.append(entry)
    summary = {"date": date.isoformat(), "enabled": cfg.enabled, "days": entries, "failures": failures,
               "waived": waived}
    fs.write_text(gate_path(lake, date), json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if failures:
        raise StepError(
            "data_gate: anomalous data; nothing trains or publishes on it:\n  " + "\n  ".join(failures)
            + f"\nFigures: {gate_path(lake, date)}. Fix or re-land the raw partition and rerun (--force), or accept "
              "the day as it is with --set 'gates.skip_days=[YYYY-MM-DD]'.")
    judged = sum(e["judged"] for e in entries)
    note = f"{judged} of {len(entries)} day(s) judged against their reference days, all within limits"
    return StepResult(outputs={"gate": gate_path(lake, date)}, metrics=summary,
                      notes=[note] + [f"waived: {w}" for w in waived])
