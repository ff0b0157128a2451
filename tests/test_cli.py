"""The command line: --help everywhere, dag output, clear errors (no bare tracebacks)."""
from __future__ import annotations

import subprocess
import os
import sys

import pytest

from pipelines.cli import build_parser, main

COMMANDS = ["generate", "run", "backfill", "check-raw", "airflow-dag", "dag", "headroom", "import", "report",
            "ablate"]


def test_every_command_has_help(capsys):
    for argv in [["--help"]] + [[c, "--help"] for c in COMMANDS]:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        assert "usage: adsformer" in capsys.readouterr().out
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMANDS)


def test_console_script_and_module_entry_points():
    for cmd in (["adsformer", "--help"], [sys.executable, "-m", "pipelines", "--help"]):
        exe = cmd if cmd[0] != "adsformer" else [os.path.join(os.path.dirname(sys.executable), "adsformer")] + cmd[1:]
        out = subprocess.run(exe, capture_output=True, text=True, check=True).stdout
        assert "generate" in out and "run" in out


def test_dag_prints_text_and_dot(capsys):
    assert main(["dag", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "validate  <- generate" in out and "digraph adsformer" in out


def test_errors_are_messages_not_tracebacks(capsys, tmp_path):
    assert main(["run", "--root", str(tmp_path), "--preset", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nosuch'" in err and "Traceback" not in err
    assert main(["run", "--root", str(tmp_path), "--preset", "production"]) == 2
    assert "pass --date" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--root", str(tmp_path), "--date", "March 4th"])
    assert "not a date" in capsys.readouterr().err


def test_run_outside_the_marketplace_range_is_a_clear_failure(capsys, tmp_path):
    assert main(["run", "--root", str(tmp_path), "--preset", "tiny", "--date", "2027-01-01"]) == 1
    out = capsys.readouterr().out
    assert "marketplace covers" in out and "failed" in out
