"""``adsformer ablate`` (paper 000 §5.1, Tables 2-4): the variant registry, the BST and eBay
alternatives by hand, the aggregation of lifts over seeds, and a small end-to-end ablation on a copy
of the tiny run that resumes from its cached results."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil

import numpy as np
import pytest

from components.ablate import run as ablate_run
from components.ablate.variants import BASELINE, SUITES, suite_variants
from components.models.config import ModelsConfig
from pipelines.cli import build_parser, main
from tests.conftest import TINY_DATE

VOCAB = {"listing": 11, "shop": 5, "taxonomy": 4, "query": 7}


def _variant(suite: str, name: str):
    return next(v for v in SUITES[suite] if v.name == name)


def _config(suite: str, name: str, models: ModelsConfig | None = None):
    variant = _variant(suite, name)
    return variant.task_config(getattr(models or ModelsConfig(), variant.task))


def _switches(task_cfg) -> tuple[bool, bool, bool]:
    a = task_cfg.adpm
    return a.component1.enabled, a.component2.enabled, a.component3.enabled


# ---------------------------------------------------------------------------------------------- registry

def test_suites_hold_the_papers_rows():
    assert [v.name for v in SUITES["table2"]] == [
        BASELINE, "adpm_max", "adpm_avg", "c1", "c2", "c3", "c1_c2", "c1_c3", "c2_c3", "adpm_paper", "adpm_k5",
        "adpm_k20", "bst_k20", "ebay_k5"]
    assert [v.name for v in SUITES["table3"]] == [
        BASELINE, "adpm_max", "adpm_avg", "c1", "c2", "c3", "c1_c2", "c1_c3", "c2_c3"]
    rows = ["baseline", "skipgram", "visual", "air", "skipgram_visual", "air_skipgram", "air_visual",
            "air_skipgram_visual", "none"]
    assert [v.name for v in SUITES["table4"]] == [f"{t}_{r}" for t in ("ctr", "pccvr") for r in rows]
    assert {v.task for v in SUITES["table2"]} == {"ctr"} and {v.task for v in SUITES["table3"]} == {"pccvr"}
    for suite in SUITES.values():
        for v in suite:
            assert v.personalized == (not v.name.endswith(BASELINE))
            assert v.model == (v.task if v.personalized else f"{v.task}_baseline")
    # the CLI offers exactly these suites
    ablate_parser = build_parser()._subparsers._group_actions[0].choices["ablate"]
    assert set(next(a for a in ablate_parser._actions if a.dest == "suite").choices) == set(SUITES)


def test_variants_change_only_what_they_name():
    base = ModelsConfig()
    assert _config("table2", "adpm_max") == base.ctr  # the config's default is the paper's ADPM
    assert _config("table3", "adpm_max") == base.pccvr
    assert _switches(_config("table2", "c1")) == (True, False, False)
    assert _switches(_config("table2", "c2")) == (False, True, False)
    assert _switches(_config("table3", "c3")) == (False, False, True)
    assert _switches(_config("table2", "c1_c3")) == (True, False, True)
    assert _switches(_config("table3", "c2_c3")) == (False, True, True)
    avg = _config("table2", "adpm_avg")
    assert avg.adpm.component1.pooling == "avg" and _switches(avg) == (True, True, True)
    assert avg.model_copy(update={"adpm": base.ctr.adpm}) == base.ctr  # nothing else changed
    paper = _config("table2", "adpm_paper").adpm.component1
    assert not paper.target_match and paper.embedding_init_stddev is None and paper.pooling == "max"
    assert _config("table2", "adpm_max").adpm.component1.target_match
    assert not _config("table2", "bst_k20").adpm.component1.target_match
    assert _config("table2", "adpm_k5").adpm.last_k == 5 and _config("table2", "adpm_k20").adpm.last_k == 20
    assert _config("table2", "adpm_k20").adpm.model_copy(update={"last_k": None}) == base.ctr.adpm

    bst = _config("table2", "bst_k20").adpm
    assert _switches(_config("table2", "bst_k20")) == (True, False, False)
    c1 = bst.component1
    assert (c1.pairs, c1.blocks, c1.heads, c1.pooling, c1.max_len, bst.last_k) == (
        [("listing", "view")], 1, 8, "target", 20, 20)
    ebay = _config("table2", "ebay_k5").adpm
    assert _switches(_config("table2", "ebay_k5")) == (False, False, True)
    assert ebay.component3.pairs == [("listing", "view")] and ebay.last_k == 5

    for task in ("ctr", "pccvr"):
        air_visual = _config("table4", f"{task}_air_visual")
        assert air_visual.pretrained == ["air", "visual"] and _switches(air_visual) == (True, True, True)
        assert _config("table4", f"{task}_skipgram").pretrained == ["skipgram"]
        assert _config("table4", f"{task}_air_skipgram_visual").pretrained == ["air", "skipgram", "visual"]
        assert _switches(_config("table4", f"{task}_none")) == (True, False, True)
        # the task's own settings stay: PCCVR keeps its 2 heads and batch size
        assert air_visual.adpm.component1.heads == getattr(base, task).adpm.component1.heads
        assert air_visual.training == getattr(base, task).training


def test_variants_apply_over_the_preset_and_overrides():
    """A variant is a change of whatever the base config is: a preset's or --set's other settings stay."""
    models = ModelsConfig.model_validate({"ctr": {"training": {"epochs": 9},
                                                  "adpm": {"component1": {"pooling": "avg", "heads": 2}}}})
    c1 = _config("table2", "c1", models)
    assert c1.training.epochs == 9 and c1.adpm.component1.heads == 2 and c1.adpm.component1.pooling == "avg"
    assert _config("table2", "adpm_max", models).adpm.component1.pooling == "max"  # the row's own setting wins


def test_suite_variants_adds_the_baselines_and_rejects_unknown_names():
    assert [v.name for v in suite_variants("table2", ["ebay_k5", "c3"])] == [BASELINE, "c3", "ebay_k5"]
    assert [v.name for v in suite_variants("table4", ["pccvr_air"])] == ["pccvr_baseline", "pccvr_air"]
    assert len(suite_variants("table3")) == 9
    with pytest.raises(ValueError, match="has no variant"):
        suite_variants("table2", ["c4"])
    with pytest.raises(ValueError, match="unknown ablation suite"):
        suite_variants("table9")


# ------------------------------------------------------------------------------ BST and eBay by hand

def _adpm(task_cfg, **component1):
    from components.models.adpm import ADPM

    adpm = task_cfg.adpm
    if component1:
        adpm = adpm.model_copy(update={"component1": adpm.component1.model_copy(update=component1)})
    return ADPM(adpm, VOCAB)


def test_ebay_is_the_masked_average_of_the_last_five_viewed_listings():
    layer = _adpm(_config("table2", "ebay_k5"))
    assert list(layer.input_specs) == ["seq_listing_view_idx"] and layer.output_dim == 32
    layer.build({"seq_listing_view_idx": (None, None)})
    table = np.zeros((12, 32), np.float32)
    table[:, 0] = [99, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]  # row r + 1 = index r (row 0 = padding, never counted)
    table[:, 1] = np.arange(12) * 10
    layer.learned.tables["listing_view_embedding"].embeddings.assign(table)
    sequence = np.array([[0, 1, 2, 3, 4, 5, 6],        # newest first: the last 5 views are indices 0..4
                         [7, -1, 8, -1, -1, 9, 9],      # padding inside the first 5: indices 7 and 8 count
                         [-1, -1, -1, -1, -1, 3, 3]],   # no view among the first 5
                        np.int64)
    got = layer({"seq_listing_view_idx": sequence}).numpy()
    np.testing.assert_allclose(got[:, :2], [[(1 + 2 + 3 + 4 + 5) / 5, (10 + 20 + 30 + 40 + 50) / 5],
                                            [(8 + 9) / 2, (80 + 90) / 2],
                                            [0, 0]], rtol=1e-6)
    np.testing.assert_array_equal(got[:, 2:], 0)


def test_bst_is_the_encoded_target_position_of_the_last_twenty_views():
    import tensorflow as tf

    layer = _adpm(_config("table2", "bst_k20"), embedding_dim=8, ff_dim=16)
    assert sorted(layer.input_specs) == ["listing_id_idx", "seq_listing_view_idx"] and layer.output_dim == 8
    rng = np.random.default_rng(2)
    target = np.array([4, 9], np.int64)
    sequence = rng.integers(0, 11, size=(2, 26)).astype(np.int64)
    sequence[1, 3:] = -1
    got = layer({"listing_id_idx": target, "seq_listing_view_idx": sequence}).numpy()
    encoder = layer.encoders[0]
    tokens = np.concatenate([target[:, None], sequence[:, :20]], axis=1)
    valid = np.concatenate([np.ones((2, 1), bool), sequence[:, :20] >= 0], axis=1)
    x0 = encoder.embedding.embeddings.numpy()[np.where(valid, tokens + 1, 0)] + encoder.position_embedding.numpy()
    want = encoder.block_layers[0](tf.constant(x0, tf.float32), valid).numpy()[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    later = sequence.copy()
    later[0, 20:] = (later[0, 20:] + 1) % 11  # actions older than the last 20 do not count
    np.testing.assert_array_equal(layer({"listing_id_idx": target, "seq_listing_view_idx": later}).numpy(), got)


# ------------------------------------------------------------------------------------ aggregation

def test_lifts_and_their_spread_over_seeds_by_hand():
    chosen = suite_variants("table2", ["c3"])
    per_seed = {BASELINE: {7: {"roc_auc": 0.60, "pr_auc": 0.050, "n": 100, "positives": 5, "oracle_roc_auc": 0.9},
                           8: {"roc_auc": 0.50, "pr_auc": 0.040, "n": 100, "positives": 5, "oracle_roc_auc": 0.9}},
                "c3": {7: {"roc_auc": 0.66, "pr_auc": 0.060, "n": 100, "positives": 5, "oracle_roc_auc": 0.9},
                       8: {"roc_auc": 0.60, "pr_auc": 0.040, "n": 100, "positives": 5, "oracle_roc_auc": 0.9}}}

    class Cfg:
        preset = "tiny"

    day = dt.date(2026, 3, 3)
    out = ablate_run._aggregate(Cfg, day, day, "table2", chosen, [7, 8], per_seed, with_oracle=True)
    c3 = out["variants"]["c3"]
    # lifts: seed 7: 0.66 / 0.60 - 1 = +10 %, seed 8: 0.60 / 0.50 - 1 = +20 %; mean 15, sample std 7.071
    assert c3["roc_auc_lift_pct"]["per_seed"] == pytest.approx({"7": 10.0, "8": 20.0})
    assert c3["roc_auc_lift_pct"]["mean"] == pytest.approx(15.0)
    assert c3["roc_auc_lift_pct"]["std"] == pytest.approx(np.sqrt(50.0))
    assert c3["pr_auc_lift_pct"]["per_seed"] == pytest.approx({"7": 20.0, "8": 0.0})
    # headroom: (0.66 - 0.60) / (0.9 - 0.60) = 0.2 and (0.60 - 0.50) / (0.9 - 0.50) = 0.25
    assert c3["headroom_captured"]["per_seed"] == pytest.approx({"7": 0.2, "8": 0.25})
    assert c3["roc_auc"]["mean"] == pytest.approx(0.63)
    assert "roc_auc_lift_pct" not in out["variants"][BASELINE]
    md = ablate_run.render_markdown(out)
    assert "| c3 | ctr | 0.6300 ± 0.0424 | 0.0500 ± 0.0141 | +15.00 ± 7.07 | +10.00 ± 14.14 | 0.225 ± 0.035 |" in md


# -------------------------------------------------------------------------------------- end to end

@pytest.fixture
def ablation_lake(tiny_run, tmp_path):
    """What an ablation reads of the tiny run (transform, lookups, oracle), copied: it writes under runs/D/ablate."""
    root = tmp_path / "lake"
    for part in (f"runs/{TINY_DATE}/transform", f"runs/{TINY_DATE}/export_lookups", "oracle"):
        shutil.copytree(tiny_run / part, root / part)
    return root


def _tree(directory) -> dict[str, float]:
    return {os.path.relpath(os.path.join(base, f), directory): os.stat(os.path.join(base, f)).st_mtime_ns
            for base, _, files in os.walk(directory) for f in files}


def test_ablation_end_to_end_resumes_and_reuses_identical_trainings(ablation_lake, capsys, monkeypatch):
    root = str(ablation_lake)
    suite_dir = ablation_lake / "runs" / TINY_DATE / "ablate" / "table2"
    argv = ["ablate", "--root", root, "--preset", "tiny", "--suite", "table2", "--seeds", "1",
            "--variants", "c1_c3,ebay_k5"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[1/3] baseline seed=7: training" in out and "[3/3] ebay_k5 seed=7: training" in out
    assert "| ebay_k5 | ctr |" in out  # the table is printed at the end

    results = json.loads((suite_dir / "results.json").read_text())
    assert results["seeds"] == [7] and results["suite"] == "table2" and results["date"] == TINY_DATE
    assert list(results["variants"]) == [BASELINE, "c1_c3", "ebay_k5"]
    for name, v in results["variants"].items():
        assert {"roc_auc", "pr_auc", "task", "description", "n", "positives", "oracle_roc_auc"} <= set(v)
        assert 0 < v["roc_auc"]["mean"] < 1 and v["roc_auc"]["std"] is None and list(v["roc_auc"]["per_seed"]) == ["7"]
        if name != BASELINE:
            assert {"roc_auc_lift_pct", "pr_auc_lift_pct", "headroom_captured"} <= set(v)
            want = 100 * (v["roc_auc"]["mean"] / results["variants"][BASELINE]["roc_auc"]["mean"] - 1)
            assert v["roc_auc_lift_pct"]["mean"] == pytest.approx(want)
        per_seed = json.loads((suite_dir / name / "seed=7" / "result.json").read_text())
        assert per_seed["roc_auc"] == v["roc_auc"]["mean"] and per_seed["seed"] == 7
        assert (suite_dir / name / "seed=7" / "predictions" / "test.parquet").exists()
        assert not (suite_dir / name / "seed=7" / "model").exists()
    md = (suite_dir / "results.md").read_text()
    assert "| c1_c3 | ctr |" in md and "headroom captured" in md

    # A rerun trains nothing: every (variant, seed) comes from its result.json.
    from components.step import StepError

    def no_training(*_args, **_kwargs):
        raise StepError("training was not expected")

    monkeypatch.setattr("components.models.step.train_model", no_training)
    before = _tree(suite_dir)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count(": cached") == 3 and ": training" not in out
    after = _tree(suite_dir)
    assert {k: v for k, v in after.items() if not k.startswith("results.")} == {
        k: v for k, v in before.items() if not k.startswith("results.")}
    assert json.loads((suite_dir / "results.json").read_text()) == results

    # table4's ctr_none is table2's c1_c3 (components 1 and 3): reused across suites, nothing trained.
    assert main(["ablate", "--root", root, "--preset", "tiny", "--suite", "table4", "--seeds", "1",
                 "--variants", "ctr_none"]) == 0
    out = capsys.readouterr().out
    assert "from table2/c1_c3/seed=7" in out and "from table2/baseline/seed=7" in out and ": training" not in out
    table4 = json.loads((suite_dir.parent / "table4" / "results.json").read_text())
    assert table4["variants"]["ctr_none"]["roc_auc"] == results["variants"]["c1_c3"]["roc_auc"]

    # Another training budget is another result: the cached one is not reused.
    assert main(argv + ["--set", "models.ctr.training.epochs=1"]) == 2
    captured = capsys.readouterr()
    assert "trained with another config" in captured.out and "training was not expected" in captured.err


def test_ablation_says_which_step_to_run_first(tmp_path, capsys):
    assert main(["ablate", "--root", str(tmp_path), "--preset", "tiny", "--suite", "table3", "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert "transform step of the run of 2026-03-03 has not succeeded" in err and "adsformer run --root" in err
    assert main(["ablate", "--root", str(tmp_path), "--preset", "tiny", "--suite", "table3",
                 "--variants", "c9"]) == 2
    assert "suite table3 has no variant(s) ['c9']" in capsys.readouterr().err


def test_ablation_refuses_a_variant_whose_lookup_is_missing(ablation_lake, capsys):
    shutil.rmtree(ablation_lake / "runs" / TINY_DATE / "export_lookups" / "visual")
    assert main(["ablate", "--root", str(ablation_lake), "--preset", "tiny", "--suite", "table4", "--seeds", "1",
                 "--variants", "ctr_air_visual"]) == 2
    err = capsys.readouterr().err
    assert "ctr_air_visual pools the pretrained representation(s) ['visual']" in err
