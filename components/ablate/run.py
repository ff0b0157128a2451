"""``adsformer ablate``: train an ablation suite's variants on one run's data and tabulate their lifts
(paper 000 §5.1, Tables 2-4).

Every variant (:mod:`components.ablate.variants`) and its task's non-personalized baseline is
trained with the same seeds on the same data: the transform output ``runs/D/transform/`` and the
frozen lookups ``runs/D/export_lookups/`` of the run of D, which must both have succeeded. Each
(variant, seed) is the daily ranker's training (:func:`components.models.step.train_model`) with
the variant's task config and ``config.seed = s``, so the training budget (epochs, batch size,
learning rate) is the preset's for all of them. The seeds are ``config.seed, config.seed + 1, ...``
(the first is the daily DAG's).

Layout under ``runs/D/ablate/<suite>/``::

    <variant>/seed=<s>/predictions/test.parquet   main logit per test-day row
    <variant>/seed=<s>/result.json                 test ROC-AUC, PR-AUC (+ oracle ROC-AUC), training facts
    results.json, results.md                      per variant: mean, standard deviation and per-seed values of
                                                  ROC-AUC, PR-AUC, their lifts over the baseline of the same
                                                  seed in percent, and headroom_captured when oracle/ exists

``result.json`` is written (atomically) as soon as its training finishes and is the cache: a rerun
reuses it, so an interrupted ablation resumes where it stopped, unless ``force``. It records a
fingerprint of what was trained (the variant's task config, the shared model settings, the seed,
and the finish times of the transform and export_lookups steps); a cached result whose
fingerprint differs (another preset, ``--set``, or a re-run of the DAG) is retrained, and one with
the same fingerprint in another suite (e.g. table2's ``adpm_max`` is table4's ``ctr_air``) is
reused. The metrics are those of the ``evaluate`` step (:mod:`components.evaluate.metrics`, on the
raw logits of the unsampled test day).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import hashlib
import json
import statistics
import time

from components.ablate.variants import Variant, suite_variants
from components.evaluate import metrics
from components.evaluate.step import oracle_probabilities, read_oracle
from components.lake import Lake, fs, parquet
from components.step import StepError

STEP = "ablate"
RESULT = "result.json"
TEST_SPLIT = "test"
REQUIRED_STEPS = ("transform", "export_lookups")
METRICS = ("roc_auc", "pr_auc")


def ablate_dir(lake: Lake, date, suite: str | None = None) -> str:
    return lake.run_dir(date, STEP) if suite is None else fs.join(lake.run_dir(date, STEP), suite)


def seed_dir(lake: Lake, date, suite: str, variant: str, seed: int) -> str:
    return fs.join(ablate_dir(lake, date, suite), variant, f"seed={seed}")


def result_path(lake: Lake, date, suite: str, variant: str, seed: int) -> str:
    return fs.join(seed_dir(lake, date, suite, variant, seed), RESULT)


@dataclasses.dataclass
class AblationSummary:
    results: dict          # what results.json holds
    markdown: str          # what results.md holds
    trained: list[str]     # "<variant> seed=<s>" trained by this call
    reused: list[str]      # ... taken from a cached result.json
    paths: dict[str, str]  # results.json, results.md


def ablate(config, date: dt.date, lake: Lake, suite: str, seeds: int = 3, variants: list[str] | None = None,
           force: bool = False, progress=print) -> AblationSummary:
    """Train (or reuse) every (variant, seed) of ``suite`` and write ``results.json`` and ``results.md``."""
    if seeds < 1:
        raise StepError(f"ablate: --seeds must be at least 1, got {seeds}")
    try:
        chosen = suite_variants(suite, variants)
    except ValueError as err:
        raise StepError(f"ablate: {err}") from err
    data_version = _check_inputs(lake, date)
    configs = {v.name: _task_config(config, v) for v in chosen}
    _check_lookups(config, lake, date, chosen, configs)
    seed_list = [config.seed + i for i in range(seeds)]
    test_day = config.window.test_date(date)
    oracle = read_oracle(lake, test_day)
    total = len(chosen) * len(seed_list)
    progress(f"ablate {suite}: {len(chosen)} variant(s) x {len(seed_list)} seed(s) {seed_list} on the run of {date} "
             f"(test day {test_day}{', with oracle' if oracle is not None else ''}), preset {config.preset}")
    per_seed: dict[str, dict[int, dict]] = {v.name: {} for v in chosen}
    trained, reused = [], []
    n = 0
    for seed in seed_list:  # seed-major: after the first seed a complete table exists
        for variant in chosen:
            n += 1
            label = f"[{n}/{total}] {variant.name} seed={seed}"
            fingerprint = _fingerprint(config, variant, configs[variant.name], seed, data_version)
            cached = None if force else _cached(lake, date, suite, variant.name, seed, fingerprint, progress, label)
            if cached is not None:
                per_seed[variant.name][seed] = cached
                reused.append(f"{variant.name} seed={seed}")
                source = f", from {cached['reused_from']}" if cached.get("reused_from") else ""
                progress(f"{label}: cached ({_brief(cached)}{source})")
                continue
            progress(f"{label}: training ({variant.description})")
            result = _train_one(config, date, lake, suite, variant, configs[variant.name], seed, fingerprint,
                                oracle, progress)
            per_seed[variant.name][seed] = result
            trained.append(f"{variant.name} seed={seed}")
            progress(f"{label}: {_brief(result)} ({result['training_seconds']:.1f} s)")
    results = _aggregate(config, date, test_day, suite, chosen, seed_list, per_seed, oracle is not None)
    markdown = render_markdown(results)
    paths = {"results.json": fs.join(ablate_dir(lake, date, suite), "results.json"),
             "results.md": fs.join(ablate_dir(lake, date, suite), "results.md")}
    fs.write_bytes_atomic(paths["results.json"], (json.dumps(results, indent=2) + "\n").encode())
    fs.write_bytes_atomic(paths["results.md"], markdown.encode())
    progress("")
    progress(markdown)
    progress(f"wrote {paths['results.json']} and {paths['results.md']} ({len(trained)} trained, {len(reused)} cached)")
    return AblationSummary(results, markdown, trained, reused, paths)


# ------------------------------------------------------------------------------------------ inputs

def _check_inputs(lake: Lake, date) -> dict[str, str]:
    """The finish times of the steps the ablation reads (its data version); fails clearly when one
    has not succeeded."""
    version = {}
    for step in REQUIRED_STEPS:
        directory = lake.run_dir(date, step)
        if not lake.complete(directory):
            raise StepError(f"ablate: the {step} step of the run of {date} has not succeeded ({directory}/_SUCCESS "
                            f"is missing); the ablation trains on that run's {' and '.join(REQUIRED_STEPS)} outputs. "
                            f"Run it first: adsformer run --root {lake.root} --date {date} --preset <the same preset>")
        manifest = fs.join(directory, "manifest.json")
        version[step] = json.loads(fs.read_text(manifest)).get("finished_at", "") if fs.exists(manifest) else ""
    return version


def _task_config(config, variant: Variant):
    try:
        return variant.task_config(getattr(config.models, variant.task))
    except ValueError as err:
        raise StepError(f"ablate: variant {variant.name} does not give a valid {variant.task} config on preset "
                        f"{config.preset}: {err}") from err


def _check_lookups(config, lake: Lake, date, chosen: list[Variant], configs: dict) -> None:
    """Every representation a variant's component 2 pools must have a lookup in the run: a missing one
    would silently change the variant (the daily training then drops it with a note)."""
    from components.models.step import lookup_paths

    for variant in chosen:
        task_cfg = configs[variant.name]
        if not (variant.personalized and task_cfg.adpm.component2.enabled):
            continue
        found = lookup_paths(task_cfg.pretrained, lake, date)
        missing = [name for name in task_cfg.pretrained if name not in found]
        if missing or not task_cfg.pretrained:
            raise StepError(f"ablate: variant {variant.name} pools the pretrained representation(s) {missing or '[]'} "
                            f"in component 2, but the run of {date} has no lookup for them under "
                            f"{lake.run_dir(date, 'export_lookups')} (their steps were skipped or they are not in "
                            "representations.lookups.representations); leave the variant out with --variants or "
                            "produce those lookups")


def _fingerprint(config, variant: Variant, task_cfg, seed: int, data_version: dict) -> str:
    """sha256 of everything that shapes a (variant, seed) result (a baseline's ignores the ADPM settings)."""
    models = config.models
    exclude = None if variant.personalized else {"adpm", "pretrained"}
    payload = {"task": variant.task, "personalized": variant.personalized,
               "task_config": task_cfg.model_dump(mode="json", exclude=exclude),
               "wide": (task_cfg.wide or models.wide).model_dump(mode="json"),
               "max_seq_len": models.max_seq_len, "max_query_tokens": models.max_query_tokens,
               "seed": seed, "data": data_version, "window": config.window.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------------ cache

def _cached(lake: Lake, date, suite: str, name: str, seed: int, fingerprint: str, progress, label: str) -> dict | None:
    path = result_path(lake, date, suite, name, seed)
    if fs.exists(path):
        result = json.loads(fs.read_text(path))
        if result.get("fingerprint") == fingerprint:
            return result
        progress(f"{label}: the cached result was trained with another config or on other data; retraining")
        return None
    # The same training in another suite (table2 adpm_max = table4 ctr_air, table3 adpm_max = table4
    # pccvr_skipgram_visual, the baselines of one task): copy its result.
    root = ablate_dir(lake, date)
    for other_suite in fs.list_dirs(root):
        if other_suite == suite:
            continue
        for other in fs.list_dirs(fs.join(root, other_suite)):
            other_path = result_path(lake, date, other_suite, other, seed)
            if not fs.exists(other_path):
                continue
            result = json.loads(fs.read_text(other_path))
            if result.get("fingerprint") == fingerprint:
                result = {**result, "suite": suite, "variant": name,
                          "reused_from": f"{other_suite}/{other}/seed={seed}"}
                fs.write_bytes_atomic(path, (json.dumps(result, indent=2) + "\n").encode())
                return result
    return None


# ------------------------------------------------------------------------------------------ training

def _train_one(config, date, lake: Lake, suite: str, variant: Variant, task_cfg, seed: int, fingerprint: str,
               oracle, progress) -> dict:
    import keras

    from components.models.step import train_model
    from components.models.train import TASK_LABEL

    out_dir = seed_dir(lake, date, suite, variant.name, seed)
    t0 = time.perf_counter()
    try:
        step = train_model(config.model_copy(update={"seed": seed}), date, lake, variant.model,
                           progress=lambda line: progress(f"  {line}"), out_dir=out_dir, task_cfg=task_cfg,
                           save_model=False, splits=(TEST_SPLIT,), tensorboard=False)
    except StepError as err:
        raise StepError(f"ablate {suite}: variant {variant.name} seed={seed}: {err}") from err
    finally:
        keras.backend.clear_session()  # one process trains many models: free the last one's graph
        gc.collect()
    seconds = time.perf_counter() - t0
    if step.metrics.get("skipped"):  # the task's label is too rare in this run's splits (models.min_positives)
        raise StepError(f"ablate {suite}: variant {variant.name} was not trained: {step.metrics['skipped']}")
    path = step.outputs.get(f"predictions/{TEST_SPLIT}")
    if path is None:
        raise StepError(f"ablate: the run of {date} has no test split in {lake.run_dir(date, 'transform')}; "
                        "nothing to evaluate the variants on")
    table = parquet.read_file(path)
    labels = table.column(TASK_LABEL[variant.task]).to_numpy(zero_copy_only=False).astype("float64")
    logits = table.column("logit").to_numpy().astype("float64")
    if len(labels) == 0 or labels.min() == labels.max():
        raise StepError(f"ablate: the test split has a single class for {variant.task} ({len(labels)} rows, "
                        f"{int(labels.sum())} positives): no ranking metric exists; use a larger preset")
    result = {"suite": suite, "variant": variant.name, "task": variant.task, "seed": seed,
              "personalized": variant.personalized, "description": variant.description,
              "changes": variant.changes, "fingerprint": fingerprint,
              "n": int(len(labels)), "positives": int(labels.sum()),
              "roc_auc": metrics.roc_auc(labels, logits), "pr_auc": metrics.pr_auc(labels, logits),
              "training_seconds": round(seconds, 2),
              "parameters": step.metrics.get("parameters"), "steps": step.metrics.get("steps"),
              "history": step.metrics.get("history"), "lookups": step.metrics.get("lookups"),
              "notes": list(step.notes), "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if oracle is not None:
        truth = oracle_probabilities(oracle, table, variant.task)
        if not (truth != truth).any():  # no NaN: every row has its true probability
            result["oracle_roc_auc"] = metrics.roc_auc(labels, truth)
        else:
            result["notes"].append(f"{int((truth != truth).sum())} test rows have no oracle row: no oracle ROC-AUC")
    fs.write_bytes_atomic(result_path(lake, date, suite, variant.name, seed),
                          (json.dumps(result, indent=2) + "\n").encode())
    return result


def _brief(result: dict) -> str:
    return f"ROC-AUC {result['roc_auc']:.4f}, PR-AUC {result['pr_auc']:.4f}"


# ------------------------------------------------------------------------------------------ results

def _stats(per_seed: dict[int, float | None]) -> dict | None:
    """``{"mean", "std", "per_seed"}`` over the seeds with a value; std is the sample standard
    deviation (None for one seed)."""
    values = [v for v in per_seed.values() if v is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "per_seed": {str(s): v for s, v in per_seed.items()}}


def _aggregate(config, date, test_day, suite: str, chosen: list[Variant], seeds: list[int],
               per_seed: dict[str, dict[int, dict]], with_oracle: bool) -> dict:
    baselines = {v.task: v.name for v in chosen if not v.personalized}
    out = {"suite": suite, "date": date.isoformat(), "test_day": test_day.isoformat(), "preset": config.preset,
           "seeds": seeds, "baselines": baselines, "metrics": "ROC-AUC and PR-AUC of the raw logits on the test "
           "day; lifts in percent over the baseline of the same task trained with the same seed", "variants": {}}
    for variant in chosen:
        runs = per_seed[variant.name]
        first = runs[seeds[0]]
        entry = {"task": variant.task, "description": variant.description, "personalized": variant.personalized,
                 "changes": variant.changes, "n": first["n"], "positives": first["positives"]}
        for m in METRICS:
            entry[m] = _stats({s: runs[s][m] for s in seeds})
        if with_oracle:
            entry["oracle_roc_auc"] = first.get("oracle_roc_auc")
        entry["training_seconds"] = _stats({s: runs[s].get("training_seconds") for s in seeds})
        if variant.personalized:
            base = per_seed[baselines[variant.task]]
            for m in METRICS:
                entry[f"{m}_lift_pct"] = _stats({s: metrics.lift_pct(runs[s][m], base[s][m]) for s in seeds})
            if with_oracle:
                entry["headroom_captured"] = _stats({s: metrics.headroom_captured(
                    runs[s]["roc_auc"], base[s]["roc_auc"], runs[s].get("oracle_roc_auc")) for s in seeds})
        out["variants"][variant.name] = entry
    return out


def _fmt(stats: dict | None, digits: int, signed: bool = False) -> str:
    if stats is None:
        return ""
    text = f"{stats['mean']:+.{digits}f}" if signed else f"{stats['mean']:.{digits}f}"
    return text + (f" ± {stats['std']:.{digits}f}" if stats["std"] is not None else "")


def render_markdown(results: dict) -> str:
    """The suite's table: one row per variant, mean ± standard deviation over the seeds."""
    seeds = results["seeds"]
    lines = [f"## Ablation {results['suite']}: run of {results['date']} (test day {results['test_day']}), "
             f"preset {results['preset']}, seeds {', '.join(map(str, seeds))}", "",
             "Mean ± standard deviation over the seeds; lifts in percent over the non-personalized baseline of "
             "the same task and seed.", "",
             "| variant | task | ROC-AUC | PR-AUC | ROC-AUC lift % | PR-AUC lift % | headroom captured | description |",
             "|---|---|---|---|---|---|---|---|"]
    for name, v in results["variants"].items():
        lines.append(f"| {name} | {v['task']} | {_fmt(v['roc_auc'], 4)} | {_fmt(v['pr_auc'], 4)} | "
                     f"{_fmt(v.get('roc_auc_lift_pct'), 2, True)} | {_fmt(v.get('pr_auc_lift_pct'), 2, True)} | "
                     f"{_fmt(v.get('headroom_captured'), 3)} | {v['description']} |")
    tasks = {}
    for v in results["variants"].values():
        tasks.setdefault(v["task"], v)
    lines.append("")
    for task, v in tasks.items():
        oracle = f", oracle ROC-AUC {v['oracle_roc_auc']:.4f}" if v.get("oracle_roc_auc") is not None else ""
        lines.append(f"{task}: {v['n']:,} test rows, {v['positives']:,} positives{oracle}.")
    return "\n".join(lines) + "\n"
