"""Fixtures shared by the end-to-end tests: one run of the whole tiny DAG per test session."""
from __future__ import annotations

import pathlib

import pytest

TINY_DATE = "2026-03-03"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> pathlib.Path:
    """A lake with the whole DAG run for the tiny preset's default date (a few minutes on 2 cores).
    Tests that change it must leave its outputs as they were; others change a copy."""
    from pipelines.cli import main

    root = tmp_path_factory.mktemp("lake")
    assert main(["run", "--root", str(root), "--preset", "tiny"]) == 0
    return root

