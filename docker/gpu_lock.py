"""Generate ``docker/requirements-gpu.lock`` (the GPU trainer's pins) from ``requirements.lock``.

    .venv/bin/python docker/gpu_lock.py                      # write docker/requirements-gpu.lock
    .venv/bin/python docker/gpu_lock.py --cuda-pins latest   # newest CUDA 12 wheels TF's ranges allow
    .venv/bin/python docker/gpu_lock.py --stdout             # print instead of writing

The GPU lock is ``requirements.lock`` with one change of TensorFlow build and the CUDA libraries
added, nothing else:

* ``tensorflow-cpu==X`` is dropped. ``tensorflow==X`` (locked too, because tensorflow-transform and
  tfx-bsl depend on ``tensorflow``) is the CUDA-enabled Linux build of the same version, so the
  trainer's TensorFlow is the same version as on CPU. The two distributions write the same
  ``tensorflow/`` package files, so keeping only one makes the image unambiguous.
* The CUDA user-space libraries are the ``nvidia-*-cu12`` wheels of TensorFlow's ``and-cuda``
  extra (cuDNN, cuBLAS, NCCL, ptxas, ...). The host provides only the kernel driver.

``--cuda-pins built`` (the default) pins each CUDA wheel to the lower bound TensorFlow X declares
for it. Those bounds are the CUDA / cuDNN release TensorFlow X was compiled and tested against
(``tf.sysconfig.get_build_info()``: CUDA 12.5.1, cuDNN 9 for TF 2.21), so the kernels, XLA and
ptxas all come from the toolchain TF was released with, and the image runs on the widest range of
drivers and GPUs that build supports. ``--cuda-pins latest`` instead takes what
``pip install tensorflow[and-cuda]==X`` picks today (newer minor CUDA 12 releases, e.g. for GPUs
newer than the build's compute capabilities).

Either way the whole set is resolved once with pip (``pip install --dry-run --report``, which needs
the package registry, like ``make lock``), and the script fails unless the resolution installs
exactly the listed pins: every pin of requirements.lock unchanged and nothing new except
``nvidia-*`` wheels. ``tests/test_docker_images.py`` checks the committed file against
requirements.lock offline.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CPU_LOCK = REPO / "requirements.lock"
GPU_LOCK = HERE / "requirements-gpu.lock"
CUDA_PREFIX = "nvidia-"


def normalize(name: str) -> str:
    """PEP 503 name: ``tensorflow_cpu`` and ``TensorFlow-CPU`` are ``tensorflow-cpu``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> list[tuple[str, str]]:
    """``(name as written, version)`` of every ``name==version`` line, in file order."""
    pins = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "==" not in line or line.startswith("-"):
            raise ValueError(f"{path}: not an exact pin: {raw!r}")
        name, version = (part.strip() for part in line.split("==", 1))
        pins.append((name, version))
    return pins


def _pip_report(requirements: list[str], no_deps: bool = False) -> dict:
    """What pip would install for ``requirements`` on this interpreter (nothing is installed)."""
    with tempfile.TemporaryDirectory(prefix="gpu-lock-") as tmp:
        req = os.path.join(tmp, "requirements.txt")
        report = os.path.join(tmp, "report.json")
        Path(req).write_text("\n".join(requirements) + "\n")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--disable-pip-version-check", "--report", report, "-r", req]
        if no_deps:
            cmd.insert(4, "--no-deps")
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"pip could not resolve the GPU set:\n{done.stderr[-4000:]}")
        return json.loads(Path(report).read_text())


def cuda_minimums(tf_version: str) -> list[str]:
    """``nvidia-*==<lower bound>`` for every requirement of tensorflow's ``and-cuda`` extra."""
    from packaging.requirements import Requirement

    report = _pip_report([f"tensorflow=={tf_version}"], no_deps=True)
    (item,) = report["install"]
    pins = []
    for text in item["metadata"].get("requires_dist", []):
        req = Requirement(text)
        if not (req.marker and req.marker.evaluate({"extra": "and-cuda"})
                and not req.marker.evaluate({"extra": ""})):
            continue
        lower = [s.version for s in req.specifier if s.operator == ">="]
        if not normalize(req.name).startswith(CUDA_PREFIX) or len(lower) != 1:
            raise SystemExit(f"unexpected and-cuda requirement of tensorflow {tf_version}: {text!r}")
        pins.append(f"{normalize(req.name)}=={lower[0]}")
    if not pins:
        raise SystemExit(f"tensorflow {tf_version} declares no and-cuda extra")
    return sorted(pins)


def build(cuda_pins: str = "built") -> str:
    """The text of requirements-gpu.lock."""
    pins = read_pins(CPU_LOCK)
    versions = {normalize(n): v for n, v in pins}
    tf_version = versions.get("tensorflow-cpu")
    if tf_version is None:
        raise SystemExit(f"{CPU_LOCK} pins no tensorflow-cpu: nothing to swap")
    if versions.get("tensorflow", tf_version) != tf_version:
        raise SystemExit(f"{CPU_LOCK} pins tensorflow=={versions['tensorflow']} but tensorflow-cpu=={tf_version}")
    base = [(n, v) for n, v in pins if normalize(n) != "tensorflow-cpu"]
    if "tensorflow" not in versions:
        base.append(("tensorflow", tf_version))
    requested = [f"{n}=={v}" for n, v in base if normalize(n) != "tensorflow"]
    if cuda_pins == "built":
        cuda = cuda_minimums(tf_version)
        requested += [f"tensorflow=={tf_version}", *cuda]
    else:
        requested.append(f"tensorflow[and-cuda]=={tf_version}")
    report = _pip_report(requested)
    resolved = {normalize(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}
    wanted = {normalize(n): v for n, v in base}
    changed = sorted(f"{n} {v} -> {resolved.get(n)}" for n, v in wanted.items() if resolved.get(n) != v)
    extra = {n: v for n, v in resolved.items() if n not in wanted}
    foreign = sorted(n for n in extra if not n.startswith(CUDA_PREFIX))
    if changed or foreign:
        raise SystemExit("the GPU set does not resolve to requirements.lock plus CUDA wheels:\n"
                         + "\n".join([f"  changed: {c}" for c in changed] + [f"  new non-CUDA: {f}" for f in foreign]))
    build_note = ("# CUDA pins: the lower bounds tensorflow declares = the CUDA / cuDNN release it was built against."
                  if cuda_pins == "built" else "# CUDA pins: as resolved by pip on generation day (newest allowed).")
    lines = [
        "# GPU trainer pins (docker/trainer-gpu.Dockerfile). GENERATED by `python docker/gpu_lock.py"
        + (" --cuda-pins latest" if cuda_pins == "latest" else "") + "`: do not edit.",
        f"# = requirements.lock without tensorflow-cpu=={tf_version} (tensorflow=={tf_version}, the CUDA-enabled",
        f"# build of the same version, stays) + the CUDA wheels of tensorflow[and-cuda]=={tf_version}.",
        build_note,
        "# tests/test_docker_images.py checks it against requirements.lock.",
    ]
    lines += [f"{n}=={v}" for n, v in base]
    lines.append(f"# CUDA wheels of tensorflow[and-cuda]=={tf_version}")
    lines += [f"{n}=={extra[n]}" for n in sorted(extra)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuda-pins", choices=["built", "latest"], default="built",
                        help="built: the CUDA release tensorflow was built against (default); latest: newest allowed")
    parser.add_argument("--stdout", action="store_true", help="print the lock instead of writing it")
    args = parser.parse_args(argv)
    text = build(args.cuda_pins)
    if args.stdout:
        sys.stdout.write(text)
    else:
        GPU_LOCK.write_text(text)
        pins = sum(1 for line in text.splitlines() if "==" in line and not line.startswith("#"))
        print(f"wrote {GPU_LOCK.relative_to(REPO)} ({pins} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
