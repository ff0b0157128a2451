"""End to end on the tiny preset, through the CLI a user runs."""
from __future__ import annotations

import hashlib
import json
import pathlib

import pytest

from pipelines.cli import main


def digests(root: pathlib.Path, *subdirs: str) -> dict[str, str]:
    out = {}
    for sub in subdirs:
        for p in sorted((root / sub).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    assert main(["run", "--root", str(root), "--preset", "tiny"]) == 0
    return root


def test_run_generates_validates_and_writes_manifests(tiny_run, capsys):
    root = tiny_run
    runs = sorted(p.name for p in (root / "runs").iterdir())
    assert runs == ["2026-03-03"]
    for step in ("generate", "validate", "sessionize", "corpora", "transform"):
        run_dir = root / "runs" / "2026-03-03" / step
        assert (run_dir / "_SUCCESS").exists()
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "success" and manifest["code_version"]
    manifest = json.loads((root / "runs" / "2026-03-03" / "validate" / "manifest.json").read_text())
    # Window of 2026-03-03 on tiny: train 03-01, validation 03-02, test 03-03, labels 03-04 (+ absent 02-28).
    for day in ("2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"):
        for table in ("events", "impressions", "listings"):
            m = manifest["metrics"][f"{table}/{day}"]
            assert m["dead_rows"] == 0 and m["valid_rows"] == m["input_rows"] > 0
            assert (root / "derived" / "validated" / table / f"dt={day}" / "_SUCCESS").exists()
    assert any("2026-02-28" in n and "absent" in n for n in manifest["notes"])


def test_rerun_skips_everything_and_changes_nothing(tiny_run, capsys):
    before = digests(tiny_run, "raw", "derived", "oracle")
    assert main(["run", "--root", str(tiny_run), "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert out.count("already succeeded") == 5 and "skipped" in out
    assert digests(tiny_run, "raw", "derived", "oracle") == before


RUN_OUTPUTS = ("raw", "derived", "oracle", "runs/2026-03-03/corpora/corpus", "runs/2026-03-03/transform/train",
               "runs/2026-03-03/transform/validation", "runs/2026-03-03/transform/test",
               "runs/2026-03-03/transform/transform_fn/assets")


def test_forced_rerun_gives_identical_outputs(tiny_run, capsys):
    before = digests(tiny_run, *RUN_OUTPUTS)
    assert main(["run", "--root", str(tiny_run), "--preset", "tiny", "--force"]) == 0
    assert digests(tiny_run, *RUN_OUTPUTS) == before and any("transform/train" in k for k in before)


def test_generate_cli_is_deterministic_by_seed(tmp_path):
    roots = [tmp_path / n for n in ("a", "b", "c")]
    for root, seed in zip(roots, (11, 11, 12)):
        assert main(["generate", "--root", str(root), "--preset", "tiny", "--days", "2", "--seed", str(seed)]) == 0
    a, b, c = (digests(r, "raw", "oracle") for r in roots)
    assert a == b and len(a) > 10
    common = [k for k in a.keys() & c.keys() if k.endswith(".parquet")]
    assert len(common) >= 8 and all(a[k] != c[k] for k in common)
