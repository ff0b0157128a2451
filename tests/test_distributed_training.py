"""Training of the CTR ranker under tf.distribute strategies on CPU (DESIGN §8): a short run under
MirroredStrategy over two logical CPUs and under MultiWorkerMirroredStrategy with two local worker
processes learns (the loss decreases) and matches the single-device run in expectation; plus
``make_strategy`` / ``is_chief`` unit tests.

Each run is a subprocess of ``tests/distributed_train_worker.py`` (logical devices and TF_CONFIG
must be set before TensorFlow initializes). All runs see the same global batches of 64 rows in
the same order from the same initial weights (seed 0), 3 epochs of 64 steps. Two replicas
(2 logical CPUs, or 2 workers x 1 CPU) differ from one device only by the BatchNormalization
statistics (per replica: 32 rows) and the order of floating-point sums; the mirrored and the
multi-worker runs compute the same thing and agree to ~1e-7.

Measured on a 2-core machine, seeds 0 / 1 / 2 / 3:

=====================  =============================  =============================  ========================
held-out metric        default (one device)           mirrored (2 logical CPUs)      max |mirrored - default|
=====================  =============================  =============================  ========================
eval_train_loss        .4757 / .4746 / .4744 / .4752  .4717 / .4804 / .4741 / .4726  0.0058
eval_loss (main)       .5199 / .5089 / .5041 / .5172  .5231 / .5011 / .5042 / .5310  0.0138
eval_auc (main)        .7601 / .7588 / .7582 / .7580  .7624 / .7594 / .7587 / .7601  0.0023
eval_train_auc         .7918 / .7913 / .7905 / .7899  .7940 / .7910 / .7910 / .7919  0.0022
epoch losses (seed 0)  .5414 / .4804 / .4577          .5432 / .4831 / .4573          0.0045 (all seeds)
=====================  =============================  =============================  ========================

multi_worker (2 workers) equals mirrored to < 5e-8 (eval losses) in every seed, and both workers
end with the same weights. For reference: the untrained model's held-out loss is 0.63-0.79, the
true click probabilities give loss 0.4296 and AUC 0.8357. Wall time per run: default 11-17 s,
mirrored 19-29 s, multi_worker 31-54 s (both workers, the machine partly loaded).

The tolerances are ~2.5-4x the largest gap to one device; a loss logged N times too large (what
Keras' BinaryCrossentropy gave on rank-1 logits under N replicas), an untrained model or workers
whose weights drift apart (no all-reduce) fail them.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "distributed_train_worker.py")
RUN_TIMEOUT = 300  # seconds per run; a run takes 15-55 s on 2 idle cores, leave room for a loaded machine

# |strategy - single device| with the same seed (measured maxima in the module docstring)
EPOCH_LOSS_TOL = 0.015     # each epoch's mean training loss (max gap 0.0045)
EVAL_LOSS_TOL = 0.015      # held-out BCE of ranker.train, main + debias logit (max gap 0.0058)
SCORE_LOSS_TOL = 0.035     # held-out BCE of ranker.score, main logit only (max gap 0.0138; how the
                           # position effect splits between the main and the debias tower varies more)
EVAL_AUC_TOL = 0.008       # held-out ROC-AUC of ranker.score and of ranker.train (max gap 0.0023)
SAME_COMPUTATION_TOL = 1e-3  # multi_worker vs mirrored: the same replicas and batches (max gap 5e-8)
# the run learned: from 0.63-0.79 held-out loss before training (0.43 for the true probabilities)
MIN_LOSS_DROP = 0.03       # first - last epoch training loss
MIN_EVAL_LOSS_DROP = 0.1   # held-out loss of ranker.train below the untrained ranker.score loss
MIN_EVAL_AUC = 0.72        # held-out ROC-AUC of ranker.score (true probabilities: ~0.84)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(PYTHONPATH=os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])]),
               CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


def _tail(text, chars: int = 4000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-chars:]


def _command(strategy: str, out: Path, seed: int) -> list[str]:
    return [sys.executable, WORKER, "--strategy", strategy, "--out", str(out), "--seed", str(seed)]


def run_worker(strategy: str, out: Path, seed: int = 0) -> dict:
    """One single-process run; its JSON result."""
    try:
        done = subprocess.run(_command(strategy, out, seed), cwd=REPO, env=_env(), capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the {strategy} run timed out after {RUN_TIMEOUT} s; stderr tail:\n{_tail(e.stderr)}")
    assert done.returncode == 0, f"the {strategy} run exited {done.returncode}; stderr tail:\n{_tail(done.stderr)}"
    assert out.exists(), f"the {strategy} run wrote no result; stderr tail:\n{_tail(done.stderr)}"
    result = json.loads(out.read_text())
    result["stderr"] = done.stderr
    return result


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):  # held open together: n distinct ports
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_multi_worker(tmp: Path, seed: int = 0, workers: int = 2) -> list[dict | None]:
    """``workers`` concurrent local worker processes of one MultiWorkerMirroredStrategy cluster; the
    JSON each wrote (None if it wrote nothing). Fails with every worker's stderr tail if one exits
    non-zero or the cluster does not finish within RUN_TIMEOUT (all workers are killed then)."""
    ports = _free_ports(workers)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs, logs, outs = [], [], []
    try:
        for i in range(workers):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            outs.append(tmp / f"worker{i}.json")
            logs.append(open(tmp / f"worker{i}.stderr", "w+"))
            procs.append(subprocess.Popen(_command("multi_worker", outs[i], seed), cwd=REPO,
                                          env=_env(TF_CONFIG=tf_config), stdout=subprocess.DEVNULL, stderr=logs[i]))
        deadline = time.monotonic() + RUN_TIMEOUT
        failure = None
        while failure is None and any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                failure = f"the {workers} workers did not finish within {RUN_TIMEOUT} s"
            elif any(p.poll() not in (None, 0) for p in procs):  # the others would wait for it forever
                failure = "a worker failed: " + ", ".join(f"worker {i} exit {p.poll()}" for i, p in enumerate(procs))
            else:
                time.sleep(0.5)
        if failure is None and any(p.returncode != 0 for p in procs):
            failure = "exit codes " + ", ".join(f"worker {i}: {p.returncode}" for i, p in enumerate(procs))
        if failure is not None:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=30)
            tails = []
            for i, log in enumerate(logs):
                log.seek(0)
                tails.append(f"--- worker {i} (exit {procs[i].returncode}) stderr tail:\n{_tail(log.read())}")
            pytest.fail(failure + "\n" + "\n".join(tails))
        results = []
        for out, log in zip(outs, logs):
            log.seek(0)
            result = json.loads(out.read_text()) if out.exists() else None
            if result is not None:
                result["stderr"] = log.read()
            results.append(result)
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        for log in logs:
            log.close()


def _summary(r: dict) -> str:
    return (f"{r['strategy']}: epoch losses {r['history']['loss']}, eval_train_loss {r['eval_train_loss']:.4f}, "
            f"eval_loss {r['eval_loss']:.4f}, eval_auc {r['eval_auc']:.4f}, eval_train_auc {r['eval_train_auc']:.4f}")


def assert_learned(r: dict) -> None:
    losses, why = r["history"]["loss"], _summary(r) + "\nstderr tail:\n" + _tail(r.get("stderr"), 2000)
    assert len(losses) == 3 and all(0 < v < 1 for v in losses), why
    assert losses[-1] < losses[0] - MIN_LOSS_DROP, why
    assert r["first_batches_loss"][0] > losses[-1] + MIN_LOSS_DROP, why
    assert r["eval_train_loss"] < r["initial_eval_loss"] - MIN_EVAL_LOSS_DROP, why
    assert r["eval_auc"] > MIN_EVAL_AUC, why


def assert_matches(r: dict, single: dict) -> None:
    why = f"\n{_summary(r)}\n{_summary(single)}"
    assert r["steps"] == single["steps"], why
    assert r["initial_eval_loss"] == pytest.approx(single["initial_eval_loss"], abs=1e-4), "different initial weights" + why
    for got, want in zip(r["history"]["loss"], single["history"]["loss"]):
        assert got == pytest.approx(want, abs=EPOCH_LOSS_TOL), "epoch losses" + why
    assert r["eval_train_loss"] == pytest.approx(single["eval_train_loss"], abs=EVAL_LOSS_TOL), "eval_train_loss" + why
    assert r["eval_loss"] == pytest.approx(single["eval_loss"], abs=SCORE_LOSS_TOL), "eval_loss" + why
    assert r["eval_auc"] == pytest.approx(single["eval_auc"], abs=EVAL_AUC_TOL), "eval_auc" + why
    assert r["eval_train_auc"] == pytest.approx(single["eval_train_auc"], abs=EVAL_AUC_TOL), "eval_train_auc" + why


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    """The reference: the same training under the default strategy (one device)."""
    result = run_worker("default", tmp_path_factory.mktemp("single") / "result.json")
    assert result["replicas"] == 1 and result["is_chief"] is True
    return result


@pytest.mark.slow
def test_single_device_reference_run_learns(single_device):
    assert_learned(single_device)


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """The same training under MirroredStrategy over two logical CPUs."""
    return run_worker("mirrored", tmp_path_factory.mktemp("mirrored") / "result.json")


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_learns_and_matches_single_device(single_device, mirrored):
    assert mirrored["replicas"] == 2, "make_strategy('mirrored') did not use both logical CPUs"
    assert mirrored["is_chief"] is True
    assert_learned(mirrored)
    assert_matches(mirrored, single_device)


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_with_two_local_workers_learns_and_matches_single_device(
        single_device, mirrored, tmp_path):
    chief, other = run_multi_worker(tmp_path)
    assert chief is not None, "worker 0 (the chief) wrote no result"
    assert other is not None, "worker 1 wrote no marker"
    assert chief["is_chief"] is True and chief["task"] == {"type": "worker", "index": 0}
    assert other["is_chief"] is False and other["task"] == {"type": "worker", "index": 1}
    assert "history" not in other and "eval_loss" not in other, "a non-chief worker wrote the chief's results"
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["steps"] == other["steps"] == single_device["steps"]
    # the gradients were all-reduced: both workers end with the same weights
    assert other["weights_fingerprint"] == pytest.approx(chief["weights_fingerprint"], rel=1e-6)
    assert_learned(chief)
    assert_matches(chief, single_device)
    # 2 workers x 1 replica compute what 1 worker x 2 replicas does (same per-replica batches)
    why = f"\n{_summary(chief)}\n{_summary(mirrored)}"
    for key in ("eval_loss", "eval_auc", "eval_train_loss", "eval_train_auc"):
        assert chief[key] == pytest.approx(mirrored[key], abs=SAME_COMPUTATION_TOL), key + why
    assert chief["history"]["loss"] == pytest.approx(mirrored["history"]["loss"], abs=SAME_COMPUTATION_TOL), why


# ------------------------------------------------------------------------------------- fast unit tests

def test_make_strategy_rejects_an_unknown_name():
    from components.models.strategy import make_strategy

    with pytest.raises(ValueError, match="unknown training.strategy 'tpu'.*default, mirrored or multi_worker"):
        make_strategy("tpu")


@pytest.mark.parametrize("tf_config", [None, ""])
def test_multi_worker_without_tf_config_says_what_is_missing(monkeypatch, tf_config):
    from components.models.strategy import make_strategy

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match="multi_worker needs TF_CONFIG.*cluster and task"):
        make_strategy("multi_worker")


def test_default_strategy_is_one_replica(monkeypatch):
    from components.models.strategy import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert make_strategy("default").num_replicas_in_sync == 1


def test_row_binary_crossentropy_is_per_example_and_averages_like_keras():
    """fit's loss: on one device the mean binary cross-entropy of Keras; per example, so that Keras
    can scale it by 1/replicas under a strategy (Keras' BinaryCrossentropy returns a scalar for rank-1
    logits, which it leaves unscaled: N times the gradient under N replicas)."""
    import keras
    import numpy as np

    from components.models.train import RowBinaryCrossentropy

    logits = np.array([-2.0, 0.0, 0.5, 3.0], np.float32)
    labels = np.array([0, 1, 1, 0], np.float32)
    loss = RowBinaryCrossentropy()
    want = np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits))))
    assert float(loss(labels, logits)) == pytest.approx(want, rel=1e-6)
    assert float(loss(labels, logits)) == pytest.approx(
        float(keras.losses.BinaryCrossentropy(from_logits=True)(labels, logits)), rel=1e-6)
    assert tuple(loss.call(labels, logits).shape) == (4,)
    assert float(loss(labels, logits, sample_weight=np.array([1, 0, 0, 0], np.float32))) == pytest.approx(
        np.log1p(np.exp(-2.0)) / 4, rel=1e-5)  # sum over the batch size, like Keras' losses


WORKERS = {"worker": ["localhost:1", "localhost:2"]}


@pytest.mark.parametrize("tf_config, chief", [
    (None, True),                                                                            # no cluster at all
    ("", True),                                                                              # set but empty
    ({"cluster": {"chief": ["localhost:0"], **WORKERS}, "task": {"type": "chief", "index": 0}}, True),
    ({"cluster": {"chief": ["localhost:0"], **WORKERS}, "task": {"type": "worker", "index": 0}}, False),
    ({"cluster": WORKERS, "task": {"type": "worker", "index": 0}}, True),                    # worker 0, no chief
    ({"cluster": WORKERS, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {**WORKERS, "evaluator": ["localhost:3"]}, "task": {"type": "evaluator", "index": 0}}, False),
    ({"cluster": WORKERS}, True),                                                            # no task
])
def test_is_chief_for_tf_config_shapes(monkeypatch, tf_config, chief):
    from components.models.strategy import is_chief

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config if isinstance(tf_config, str) else json.dumps(tf_config))
    assert is_chief() is chief


def test_mixed_precision_without_a_gpu_says_so_and_never_leaks_into_the_next_model():
    import keras

    from components.models.strategy import use_mixed_precision

    try:
        keras.mixed_precision.set_global_policy("mixed_float16")  # as a previous GPU task would leave it
        assert use_mixed_precision(False) is None
        assert keras.mixed_precision.global_policy().name == "float32"
        assert "no GPU" in use_mixed_precision(True)  # this machine has none
        assert keras.mixed_precision.global_policy().name == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
