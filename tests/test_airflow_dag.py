"""The Airflow DAG file generated from the DAG declaration, and the raw-data sensor's command.
(`make airflow-test` runs the generated DAG with Airflow itself, end to end.)"""
from __future__ import annotations

import datetime as dt

from components.lake import Lake
from components.lake.commit import mark_success
from components.lake import fs
from pipelines.airflow_dag import SENSOR, render, task_graph
from pipelines.cli import main
from pipelines.config import load_config
from pipelines.dag import steps_for


def test_one_task_per_step_with_the_same_dependencies_and_the_sensor_before_the_raw_readers():
    for preset in ("tiny", "production"):
        cfg = load_config(preset)
        steps = steps_for(cfg)
        graph = task_graph(cfg)
        assert set(graph) == {s.name for s in steps} | {SENSOR}
        for s in steps:
            if "generate" in s.deps or (not s.deps and s.name != "generate"):
                assert SENSOR in graph[s.name]
            assert set(graph[s.name]) - {SENSOR} == set(s.deps) - {"generate"}
        assert graph[SENSOR] == (["generate"] if "generate" in graph else [])
        order = list(graph)
        assert all(order.index(p) < order.index(t) for t, ups in graph.items() for p in ups)  # topological


def test_the_rendered_file_is_python_with_the_cli_commands():
    cfg = load_config("tiny")
    text = render(cfg, "/lake", "/venv/bin/adsformer", ["seed=3"], "2026-03-01")
    compile(text, "adsformer_tiny.py", "exec")
    assert 'dag_id=\'adsformer_tiny\'' in text and 'schedule="@daily"' in text and '"retries": 2' in text
    assert "--root /lake --preset tiny --set seed=3" in text and "--date {{ ds }} --steps" in text
    assert "check-raw" in text


def test_check_raw_lists_what_the_date_still_waits_for(tmp_path, capsys):
    cfg = load_config("tiny")
    date = cfg.default_date
    lake = Lake(str(tmp_path))
    args = ["check-raw", "--root", str(tmp_path), "--preset", "tiny", "--date", date.isoformat()]
    assert main(args) == 1
    out = capsys.readouterr().out
    label_day = (date + dt.timedelta(days=1)).isoformat()
    assert f"events/dt={label_day}" in out and "not there yet" in out
    required, optional = cfg.window.raw_dates(date)
    for day in set(required) | {d for d in optional if d > date}:
        for table in cfg.validate.tables:
            fs.makedirs(lake.raw(table, day))
            mark_success(lake.raw(table, day))
    assert main(args) == 0 and "needs is there" in capsys.readouterr().out
