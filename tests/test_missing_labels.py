"""Labels a log does not have (DESIGN §8; paper 000 §4): a task with fewer positives than
``models.min_positives`` in its training or validation split is skipped with the reason, and every
step after training says that the task has no model and why."""
from __future__ import annotations

import datetime as dt
import json
import shutil

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from components.lake import Lake, fs
from components.lake.commit import mark_success
from components.models.config import MinPositivesConfig
from components.models.step import skip_reason, training_skipped, unchecked_splits
from pipelines.config import load_config

DATE = dt.date(2026, 3, 3)
TRAINED = ("train_ctr", "train_ctr_baseline")
SKIPPED = ("train_pccvr", "train_pccvr_baseline")
AFTER_TRAINING = ("calibrate", "evaluate", "export_serving", "bless", "report")


def _stats(train: dict, validation: dict) -> dict:
    return {"splits": {"train": {"rows": 1000, **train}, "validation": {"rows": 3000, **validation},
                       "test": {"rows": 3000, "clicks": 150, "purchases": 20}}}


# --------------------------------------------------------------------------------------- unit

def test_no_purchases_in_training_skips_pccvr_and_names_split_label_count_minimum_and_the_set():
    stats = _stats({"clicks": 188, "purchases": 0}, {"clicks": 182, "purchases": 27})
    reason = skip_reason(stats, "pccvr", MinPositivesConfig())
    assert reason is not None
    assert "the train split has 0 positives of the PCCVR label 'purchased'" in reason
    assert "models.min_positives.train = 20" in reason and "--set models.min_positives.train=N" in reason
    assert "validation" not in reason  # the validation split has enough
    assert skip_reason(stats, "ctr", MinPositivesConfig()) is None  # 188 clicks, 182 in validation


def test_too_few_validation_positives_skip_and_the_minimums_are_per_split_and_configurable():
    stats = _stats({"clicks": 188, "purchases": 35}, {"clicks": 182, "purchases": 4})
    reason = skip_reason(stats, "pccvr", MinPositivesConfig())
    assert "the validation split has 4 positives" in reason and "models.min_positives.validation = 5" in reason
    assert "--set models.min_positives.validation=N" in reason and "train split" not in reason
    assert skip_reason(stats, "pccvr", MinPositivesConfig(validation=4)) is None  # the minimum itself passes
    assert skip_reason(stats, "pccvr", MinPositivesConfig(train=36, validation=0)).startswith("the train split has 35")
    no_clicks = _stats({"clicks": 0, "purchases": 0}, {"clicks": 0, "purchases": 0})
    both = skip_reason(no_clicks, "ctr", MinPositivesConfig())
    assert "train split has 0 positives of the CTR label 'clicked'" in both and "validation split has 0" in both
    assert skip_reason(no_clicks, "ctr", MinPositivesConfig(train=0, validation=0)) is None  # 0 = no check


def test_the_config_field_has_per_split_defaults_and_a_set_override():
    cfg = load_config("local")
    assert (cfg.models.min_positives.train, cfg.models.min_positives.validation) == (20, 5)
    cfg = load_config("local", ["models.min_positives.train=3"])
    assert (cfg.models.min_positives.train, cfg.models.min_positives.validation) == (3, 5)
    with pytest.raises(Exception, match="min_positives"):
        load_config("tiny", ["models.min_positives.train=-1"])


def test_counts_an_older_transform_did_not_record_are_not_judged():
    stats = _stats({"clicks": 188}, {"clicks": 182})  # no "purchases"
    assert skip_reason(stats, "pccvr", MinPositivesConfig()) is None
    assert unchecked_splits(stats, "pccvr") == ["train", "validation"] and unchecked_splits(stats, "ctr") == []
    assert skip_reason(None, "ctr", MinPositivesConfig()) is None


def test_the_run_summary_shows_a_step_that_skipped_as_skipped_with_its_reason():
    from pipelines.runner import RunSummary, StepOutcome

    summary = RunSummary(DATE, "/lake", [StepOutcome("train_pccvr", "succeeded", 0.1, notes=["skipped: no purchases"]),
                                         StepOutcome("train_ctr", "succeeded", 3.0, {"predictions/test": 10})])
    lines = {line.split()[0]: line for line in summary.render().splitlines()[2:4]}
    assert lines["train_pccvr"].split()[1] == "skipped" and lines["train_pccvr"].endswith("skipped: no purchases")
    assert lines["train_ctr"].split()[1] == "succeeded"


def test_a_log_without_clicks_skips_every_model_and_the_steps_after_them_say_why(tmp_path):
    """The runner on a transform output whose splits have no clicks (hence no purchases): all four train steps
    skip without importing TensorFlow's trainer, and calibrate .. report succeed, publish nothing and say why."""
    from pipelines.runner import run_dag

    lake = Lake(str(tmp_path / "lake"))
    transform = lake.run_dir(DATE, "transform")
    fs.makedirs(transform)
    fs.write_text(fs.join(transform, "stats.json"),
                  json.dumps(_stats({"clicks": 0, "purchases": 0}, {"clicks": 0, "purchases": 0})))
    mark_success(transform)
    for upstream in ("export_lookups", "train_references"):  # finished, as far as the runner can tell
        fs.makedirs(lake.run_dir(DATE, upstream))
        mark_success(lake.run_dir(DATE, upstream))
    lines = []
    summary = run_dag(load_config("tiny"), DATE, lake, only=[*TRAINED, *SKIPPED, *AFTER_TRAINING],
                      progress=lines.append)
    assert summary.ok, summary.render()
    text = summary.render()
    for step in (*TRAINED, *SKIPPED):
        reason = training_skipped(lake, DATE, step[len("train_"):])
        assert reason and "train split has 0 positives" in reason and "validation split has 0" in reason
        manifest = json.loads(fs.read_text(fs.join(lake.run_dir(DATE, step), "manifest.json")))
        assert manifest["notes"] == [f"skipped: {reason}"] and manifest["outputs"] == {}
        assert manifest["metrics"]["positives"] == {"train": 0, "validation": 0}
        assert lake.complete(lake.run_dir(DATE, step))
        row = next(line for line in text.splitlines() if line.split()[:1] == [step])
        assert row.split()[1] == "skipped" and "skipped: the train split has 0 positives" in row
    run = tmp_path / "lake" / "runs" / DATE.isoformat()
    metrics = json.loads((run / "evaluate" / "metrics.json").read_text())
    assert set(metrics) == {"test_day", "ctr", "ctr_baseline", "pccvr", "pccvr_baseline"}
    assert all(set(metrics[m]) == {"skipped"} and "min_positives" in metrics[m]["skipped"] for m in metrics if m != "test_day")
    assert json.loads((run / "calibrate" / "pccvr.json").read_text()) == {"skipped": metrics["pccvr"]["skipped"]}
    serving = json.loads((run / "export_serving" / "manifest.json").read_text())
    assert serving["metrics"]["exported"] == [] and not (run / "export_serving" / "ctr").exists()
    assert any(n.startswith("pccvr: not exported: train_pccvr was skipped: the train split") for n in serving["notes"])
    decision = json.loads((run / "bless" / "decision.json").read_text())
    for task in ("ctr", "pccvr"):
        assert not decision[task]["published"] and decision[task]["skipped"] == metrics[task]["skipped"]
        assert decision[task]["reason"].startswith("its training was skipped: the train split has 0 positives")
    assert not (tmp_path / "lake" / "models").exists()
    report = json.loads((run / "report" / "manifest.json").read_text())
    assert report["metrics"]["errors"] == []
    page = (run / "report" / "index.html").read_text()
    assert page.count("models.min_positives.train = 10") >= 4  # tiny's minimum; DAG notes, headline remarks, curves, blessing


# -------------------------------------------------------------------------------- integration

@pytest.fixture(scope="module")
def lake_without_purchases(tiny_run, tmp_path_factory):
    """A copy of the tiny lake whose validated events hold no purchase, run again from sessionize
    (examples relabelled without purchases, transform, training ... report); returns (root, CLI output)."""
    from pipelines.cli import main

    root = tmp_path_factory.mktemp("no-purchases") / "lake"
    shutil.copytree(tiny_run, root, ignore=shutil.ignore_patterns("models"))
    dropped = 0
    for path in sorted((root / "derived" / "validated" / "events").glob("dt=*/*.parquet")):
        table = pq.read_table(path)
        keep = pc.not_equal(table.column("action"), "purchase")
        dropped += table.num_rows - pc.sum(keep).as_py()
        pq.write_table(table.filter(keep), path)
    assert dropped > 0
    shutil.rmtree(root / "derived" / "examples")  # rebuilt from the events without purchases
    output = _run_capturing(main, ["run", "--root", str(root), "--preset", "tiny", "--from-step", "sessionize"])
    return root, output


def _run_capturing(main, argv) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0, out.getvalue()[-5000:]
    return out.getvalue()


def test_the_transform_counts_purchases_per_split(tiny_run, lake_without_purchases):
    root, _ = lake_without_purchases
    for lake_root, expect_purchases in ((tiny_run, True), (root, False)):
        stats = json.loads((lake_root / "runs" / DATE.isoformat() / "transform" / "stats.json").read_text())
        for split, day in (("train", "2026-03-01"), ("validation", "2026-03-02")):
            examples = pq.read_table(lake_root / "derived" / "examples" / f"dt={day}", columns=["clicked", "purchased"])
            bought = pc.sum(pc.and_(examples.column("clicked"), examples.column("purchased"))).as_py() or 0
            # training keeps every click, the validation day every row: the counter sees them all
            assert stats["splits"][split]["purchases"] == bought and stats["splits"][split]["clicks"] > 0
            assert (bought > 0) == expect_purchases


def test_a_log_without_purchases_skips_pccvr_and_still_trains_and_evaluates_ctr(lake_without_purchases):
    root, output = lake_without_purchases
    lake, run = Lake(str(root)), root / "runs" / DATE.isoformat()
    for step in SKIPPED:
        reason = training_skipped(lake, DATE, step[len("train_"):])
        assert reason and "the train split has 0 positives of the PCCVR label 'purchased'" in reason
        assert "models.min_positives.train = 10" in reason and "--set models.min_positives.train=N" in reason
        assert not (run / step / "model").exists() and not (run / step / "predictions").exists()
        row = next(line for line in output.splitlines() if line.split()[:1] == [step])
        assert row.split()[1] == "skipped" and "skipped: the train split has 0 positives" in row
    for step in TRAINED:
        assert training_skipped(lake, DATE, step[len("train_"):]) is None
        assert (run / step / "predictions" / "test.parquet").exists()
    metrics = json.loads((run / "evaluate" / "metrics.json").read_text())
    assert metrics["pccvr"] == {"skipped": training_skipped(lake, DATE, "pccvr")}
    assert set(metrics["pccvr_baseline"]) == {"skipped"}
    for model in ("ctr", "ctr_baseline"):
        assert metrics[model]["positives"] > 0 and 0.0 <= metrics[model]["roc_auc"] <= 1.0
    assert "roc_auc_lift_pct" in metrics["ctr"]
    assert json.loads((run / "calibrate" / "pccvr.json").read_text()).keys() == {"skipped"}
    assert "platt" in json.loads((run / "calibrate" / "ctr.json").read_text()) or \
        "error" in json.loads((run / "calibrate" / "ctr.json").read_text())
    serving = json.loads((run / "export_serving" / "manifest.json").read_text())
    assert "pccvr" not in serving["metrics"]["exported"] and not (run / "export_serving" / "pccvr").exists()
    assert serving["metrics"]["pccvr"]["not_exported"].startswith("train_pccvr was skipped")
    decision = json.loads((run / "bless" / "decision.json").read_text())
    assert not decision["pccvr"]["published"] and "min_positives" in decision["pccvr"]["reason"]
    assert "skipped" not in decision["ctr"]
    assert not (root / "models" / "pccvr" / "blessed.json").exists()
    bless_notes = json.loads((run / "bless" / "manifest.json").read_text())["notes"]
    assert any(n.startswith("pccvr: not published: its training was skipped: the train split") for n in bless_notes)
    page = (run / "report" / "index.html").read_text()
    assert "train_pccvr was skipped: the train split has 0 positives" in page
    assert "not trained: the train split has 0 positives" in page  # the headline table's remarks
