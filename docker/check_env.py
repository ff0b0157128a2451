"""Check, at image build time, that the Python environment is exactly the lock file.

    python check_env.py LOCKFILE [--project]

Fails (exit 1) when a pin of LOCKFILE is missing or installed at another version, or when a
requirement of a locked distribution (or, with ``--project``, of the installed ``adsformer``) is not
satisfied, the part of ``pip check`` that concerns the project. Distributions that are installed but
not locked (the Beam SDK image ships a few of its own, e.g. for Dataflow's tooling) are listed, and
their own unmet requirements are reported as warnings only: the pipeline never imports them.
Standard library plus ``packaging`` (locked), so it runs in both images.
"""
from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str) -> dict[str, str]:
    pins = {}
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if line:
                name, version = line.split("==", 1)
                pins[normalize(name)] = version.strip()
    return pins


def installed() -> dict[str, metadata.Distribution]:
    dists = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            dists.setdefault(normalize(name), dist)
    return dists


def unmet(dist: metadata.Distribution, dists: dict[str, metadata.Distribution]) -> list[str]:
    """Base requirements of ``dist`` (no extras) that the environment does not satisfy."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    problems = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        have = dists.get(normalize(req.name))
        if have is None:
            problems.append(f"{dist.metadata['Name']} requires {req}, which is not installed")
        elif req.specifier and not req.specifier.contains(Version(have.version), prereleases=True):
            problems.append(f"{dist.metadata['Name']} requires {req}, but {have.version} is installed")
    return problems


def check(lock_path: str, project: bool = False) -> tuple[list[str], list[str]]:
    """``(errors, warnings)``."""
    from packaging.version import Version

    pins, dists = read_lock(lock_path), installed()
    errors, warnings = [], []
    for name, version in sorted(pins.items()):
        dist = dists.get(name)
        if dist is None:
            errors.append(f"{name}=={version} is locked but not installed")
        elif Version(dist.version) != Version(version):
            errors.append(f"{name}=={version} is locked but {dist.version} is installed")
    checked = set(pins) | ({"adsformer"} if project else set())
    if project and "adsformer" not in dists:
        errors.append("the project (adsformer) is not installed")
    for name in sorted(checked & set(dists)):
        errors.extend(unmet(dists[name], dists))
    others = sorted(set(dists) - checked - {"pip"})
    for name in others:
        warnings.extend(unmet(dists[name], dists))
    if others:
        warnings.insert(0, f"{len(others)} installed distribution(s) not in {lock_path}: {', '.join(others)}")
    return errors, warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="check that the environment matches a lock file")
    parser.add_argument("lock")
    parser.add_argument("--project", action="store_true",
                        help="also require the adsformer project and its requirements")
    args = parser.parse_args(argv)
    errors, warnings = check(args.lock, args.project)
    for w in warnings:
        print(f"warning: {w}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} problem(s): the environment does not match {args.lock}", file=sys.stderr)
        return 1
    print(f"environment matches {args.lock} ({len(read_lock(args.lock))} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
