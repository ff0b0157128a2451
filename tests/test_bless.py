"""Blessing and publishing (issue 6 point 4; DESIGN §8 "Bless")."""
from __future__ import annotations

import datetime as dt
import json
import math
import shutil

import pytest

from components.bless.step import run as bless
from components.lake import Lake
from pipelines.config import load_config

DATE = dt.date(2026, 3, 3)


def _decision(root):
    return json.loads((root / "runs" / DATE.isoformat() / "bless" / "decision.json").read_text())


def test_the_tiny_run_blesses_what_passes_and_says_why(tiny_run):
    decision = _decision(tiny_run)
    metrics = json.loads((tiny_run / "runs" / DATE.isoformat() / "evaluate" / "metrics.json").read_text())
    assert set(decision) == {"ctr", "pccvr"}
    for task, d in decision.items():
        assert d["reason"] and d["candidate"]["run"] == DATE.isoformat()
        pointer = tiny_run / "models" / task / "blessed.json"
        if d["published"]:  # first model of the task on a fresh lake
            assert d["incumbent"] is None and d["reason"].startswith("first model")
            blessed = json.loads(pointer.read_text())
            assert blessed["run"] == DATE.isoformat() and blessed["metrics"]["roc_auc"] == metrics[task]["roc_auc"]
            assert (tiny_run / "runs" / DATE.isoformat() / "export_serving" / task / "saved_model.pb").exists()
        else:  # tiny's PCCVR (a hundred clicked rows) may rank at chance: it must be refused, not published
            assert not pointer.exists() and d["blessed_after"] is None
    assert decision["ctr"]["published"], decision["ctr"]["reason"]


@pytest.fixture()
def lake_with_older_blessed_ctr(tiny_run, tmp_path):
    """A copy of the tiny lake whose blessed CTR model is this run's model, as if a run of 03-02 had made it."""
    root = tmp_path / "lake"
    shutil.copytree(tiny_run, root)
    older = root / "runs" / "2026-03-02" / "export_serving"
    shutil.copytree(root / "runs" / DATE.isoformat() / "export_serving", older)
    pointer = json.loads((root / "models" / "ctr" / "blessed.json").read_text())
    pointer.update(run="2026-03-02", serving_path=str(older / "ctr"))
    (root / "models" / "ctr" / "blessed.json").write_text(json.dumps(pointer))
    return root


def test_the_incumbent_is_scored_on_the_same_rows_and_a_worse_candidate_is_refused(lake_with_older_blessed_ctr):
    root = lake_with_older_blessed_ctr
    lake, cfg = Lake(str(root)), load_config("tiny")
    result = bless(cfg, DATE, lake, progress=lambda *_: None)
    ctr = result.metrics["ctr"]
    # Same model: its serving SavedModel, fed the test day's raw examples, scores exactly the evaluated ROC-AUC.
    assert ctr["incumbent"]["roc_auc"] == pytest.approx(ctr["candidate"]["roc_auc"], abs=1e-6)
    assert ctr["published"] and ctr["reason"].startswith("no worse")
    assert json.loads((root / "models" / "ctr" / "blessed.json").read_text())["run"] == DATE.isoformat()
    history = (root / "models" / "ctr" / "history.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["run"] == DATE.isoformat()

    # Put the 03-02 model back and make today's candidate 0.01 ROC-AUC worse than it: refused, old model kept.
    pointer = json.loads((root / "models" / "ctr" / "blessed.json").read_text())
    pointer.update(run="2026-03-02", serving_path=str(root / "runs" / "2026-03-02" / "export_serving" / "ctr"))
    (root / "models" / "ctr" / "blessed.json").write_text(json.dumps(pointer))
    metrics_file = root / "runs" / DATE.isoformat() / "evaluate" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["ctr"]["roc_auc"] -= 0.01
    metrics_file.write_text(json.dumps(metrics))
    ctr = bless(cfg, DATE, lake, progress=lambda *_: None).metrics["ctr"]
    assert not ctr["published"] and ctr["reason"].startswith("it is worse")
    assert ctr["blessed_after"]["run"] == "2026-03-02"
    assert json.loads((root / "models" / "ctr" / "blessed.json").read_text())["run"] == "2026-03-02"


def test_a_newer_blessed_model_is_never_replaced_by_an_older_run(tiny_run, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(tiny_run, root)
    pointer = json.loads((root / "models" / "ctr" / "blessed.json").read_text())
    pointer["run"] = "2026-03-10"
    (root / "models" / "ctr" / "blessed.json").write_text(json.dumps(pointer))
    ctr = bless(load_config("tiny"), DATE, Lake(str(root)), progress=lambda *_: None).metrics["ctr"]
    assert not ctr["published"] and "later run (2026-03-10)" in ctr["reason"]


@pytest.mark.parametrize("change, reason", [
    ({"ece_calibrated": 0.5}, "calibrated test-day ECE"),
    ({"logloss_calibrated": math.inf}, "log-loss is not finite"),
    ({"roc_auc": 0.49}, "is not above 0.5"),
])
def test_a_miscalibrated_nonfinite_or_chance_model_is_not_published(tiny_run, tmp_path, change, reason):
    root = tmp_path / "lake"
    shutil.copytree(tiny_run, root)
    shutil.rmtree(root / "models")
    metrics_file = root / "runs" / DATE.isoformat() / "evaluate" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["ctr"].update(change)
    metrics_file.write_text(json.dumps(metrics))
    lake = Lake(str(root))
    ctr = bless(load_config("tiny"), DATE, lake, progress=lambda *_: None).metrics["ctr"]
    assert not ctr["published"] and reason in ctr["reason"]
    assert not (root / "models" / "ctr" / "blessed.json").exists()
    assert not (root / "models" / "ctr" / "history.jsonl").exists()
