"""The ``report`` step: ``runs/D/report/index.html``, the human-readable page of a run (DESIGN §1, §3).

One self-contained HTML file (inline CSS, plots and listing images as base64 data URIs, no
script) with, section by section: the DAG and each step's state and time; data volumes, dead
letters, the vocabularies with the out-of-vocabulary share of the targets per split, and the
data gates; the session-length histogram (paper 000 Figure 2); representation
quality and nearest-neighbour galleries (Figures 4 and 13); the headline next-day metrics with
ROC and precision-recall curves (§5, Tables 2-4); reliability diagrams before and after Platt
scaling (§5.3, A.3); the daily ROC-AUC trend (Figure 8); and the blessing decision.

A section whose inputs are missing says "not available: <why>" and the page is still written
(a taobao run has no models, an events-only lake no images, a failed run no evaluation), so
``adsformer report`` can render a failed run too. ``sections`` reads the lake, ``plots`` draws,
``html`` assembles.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import time

import numpy as np

from components.lake import Lake, fs
from components.report import html as H
from components.report import plots, sections as S
from components.step import StepResult, rows_text

log = logging.getLogger(__name__)
STEP = "report"


def report_path(lake: Lake, date) -> str:
    return fs.join(lake.run_dir(date, STEP), S.REPORT_FILE)


@dataclasses.dataclass
class Report:
    html: str
    sections: list[H.Section]
    images: int
    seconds: dict[str, float]
    errors: list[str]

    def metrics(self) -> dict:
        return {"sections": {s.id: s.status for s in self.sections},
                "sections_rendered": sum(s.status == "rendered" for s in self.sections),
                "sections_partial": sum(s.status == "partial" for s in self.sections),
                "sections_unavailable": sum(s.status == "unavailable" for s in self.sections),
                "images": self.images, "html_bytes": len(self.html.encode("utf-8")),
                "section_seconds": self.seconds, "errors": self.errors}

    def notes(self) -> list[str]:
        return [f"{s.title}: not available: {r}" for s in self.sections for r in s.reasons] + \
            [f"error: {e}" for e in self.errors]


@dataclasses.dataclass
class _Context:
    config: object
    date: dt.date
    lake: Lake
    states: list[S.StepState]
    dag_note: str | None
    progress: object


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    """Render the report of ``date`` and write ``runs/D/report/index.html``. ``config``: the pipeline config
    (reads ``.report``, ``.window``, ``.validate.tables``, ``.models.ece_bins``, ``.seed``, ``.preset``)."""
    report = render(config, date, lake, own_step=STEP, progress=progress)
    path = write_report(report.html, report_path(lake, date))
    m = report.metrics()
    progress(f"  wrote {path} ({m['html_bytes'] / 1e6:.1f} MB, {m['images']} images): {m['sections_rendered']} "
             f"sections rendered, {m['sections_partial']} partial, {m['sections_unavailable']} not available")
    return StepResult(inputs=[lake.run_dir(date)], outputs={"report": path}, metrics=m, notes=report.notes())


def render(config, date: dt.date, lake: Lake, dag: list[dict] | None = None, own_step: str | None = None,
           progress=print, generated_at: str | None = None) -> Report:
    """The report of ``date``. ``dag``: ``[{"name", "deps", "description"}]`` (default: ``runs/D/_dag.json``);
    ``own_step``: the step rendering it (shown as running)."""
    nodes, dag_note = S.dag_nodes(lake, date, dag)
    states = S.step_states(lake, date, nodes, own_step)
    ctx = _Context(config, date, lake, states, dag_note, progress)
    built, seconds, errors = [], {}, []
    for section_id, title, builder in BUILDERS:
        section = H.Section(section_id, title)
        t0 = time.perf_counter()
        try:
            builder(section, ctx)
        except Exception as err:  # one broken section must not cost the whole page
            log.exception("report section %s failed", section_id)
            message = f"{title}: {type(err).__name__}: {err}"
            section.missing(f"error while rendering this section: {type(err).__name__}: {err}")
            errors.append(message)
            progress(f"  report: {message}")
        seconds[section_id] = round(time.perf_counter() - t0, 3)
        built.append(section)
    versions = S.code_versions(states)
    generated = generated_at or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    facts = [("logical date", date.isoformat()), ("lake root", lake.root), ("preset", getattr(config, "preset", "?")),
             ("code version", ", ".join(versions) if versions else "unknown (no step manifest)"),
             ("config hash", ", ".join(sorted({str(s.manifest.get("config_hash")) for s in states
                                                if s.manifest and s.manifest.get("config_hash")})) or "-"),
             ("generated at", generated)]
    page = H.page(f"adsformer run {date.isoformat()}", facts, built)
    return Report(page, built, page.count("<img "), seconds, errors)


def write_report(text: str, path: str) -> str:
    """Write ``text`` to ``path`` atomically: a temporary sibling renamed over it (local), one object write
    (object stores, all or nothing)."""
    fs.write_bytes_atomic(path, text.encode("utf-8"))
    return path


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------

def _dag_section(sec: H.Section, ctx: _Context) -> None:
    states = ctx.states
    if not states:
        sec.missing(f"no step of {ctx.date} has run: {ctx.lake.run_dir(ctx.date)} holds no step directory")
        return
    if ctx.dag_note:
        sec.missing(f"DAG plot: {ctx.dag_note}")
    else:
        png = plots.dag_figure([{"name": s.name, "deps": s.deps, "state": s.state, "seconds": s.seconds} for s in states])
        counts = {st: sum(s.state == st for s in states) for st in S.STATES}
        sec.add(H.figure(png, "the run's DAG", "The run's DAG, steps in layers by longest dependency path, coloured "
                         "by state and labelled with their seconds (runs/D/<step>/manifest.json, _SUCCESS, error.log): "
                         + ", ".join(f"{n} {st}" for st, n in counts.items() if n) + "."))
    rows = []
    for s in states:
        name = H.Raw(f"<b>{H.esc(s.name)}</b>" + (f'<br><span class="cap">{H.esc(s.description)}</span>'
                                                  if s.description else ""))
        seconds = f"{s.seconds:,.1f}" if isinstance(s.seconds, (int, float)) else "-"
        rows.append([name, H.badge(s.state), H.Num(seconds), rows_text(s.row_counts),
                     "; ".join(map(str, s.notes)) or "-"])
    sec.add(H.table(["step", "state", "seconds", "rows per output", "notes"], rows))
    total = sum(s.seconds or 0 for s in states)
    sec.text(H.note(f"{sum(s.state in ('succeeded', 'skipped') for s in states)} of {len(states)} steps finished; "
                    f"{total:,.1f} s of step time recorded in the manifests (steps of earlier invocations included)."))
    for s in states:
        if s.state == "failed" and s.error is not None:
            lines = s.error.rstrip().splitlines()
            tail = "\n".join(lines[-40:])
            sec.text(H.heading(f"step {s.name} failed"))
            sec.text(H.pre(("...\n" if len(lines) > 40 else "") + tail))
        elif s.state == "incomplete":
            sec.text(H.note(f"step {s.name} started but recorded no outcome: it is still running, or its process "
                            "was killed (no _SUCCESS, no error.log)"))


def _data_section(sec: H.Section, ctx: _Context) -> None:
    rows = S.volumes(ctx.config, ctx.lake, ctx.date)
    sec.text(H.heading("Validated rows and dead letters per raw partition"))
    if isinstance(rows, S.Unavailable):
        sec.missing(rows.reason)
    else:
        png = plots.volumes_figure(rows)
        sec.add(H.figure(png, "rows per day and table", "Validated rows per day and raw table of the run's window, "
                         "dead letters stacked in red (derived/validated and derived/dead_letter, "
                         "figures from the validate manifest)."))
        sec.add(H.table(["day", "table", "input rows", "valid rows", "dead letters", "bad share", "source"],
                        [[r["day"], r["table"], r["input_rows"], r["valid_rows"], r["dead_rows"],
                          f"{r['dead_rows'] / r['input_rows']:.3%}" if r["input_rows"] else "-", r["source"]]
                         for r in rows]))
    _vocabulary_block(sec, ctx)
    sec.text(H.heading("Data gates (runs/D/data_gate/gate.json)"))
    found = S.gate(ctx.lake, ctx.date)
    if isinstance(found, S.Unavailable):
        sec.missing(found.reason)
        return
    days = found.get("days")
    if not isinstance(days, list) or not all(isinstance(d, dict) for d in days):
        sec.add(H.note("gate.json has no list of days; as written:"))
        sec.add(H.json_block(found))
        return
    figures = sorted({k for d in days for k in (d.get("figures") or {})})
    table_rows, checks = [], []
    for d in days:
        if not d.get("judged", True):
            verdict = H.badge("not judged")
        elif d.get("ok") is False:
            verdict = H.badge("accepted", "kept") if d.get("accepted_by_operator") else H.badge("anomalous", "bad")
        else:
            verdict = H.badge("ok")
        table_rows.append([d.get("day", "?"), verdict, d.get("reference_days"), d.get("why") or "-"]
                          + [(d.get("figures") or {}).get(f) for f in figures])
        for c in d.get("checks") or []:
            if isinstance(c, dict):
                bounds = f"[{H.fmt(c.get('low'))}, {H.fmt(c.get('high'))}]"
                checks.append([d.get("day", "?"), c.get("figure", "?"), c.get("value"), c.get("reference"), bounds,
                               H.badge("ok") if c.get("ok") else H.badge("out of limits", "bad")])
    sec.add(H.table(["day", "verdict", "reference days", "why not judged", *figures], table_rows))
    if checks:
        sec.text(H.heading("Checks against the reference days' median"))
        sec.add(H.table(["day", "figure", "value", "reference median", "allowed", "verdict"], checks))
    for key in ("failures", "waived"):
        if found.get(key):
            sec.text(H.note(f"{key}: " + "; ".join(map(str, found[key]))))


def _vocabulary_block(sec: H.Section, ctx: _Context) -> None:
    sec.text(H.heading("Vocabularies and out-of-vocabulary targets (runs/D/transform/stats.json)"))
    stats = S.transform_stats(ctx.lake, ctx.date)
    if isinstance(stats, S.Unavailable):
        sec.missing(stats.reason)
        return
    pct = lambda v: f"{v:.2%}" if isinstance(v, (int, float)) else "-"  # noqa: E731
    sec.add(H.table(["target entity", "vocabulary K", "top_k (cap)", "OOV buckets"]
                    + [f"OOV share {split}" for split in S.OOV_SPLITS],
                    [[r["entity"], r["k"], r["cap"], r["buckets"]] + [H.Num(pct(r[split])) for split in S.OOV_SPLITS]
                     for r in S.oov_rows(stats)]))
    coverage = stats.get("listing_coverage")
    text = ("Share of each split's impressions whose target id is out of the training vocabulary (index >= K, "
            "one of the hashed OOV buckets).")
    if isinstance(coverage, dict):
        text += (f" Listing K sized by coverage: {H.fmt(coverage.get('k'))} listings cover "
                 f"{pct(coverage.get('achieved'))} of the {H.fmt(coverage.get('occurrences'))} training listing "
                 f"occurrences (targets and sequences; {H.fmt(coverage.get('distinct'))} distinct ids), target "
                 f"{pct(coverage.get('coverage'))}, set by {coverage.get('limited_by', '?')}.")
    sec.text(H.note(text))


def _sessions_section(sec: H.Section, ctx: _Context) -> None:
    found = S.session_lengths(ctx.config, ctx.lake, ctx.date)
    if isinstance(found, S.Unavailable):
        sec.missing(found.reason)
        return
    lengths, days = found
    png = plots.session_length_figure(lengths)
    sec.add(H.figure(png, "session lengths", f"Listings viewed per one-hour session (paper 000 Figure 2), "
                     f"{len(lengths):,} sessions of the corpus days {', '.join(days)} (derived/sessions): median "
                     f"{int(np.median(lengths))}, mean {lengths.mean():.2f}, max {int(lengths.max())}, "
                     f"{(lengths < 10).mean():.1%} under 10; counts on a log scale."))


def _representations_section(sec: H.Section, ctx: _Context) -> None:
    quality = S.representation_quality(ctx.lake, ctx.date)
    rows, gaps = [], {}
    for name, q in quality.items():
        if isinstance(q, S.Unavailable):
            sec.missing(f"{name}: {q.reason}")
            continue
        for r in S.quality_rows(q):
            rows.append([name, r["label"], r["same_cosine"], r["different_cosine"], r["cosine_gap"], r["k"],
                         r["purity"], r["chance_purity"], r["purity_ratio"], r["labels"]])
            if r["cosine_gap"] is not None:
                gaps.setdefault(name, {})[r["label"]] = r["cosine_gap"]
    if rows:
        sec.add(H.table(["representation", "label", "same-label cosine", "different-label cosine", "gap", "k",
                         "purity@k", "chance purity", "purity / chance", "labels"], rows))
    if gaps:
        sec.add(H.figure(plots.quality_figure(gaps), "cosine gap per representation",
                         "Mean cosine of listing pairs sharing a label minus pairs that do not, per representation and "
                         "label, on a seeded sample of the catalog (quality metrics of runs/D/<step>/manifest.json; "
                         "paper 000 Figure 13 gut check). 0 = no better than random vectors."))
    cfg = ctx.config.report
    for name in ("visual", "air"):
        sec.text(H.heading(f"Nearest neighbours by {name} vectors"))
        found = S.gallery(ctx.config, ctx.lake, ctx.date, name)
        if isinstance(found, S.Unavailable):
            sec.missing(f"{name} gallery: {found.reason}")
            continue
        sec.add(_gallery_html(found))
        sec.text(H.note(f"{len(found)} query listings with an active campaign (seeded by seed={ctx.config.seed}) "
                        f"and their {cfg.gallery_neighbours} nearest neighbours by cosine of the {name} vectors among "
                        f"active-campaign listings (exact search over runs/D/{S.REPRESENTATION_STEPS[name]}/vectors.parquet; "
                        "paper 000 Figure 4); images from raw/images; a green frame marks a neighbour of the "
                        "query's fine taxonomy."))


def _gallery_html(rows: list[list[S.Tile]]) -> H.Raw:
    out = ['<table class="gallery"><tbody>']
    for tiles in rows:
        out.append("<tr>")
        for i, t in enumerate(tiles):
            klass = "query" if i == 0 else "same" if t.same_taxonomy else "other"
            kind = S.image_type(t.image) if t.image else None
            picture = (str(H.img(t.image, f"listing {t.listing_id}", kind)) if kind
                       else '<div class="noimg">no image</div>')
            short = ".".join(t.taxonomy.split(".")[-2:])
            score = "query" if t.cosine is None else f"cos {t.cosine:.4f}"
            out.append(f'<td class="{klass}" title="{H.esc(t.taxonomy)}">{picture}<div class="cap">'
                       f"{H.esc(t.listing_id)}<br>{H.esc(short)}<br>{H.esc(score)}</div></td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return H.Raw("".join(out))


_HEADLINE = [("n", "rows"), ("positives", "positives"), ("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"),
             ("roc_auc_lift_pct", "ROC-AUC lift %"), ("pr_auc_lift_pct", "PR-AUC lift %")]


def _models_section(sec: H.Section, ctx: _Context) -> None:
    from components.evaluate import metrics
    from components.report.references import add_comparison

    found = S.evaluation(ctx.lake, ctx.date)
    sec.text(H.heading("Headline metrics (runs/D/evaluate/metrics.json)"))
    if isinstance(found, S.Unavailable):
        sec.missing(found.reason)
    else:
        rows = []
        for model in ("ctr", "ctr_baseline", "pccvr", "pccvr_baseline"):
            m = found.get(model)
            if not isinstance(m, dict):
                continue
            arrow = lambda a, b: f"{H.fmt(m.get(a))} → {H.fmt(m.get(b))}"  # noqa: E731
            rows.append([model] + [m.get(k) for k, _ in _HEADLINE]
                        + [arrow("logloss_raw", "logloss_calibrated"), arrow("ece_raw", "ece_calibrated"),
                           m.get("oracle_roc_auc"), m.get("headroom_captured"),
                           f"not trained: {m['skipped']}" if m.get("skipped")
                           else m.get("error") or m.get("calibration") or "-"])
        sec.add(H.table(["model"] + [h for _, h in _HEADLINE] + ["log-loss raw → calibrated", "ECE raw → calibrated",
                                                                 "oracle ROC-AUC", "headroom captured", "remarks"], rows))
        sec.text(H.note(f"Test day {found.get('test_day', '?')}; lifts relative to the non-personalized baseline; "
                        "headroom captured = (model − reference) / (oracle − reference) ROC-AUC, from the "
                        "non-personalized reference chosen on validation, with the oracle's position term "
                        "removed (both sides position-free; without references, from the baseline)."))
        add_comparison(sec, found)
    for task in S.TASKS:
        sec.text(H.heading(f"{task.upper()}: ROC and precision-recall curves on the test day"))
        scores = S.scores_on_test_day(ctx.config, ctx.lake, ctx.date, task)
        if isinstance(scores, S.Unavailable):
            sec.missing(f"{task} curves: {scores.reason}")
            continue
        y = scores["labels"]
        series = []
        for key in (*S.TASKS[task], "oracle"):
            if key in scores:
                style = "oracle" if key == "oracle" else "baseline" if key.endswith("_baseline") else "model"
                label = "oracle (true probabilities)" if key == "oracle" else key
                series.append((label, style, y, scores[key], metrics.roc_auc(y, scores[key]), metrics.pr_auc(y, scores[key])))
        missing = [f"{k} ({why})" for k, why in scores["missing"].items()]
        png = plots.curves_figure(task, series, float(y.mean()))
        sec.add(H.figure(png, f"{task} ROC and PR curves",
                         f"ROC (left) and precision-recall (right) of {', '.join(s[0] for s in series)} on the "
                         f"{len(y):,} test rows of {task} ({int(y.sum()):,} positives, base rate {y.mean():.4f}, grey "
                         "line); scores = raw logits (calibration does not change the ranking)"
                         + (f"; not shown: {'; '.join(missing)}" if missing else "")
                         + "."))


def _calibration_section(sec: H.Section, ctx: _Context) -> None:
    from components.calibrate.step import sigmoid
    from components.evaluate import metrics

    panels, captions = [], []
    bins_target = ctx.config.report.reliability_bins
    ece_bins = ctx.config.models.ece_bins
    for task in S.TASKS:
        found = S.calibration_inputs(ctx.lake, ctx.date, task)
        if isinstance(found, S.Unavailable):
            sec.missing(f"{task}: {found.reason}")
            continue
        y, logits = found["labels"], found["logits"]
        probs = {"raw": sigmoid(logits)}
        if found["platt"] is not None:
            probs["Platt"] = found["platt"].apply(logits)
        else:
            sec.missing(f"{task} after Platt: {found['why']}")
        limit = float(max(np.quantile(p, 0.995) for p in probs.values()))
        limit = min(1.0, max(limit * 1.05, 1e-3))
        bins = int(min(1000, max(bins_target, math.ceil(bins_target / limit))))
        curves = [(label, metrics.reliability(y, p, bins), metrics.ece(y, p, ece_bins)) for label, p in probs.items()]
        panels.append({"task": task, "limit": limit, "curves": curves})
        captions.append(f"{task}: {len(y):,} test rows, {bins} bins of width {1 / bins:.4g}")
    if panels:
        png = plots.reliability_figure(panels)
        sec.add(H.figure(png, "reliability diagrams", "Reliability diagrams of the personalized models on the test day "
                         "before (raw sigmoid of the logit) and after Platt scaling fit on the validation day "
                         "(runs/D/calibrate/<model>.json): mean predicted probability vs observed rate per equal-width "
                         "bin, marker area ~ rows in the bin; axes cut at the 99.5th percentile of the predictions; "
                         f"ECE over {ece_bins} bins as in the evaluation. " + "; ".join(captions) + "."))



def _trend_section(sec: H.Section, ctx: _Context) -> None:
    runs = ctx.config.report.trend_runs
    found = S.trend(ctx.lake, ctx.date, runs)
    if isinstance(found, S.Unavailable):
        sec.missing(found.reason)
        return
    points, rows = [], []
    for m in found:
        point = {"test_day": m.get("test_day", m["run"])}
        for model in ("ctr", "ctr_baseline", "pccvr", "pccvr_baseline"):
            v = m.get(model)
            point[model] = v.get("roc_auc") if isinstance(v, dict) else None
        for task in S.TASKS:
            v = m.get(task)
            point[f"{task}_oracle"] = v.get("oracle_roc_auc") if isinstance(v, dict) else None
        points.append(point)
        rows.append([m["run"], point["test_day"], point["ctr"], point["ctr_baseline"], point["ctr_oracle"],
                     point["pccvr"], point["pccvr_baseline"], point["pccvr_oracle"]])
    sec.add(H.figure(plots.trend_figure(points), "ROC-AUC trend",
                     f"Next-day ROC-AUC by test day of the last {len(found)} evaluated run(s) up to {ctx.date} (at most "
                     f"report.trend_runs = {runs}; runs/*/evaluate/metrics.json), personalized vs baseline, with the "
                     "oracle on synthetic lakes (paper 000 Figure 8)."))
    sec.add(H.table(["run", "test day", "ctr", "ctr_baseline", "ctr oracle", "pccvr", "pccvr_baseline", "pccvr oracle"],
                    rows))


def _bless_section(sec: H.Section, ctx: _Context) -> None:
    found = S.bless_decision(ctx.lake, ctx.date)
    if isinstance(found, S.Unavailable):
        sec.missing(found.reason)
        return
    rows, other = [], {}
    for task, d in found.items():
        if not isinstance(d, dict) or "published" not in d:
            other[task] = d
            continue
        cand = d.get("candidate") if isinstance(d.get("candidate"), dict) else {}
        inc = d.get("incumbent") if isinstance(d.get("incumbent"), dict) else None
        after = d.get("blessed_after") if isinstance(d.get("blessed_after"), dict) else None
        verdict = (H.badge("PUBLISHED", "published") if d.get("published") else H.badge("KEPT", "kept") if after
                   else H.badge("NOT PUBLISHED", "kept"))
        rows.append([task, verdict,
                     d.get("reason") or "-", cand.get("run"), cand.get("roc_auc"), cand.get("ece_calibrated"),
                     cand.get("logloss_calibrated"),
                     f"{inc.get('run', '?')} (ROC-AUC {H.fmt(inc.get('roc_auc'))})" if inc else "none",
                     f"{after.get('run', '?')}: {after.get('serving_path', '?')}" if after else "none"])
    if rows:
        sec.add(H.table(["task", "decision", "reason", "candidate run", "candidate ROC-AUC", "candidate ECE (calibrated)",
                         "candidate log-loss (calibrated)", "incumbent", "blessed after"], rows))
        sec.text(H.note("PUBLISHED: models/<task>/blessed.json now points at this run's serving model; KEPT: the "
                        "blessed model stays; NOT PUBLISHED: the task has no blessed model yet "
                        "(runs/D/bless/decision.json)."))
    if other:
        sec.add(H.note("other entries of decision.json:"))
        sec.add(H.json_block(other))


BUILDERS = (
    ("dag", "DAG and step states", _dag_section),
    ("data", "Data volumes, dead letters and gates", _data_section),
    ("sessions", "Session lengths", _sessions_section),
    ("representations", "Representations: quality and nearest neighbours", _representations_section),
    ("models", "Next-day evaluation", _models_section),
    ("calibration", "Calibration", _calibration_section),
    ("trend", "Daily ROC-AUC trend", _trend_section),
    ("bless", "Blessing decision", _bless_section),
)
