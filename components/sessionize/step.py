"""The ``sessionize`` step: one example per impression of each example day of the run (DESIGN §5).

Day X reads validated events of X-1 (only the last ``window``, for sessions that cross
midnight), of X, and the purchases of X+1 (for labels of late clicks), plus X's validated
impressions, and writes ``derived/examples/dt=X``. Example days are shared by every run
whose window holds them, so each is built once. If X+1 is not there yet the labels of
X would be immature: the step refuses unless ``sessionize.allow_immature_labels``.
"""
from __future__ import annotations

import datetime as dt

import pyarrow as pa

from components.lake import Lake, commit, fs, parquet, stage
from components.sessionize import features
from components.sessionize.examples import FeatureContext
from components.sessionize.kernel import SessionSpec
from components.sessionize.transforms import CATALOG_COLUMNS, PRIOR_COLUMNS, Source, SessionizeDay
from components.step import StepError, StepResult
from components.validate.step import validated_dir, validated_files
from schemas.raw import MS_PER_DAY, day_start_ms

MINUTE_MS = 60_000


def examples_dir(lake: Lake, day) -> str:
    return lake.derived("examples", day)


def session_spec(cfg) -> SessionSpec:
    return SessionSpec(window_ms=cfg.window_minutes * MINUTE_MS, max_len=cfg.max_len,
                       pairs=tuple(tuple(p) for p in cfg.pairs), attribution_ms=cfg.attribution_minutes * MINUTE_MS)


def prior_days_found(lake: Lake, day: dt.date, prior_days: int) -> tuple[list[str], int]:
    """Validated impressions files of the up to ``prior_days`` days strictly before ``day`` that
    are there, and how many days they come from: ``(files, days)``."""
    files, days = [], 0
    for back in range(1, prior_days + 1):
        found = validated_files(lake, "impressions", day - dt.timedelta(days=back))
        if found is not None:
            files += found
            days += 1
    return files, days


def feature_context(lake: Lake, config, day: dt.date, catalog_day: dt.date | None = None) -> FeatureContext:
    """What the engineered features of ``day`` read besides its own rows (the catalog text of
    ``catalog_day``, by default ``day``; the earlier days' impression counts), read directly: the
    serving export freezes it into the serving graph."""
    cfg = config.sessionize
    catalog = validated_files(lake, "listings", catalog_day or day)
    catalog = pa.concat_tables([parquet.read_file(p, CATALOG_COLUMNS) for p in catalog]) if catalog else None
    files, found = prior_days_found(lake, day, cfg.prior_days)
    parts: dict[str, list] = {}
    for path in files:
        for kind, counts in features.prior_counts(parquet.read_file(path, PRIOR_COLUMNS)).items():
            parts.setdefault(kind, []).append(counts)
    counts = {kind: features.merge_prior_counts(tables, kind) for kind, tables in parts.items()}
    return FeatureContext(catalog=catalog, prior_counts=counts, prior_days=found,
                          prior_strength=cfg.prior_strength)


def _plan_features(lake: Lake, config, day: dt.date, result: StepResult) -> dict:
    """Side inputs of the engineered features of ``day``: its catalog and earlier days' impressions."""
    cfg = config.sessionize
    catalog = validated_files(lake, "listings", day)
    if catalog is None:
        result.notes.append(f"{day}: no validated catalog: the relevance features (rel_*) are 0")
    prior_files, found = prior_days_found(lake, day, cfg.prior_days)
    if cfg.prior_days and not found:
        result.notes.append(f"{day}: no validated impressions in the {cfg.prior_days} days before: "
                            "no historical priors for this day (prior_days = 0)")
    result.metrics[f"prior_days/{day}"] = found
    return {"catalog": catalog or [], "prior_impressions": prior_files, "prior_days": found,
            "prior_strength": cfg.prior_strength}


def _plan_day(lake: Lake, config, day: dt.date, result: StepResult) -> tuple[list[Source], list[Source], int]:
    """Sources of one example day, and its impression count; notes what is missing."""
    cfg = config.sessionize
    impressions = validated_files(lake, "impressions", day)
    events = validated_files(lake, "events", day)
    if impressions is None and events is not None and "impressions" not in config.validate.tables:
        result.notes.append(f"{day}: events-only log (impressions are not validated): no examples")
        return [], [], 0
    if impressions is None or events is None:
        raise StepError(f"sessionize: validated events/impressions of {day} are missing under "
                        f"{lake.path('derived', 'validated')}; run the validate step first")
    start = day_start_ms(day)
    window = cfg.window_minutes * MINUTE_MS
    sources = [Source(p) for p in events]
    previous = validated_files(lake, "events", day - dt.timedelta(days=1))
    if previous is None:
        result.notes.append(f"{day}: no validated events of {day - dt.timedelta(days=1)}; "
                            "sessions crossing midnight start at 00:00")
    else:
        sources += [Source(p, lo_ms=start - window) for p in previous]
    following = validated_files(lake, "events", day + dt.timedelta(days=1))
    if following is None:
        message = (f"{day}: labels immature: purchases up to {cfg.attribution_minutes} min after late clicks "
                   f"fall on {day + dt.timedelta(days=1)}, whose validated events are not there yet")
        if not cfg.allow_immature_labels:
            raise StepError(f"sessionize: {message}. Rerun when that day has landed, or pass "
                            "--set sessionize.allow_immature_labels=true to write the day anyway.")
        result.notes.append(message + " (written anyway: allow_immature_labels)")
    else:
        sources += [Source(p, hi_ms=start + MS_PER_DAY + cfg.attribution_minutes * MINUTE_MS, actions=("purchase",))
                    for p in following]
    n_impressions = parquet.count_rows(validated_dir(lake, "impressions", day))
    result.inputs += [validated_dir(lake, "impressions", day), validated_dir(lake, "events", day)]
    return sources, [Source(p) for p in impressions], n_impressions


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    """Build the examples of ``date``'s example days. ``config``: the pipeline config (reads
    ``.sessionize``, ``.window``, ``.beam``, ``.runtime.force``)."""
    import apache_beam as beam

    cfg = config.sessionize
    spec = session_spec(cfg)
    result = StepResult()
    staged = {}
    try:
        with beam.Pipeline(options=config.beam.pipeline_options("adsformer-sessionize")) as p:
            for day in config.window.example_dates(date):
                out = examples_dir(lake, day)
                if lake.complete(out) and not config.runtime.force:
                    result.notes.append(f"{out} already built")
                    result.row_counts[f"examples/{day}"] = parquet.count_rows(out)
                    continue
                events, impressions, n = _plan_day(lake, config, day, result)
                staged[day] = (stage(out), n)
                if n == 0:
                    continue
                progress(f"  sessionizing {day}: {n:,} impressions from {len(events)} event files")
                _ = p | f"Day{day}" >> SessionizeDay(events, impressions, staged[day][0], spec,
                                                    cfg.negative_sample_rate, cfg.num_buckets,
                                                    **_plan_features(lake, config, day, result))
    except BaseException:
        for tmp, _ in staged.values():
            fs.delete_tree(tmp)
        raise
    for day, (tmp, n_impressions) in staged.items():
        table = parquet.read_partition(tmp, columns=["clicked", "purchased", "seq_listing_view"]) \
            if parquet.partition_files(tmp) else None
        n = table.num_rows if table is not None else 0
        if n != n_impressions:
            fs.delete_tree(tmp)
            raise StepError(f"sessionize: {day}: {n_impressions} impressions in but {n} examples out; "
                            "rows were lost. This is a bug: please report it with the partition.")
        commit(tmp, examples_dir(lake, day))
        result.outputs[f"examples/{day}"] = examples_dir(lake, day)
        result.row_counts[f"examples/{day}"] = n
        if table is not None:
            result.metrics[f"examples/{day}"] = _summary(table)
    return result


def _summary(table) -> dict:
    import pyarrow.compute as pc

    lengths = pc.list_value_length(table.column("seq_listing_view"))
    clicks = int(pc.sum(table.column("clicked")).as_py() or 0)
    return {
        "examples": table.num_rows, "clicks": clicks,
        "purchases": int(pc.sum(table.column("purchased")).as_py() or 0),
        "ctr": round(clicks / table.num_rows, 5) if table.num_rows else 0.0,
        "with_listing_views": round(float(pc.mean(pc.greater(lengths, 0)).as_py() or 0), 4),
        "mean_listing_views": round(float(pc.mean(lengths).as_py() or 0), 3),
    }
