"""The run report (runs/D/report/index.html): layout pieces, graceful sections, and the page of a real tiny
run rendered in headless Chromium."""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pytest

from components.lake import Lake, fs, parquet
from components.report import html as H
from components.report import plots
from components.report import sections as S
from components.report.step import render, report_path, run
from components.representations.store import Vectors, write_vectors
from pipelines.cli import main
from pipelines.config import load_config
from tests.conftest import TINY_DATE

D = dt.date(2026, 3, 3)
QUIET = lambda *_: None  # noqa: E731


# ---- pieces with hand-checkable results -------------------------------------------------------------

def test_dag_layers_by_longest_path_ordered_under_their_parents():
    #   p   q          r sits under q and s under p once the layer is reordered; t waits for its
    #   r   s          deepest dependency (u, layer 2), not its shallowest (p, layer 0).
    #     u
    #     t
    nodes = [("p", []), ("q", []), ("r", ["q"]), ("s", ["p"]), ("u", ["r", "s"]), ("t", ["p", "u"])]
    places = plots.dag_layers(nodes)
    assert {n: layer for n, (layer, _) in places.items()} == {"p": 0, "q": 0, "r": 1, "s": 1, "u": 2, "t": 3}
    assert places["s"][1] < places["r"][1]  # s under p (slot 0), r under q (slot 1): no crossing
    levels, chains = plots.dag_layout(nodes)
    assert chains[("p", "t")] == [("p", "t", 1), ("p", "t", 2)]  # a waypoint in each layer the edge crosses
    assert chains[("q", "r")] == [] and ("p", "t", 1) in levels[1]
    assert plots.dag_layers([("a", ["missing"]), ("b", ["a"])]) == {"a": (0, 0), "b": (1, 0)}
    with pytest.raises(ValueError, match="cycle"):
        plots.dag_layers([("a", ["b"]), ("b", ["a"])])


def test_dag_x_keeps_order_and_spacing():
    levels, chains = plots.dag_layout([("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]), ("e", ["a"])])
    width = {item: 2.0 if isinstance(item, str) else 0.5 for level in levels for item in level}
    x = plots.dag_x(levels, chains, width)
    for level in levels:
        for left, right in zip(level, level[1:]):
            assert x[right] - x[left] >= (width[left] + width[right]) / 2 - 1e-9


def test_nearest_neighbours_hand_checked_and_against_brute_force():
    m = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0], [2, 0]], dtype=np.float32)  # row 4 = row 0 scaled
    rows, cos = S.nearest_neighbours(m, np.array([0]), 3)
    assert rows.tolist() == [[4, 1, 2]]  # itself excluded; the scaled copy (cosine 1) first
    assert cos[0] == pytest.approx([1.0, 0.9 / np.hypot(0.9, 0.1), 0.0], abs=1e-6)

    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(60, 8)).astype(np.float32)
    queries = np.array([3, 17, 40, 59])
    rows, cos = S.nearest_neighbours(matrix, queries, 5)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    for q, found, sims in zip(queries, rows, cos):
        brute = sorted((i for i in range(len(matrix)) if i != q), key=lambda i: (-float(unit[q] @ unit[i]), i))[:5]
        assert found.tolist() == brute
        assert sims == pytest.approx([float(unit[q] @ unit[i]) for i in brute], abs=1e-5)
    assert S.pick_queries(10, 3, seed=7).tolist() == S.pick_queries(10, 3, seed=7).tolist()
    assert len(set(S.pick_queries(10, 3, seed=7))) == 3 and S.pick_queries(2, 5, seed=7).tolist() == [0, 1]


def _png(colour) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def _catalog_lake(root) -> Lake:
    """A catalog of 6 listings (4 with an active campaign; L5 has no image file) and visual vectors."""
    lake = Lake(str(root))
    ids = [f"L{i}" for i in range(6)]
    listings = pa.table({
        "listing_id": ids, "taxonomy_id": ["t1", "t1", "t2", "t1", "t2", "t1"],
        "taxonomy_path": ["home.lamps", "home.lamps", "toys.dolls", "home.lamps", "toys.dolls", "home.lamps"],
        "is_active": [True, True, True, True, True, False],
        "has_active_campaign": [True, False, True, True, True, True],
        "image_uri": [f"raw/images/{i}.png" for i in ids]})
    directory = lake.path("derived", "validated", "listings", f"dt={D}")
    parquet.write_table(listings, fs.join(directory, "part-0.parquet"))
    fs.write_bytes(fs.join(directory, "_SUCCESS"), b"")
    for i, colour in enumerate(["red", "green", "blue", "yellow", "black"]):
        fs.write_bytes(lake.path("raw", "images", f"L{i}.png"), _png(colour))
    # L1 is L0's nearest overall but has no campaign; L5 is inactive: neither may appear as a neighbour.
    matrix = np.array([[1, 0, 0], [1, 0.01, 0], [0.2, 1, 0], [1, 0.3, 0], [0, 1, 0.1], [1, 0, 0.001]], np.float32)
    write_vectors(fs.join(lake.run_dir(D, "visual"), "vectors.parquet"), Vectors(np.array(ids, dtype=object), matrix))
    return lake


def test_gallery_picks_active_campaign_neighbours_like_brute_force(tmp_path):
    lake = _catalog_lake(tmp_path)
    cfg = load_config("tiny", ["report.gallery_queries=4", "report.gallery_neighbours=2"])
    rows = S.gallery(cfg, lake, D, "visual")
    assert not isinstance(rows, S.Unavailable), rows
    ads = ["L0", "L2", "L3", "L4"]  # active, with a campaign, with a vector
    assert sorted(r[0].listing_id for r in rows) == ads  # 4 queries of 4 candidates: all of them
    vec = {"L0": [1, 0, 0], "L2": [0.2, 1, 0], "L3": [1, 0.3, 0], "L4": [0, 1, 0.1]}
    unit = {k: np.array(v) / np.linalg.norm(v) for k, v in vec.items()}
    for tiles in rows:
        q = tiles[0].listing_id
        brute = sorted((a for a in ads if a != q), key=lambda a: -float(unit[q] @ unit[a]))[:2]
        assert [t.listing_id for t in tiles[1:]] == brute
        assert [t.cosine for t in tiles[1:]] == pytest.approx([float(unit[q] @ unit[a]) for a in brute], abs=1e-5)
        assert tiles[0].cosine is None and all(t.image and S.image_type(t.image) == "png" for t in tiles)
        for t in tiles[1:]:
            assert t.same_taxonomy == (t.taxonomy == tiles[0].taxonomy)
    assert S.gallery(cfg, lake, D, "air") == S.Unavailable(
        f"no air vectors for {D} (runs/D/air/vectors.parquet): the step did not run or skipped")


def test_html_escapes_data_and_formats_numbers():
    table = str(H.table(["a<b"], [["<script>x</script>"], [1234567], [0.5], [H.Raw("<i>ok</i>")]]))
    assert "<script>" not in table and "&lt;script&gt;" in table and "a&lt;b" in table
    assert ">1,234,567<" in table and ">0.5000<" in table and "<i>ok</i>" in table
    assert H.fmt(3637.0) == "3,637" and H.fmt(1818.5) == "1,818.5" and H.fmt(None) == "-"


# ---- graceful sections ------------------------------------------------------------------------------

def test_an_empty_lake_gives_a_page_whose_sections_say_why(tmp_path):
    lake = Lake(str(tmp_path))
    result = run(load_config("tiny"), D, lake, progress=QUIET)
    page = (tmp_path / "runs" / TINY_DATE / "report" / "index.html").read_text()
    assert result.outputs == {"report": report_path(lake, D)}
    m = result.metrics
    assert m["errors"] == [] and m["images"] == 0 and page.count("<img") == 0
    assert set(m["sections"].values()) == {"unavailable"} and m["sections_unavailable"] == len(m["sections"]) == 8
    assert page.count('class="na">not available: ') >= 8
    for reason in ("the validate step has not run", "the corpora step has not run", "the evaluate step has not run",
                   "the bless step has not run", "data_gate step has not run", "the visual step has not succeeded",
                   "no visual vectors", "no test predictions of ctr", "no step of 2026-03-03 has run"):
        assert reason in page, reason
    assert all(n.split(": not available: ")[1] for n in result.notes)
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_the_data_section_shows_the_oov_share_per_split_and_entity(tmp_path):
    lake = Lake(str(tmp_path))
    split = lambda listing, shop, query: {"rows": 100, "oov_share": {"listing": listing, "shop": shop,  # noqa: E731
                                                                     "taxonomy": 0.0, "query": query}}
    stats = {"vocabulary_sizes": {"listing": 17921, "shop": 1499, "taxonomy": 100, "query": 12302},
             "top_k": {"listing": 50000, "shop": 2000, "taxonomy": 5000, "query": 20000},
             "num_oov_buckets": {"listing": 2000, "shop": 200, "taxonomy": 8, "query": 1000},
             "listing_coverage": {"k": 17921, "achieved": 0.980008, "coverage": 0.98, "occurrences": 2474016,
                                  "distinct": 20060, "limited_by": "coverage"},
             "splits": {"train": split(0.0237, 0.0, 0.0), "validation": split(0.0381, 0.0012, 0.0892),
                        "test": split(0.0454, 0.0, 0.0838)}}
    fs.write_text(fs.join(lake.run_dir(D, "transform"), "stats.json"), json.dumps(stats))
    report = render(load_config("tiny"), D, lake, progress=QUIET)
    data = next(s for s in report.sections if s.id == "data")
    assert data.status == "partial"  # no volumes, no gates: the vocabulary table alone
    html = data.render()
    rows = {r[0]: r[1:] for r in re.findall(r"<tr>((?:<td[^>]*>[^<]*</td>)+)</tr>", html) for r in [
        re.findall(r"<td[^>]*>([^<]*)</td>", r)]}
    assert rows["listing"] == ["17,921", "50,000", "2,000", "2.37%", "3.81%", "4.54%"]
    assert rows["shop"] == ["1,499", "2,000", "200", "0.00%", "0.12%", "0.00%"]
    assert rows["query"][3:] == ["0.00%", "8.92%", "8.38%"] and rows["taxonomy"][0] == "100"
    assert "17,921 listings cover 98.00% of the 2,474,016 training listing occurrences" in html
    # a stats.json of before the per-entity shares: the listing share alone, the others "-"
    old = {"vocabulary_sizes": {"listing": 60}, "top_k": {"listing": 60}, "num_oov_buckets": 1,
           "splits": {s: {"rows": 10, "listing_oov_share": 0.5} for s in ("train", "validation", "test")}}
    assert [(r["entity"], r["buckets"], r["test"]) for r in S.oov_rows(old)] == [
        ("listing", 1, 0.5), ("shop", 1, None), ("taxonomy", 1, None), ("query", 1, None)]


def test_a_section_that_crashes_costs_only_itself(tmp_path, monkeypatch):
    from components.report import step as report_step

    def broken(section, ctx):
        raise KeyError("surprise")

    builders = tuple((i, t, broken if i == "trend" else b) for i, t, b in report_step.BUILDERS)
    monkeypatch.setattr(report_step, "BUILDERS", builders)
    report = render(load_config("tiny"), D, Lake(str(tmp_path)), progress=QUIET)
    assert report.errors == ["Daily ROC-AUC trend: KeyError: 'surprise'"]
    assert "error while rendering this section: KeyError: &#x27;surprise&#x27;" in report.html
    assert report.metrics()["sections"]["trend"] == "unavailable" and len(report.sections) == 8


def _fake_step(lake: Lake, name: str, seconds: float, notes=()):
    d = lake.run_dir(D, name)
    manifest = {"step": name, "logical_date": TINY_DATE, "status": "success", "started_at": "2026-03-04T00:00:00+00:00",
                "finished_at": "2026-03-04T00:00:01+00:00", "seconds": seconds, "config_hash": "0" * 16,
                "code_version": "0.1.0+gtest", "row_counts": {"events/2026-03-03": 10}, "notes": list(notes)}
    fs.write_text(fs.join(d, "manifest.json"), json.dumps(manifest))
    fs.write_bytes(fs.join(d, "_SUCCESS"), b"")


STATE_ROW = re.compile(r'<tr><td><b>([a-z_]+)</b>.*?<span class="badge b-[a-z-]+">([^<]+)</span>', re.S)


def test_a_failed_run_is_reported_with_failed_and_not_run_steps(tmp_path, capsys):
    lake = Lake(str(tmp_path))
    _fake_step(lake, "generate", 1.5)
    _fake_step(lake, "validate", 2.5, notes=["<b>markup</b> in a note"])
    fs.write_text(fs.join(lake.run_dir(D, "data_gate"), "error.log"), "data_gate: anomalous data <script>\n")
    fs.write_bytes(fs.join(lake.run_dir(D, "sessionize"), "half-written.parquet"), b"x")  # killed mid-step
    out = tmp_path / "page.html"
    assert main(["report", "--root", str(tmp_path), "--preset", "tiny", "--date", TINY_DATE, "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = out.read_text()
    states = dict(STATE_ROW.findall(page))
    assert states["generate"] == states["validate"] == "succeeded"
    assert states["data_gate"] == "failed" and states["sessionize"] == "incomplete"
    assert states["transform"] == states["bless"] == states["report"] == "not run"
    assert "data_gate: anomalous data &lt;script&gt;" in page and "<script>" not in page
    assert "&lt;b&gt;markup&lt;/b&gt;" in page and "0.1.0+gtest" in page
    assert page.count("<img") == 1  # the DAG plot; nothing else has inputs


# ---- the page of a real tiny run, in a browser -----------------------------------------------------------

def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not on PATH, and CI must render the report: .ci/run installs it "
                    "(apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium): the report is not rendered in a browser")


CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__errors.push(t && t !== window ? 'failed to load ' + (t.tagName || '?') : String(e.message));
}, true);
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var out = document.createElement('pre');
  out.id = '__check';
  out.textContent = JSON.stringify({images: images.length, broken: broken.length, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


def _browser(chromium: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000", *args],
                          capture_output=True, text=True, timeout=180)


def browser_check(chromium: str, page: str, tmp_path) -> dict:
    """Load ``page`` in headless Chromium with a probe at the start of <head>: script errors, failed loads, and
    every <img> complete with a natural width once the page has loaded."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + CHECK_SCRIPT, 1))
    done = _browser(chromium, tmp_path, "--dump-dom", probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="__check">(.*?)</pre>', done.stdout, re.S)
    assert found, "the probe did not run (no load event?): " + done.stdout[-500:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_the_probe_sees_broken_images_and_script_errors(tmp_path):
    chromium = _chromium()
    page = ("<!DOCTYPE html><html><head><title>t</title></head><body>"
            f'<img src="{H.data_uri(_png("red"))}"><img src="data:image/png;base64,AAAA">'
            "<script>notDefined();</script></body></html>")
    check = browser_check(chromium, page, tmp_path)
    assert check["images"] == 2 and check["broken"] == 1
    assert "failed to load IMG" in check["errors"] and any("notDefined" in e for e in check["errors"])


def test_the_tiny_runs_report_renders_in_chromium(tiny_run, tmp_path, capsys):
    from PIL import Image

    chromium = _chromium()
    cfg = load_config("tiny")
    run_dir = tiny_run / "runs" / TINY_DATE
    manifest = json.loads((run_dir / "report" / "manifest.json").read_text())
    assert (run_dir / "report" / "_SUCCESS").exists() and (run_dir / "_dag.json").exists()
    m = manifest["metrics"]
    assert m["errors"] == [] and manifest["outputs"]["report"].endswith("runs/2026-03-03/report/index.html")
    assert m["sections_unavailable"] == 0, manifest["notes"]
    page = (run_dir / "report" / "index.html").read_text()
    assert not re.search(r'(src|href)="(?!data:|#)', page), "the page must not reference external resources"
    assert "<script" not in page and "<link" not in page
    states = dict(STATE_ROW.findall(page))
    assert set(states) == {s["name"] for s in json.loads((run_dir / "_dag.json").read_text())}
    assert states.pop("report") == "running" and set(states.values()) == {"succeeded"}

    plots_shown = page.count('<figure class="plot">')
    gallery = 2 * cfg.report.gallery_queries * (cfg.report.gallery_neighbours + 1)  # visual and AIR grids
    # DAG, volumes, session lengths, representation gaps, ROC/PR per task, reliability, AUC trend
    assert plots_shown == 8 - ("single class" in page)
    assert page.count("<img ") == m["images"] == plots_shown + gallery
    check = browser_check(chromium, page, tmp_path)
    assert check == {"images": plots_shown + gallery, "broken": 0, "errors": []}

    shot = tmp_path / "report.png"
    done = _browser(chromium, tmp_path, "--window-size=1280,3000", f"--screenshot={shot}", (run_dir / "report" /
                                                                                          "index.html").as_uri())
    assert done.returncode == 0 and shot.stat().st_size > 50_000, done.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 3000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 200, "the screenshot is nearly blank"

    # `adsformer report` renders the same run from the lake (the report step now succeeded).
    out = tmp_path / "cli.html"
    assert main(["report", "--root", str(tiny_run), "--preset", "tiny", "--out", str(out)]) == 0
    cli_page = out.read_text()
    assert dict(STATE_ROW.findall(cli_page))["report"] == "succeeded"
    assert cli_page.count("<img ") == page.count("<img ")
