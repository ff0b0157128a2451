"""The DAG declaration, the local runner and the configuration."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from components.lake import Lake, fs
from components.step import StepError, StepResult
from pipelines import runner as runner_mod
from pipelines.config import ConfigError, load_config, presets
from pipelines.dag import STEPS, DagError, Step, downstream, steps_for, to_dot, toposort
from schemas.manifest import SCHEMA_FILE, StepManifest, json_schema

D = dt.date(2026, 3, 4)
CALLS: list[str] = []


def step_a(config, date, lake, progress=print):
    CALLS.append("a")
    return StepResult(outputs={"x": lake.path("x")}, row_counts={"x": 3}, notes=["a ran"])


def step_b(config, date, lake, progress=print):
    CALLS.append("b")
    return StepResult(row_counts={"y": 5, "dead_letter/y": 1})


def step_fails(config, date, lake, progress=print):
    CALLS.append("fails")
    raise StepError("the input partition raw/x is missing; generate it")


def step_crashes(config, date, lake, progress=print):
    CALLS.append("crashes")
    raise ZeroDivisionError("boom")


def fake_dag(monkeypatch, *steps: Step):
    monkeypatch.setattr(runner_mod, "steps_for", lambda config: toposort(list(steps)))
    CALLS.clear()


A = Step("a", "tests.test_dag_runner:step_a", description="first")
B = Step("b", "tests.test_dag_runner:step_b", deps=("a",), description="second")


def test_toposort_orders_and_rejects_cycles_and_unknown_deps():
    c = Step("c", "m:f", deps=("b",))
    assert [s.name for s in toposort([c, B, A])] == ["a", "b", "c"]
    with pytest.raises(DagError, match="cycle"):
        toposort([Step("p", "m:f", deps=("q",)), Step("q", "m:f", deps=("p",))])
    with pytest.raises(DagError, match="unknown step"):
        toposort([Step("p", "m:f", deps=("nope",))])
    assert downstream([A, B, c], {"b"}) == {"b", "c"}


def test_declared_dag_is_valid_and_loadable():
    cfg = load_config("tiny")
    steps = steps_for(cfg)
    assert [s.name for s in steps][:2] == ["generate", "validate"]
    for s in STEPS:
        assert callable(s.load())
    assert '"generate" -> "validate";' in to_dot(steps)
    # With raw data already in the lake there is no generate step, and validate depends on nothing.
    lake_steps = steps_for(load_config("tiny", ["source=lake"]))
    assert [s.name for s in lake_steps][0] == "validate" and lake_steps[0].deps == ()


def test_runner_runs_in_order_writes_manifests_and_skips_finished(monkeypatch, tmp_path):
    fake_dag(monkeypatch, A, B)
    lake = Lake(str(tmp_path))
    cfg = load_config("tiny")
    summary = runner_mod.run_dag(cfg, D, lake, progress=lambda *_: None)
    assert summary.ok and CALLS == ["a", "b"]
    for name in ("a", "b"):
        run_dir = lake.run_dir(D, name)
        assert lake.complete(run_dir)
        manifest = StepManifest.model_validate_json(fs.read_text(fs.join(run_dir, "manifest.json")))
        assert manifest.step == name and manifest.config_hash == cfg.config_hash()
    text = summary.render()
    assert "succeeded" in text and "y 5 (+1 dead letters)" in text
    again = runner_mod.run_dag(cfg, D, lake, progress=lambda *_: None)
    assert CALLS == ["a", "b"] and [o.state for o in again.outcomes] == ["skipped", "skipped"]
    assert again.outcomes[0].row_counts == {"x": 3}
    forced = runner_mod.run_dag(load_config("tiny", force=True), D, lake, only=["b"], progress=lambda *_: None)
    assert CALLS == ["a", "b", "b"] and forced.ok


def test_a_non_chief_training_worker_trains_but_never_clears_or_commits(monkeypatch, tmp_path):
    train = Step("train_x", "tests.test_dag_runner:step_b", deps=("a",))
    fake_dag(monkeypatch, A, train)
    lake = Lake(str(tmp_path))
    cfg = load_config("tiny")
    assert runner_mod.run_dag(cfg, D, lake, only=["a"], progress=lambda *_: None).ok
    fs.write_text(fs.join(lake.run_dir(D, "train_x"), "chief.txt"), "written by the chief")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["h:1", "h:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    summary = runner_mod.run_dag(cfg, D, lake, only=["train_x"], progress=lambda *_: None)
    assert summary.ok and CALLS[-1] == "b" and "non-chief" in summary.outcomes[-1].notes[-1]
    run_dir = lake.run_dir(D, "train_x")
    assert fs.exists(fs.join(run_dir, "chief.txt"))  # not cleared
    assert not lake.complete(run_dir) and not fs.exists(fs.join(run_dir, "manifest.json"))
    refused = runner_mod.run_dag(load_config("tiny", force=True), D, lake, only=["a"], progress=lambda *_: None)
    assert not refused.ok and "non-chief worker" in refused.render() and CALLS.count("a") == 1


def test_failure_stops_the_run_with_the_steps_message(monkeypatch, tmp_path):
    fails = Step("fails", "tests.test_dag_runner:step_fails", deps=("a",))
    after = Step("after", "tests.test_dag_runner:step_b", deps=("fails",))
    fake_dag(monkeypatch, A, fails, after)
    lake = Lake(str(tmp_path))
    summary = runner_mod.run_dag(load_config("tiny"), D, lake, progress=lambda *_: None)
    assert not summary.ok and [o.state for o in summary.outcomes] == ["succeeded", "failed", "not run"]
    assert "raw/x is missing" in summary.render()
    assert not lake.complete(lake.run_dir(D, "fails"))


def test_crash_keeps_traceback_and_says_where(monkeypatch, tmp_path):
    fake_dag(monkeypatch, Step("crashes", "tests.test_dag_runner:step_crashes"))
    lake = Lake(str(tmp_path))
    summary = runner_mod.run_dag(load_config("tiny"), D, lake, progress=lambda *_: None)
    message = summary.outcomes[0].message
    assert "ZeroDivisionError: boom" in message and "error.log" in message
    assert "Traceback" in fs.read_text(fs.join(lake.run_dir(D, "crashes"), "error.log"))


def test_selected_step_needs_finished_dependencies(monkeypatch, tmp_path):
    fake_dag(monkeypatch, A, B)
    summary = runner_mod.run_dag(load_config("tiny"), D, Lake(str(tmp_path)), only=["b"], progress=lambda *_: None)
    assert not summary.ok and "needs step 'a'" in summary.outcomes[0].message and CALLS == []
    with pytest.raises(StepError, match="unknown step"):
        runner_mod.run_dag(load_config("tiny"), D, Lake(str(tmp_path)), only=["zzz"], progress=lambda *_: None)


def test_presets_load_and_overrides_apply():
    assert {"tiny", "local", "bench", "production"} <= set(presets())
    for name in presets():
        cfg = load_config(name)
        assert cfg.preset == name
    cfg = load_config("local", ["validate.max_bad_fraction=0.2", "window.train_days=5", "beam.extra_args=[--foo]"])
    assert cfg.validate.max_bad_fraction == 0.2 and cfg.window.train_days == 5 and cfg.beam.extra_args == ["--foo"]
    assert cfg.config_hash() != load_config("local").config_hash()
    assert load_config("local", force=True).config_hash() == load_config("local").config_hash()


@pytest.mark.parametrize("overrides, message", [
    (["validate.max_bad_fraction=2"], "max_bad_fraction"),
    (["window.nope=1"], "nope"),
    (["novalue"], "key.path=value"),
])
def test_bad_overrides_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("local", overrides)


def test_overriding_one_task_field_keeps_the_other_task_defaults():
    for task in ("ctr", "pccvr"):
        default = getattr(load_config("local").models, task)
        changed = getattr(load_config("local", [f"models.{task}.training.epochs=9"]).models, task)
        assert changed.training.epochs == 9
        assert changed.model_copy(update={"training": default.training}) == default, task  # nothing else moved
    default = load_config("local").models.pccvr
    assert default.pretrained == ["skipgram", "visual"] and default.adpm.component1.heads == 2
    assert default.ranker.debias is False and load_config("local").models.ctr.ranker.debias is True
    assert load_config("local").models.ctr.adpm.sequence_dropout == 0.35 and default.adpm.sequence_dropout == 0


def test_unknown_preset():
    with pytest.raises(ConfigError, match="available: .*local"):
        load_config("nosuch")


def test_manifest_json_schema_file_is_in_sync():
    assert SCHEMA_FILE.read_text() == json_schema()
    schema = json.loads(SCHEMA_FILE.read_text())
    assert {"step", "logical_date", "config_hash", "code_version", "row_counts"} <= set(schema["required"]) | set(schema["properties"])


C = Step("c", "tests.test_dag_runner:step_b", deps=("b",), description="third")


def test_force_and_from_step_recompute_what_was_asked_and_everything_downstream(monkeypatch, tmp_path):
    fake_dag(monkeypatch, A, B, C)
    lake = Lake(str(tmp_path))
    quiet = lambda *_: None  # noqa: E731
    assert runner_mod.run_dag(load_config("tiny"), D, lake, progress=quiet).ok and CALLS == ["a", "b", "b"]
    CALLS.clear()
    forced = runner_mod.run_dag(load_config("tiny", force=True), D, lake, only=["a"], progress=quiet)
    assert CALLS == ["a", "b", "b"] and [o.state for o in forced.outcomes] == ["succeeded"] * 3
    CALLS.clear()
    from_b = runner_mod.run_dag(load_config("tiny", from_step="b"), D, lake, progress=quiet)
    assert CALLS == ["b", "b"] and [o.state for o in from_b.outcomes] == ["skipped", "succeeded", "succeeded"]
    with pytest.raises(StepError, match="unknown step"):
        runner_mod.run_dag(load_config("tiny", from_step="nope"), D, lake, progress=quiet)


def _hold_lock(lake, owner: dict):
    from pipelines.run_lock import LOCK_FILE

    path = fs.join(lake.run_dir(D), LOCK_FILE)
    fs.write_text(path, json.dumps(owner))
    return path


def test_a_second_run_of_the_same_date_is_refused_and_a_dead_or_expired_lock_is_taken_over(monkeypatch, tmp_path):
    import socket
    import subprocess
    import sys
    import time

    fake_dag(monkeypatch, A)
    lake = Lake(str(tmp_path))
    quiet = lambda *_: None  # noqa: E731
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = _hold_lock(lake, {"host": socket.gethostname(), "pid": holder.pid, "token": "x", "started": "then",
                                 "expires": time.time() + 3600, "expires_at": "later"})
        with pytest.raises(StepError, match=f"already being run by pid {holder.pid}"):
            runner_mod.run_dag(load_config("tiny"), D, lake, progress=quiet)
        assert CALLS == [] and fs.exists(path)
    finally:
        holder.kill()
        holder.wait()
    messages = []
    assert runner_mod.run_dag(load_config("tiny"), D, lake, progress=messages.append).ok  # its owner is gone
    assert any("process" in m and "gone" in m for m in messages) and not fs.exists(path)  # released
    _hold_lock(lake, {"host": "another-host", "pid": 1, "token": "y", "started": "then", "expires": time.time() - 1,
                      "expires_at": "a second ago"})
    messages.clear()
    assert runner_mod.run_dag(load_config("tiny", force=True), D, lake, progress=messages.append).ok
    assert any("expired" in m for m in messages) and CALLS == ["a", "a"]


def test_the_cli_refuses_a_locked_date_with_a_clear_message(monkeypatch, tmp_path, capsys):
    import time

    from pipelines.cli import main

    fake_dag(monkeypatch, A)
    lake = Lake(str(tmp_path))
    _hold_lock(lake, {"host": "another-host", "pid": 1, "token": "z", "started": "2026-11-21T10:00:00+00:00",
                      "expires": time.time() + 3600, "expires_at": "in an hour"})
    assert main(["run", "--root", str(tmp_path), "--preset", "tiny", "--date", D.isoformat()]) == 2
    err = capsys.readouterr().err
    assert "already being run by pid 1 on another-host" in err and "delete the lock file" in err
