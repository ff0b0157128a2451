"""Resumability (issue 6 point 3): a run killed with SIGKILL in the middle of a step and started
again ends with the same outputs as a run that was never interrupted."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import TINY_DATE
from tests.test_pipeline_e2e import RUN_OUTPUTS, digests

# Everything a run writes that is deterministic (examples, vocabularies, vectors, indexes,
# predictions, metrics): the resumed run in this process's child is also the suite's check that a
# second whole run reproduces every step's outputs.
COMPARED = RUN_OUTPUTS


def _start(root):
    return subprocess.Popen([sys.executable, "-m", "pipelines", "run", "--root", str(root), "--preset", "tiny"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _kill_inside(proc, run_dir, seconds_in: float, timeout: float = 600) -> None:
    """SIGKILL the run (its whole process group) ``seconds_in`` after ``run_dir`` appeared without _SUCCESS."""
    deadline = time.monotonic() + timeout
    while not (run_dir.is_dir() and not (run_dir / "_SUCCESS").exists()):
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {run_dir.name} started"
        assert time.monotonic() < deadline, f"{run_dir.name} did not start within {timeout} s"
        time.sleep(0.1)
    time.sleep(seconds_in)
    assert proc.poll() is None and not (run_dir / "_SUCCESS").exists(), f"{run_dir.name} finished before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()  # reaped: its pid is gone, so the next run may take the lock over


@pytest.mark.slow
def test_a_run_killed_mid_step_resumes_to_the_uninterrupted_outputs(tiny_run, tmp_path):
    root = tmp_path / "lake"
    run = root / "runs" / TINY_DATE
    _kill_inside(_start(root), run / "transform", seconds_in=8)  # Beam/TFT writing its records
    assert (run / "_RUNNING.json").exists() and not (run / "transform" / "_SUCCESS").exists()
    _kill_inside(_start(root), run / "train_ctr", seconds_in=6)  # Keras fitting
    assert (run / "transform" / "_SUCCESS").exists()
    done = subprocess.run([sys.executable, "-m", "pipelines", "run", "--root", str(root), "--preset", "tiny"],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"taking over the lock of {TINY_DATE}: its process" in done.stdout
    assert "transform: already succeeded" in done.stdout and "train_ctr: already succeeded" not in done.stdout
    assert not list(root.rglob("*.tmp-*")), "staged outputs of the killed runs were left behind"
    resumed, uninterrupted = digests(root, *COMPARED), digests(tiny_run, *COMPARED)
    assert sum("predictions" in k and "train_references" not in k for k in resumed) == 8
    assert sum("train_references/predictions" in k for k in resumed) == 32 and any("assets" in k for k in resumed)
    assert resumed == uninterrupted
