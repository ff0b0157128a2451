"""What the run report reads from the lake (DESIGN §3): plain data for ``plots`` and ``html``.

Every reader returns its data or :class:`Unavailable` with the reason a section cannot be
drawn (a step that did not run, a lake without images, a task with a single class, ...), so
the report degrades one section at a time and never fails for missing inputs. Nothing here
imports ``pipelines``: the DAG comes from ``runs/D/_dag.json`` (written by the runner) or
from what is on disk.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

import numpy as np
import pyarrow.compute as pc

from components.lake import Lake, fs, parquet
from components.lake.commit import TMP_MARK

DAG_FILE = "_dag.json"
ERROR_LOG = "error.log"
MANIFEST = "manifest.json"
REPORT_FILE = "index.html"
REPRESENTATION_STEPS = {"skipgram": "skipgram", "text": "text_vectors", "visual": "visual", "air": "air"}
TASKS = {"ctr": ("ctr", "ctr_baseline"), "pccvr": ("pccvr", "pccvr_baseline")}
STATES = ("succeeded", "skipped", "running", "incomplete", "failed", "not run")
"""Step states the report shows: ``skipped`` = succeeded without doing anything (its manifest says
``skipped: <why>``, e.g. no images); ``incomplete`` = started, no outcome on disk (still running, or
killed); ``running`` = the step rendering the report."""


@dataclasses.dataclass(frozen=True)
class Unavailable:
    """Why a section (or part of one) cannot be shown."""

    reason: str


def read_json(path: str):
    """The parsed JSON at ``path``, or None when absent or unreadable."""
    try:
        return json.loads(fs.read_text(path)) if fs.exists(path) else None
    except (OSError, ValueError):
        return None


def _read_text(path: str) -> str | None:
    try:
        return fs.read_text(path) if fs.exists(path) else None
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# The DAG and step states
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class StepState:
    name: str
    deps: list[str]
    description: str
    state: str
    seconds: float | None = None
    row_counts: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)
    error: str | None = None
    manifest: dict | None = None


def dag_nodes(lake: Lake, date, dag: list[dict] | None = None) -> tuple[list[dict], str | None]:
    """``([{"name", "deps", "description"}], note)``: the DAG passed in, else ``runs/D/_dag.json``,
    else the step directories found on disk (no edges; ``note`` says so)."""
    if dag is None:
        dag = read_json(fs.join(lake.run_dir(date), DAG_FILE))
    if isinstance(dag, list) and all(isinstance(n, dict) and "name" in n for n in dag):
        nodes = [{"name": str(n["name"]), "deps": [str(d) for d in n.get("deps") or []],
                  "description": str(n.get("description") or "")} for n in dag]
        known = {n["name"] for n in nodes}
        extra = [d for d in _step_dirs(lake, date) if d not in known]
        return nodes + [{"name": d, "deps": [], "description": ""} for d in extra], None
    found = _step_dirs(lake, date)
    return ([{"name": d, "deps": [], "description": ""} for d in found],
            f"the DAG's edges are unknown: {fs.join(lake.run_dir(date), DAG_FILE)} is absent (the runner writes it "
            "when a run starts); the steps are those found on disk")


def _step_dirs(lake: Lake, date) -> list[str]:
    """Step directories of ``runs/D`` ordered by their manifests' start time (unstarted last)."""
    names = [d for d in fs.list_dirs(lake.run_dir(date)) if not d.startswith((".", "_")) and TMP_MARK not in d]
    started = {}
    for name in names:
        manifest = read_json(fs.join(lake.run_dir(date, name), MANIFEST)) or {}
        started[name] = str(manifest.get("started_at") or "~")
    return sorted(names, key=lambda n: (started[n], n))


def step_states(lake: Lake, date, nodes: list[dict], own_step: str | None = None) -> list[StepState]:
    """The state of every step of ``nodes`` from ``runs/D/<step>/{_SUCCESS,manifest.json,error.log}``.

    ``own_step`` is the step rendering the report (shown as running); a step directory that holds
    nothing but a report page (``adsformer report`` after a failed run) counts as not run."""
    out = []
    for node in nodes:
        name = node["name"]
        run_dir = lake.run_dir(date, name)
        manifest = read_json(fs.join(run_dir, MANIFEST))
        state = StepState(name, list(node["deps"]), node["description"], "not run", manifest=manifest)
        if manifest:
            state.seconds = manifest.get("seconds")
            state.row_counts = dict(manifest.get("row_counts") or {})
            state.notes = list(manifest.get("notes") or [])
        if name == own_step:
            state.state = "running"
        elif lake.complete(run_dir):
            state.state = "skipped" if any(str(n).startswith("skipped:") for n in state.notes) else "succeeded"
        else:
            error = _read_text(fs.join(run_dir, ERROR_LOG))
            files = [f for f in fs.list_tree(run_dir) if not f.endswith("/" + REPORT_FILE)]
            if error is not None:
                state.state, state.error = "failed", error
            elif files:
                state.state = "incomplete"
        out.append(state)
    return out


def code_versions(states: list[StepState]) -> list[str]:
    """Distinct code versions of the run's manifests (more than one: steps ran from different code)."""
    return sorted({str(s.manifest.get("code_version")) for s in states if s.manifest and s.manifest.get("code_version")})


# ---------------------------------------------------------------------------------------------
# Data volumes and gates
# ---------------------------------------------------------------------------------------------

_PARTITION_KEY = re.compile(r"^([a-z_]+)/(\d{4}-\d{2}-\d{2})$")


def volumes(config, lake: Lake, date) -> list[dict] | Unavailable:
    """``[{"table", "day", "input_rows", "valid_rows", "dead_rows", "source"}]`` for every raw partition
    of the run's window: from the validate manifest, else (validated by an earlier run, whose window
    overlapped) from the Parquet footers of ``derived/{validated,dead_letter}``."""
    from components.validate.step import dead_letter_dir, validated_dir

    manifest = read_json(fs.join(lake.run_dir(date, "validate"), MANIFEST)) or {}
    metrics = manifest.get("metrics") or {}
    rows = {}
    for key, value in metrics.items():
        m = _PARTITION_KEY.match(key)
        if m and isinstance(value, dict) and "valid_rows" in value:
            rows[(m.group(1), m.group(2))] = {
                "table": m.group(1), "day": m.group(2), "input_rows": int(value.get("input_rows", 0)),
                "valid_rows": int(value["valid_rows"]), "dead_rows": int(value.get("dead_rows", 0)),
                "source": "validate manifest"}
    required, optional = config.window.raw_dates(date)
    for day in sorted(set(required) | set(optional)):
        for table in config.validate.tables:
            if (table, day.isoformat()) in rows:
                continue
            valid = validated_dir(lake, table, day)
            if not lake.complete(valid):
                continue
            dead = dead_letter_dir(lake, table, day)
            n_valid = parquet.count_rows(valid)
            n_dead = parquet.count_rows(dead) if lake.complete(dead) else 0
            rows[(table, day.isoformat())] = {"table": table, "day": day.isoformat(), "input_rows": n_valid + n_dead,
                                              "valid_rows": n_valid, "dead_rows": n_dead,
                                              "source": "lake (validated by an earlier run)"}
    if not rows:
        return Unavailable("no validated partition of the run's window: the validate step has not run")
    return [rows[k] for k in sorted(rows, key=lambda k: (k[1], k[0]))]


def _json_object(path: str, absent: str) -> dict | Unavailable:
    found = read_json(path)
    if found is None:
        return Unavailable(f"{path} is absent: {absent}")
    return found if isinstance(found, dict) else Unavailable(f"{path} is not a JSON object")


def transform_stats(lake: Lake, date) -> dict | Unavailable:
    """``runs/D/transform/stats.json``: vocabulary sizes, OOV buckets, listing coverage, OOV shares per split."""
    return _json_object(fs.join(lake.run_dir(date, "transform"), "stats.json"), "the transform step has not run")


OOV_ENTITIES = ("listing", "shop", "taxonomy", "query")
OOV_SPLITS = ("train", "validation", "test")


def oov_rows(stats: dict) -> list[dict]:
    """One row per target entity of a transform ``stats.json``: ``entity``, ``k`` (in-vocabulary size),
    ``cap`` (top_k), ``buckets`` (OOV buckets) and ``<split>`` (share of the split's targets out of the
    vocabulary, None where not recorded; older stats.json files hold only the listing share)."""
    buckets = stats.get("num_oov_buckets")
    rows = []
    for entity in OOV_ENTITIES:
        row = {"entity": entity, "k": (stats.get("vocabulary_sizes") or {}).get(entity),
               "cap": (stats.get("top_k") or {}).get(entity),
               "buckets": buckets.get(entity) if isinstance(buckets, dict) else buckets}
        for split in OOV_SPLITS:
            found = (stats.get("splits") or {}).get(split) or {}
            share = (found.get("oov_share") or {}).get(entity)
            if share is None and entity == "listing":
                share = found.get("listing_oov_share")
            row[split] = share
        rows.append(row)
    return rows


def gate(lake: Lake, date) -> dict | Unavailable:
    from components.gates.step import gate_path

    return _json_object(gate_path(lake, date), "the data_gate step has not run (or this DAG has none)")


# ---------------------------------------------------------------------------------------------
# Session lengths (paper 000 Figure 2)
# ---------------------------------------------------------------------------------------------

def session_lengths(config, lake: Lake, date) -> tuple[np.ndarray, list[str]] | Unavailable:
    """Listings viewed per one-hour session over the run's corpus days (``derived/sessions``), and the days."""
    lengths, days = [], []
    for day in config.window.corpus_dates(date):
        directory = lake.derived("sessions", day)
        if not lake.complete(directory):
            continue
        table = parquet.read_partition(directory, columns=["listings"])
        lengths.append(pc.list_value_length(table.column("listings")).to_numpy(zero_copy_only=False))
        days.append(day.isoformat())
    if not days:
        return Unavailable("no derived/sessions partition of the run's corpus days: the corpora step has not run")
    values = np.concatenate(lengths).astype(np.int64) if lengths else np.zeros(0, np.int64)
    if values.size == 0:
        return Unavailable(f"the sessions of {', '.join(days)} are empty")
    return values, days


# ---------------------------------------------------------------------------------------------
# Representations: quality checks and nearest-neighbour galleries (paper 000 Figures 4, 13)
# ---------------------------------------------------------------------------------------------

def representation_quality(lake: Lake, date) -> dict[str, dict | Unavailable]:
    """Representation name -> its manifest's ``metrics.quality`` (cosine gap, purity), or why there is none."""
    out: dict[str, dict | Unavailable] = {}
    for name, step in REPRESENTATION_STEPS.items():
        manifest = read_json(fs.join(lake.run_dir(date, step), MANIFEST))
        if manifest is None:
            out[name] = Unavailable(f"the {step} step has not succeeded")
            continue
        metrics = manifest.get("metrics") or {}
        if metrics.get("skipped"):
            out[name] = Unavailable(f"{step} skipped: {metrics['skipped']}")
        elif not isinstance(metrics.get("quality"), dict):
            out[name] = Unavailable(f"the {step} manifest has no quality metrics")
        elif "error" in metrics["quality"]:
            out[name] = Unavailable(f"{step}: {metrics['quality']['error']}")
        else:
            out[name] = metrics["quality"]
    return out


def quality_rows(quality: dict) -> list[dict]:
    """One row per label column of a quality report: same/different cosine, gap, purity@k, chance, ratio."""
    rows = []
    for column, m in quality.items():
        if not isinstance(m, dict) or "cosine_gap" not in m:
            continue
        purity_key = next((k for k in m if k.startswith("purity_at_")), None)
        rows.append({"label": column, "same_cosine": m.get("same_cosine"), "different_cosine": m.get("different_cosine"),
                     "cosine_gap": m.get("cosine_gap"), "k": purity_key[len("purity_at_"):] if purity_key else "?",
                     "purity": m.get(purity_key) if purity_key else None, "chance_purity": m.get("chance_purity"),
                     "purity_ratio": m.get("purity_ratio"), "labels": m.get("labels")})
    return rows


def nearest_neighbours(matrix: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cosines)``, each ``(len(queries), k)``: the ``k`` rows of ``matrix`` most cosine-similar to
    each query row, the query itself excluded, best first, ties by row order (exact search)."""
    from components.representations.store import normalize

    x = normalize(np.asarray(matrix, dtype=np.float32))
    queries = np.asarray(queries, dtype=np.int64)
    sims = x[queries] @ x.T
    sims[np.arange(len(queries)), queries] = -np.inf
    k = min(k, len(x) - 1)
    rows = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return rows, np.take_along_axis(sims, rows, axis=1)


def pick_queries(n: int, count: int, seed: int) -> np.ndarray:
    """``count`` of ``n`` candidate rows (sorted), drawn with ``seed``: the same listings every run of a lake."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(count, n), replace=False))


@dataclasses.dataclass
class Tile:
    listing_id: str
    taxonomy: str
    image: bytes | None  # PNG/JPEG/GIF/WebP bytes, None when the file is missing
    cosine: float | None = None  # None for the query itself
    same_taxonomy: bool = False


def gallery(config, lake: Lake, date, representation: str) -> list[list[Tile]] | Unavailable:
    """Rows of ``[query, neighbour 1, ..., neighbour k]`` tiles: seeded query listings with an active
    campaign and their nearest neighbours by cosine among the active-campaign listings (the candidate
    set of the ANN index, paper 000 §3.1, A.5.2), with the images of ``raw/images``."""
    from components.representations.store import catalog, load_representation
    from components.representations.visual.images import resolve_uri

    cfg = config.report
    vectors = load_representation(lake, date, representation)
    if vectors is None:
        return Unavailable(f"no {representation} vectors for {date} (runs/D/{REPRESENTATION_STEPS[representation]}"
                           "/vectors.parquet): the step did not run or skipped")
    table = catalog(lake, date)
    if table is None:
        return Unavailable(f"no validated catalog of {date}: no listing is known to have an active campaign")
    ads = table.filter(pc.and_(table.column("is_active"), table.column("has_active_campaign")))
    ids = ads.column("listing_id").to_pylist()
    rows = vectors.rows(ids)
    known = rows >= 0
    matrix = vectors.matrix[rows[known]]
    nonzero = np.linalg.norm(matrix, axis=1) > 0
    keep = np.flatnonzero(known)[nonzero]
    matrix = matrix[nonzero]
    if len(keep) < 2:
        return Unavailable(f"fewer than 2 listings with an active campaign have a non-zero {representation} vector")
    uris = ads.column("image_uri").to_pylist()
    if not any(uris[i] for i in keep):
        return Unavailable(f"no listing with an active campaign has an image_uri: the catalog of {date} comes "
                           "without images")
    taxonomy = [str(t) for t in ads.column("taxonomy_path").to_pylist()]
    tax_id = ads.column("taxonomy_id").to_pylist()
    with_image = np.array([bool(uris[i]) for i in keep])
    candidates = np.flatnonzero(with_image)
    queries = candidates[pick_queries(len(candidates), cfg.gallery_queries, config.seed)]
    found, cosines = nearest_neighbours(matrix, queries, cfg.gallery_neighbours)
    out = []
    for q, row, cos in zip(queries, found, cosines):
        qi = keep[q]
        tiles = [Tile(ids[qi], taxonomy[qi], _image(lake, uris[qi], resolve_uri))]
        for r, c in zip(row, cos):
            i = keep[r]
            tiles.append(Tile(ids[i], taxonomy[i], _image(lake, uris[i], resolve_uri), float(c), tax_id[i] == tax_id[qi]))
        out.append(tiles)
    return out


_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"GIF8": "gif", b"RIFF": "webp"}


def image_type(data: bytes) -> str | None:
    """The image subtype of ``data`` from its magic bytes (``png``, ``jpeg``, ``gif``, ``webp``), else None."""
    return next((kind for magic, kind in _IMAGE_MAGIC.items() if data.startswith(magic)), None)


def _image(lake: Lake, uri: str | None, resolve) -> bytes | None:
    if not uri:
        return None
    try:
        data = fs.read_bytes(resolve(lake, uri))
    except (OSError, ValueError):
        return None
    return data if image_type(data) else None


# ---------------------------------------------------------------------------------------------
# Models: test-day predictions, calibration, evaluation, trend, blessing
# ---------------------------------------------------------------------------------------------

def _predictions(lake: Lake, date, model: str):
    """``read_predictions`` of the test split, or None; checks the file first, so a lake without models does
    not pay for importing TensorFlow (which ``read_predictions`` imports for the label names)."""
    from components.models.step import predictions_path, read_predictions

    return read_predictions(lake, date, model, "test") if fs.exists(predictions_path(lake, date, model, "test")) else None


def oracle_truth(lake: Lake, date, config, task: str, table) -> np.ndarray | None:
    """The oracle's true probability of each row of a predictions ``table`` (joined on impression_id), or
    None without ``oracle/`` (real data) or when some row has no oracle row."""
    from components.evaluate.step import oracle_probabilities, read_oracle

    oracle = read_oracle(lake, config.window.test_date(date))
    if oracle is None:
        return None
    truth = oracle_probabilities(oracle, table, task)
    return None if np.isnan(truth).any() else truth


def training_skipped(lake: Lake, date, model: str) -> str | None:
    """Why ``train_<model>`` skipped (e.g. a label the log lacks, ``models.min_positives``), or None."""
    from components.models.step import training_skipped as skipped

    return skipped(lake, date, model)


def scores_on_test_day(config, lake: Lake, date, task: str) -> dict | Unavailable:
    """``{"labels": y, "<model>": logits, "<baseline>": logits, "oracle": p, "missing": {series: why}}`` on
    the test split of ``task``, every series aligned to the model's rows by impression id (the baseline
    when it scored the same impressions, the oracle when ``oracle/impressions/dt=D`` covers them)."""
    model, baseline = TASKS[task]
    skipped = training_skipped(lake, date, model)
    if skipped:
        return Unavailable(f"train_{model} was skipped: {skipped}")
    found = _predictions(lake, date, model)
    if found is None:
        return Unavailable(f"no test predictions of {model} (runs/D/train_{model}/predictions/test.parquet)")
    _, table, logits, labels = found
    if len(labels) == 0 or labels.min() == labels.max():
        return Unavailable(f"the test split of {task} has a single class ({len(labels):,} rows, "
                           f"{int(labels.sum()):,} positives): no ROC or PR curve exists")
    out: dict = {"labels": labels, model: logits, "missing": {}}
    other = _predictions(lake, date, baseline)
    if other is None:
        skipped = training_skipped(lake, date, baseline)
        out["missing"][baseline] = f"train_{baseline} was skipped: {skipped}" if skipped else "no test predictions"
    else:
        rows = pc.index_in(table.column("impression_id"), other[1].column("impression_id")).to_numpy(zero_copy_only=False)
        if np.isnan(rows.astype(np.float64)).any():
            out["missing"][baseline] = "it scored other test impressions"
        else:
            out[baseline] = other[2][rows.astype(np.int64)]
    truth = oracle_truth(lake, date, config, task, table)
    if truth is None:
        out["missing"]["oracle"] = "no oracle/impressions partition covering the test rows (real data)"
    else:
        out["oracle"] = truth
    return out


def calibration_inputs(lake: Lake, date, task: str) -> dict | Unavailable:
    """``{"labels", "logits", "platt" (or None), "why"}`` of ``task``'s personalized model on the test split."""
    from components.calibrate.step import load_platt, platt_path

    model = TASKS[task][0]
    skipped = training_skipped(lake, date, model)
    if skipped:
        return Unavailable(f"train_{model} was skipped: {skipped}")
    found = _predictions(lake, date, model)
    if found is None:
        return Unavailable(f"no test predictions of {model}")
    _, _, logits, labels = found
    if len(labels) == 0:
        return Unavailable(f"the test split of {task} is empty")
    if not fs.exists(platt_path(lake, date, model)):
        return {"labels": labels, "logits": logits, "platt": None,
                "why": f"not calibrated: {platt_path(lake, date, model)} is absent (calibrate has not run)"}
    platt = load_platt(lake, date, model)
    why = None
    if platt is None:
        why = str((read_json(platt_path(lake, date, model)) or {}).get("error") or "not calibrated")
    return {"labels": labels, "logits": logits, "platt": platt, "why": why}


def evaluation(lake: Lake, date) -> dict | Unavailable:
    from components.evaluate.step import metrics_path

    found = read_json(metrics_path(lake, date))
    if not isinstance(found, dict):
        return Unavailable(f"{metrics_path(lake, date)} is absent: the evaluate step has not run")
    return found


def trend(lake: Lake, date, runs: int) -> list[dict] | Unavailable:
    """``evaluate/metrics.json`` of the last ``runs`` runs up to ``date`` (oldest first), each with its ``run``."""
    from components.evaluate.step import metrics_path

    days = []
    for name in fs.list_dirs(lake.path("runs")):
        try:
            day = dt.date.fromisoformat(name)
        except ValueError:
            continue
        if day <= date:
            days.append(day)
    out = []
    for day in sorted(days, reverse=True):
        found = read_json(metrics_path(lake, day))
        if isinstance(found, dict):
            out.append({**found, "run": day.isoformat()})
        if len(out) == runs:
            break
    if not out:
        return Unavailable(f"no run up to {date} has runs/D/evaluate/metrics.json")
    return out[::-1]


def bless_decision(lake: Lake, date) -> dict | Unavailable:
    from components.bless.step import decision_path

    return _json_object(decision_path(lake, date), "the bless step has not run")
