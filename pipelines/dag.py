"""The pipeline DAG, declared once (DESIGN §2, §9).

Every runner (local, backfill, Airflow) derives its steps from :data:`STEPS`. A step names
its implementation as ``module:function`` so listing the DAG imports nothing heavy, and
says which lake paths it reads and writes relative to the logical date D.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    target: str  # "module:function" implementing run(config, date, lake, progress) -> StepResult
    deps: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()  # human-readable date windows, D-relative
    writes: tuple[str, ...] = ()
    description: str = ""
    when: Callable[[object], bool] | None = None  # included only if when(config) holds

    def load(self):
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)


STEPS: tuple[Step, ...] = (
    Step(
        "generate",
        "components.marketplace.step:run",
        reads=(),
        writes=("raw/{events,impressions,listings}/dt=[start, start+days)", "raw/images/", "oracle/impressions/"),
        description="write the embedded synthetic marketplace's raw partitions that are missing",
        when=lambda cfg: cfg.source == "synthetic",
    ),
    Step(
        "validate",
        "components.validate.step:run",
        deps=("generate",),
        reads=("raw/{events,impressions,listings}/dt=[D-T-1, D+1]",),
        writes=("derived/validated/<table>/dt=*", "derived/dead_letter/<table>/dt=*"),
        description="check raw partitions against the schemas; bad rows to dead letters with a reason",
    ),
    Step(
        "data_gate",
        "components.gates.step:run",
        deps=("validate",),
        reads=("derived/{validated,dead_letter}/<table>/dt=[D-T-7, D]",),
        writes=("runs/D/data_gate/gate.json",),
        description="compare each day's volume, click rate and dead-letter share with the 7 days before it; "
                    "fail on anomalies so nothing trains or publishes on a broken day",
    ),
    Step(
        "sessionize",
        "components.sessionize.step:run",
        deps=("data_gate",),
        reads=("derived/validated/events/dt=[D-T-1, D+1]", "derived/validated/impressions/dt=[D-T-P, D] "
               "(P = sessionize.prior_days: the priors' earlier days)", "derived/validated/listings/dt=[D-T, D]"),
        writes=("derived/examples/dt=[D-T, D]",),
        description="one example per impression: point-in-time one-hour sequences, click and purchase labels",
    ),
    Step(
        "corpora",
        "components.corpora.step:run",
        deps=("data_gate",),
        reads=("derived/validated/events/dt=<corpus days, ending at the last training day>",
               "derived/validated/listings/dt=<last corpus day>"),
        writes=("derived/{sessions,coclick}/dt=<corpus days>", "derived/listing_text/dt=<last corpus day>",
                "runs/D/corpora/corpus/{skipgram.txt,coclick.parquet,text.txt}"),
        description="one-hour sessions, skip-gram corpus (purchases upsampled), co-clicked pairs, listing text",
    ),
    Step(
        "transform",
        "components.transform.step:run",
        deps=("sessionize",),
        reads=("derived/examples/dt=[D-T, D]",),
        writes=("runs/D/transform/{transform_fn,transformed_metadata,train,validation,test}",),
        description="tensorflow-transform: top-K vocabularies from the training window; sampled TFRecord splits",
    ),
    Step(
        "skipgram",
        "components.representations.skipgram:run",
        deps=("corpora",),
        reads=("runs/D/corpora/corpus/skipgram.txt",),
        writes=("runs/D/skipgram/{model,vectors.parquet}",),
        description="fastText skip-gram listing vectors (hierarchical softmax, no subwords) from session lines",
    ),
    Step(
        "text_vectors",
        "components.representations.text_vectors:run",
        deps=("corpora",),
        reads=("runs/D/corpora/corpus/text.txt", "derived/listing_text/dt=<last corpus day>",
               "derived/validated/impressions/dt=<recent ad days>"),
        writes=("runs/D/text_vectors/{model,vectors.parquet,fields.parquet}",),
        description="fastText subword token vectors; average-pooled title, tags and taxonomy-path vectors per listing",
    ),
    Step(
        "visual",
        "components.representations.visual.step:run",
        deps=("data_gate",),
        reads=("derived/validated/listings/dt=D", "raw/images/"),
        writes=("runs/D/visual/{model,vectors.parquet}",),
        description="multitask EfficientNetB0 image vectors (taxonomy, fine taxonomy, color heads), whole catalog",
    ),
    Step(
        "air",
        "components.representations.air.step:run",
        deps=("corpora", "text_vectors", "visual"),
        reads=("runs/D/corpora/corpus/coclick.parquet", "runs/D/{visual,text_vectors}/vectors",
               "derived/validated/listings/dt=D"),
        writes=("runs/D/air/{model,vectors.parquet}",),
        description="AIR pseudo-two-tower multimodal vectors trained on co-clicked pairs (in-batch softmax)",
    ),
    Step(
        "ann_index",
        "components.representations.ann_index:run",
        deps=("visual", "air"),
        reads=("runs/D/{visual,air}/vectors.parquet", "derived/validated/listings/dt=D"),
        writes=("runs/D/ann_index/<representation>.faiss",),
        description="FAISS IVF indexes of visual and AIR vectors of listings with active campaigns; recall@k",
    ),
    Step(
        "export_lookups",
        "components.representations.export_lookups:run",
        deps=("skipgram", "text_vectors", "visual", "air"),
        reads=("runs/D/{skipgram,text_vectors,visual,air}/vectors.parquet",),
        writes=("runs/D/export_lookups/<representation>/ (SavedModel)",),
        description="frozen lookup SavedModels: raw listing id -> vector, masked average pooling of id sequences",
    ),
    *(Step(
        f"train_{model}",
        f"components.models.step:run_{model}",
        deps=("transform", "export_lookups") if personalized else ("transform",),
        reads=("runs/D/transform/{train,validation,test}",) + (("runs/D/export_lookups/<representation>",)
                                                               if personalized else ()),
        writes=(f"runs/D/train_{model}/{{model/score.keras,predictions/{{validation,test}}.parquet,tensorboard}}",),
        description=(f"{task.upper()} ranker " + ("with the ADPM" if personalized else "without the ADPM (baseline)")
                     + ": wide + DCN-v2 cross + deep tower, Adam with cosine decay"),
    ) for model, task, personalized in (("ctr", "ctr", True), ("ctr_baseline", "ctr", False),
                                        ("pccvr", "pccvr", True), ("pccvr_baseline", "pccvr", False))),
    Step(
        "train_references",
        "components.references.step:run",
        deps=("transform",),
        reads=("derived/examples/dt={D-T..D} (the transform step's splits)",),
        writes=("runs/D/train_references/{references.json,predictions/<task>/<reference>/{validation,test}.parquet}",),
        description="reference models on the engineered features: logistic regression and gradient-boosted trees, "
                    "non-personalized and personalized, without and with the ad position",
    ),
    Step(
        "calibrate",
        "components.calibrate.step:run",
        deps=("train_ctr", "train_ctr_baseline", "train_pccvr", "train_pccvr_baseline"),
        reads=("runs/D/train_<model>/predictions/validation.parquet",),
        writes=("runs/D/calibrate/<model>.json",),
        description="Platt scaling of each model on the validation logits (undoes the training down-sampling)",
    ),
    Step(
        "evaluate",
        "components.evaluate.step:run",
        deps=("calibrate", "train_references"),
        reads=("runs/D/train_<model>/predictions/test.parquet", "runs/D/calibrate/", "oracle/impressions/dt=D"),
        writes=("runs/D/evaluate/metrics.json",),
        description="next-day ROC-AUC, PR-AUC, log-loss, NCE, ECE (raw and calibrated), lifts, oracle headroom",
    ),
    Step(
        "export_serving",
        "components.serving.step:run",
        deps=("calibrate",),
        reads=("runs/D/train_{ctr,pccvr}/model", "runs/D/transform/transform_fn", "runs/D/calibrate/",
               "runs/D/export_lookups/", "derived/examples/dt=D (parity check)"),
        writes=("runs/D/export_serving/{ctr,pccvr}/ (SavedModel)",),
        description="serving SavedModel per task: raw features -> TFT graph -> lookups -> ADPM ranker -> Platt "
                    "probability; checked against the evaluated predictions",
    ),
    Step(
        "bless",
        "components.bless.step:run",
        deps=("evaluate", "export_serving"),
        reads=("runs/D/evaluate/metrics.json", "runs/D/export_serving/<task>", "models/<task>/blessed.json",
               "derived/examples/dt=D (the incumbent is scored on the same test day)"),
        writes=("models/<task>/blessed.json", "models/<task>/history.jsonl", "runs/D/bless/decision.json"),
        description="publish each task's serving model only if it is no worse than the blessed one on the same "
                    "test day, calibrated, with a finite loss; otherwise keep the old one and say why",
    ),
    Step(
        "report",
        "components.report.step:run",
        deps=("bless",),
        reads=("runs/D/*/manifest.json", "runs/<last 30 dates>/evaluate/metrics.json", "raw/images/"),
        writes=("runs/D/report/index.html",),
        description="the run report: DAG states, data volumes, session lengths, representation quality and "
                    "galleries, ROC/PR and reliability curves, the AUC trend, the blessing decision",
    ),
)


class DagError(ValueError):
    pass


def steps_for(config) -> list[Step]:
    """The steps that apply to ``config``, in topological order (dependencies on absent steps dropped)."""
    present = [s for s in STEPS if s.when is None or s.when(config)]
    names = {s.name for s in present}
    present = [dataclasses.replace(s, deps=tuple(d for d in s.deps if d in names)) for s in present]
    return toposort(present)


def toposort(steps: list[Step]) -> list[Step]:
    by_name = {s.name: s for s in steps}
    for s in steps:
        for d in s.deps:
            if d not in by_name:
                raise DagError(f"step {s.name!r} depends on unknown step {d!r}")
    order, state = [], {}

    def visit(step: Step, path: tuple[str, ...]):
        if state.get(step.name) == "done":
            return
        if state.get(step.name) == "visiting":
            raise DagError("cycle in the DAG: " + " -> ".join(path + (step.name,)))
        state[step.name] = "visiting"
        for d in step.deps:
            visit(by_name[d], path + (step.name,))
        state[step.name] = "done"
        order.append(step)

    for s in steps:
        visit(s, ())
    return order


def downstream(steps: list[Step], roots: set[str]) -> set[str]:
    """``roots`` and every step that depends on them, transitively."""
    out = set(roots)
    changed = True
    while changed:
        changed = False
        for s in steps:
            if s.name not in out and out.intersection(s.deps):
                out.add(s.name)
                changed = True
    return out


def to_text(steps: list[Step]) -> str:
    lines = []
    for s in steps:
        lines.append(f"{s.name}  <- {', '.join(s.deps) or '(source)'}")
        lines.append(f"    {s.description}")
        for r in s.reads:
            lines.append(f"    reads  {r}")
        for w in s.writes:
            lines.append(f"    writes {w}")
    return "\n".join(lines)


def to_dot(steps: list[Step]) -> str:
    lines = ["digraph adsformer {", "  rankdir=LR;", '  node [shape=box, style=rounded, fontname="Helvetica"];']
    for s in steps:
        lines.append(f'  "{s.name}" [tooltip="{s.description}"];')
    for s in steps:
        for d in s.deps:
            lines.append(f'  "{d}" -> "{s.name}";')
    lines.append("}")
    return "\n".join(lines)
