"""``adsformer backfill`` over fake steps (the real DAG's backfill is exercised by the e2e tests)."""
from __future__ import annotations

import datetime as dt

from components.lake import Lake
from components.step import StepError, StepResult
from pipelines import backfill as backfill_mod
from pipelines.config import load_config
from pipelines.dag import Step
from tests.test_dag_runner import CALLS, fake_dag

BAD_DAY = dt.date(2026, 3, 5)


def step_dated(config, date, lake, progress=print):
    CALLS.append(("dated", date))
    if date == BAD_DAY and config.seed == 999:
        raise StepError(f"no data for {date}")
    return StepResult()


A = Step("a", "tests.test_dag_runner:step_a")
DATED = Step("dated", "tests.test_backfill:step_dated", deps=("a",))
START, END = dt.date(2026, 3, 4), dt.date(2026, 3, 6)


def test_backfill_runs_dates_in_order_and_a_rerun_does_nothing(monkeypatch, tmp_path):
    fake_dag(monkeypatch, A, DATED)
    lake = Lake(str(tmp_path))
    summary = backfill_mod.backfill(load_config("tiny"), START, END, lake, progress=lambda *_: None)
    assert summary.ok and not summary.did_nothing
    assert [c for c in CALLS if c != "a"] == [("dated", START), ("dated", BAD_DAY), ("dated", END)]
    text = summary.render()
    assert "2026-03-04" in text and "2026-03-06" in text and "1 a, 2 dated" in text and "ran" in text
    CALLS.clear()
    again = backfill_mod.backfill(load_config("tiny"), START, END, lake, progress=lambda *_: None)
    assert CALLS == [] and again.did_nothing and "nothing to do" in again.render()


def test_a_failed_date_stops_the_backfill_unless_keep_going(monkeypatch, tmp_path):
    fake_dag(monkeypatch, A, DATED)
    cfg = load_config("tiny", ["seed=999"])
    stopped = backfill_mod.backfill(cfg, START, END, Lake(str(tmp_path / "a")), progress=lambda *_: None)
    assert not stopped.ok and list(stopped.runs) == [START, BAD_DAY]
    text = stopped.render()
    assert "not run" in text and "FAIL" in text and "no data for 2026-03-05" in text
    CALLS.clear()
    going = backfill_mod.backfill(cfg, START, END, Lake(str(tmp_path / "b")), keep_going=True,
                                  progress=lambda *_: None)
    assert not going.ok and list(going.runs) == [START, BAD_DAY, END] and ("dated", END) in CALLS


def test_end_before_start_is_refused():
    import pytest

    with pytest.raises(StepError, match="before"):
        backfill_mod.dates_between(END, START)


def test_backfill_cli_prints_the_table(monkeypatch, tmp_path, capsys):
    from pipelines.cli import main

    fake_dag(monkeypatch, A, DATED)
    args = ["backfill", "--root", str(tmp_path), "--preset", "tiny", "--start", "2026-03-04", "--end", "2026-03-05"]
    assert main(args) == 0
    assert "backfill 2026-03-04..2026-03-05: 2 date(s)" in capsys.readouterr().out
    assert main(args) == 0 and "nothing to do" in capsys.readouterr().out
