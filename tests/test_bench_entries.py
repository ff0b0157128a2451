"""The ``training``, ``tfdata``, ``models``, ``serving`` and ``scaling`` bench entries at their small scale, on the tiny
run: the JSON carries the top-level figures and every entry's details (positive, finite), the
markdown a row per figure, and the lake they measure is only read. No wall-clock assertions:
performance claims live in ``make bench`` itself."""
from __future__ import annotations

import json
import math
import pathlib

import pytest

from pipelines import bench
from tests.conftest import TINY_DATE

NEW_ENTRIES = ("training", "tfdata", "models", "serving", "scaling")


def _snapshot(root: pathlib.Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def small_bench(tiny_run, tmp_path_factory):
    out, work = tmp_path_factory.mktemp("bench-out"), tmp_path_factory.mktemp("bench-work")
    before = _snapshot(tiny_run)
    assert bench.main(["--out", str(out), "--entries", ",".join(NEW_ENTRIES), "--scale", "small",
                       "--lake", str(tiny_run), "--preset", "tiny", "--date", TINY_DATE, "--work", str(work)]) == 0
    results = json.loads((out / "results.json").read_text())
    return results, (out / "results.md").read_text(), before == _snapshot(tiny_run)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_top_level_figures_are_there_and_positive(small_bench):
    results, _, _ = small_bench
    for key in ("fraction_of_matmul_peak", "tfdata_over_training", "serving_p99_ms", "scaling_growth"):
        assert _positive(results[key]), (key, results.get(key))
    assert results["fraction_of_matmul_peak"] == results["training"]["fraction_of_matmul_peak"]
    assert results["tfdata_over_training"] == results["tfdata"]["tfdata_over_training"]
    assert set(NEW_ENTRIES) <= set(results)


@pytest.mark.slow
def test_entry_details(small_bench):
    results, _, _ = small_bench
    tr, td, mo, sv, sc = (results[e] for e in NEW_ENTRIES)
    assert tr["lake"]["preset"] == "tiny" and tr["lake"]["date"] == TINY_DATE
    for key in ("examples_per_s", "flops_per_example", "achieved_gflops", "matmul_peak_gflops", "peak_rss_mb"):
        assert _positive(tr[key]), (key, tr[key])
    assert tr["fraction_of_matmul_peak"] == pytest.approx(tr["achieved_gflops"] / tr["matmul_peak_gflops"], rel=0.01)
    assert tr["matmul_peak_gflops"] == max(tr["matmul_peak_before_gflops"], tr["matmul_peak_after_gflops"])
    # Short sequences are encoded at their bucket's width: less work executed than the padded model's.
    assert 0 < tr["flops_per_example"] < tr["nominal_flops_per_example"]
    assert tr["nominal_fraction_of_matmul_peak"] > tr["fraction_of_matmul_peak"]
    # The profiled steps: every category present, shares of the summed op time, matmuls among them.
    shares = tr["op_time_shares"]
    assert set(shares) == {"matmul", "optimizer", "sparse", "random", "other"}
    assert sum(shares.values()) == pytest.approx(1, abs=1e-3) and shares["matmul"] > 0 and shares["optimizer"] > 0
    assert tr["matmul_fraction_while_running"] == pytest.approx(tr["fraction_of_matmul_peak"] / shares["matmul"],
                                                                rel=0.01)
    # The padded step's matmuls replayed alone: all of them (the ranker has no einsum), at a positive rate.
    assert tr["matmul_replay_matmuls"] > 0 and tr["matmul_replay_not_replayed"] == []
    assert tr["matmul_replay_fraction"] == pytest.approx(tr["matmul_replay_gflops"] / tr["matmul_peak_gflops"], rel=0.01)
    # The length-split A/B ran both sides (the tiny preset splits its encoder); the full-width side
    # executes the padded model's work.
    assert tr["ab_steps"] > 0 and all(_positive(tr[k]) for k in ("ab_split_step_ms", "full_width_step_ms"))
    assert tr["length_split_speedup"] == pytest.approx(tr["full_width_step_ms"] / tr["ab_split_step_ms"], rel=0.01)
    full_rate = tr["full_width_examples_per_s"] * tr["nominal_flops_per_example"] / 1e9
    assert tr["full_width_fraction_of_matmul_peak"] == pytest.approx(full_rate / tr["matmul_peak_gflops"], rel=0.01)
    # tf.data read the whole train split, and its ratio is against this run's training rate.
    assert td["records"] == tr["training_rows"] and _positive(td["records_per_s"])
    assert td["training_examples_per_s"] == tr["examples_per_s"]
    assert td["tfdata_over_training"] == pytest.approx(td["records_per_s"] / tr["examples_per_s"], rel=0.01)
    # Model training: every ranker the tiny run trained and its task's 8 references, read from that run.
    assert set(mo["tasks"]) == {"ctr", "pccvr"}
    for task, r in mo["tasks"].items():
        assert set(r["rankers"]) == {task, f"{task}_baseline"} and all(_positive(s) for s in r["rankers"].values())
        assert len(r["references"]) == 8 and r["reference"] in r["references"]
        assert r["references_total"] == pytest.approx(sum(r["references"].values()), abs=0.02)
        assert r["ranker_over_reference"] == pytest.approx(
            r["rankers"][task] / r["references"][r["reference"]], rel=0.05, abs=0.1)
    # Serving: >= 100 timed requests of 500 candidates; the reference scores the same features.
    assert sv["candidates"] == 500 and sv["requests"] >= 100
    for side in ("serving", "model_only"):
        assert all(_positive(sv[side][k]) for k in ("p50_ms", "p99_ms", "mean_ms", "candidates_per_s"))
        assert sv[side]["p50_ms"] <= sv[side]["p99_ms"]
    assert sv["max_abs_diff_logit"] <= 1e-4
    # Scaling: each size ran the steps and its data grew with the user keys.
    sizes = sorted(sc["sizes"].values(), key=lambda s: s["user_keys"])
    assert len(sizes) >= 2
    for s in sizes:
        assert set(s["step_seconds"]) == set(sc["steps"])
        assert all(_positive(s[k]) for k in ("seconds", "events", "impressions", "examples", "peak_tree_rss_mb"))
    assert sizes[-1]["events"] > sizes[0]["events"]
    for g in sc["growth"].values():
        assert all(_positive(g[k]) for k in ("events", "time", "growth", "memory"))


@pytest.mark.slow
def test_markdown_has_a_row_per_figure(small_bench):
    results, table, _ = small_bench
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    header = "| entry | figure | value | reference (same run) | ratio |"
    assert rows[0] == header
    for prefix in ("| training (ctr, tiny", "| tfdata (tiny", "| serving (ctr, tiny", "| model training (ctr, tiny",
                   "| model training (pccvr, tiny"):
        assert sum(r.startswith(prefix) for r in rows) == 1, prefix
    sizes = sorted(results["scaling"]["sizes"], key=lambda name: results["scaling"]["sizes"][name]["user_keys"])
    assert sum(r.startswith("| scaling (tiny,") for r in rows) == len(sizes)
    assert sum(r.startswith(f"| scaling {sizes[0]} -> ") for r in rows) == len(sizes) - 1
    assert all(r.count("|") == header.count("|") for r in rows), "a cell holds a stray |"
    assert f"{results['training']['fraction_of_matmul_peak']} of peak" in table
    assert sum(r.startswith("| training step, where the op time goes") for r in rows) == 1
    assert sum(r.startswith("| training step's matmuls alone") for r in rows) == 1
    assert sum(r.startswith("| training step A/B: encoders' length split vs full width") for r in rows) == 1
    assert f"| {results['tfdata']['tfdata_over_training']} |" in table


@pytest.mark.slow
def test_the_measured_lake_is_only_read(small_bench):
    assert small_bench[2], "the bench changed files of the lake it measured"


def test_headline_takes_the_largest_sizes_whatever_their_key_order():
    # results.json is written with sorted keys: "16x" comes before "1x" and "4x" when read back.
    results = {"sessionize": {"sizes": {"4M": {"events": 4_000_000, "ratio_vs_duckdb": 2.6},
                                        "1M": {"events": 1_000_000, "ratio_vs_duckdb": 1.8}}},
               "training": {"fraction_of_matmul_peak": 0.2}, "tfdata": {"tfdata_over_training": 5.0},
               "scaling": {"growth": {"16x": {"events": 16.0, "growth": 0.4}, "4x": {"events": 4.0, "growth": 0.6}}}}
    assert bench.headline(results) == {"ratio_vs_duckdb": 2.6, "fraction_of_matmul_peak": 0.2,
                                       "tfdata_over_training": 5.0, "scaling_growth": 0.4}
    assert bench.headline({}) == {}


def test_unknown_entries_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--out", str(tmp_path), "--entries", "training,nope"])
    assert not (tmp_path / "results.json").exists()
