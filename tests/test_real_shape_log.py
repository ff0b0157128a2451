"""The whole DAG on a log shaped like a real sponsored-listing log (``tests/real_shape_log.py``):
no text, no images, no purchases, most listings seen once. What the log lacks is skipped with its
reason; the references are fit beside the CTR rankers."""
from __future__ import annotations

import json

import pytest

from pipelines.cli import main
from tests import real_shape_log

DATE = "2026-03-02"
PRESET = """extends: tiny
source: lake
default_date: 2026-03-02
window: {train_days: 1, validation: fraction}
"""


@pytest.fixture(scope="module")
def real_shape_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_shape")
    counts = real_shape_log.build(str(root))
    preset = root / "preset.yaml"
    preset.write_text(PRESET)
    code = main(["run", "--root", str(root), "--preset", str(preset)])
    return root, counts, code


def manifest(root, step):
    return json.loads((root / "runs" / DATE / step / "manifest.json").read_text())


@pytest.mark.slow
def test_the_dag_runs_on_a_real_shaped_log_and_skips_what_it_lacks(real_shape_run):
    root, counts, code = real_shape_run
    assert code == 0
    assert sum(c["clicks"] for c in counts.values()) > 100
    for step, why in (("text_vectors", "no titles and no tags"), ("visual", "image_uri"),
                      ("train_pccvr", "0 positives"), ("train_pccvr_baseline", "0 positives")):
        assert why in manifest(root, step)["metrics"]["skipped"], step
    metrics = json.loads((root / "runs" / DATE / "evaluate" / "metrics.json").read_text())
    assert "0 positives" in metrics["pccvr"]["skipped"]
    assert 0.0 < metrics["ctr"]["roc_auc"] < 1.0 and 0.0 < metrics["ctr_baseline"]["roc_auc"] < 1.0
    references = json.loads((root / "runs" / DATE / "train_references" / "references.json").read_text())
    assert "skipped" in references["tasks"]["pccvr"]
    ctr = references["tasks"]["ctr"]
    assert len(ctr) == 8
    # The log plants a retargeting effect (an ad of a listing viewed in the hour before is clicked ~10x
    # more often) that only the session features reveal: the personalized references find it.
    assert ctr["logreg_personalized"]["validation_roc_auc"] > ctr["logreg_nonpersonalized"]["validation_roc_auc"] + 0.1
    assert references["priors"] is False  # no day before the training day
    decision = json.loads((root / "runs" / DATE / "bless" / "decision.json").read_text())
    assert "pccvr" in json.dumps(decision) and "skipped" in json.dumps(decision)
