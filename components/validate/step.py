"""The ``validate`` step: every raw partition of the run's window, checked once (DESIGN §4).

Valid rows go to ``derived/validated/<table>/dt=D`` (schema-exact, deduplicated, sorted),
bad rows to ``derived/dead_letter/<table>/dt=D`` with the file, row, column and reason.
Validated partitions are shared by the runs of every logical date whose window holds
them, so each day is validated once. Nothing is lost: the step checks
``valid + dead == input`` for every partition and fails if a row went missing.
"""
from __future__ import annotations

import collections
import datetime as dt
import logging

from pydantic import BaseModel, ConfigDict, Field

from components.lake import Lake, commit, fs, parquet, stage
from components.step import StepError, StepResult
from schemas.raw import RAW_TABLES

log = logging.getLogger(__name__)


class ValidateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_bad_fraction: float = Field(0.01, ge=0, le=1, description="fail the run above this share of bad rows")
    num_buckets: int = Field(4, ge=1, description="output files per partition (and dedup shuffle keys)")
    batch_rows: int = Field(65536, ge=1, description="rows per Arrow batch inside the DoFns")
    tables: list[str] = Field(default_factory=lambda: list(RAW_TABLES))


def validated_dir(lake: Lake, table: str, day) -> str:
    return lake.derived(f"validated/{table}", day)


def validated_files(lake: Lake, table: str, day) -> list[str] | None:
    """Parquet files of a validated partition, or None when it is not (completely) there."""
    directory = validated_dir(lake, table, day)
    return parquet.partition_files(directory) if lake.complete(directory) else None


def dead_letter_dir(lake: Lake, table: str, day) -> str:
    return lake.derived(f"dead_letter/{table}", day)


def missing_raw(config, date: dt.date, lake: Lake) -> list[str]:
    """Raw partitions the run of ``date`` waits for and that are not complete (``_SUCCESS``): every
    table of the window's days and of the label days after D (the scheduler's sensor)."""
    required, optional = config.window.raw_dates(date)
    days = sorted(set(required) | {d for d in optional if d > date})
    return [lake.raw(t, d) for d in days for t in config.validate.tables if not lake.complete(lake.raw(t, d))]


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    """Validate the raw partitions of ``date``'s window. ``config``: the pipeline config (reads
    ``.validate``, ``.window``, ``.beam``, ``.runtime.force``)."""
    cfg: ValidateConfig = config.validate
    required, optional = config.window.raw_dates(date)
    result = StepResult()
    missing, tasks = [], []
    for day in sorted(required + optional):
        for table in cfg.tables:
            src = lake.raw(table, day)
            if not fs.exists(src):
                if day in required:
                    missing.append(src)
                else:
                    result.notes.append(f"optional partition {src} is absent")
                continue
            result.inputs.append(src)
            out = validated_dir(lake, table, day)
            if lake.complete(out) and not config.runtime.force:
                result.notes.append(f"{out} already validated")
                result.row_counts[f"{table}/{day}"] = parquet.count_rows(out)
                continue
            tasks.append((table, day, src))
    if missing:
        raise StepError(
            "validate: raw partitions missing for the run window of "
            f"{date}:\n  " + "\n  ".join(missing)
            + "\nGenerate them (adsformer generate), import them (adsformer import), or pick another --date."
        )
    if tasks:
        _validate(config, lake, tasks, result, progress)
    return result


def _validate(config, lake: Lake, tasks, result: StepResult, progress) -> None:
    import apache_beam as beam

    from components.validate.transforms import ValidatePartition, plan_row_groups

    cfg: ValidateConfig = config.validate
    staged = {}
    try:
        with beam.Pipeline(options=config.beam.pipeline_options("adsformer-validate")) as p:
            for table, day, src in tasks:
                files = parquet.partition_files(src)
                try:
                    groups = plan_row_groups(files, lake.root)
                except ValueError as err:
                    raise StepError(f"validate: {err}. Move the file aside or regenerate the partition.") from err
                valid_tmp, dead_tmp = stage(validated_dir(lake, table, day)), stage(dead_letter_dir(lake, table, day))
                staged[(table, day)] = (valid_tmp, dead_tmp, sum(g.num_rows for g in groups), len(files))
                progress(f"  validating {src} ({len(files)} files, {staged[(table, day)][2]:,} rows)")
                _ = p | f"{table}/{day}" >> ValidatePartition(
                    RAW_TABLES[table], day, groups, valid_tmp, dead_tmp, cfg.num_buckets, cfg.batch_rows)
        result.metrics["beam_counters"] = _counters(p)
    except BaseException:
        for valid_tmp, dead_tmp, _, _ in staged.values():
            fs.delete_tree(valid_tmp)
            fs.delete_tree(dead_tmp)
        raise

    failures = []
    for (table, day), (valid_tmp, dead_tmp, n_input, n_files) in staged.items():
        n_valid, n_dead = parquet.count_rows(valid_tmp), parquet.count_rows(dead_tmp)
        if n_valid + n_dead != n_input:
            raise StepError(
                f"validate: {table}/{day}: {n_input} rows read but {n_valid} valid + {n_dead} dead letters "
                "were written; rows were lost. This is a bug: please report it with the partition.")
        fraction = n_dead / n_input if n_input else 0.0
        summary = _dead_letter_summary(dead_tmp) if n_dead else {}
        key = f"{table}/{day}"
        result.row_counts[key] = n_valid
        result.row_counts[f"dead_letter/{key}"] = n_dead
        result.metrics[key] = {"input_rows": n_input, "files": n_files, "valid_rows": n_valid,
                               "dead_rows": n_dead, "bad_fraction": round(fraction, 6), "problems": summary}
        dead_final = dead_letter_dir(lake, table, day)
        commit(dead_tmp, dead_final)
        result.outputs[f"dead_letter/{key}"] = dead_final
        if n_input == 0:
            result.notes.append(f"{key}: the raw partition is empty")
        if fraction > cfg.max_bad_fraction:
            fs.delete_tree(valid_tmp)
            failures.append(f"{key}: {n_dead:,} of {n_input:,} rows are bad ({fraction:.2%}); "
                            f"problems by column: {summary}")
            continue
        commit(valid_tmp, validated_dir(lake, table, day))
        result.outputs[f"validated/{key}"] = validated_dir(lake, table, day)
    if failures:
        raise StepError(
            f"validate: bad rows above the threshold max_bad_fraction={cfg.max_bad_fraction}:\n  "
            + "\n  ".join(failures)
            + f"\nThe rejected rows and reasons are in {lake.path('derived', 'dead_letter')}. Fix the source, "
            "or raise validate.max_bad_fraction (--set validate.max_bad_fraction=...) if this is expected.")


def _dead_letter_summary(directory: str) -> dict[str, int]:
    columns = parquet.read_partition(directory, columns=["column"]).column("column").to_pylist()
    return dict(collections.Counter(columns).most_common(10))


def _counters(pipeline) -> dict[str, int]:
    try:
        result = pipeline.result if hasattr(pipeline, "result") else None
        if result is None:
            return {}
        counters = result.metrics().query()["counters"]
        return {c.key.metric.name: c.committed for c in counters}
    except Exception:  # counters are informative; some runners do not report them
        log.debug("no Beam counters", exc_info=True)
        return {}
