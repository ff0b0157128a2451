"""The ``transform`` step: vocabularies and model-ready TFRecords with tensorflow-transform (DESIGN §6).

TFT analyzes the (down-sampled) training split of the run window and builds the top-K
vocabularies (paper 000 §2.7.1) with hashed OOV buckets and scalers; the same ``transform_fn``
then turns the train, validation and test splits into GZIP TFRecord shards. With
``transform.listing_coverage`` a first Beam job over the same training split chooses the
listing vocabulary's K (:func:`_listing_coverage`). Everything lands in
``runs/D/transform/``: ``transform_fn/`` and ``transformed_metadata/`` (readable with
``tft.TFTransformOutput``), ``train/``, ``validation/``, ``test/`` and ``stats.json`` (per split:
rows, clicks, purchases after a click, the OOV count and share of the targets per entity, files;
the trainers read the positives of their task's label from it, DESIGN §8).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile

from components.lake import Lake, fs, parquet, stage
from components.sessionize.step import examples_dir
from components.step import StepError, StepResult
from components.transform.config import VOCABULARIES, TransformConfig
from components.transform.transforms import SPLITS, ExampleFile

OUTPUTS = ("transform_fn", "transformed_metadata") + SPLITS + ("stats.json",)


def split_dir(lake: Lake, date, split: str) -> str:
    return fs.join(lake.run_dir(date, "transform"), split)


def plan(config, date: dt.date, lake: Lake) -> list[ExampleFile]:
    """The examples files of the run window, each with its day's role."""
    window = config.window
    fraction = window.validation_fraction if window.validation == "fraction" else 0.0
    roles = [(d, "train") for d in window.train_dates(date)]
    if window.validation == "day":
        roles.append((window.validation_date(date), "validation"))
    roles.append((window.test_date(date), "test"))
    files = []
    for day, role in roles:
        directory = examples_dir(lake, day)
        if not lake.complete(directory):
            raise StepError(f"transform: the examples of {day} ({role} day) are missing at {directory}; "
                            "run the sessionize step first")
        files += [ExampleFile(p, role, fraction if role == "train" else 0.0) for p in parquet.partition_files(directory)]
    return files


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    """Analyze the training split, transform all splits. ``config``: the pipeline config (reads
    ``.transform``, ``.sessionize.pairs``, ``.window``, ``.beam``, ``.seed``)."""
    cfg: TransformConfig = config.transform
    pairs = [tuple(p) for p in config.sessionize.pairs]
    files = plan(config, date, lake)
    result = StepResult(inputs=sorted({os.path.dirname(f.path) for f in files}))
    run_dir = lake.run_dir(date, "transform")
    progress(f"  analyzing and transforming {len(files)} examples files "
             f"(train {', '.join(str(d) for d in config.window.train_dates(date))}, test {config.window.test_date(date)})")
    tmp = stage(fs.join(run_dir, "output"))
    try:
        top_k, coverage = dict(cfg.top_k), None
        if cfg.listing_coverage is not None:
            coverage = _listing_coverage(config, cfg, pairs, files, tmp)
            top_k["listing"] = coverage["k"]
            progress(f"  listing vocabulary: K = {coverage['k']:,} covers {coverage['achieved']:.2%} of the "
                     f"{coverage['occurrences']:,} training listing occurrences ({coverage['distinct']:,} ids; "
                     f"target {cfg.listing_coverage:.2%}, cap {cfg.top_k['listing']:,}, set by {coverage['limited_by']})")
        engineered, priors = engineered_features(config, date, lake)
        if not priors["used"]:
            result.notes.append(f"historical priors off for this run: {priors['why']}")
        counters = _run_pipeline(config, cfg, pairs, files, tmp, top_k, engineered)
        stats = _stats(tmp, counters, cfg, coverage)
        stats.update(engineered_features=list(engineered), engineered_buckets=cfg.engineered_buckets, priors=priors)
        if stats["splits"]["train"]["rows"] == 0:
            raise StepError("transform: the training split is empty (no examples in the training days, or every "
                            "row was sampled out); events-only logs have no impressions to train on")
        fs.write_text(fs.join(tmp, "stats.json"), json.dumps(stats, indent=2, sort_keys=True) + "\n")
        for name in OUTPUTS:
            final = fs.join(run_dir, name)
            fs.delete_tree(final)
            fs.move_tree(fs.join(tmp, name), final)
    finally:
        fs.delete_tree(tmp)
    for split in SPLITS:
        result.outputs[split] = split_dir(lake, date, split)
        result.row_counts[split] = stats["splits"][split]["rows"]
    result.outputs["transform_fn"] = fs.join(run_dir, "transform_fn")
    result.metrics.update(stats)
    return result


def listing_vocabulary_columns(pairs) -> list[str]:
    """The columns the listing vocabulary is built from (``features.make_preprocessing_fn``)."""
    from schemas.examples import seq_column

    return ["listing_id"] + [seq_column(e, a) for e, a in pairs if e == "listing"]


def _listing_coverage(config, cfg: TransformConfig, pairs, files: list[ExampleFile], out: str) -> dict:
    """K of the listing vocabulary for ``cfg.listing_coverage`` (``transforms.choose_k``), from a Beam job over
    the training split: the same files, reader and sampling as the analysis, so the same rows.

    Why a job of its own before the analysis: ``tft.vocabulary`` has no coverage option and takes its
    ``top_k`` as a Python int when TFT traces the preprocessing graph, i.e. before any data is read.
    The TFT-native alternatives (a full ``store_frequency`` vocabulary plus an in-graph cut) would
    ship a vocabulary file of every id with the serving graph and make its size disagree with the
    id range the models size their tables by. The job is a distributed word count and a histogram
    of its counts (``transforms.VocabularyCoverage``), so it holds nothing per id on one machine; it
    costs one more read of the training split (its examples files, sampled alike)."""
    import apache_beam as beam

    from components.transform.transforms import ReadExamplesFn, VocabularyCoverage, WriteJsonFn

    path = fs.join(out, "listing_coverage.json")
    p = beam.Pipeline(options=config.beam.pipeline_options("adsformer-transform-coverage"))
    train = (p
             | "Files" >> beam.Create(files)
             | "Spread" >> beam.Reshuffle()
             | "Read" >> beam.ParDo(ReadExamplesFn(pairs, config.seed, cfg.eval_sample_rate, cfg.batch_rows,
                                                   splits=("train",))).with_outputs("train"))["train"]
    _ = (train
         | "Coverage" >> VocabularyCoverage(listing_vocabulary_columns(pairs), cfg.listing_coverage,
                                            cfg.top_k["listing"], cfg.frequency_threshold)
         | "Write" >> beam.ParDo(WriteJsonFn(path)))
    p.run().wait_until_finish()
    coverage = json.loads(fs.read_text(path))
    fs.delete_tree(path)
    return coverage


def engineered_features(config, date: dt.date, lake: Lake) -> tuple[tuple[str, ...], dict]:
    """The engineered features the run's models read (``schemas.features``), and whether the priors
    are among them: only when every training day has all ``sessionize.prior_days`` earlier days of
    validated impressions, so a prior is never absent in training and present at test."""
    from components.sessionize.step import prior_days_found
    from schemas.features import ENGINEERED_FEATURES, PRIOR_FEATURES

    wanted = config.sessionize.prior_days
    short = {str(day): found for day in config.window.train_dates(date)
             if (found := prior_days_found(lake, day, wanted)[1]) < wanted}
    if not wanted:
        why = "sessionize.prior_days is 0"
    elif short:
        why = (f"training day(s) {', '.join(short)} have {min(short.values())} of the sessionize.prior_days "
               f"({wanted}) earlier days of validated impressions")
    else:
        why = ""
    used = not why
    names = tuple(f for f in ENGINEERED_FEATURES if f != "prior_days" and (used or f not in PRIOR_FEATURES))
    return names, {"used": used, "why": why, "prior_days": wanted}


def _run_pipeline(config, cfg: TransformConfig, pairs, files: list[ExampleFile], out: str, top_k: dict,
                  engineered: tuple[str, ...] = ()) -> dict:
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam

    from components.transform.arrow_input import tensor_adapter_config
    from components.transform.features import make_preprocessing_fn
    from components.transform.transforms import KeyByShardFn, ReadExamplesFn, WriteShardFn, in_vocabulary_sizes

    adapter_config, _ = tensor_adapter_config(pairs)
    preprocessing_fn = make_preprocessing_fn(pairs, top_k, cfg.frequency_threshold, cfg.num_oov_buckets, engineered,
                                             cfg.engineered_buckets)
    with tempfile.TemporaryDirectory(prefix="tft-") as tft_tmp:
        temp_dir = tft_tmp if fs.is_local(out) else fs.join(out, ".tft-tmp")
        p = beam.Pipeline(options=config.beam.pipeline_options("adsformer-transform"))
        with tft_beam.Context(temp_dir=temp_dir, force_tf_compat_v1=False):
            splits = (p
                      | "Files" >> beam.Create(files)
                      | "Spread" >> beam.Reshuffle()
                      | "Read" >> beam.ParDo(ReadExamplesFn(pairs, config.seed, cfg.eval_sample_rate,
                                                            cfg.batch_rows)).with_outputs(*SPLITS))
            transform_fn = ((splits["train"], adapter_config)
                            | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn))
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(out)
            # K per entity is known once the analysis ran: a side input from the transformed metadata.
            in_vocabulary = beam.pvalue.AsSingleton(
                transform_fn[1].deferred_metadata
                | "InVocabularySizes" >> beam.Map(in_vocabulary_sizes, dict(cfg.num_oov_buckets)))
            for split in SPLITS:
                transformed, _ = (((splits[split], adapter_config), transform_fn)
                                  | f"Transform{split}" >> tft_beam.TransformDataset(output_record_batches=True))
                _ = (transformed
                     | f"Shard{split}" >> beam.ParDo(KeyByShardFn(split, cfg.num_shards), in_vocabulary)
                     | f"Group{split}" >> beam.GroupByKey()
                     | f"Write{split}" >> beam.ParDo(WriteShardFn(fs.join(out, split), cfg.num_shards,
                                                                      cfg.compression_level)))
            result = p.run()
            result.wait_until_finish()
    return {r.key.metric.name: r.committed for r in result.metrics().query()["counters"]}


def _stats(out: str, counters: dict, cfg: TransformConfig, coverage: dict | None = None) -> dict:
    """``stats.json``: vocabulary sizes (K per entity), the configured top_k and OOV buckets, the listing
    coverage (when it set K) and per split rows, clicks, purchases after a click (the positives the
    trainers check against models.min_positives) and the share of targets out of each vocabulary."""
    import tensorflow_transform as tft

    from components.transform.features import vocabulary_name
    from components.transform.transforms import TARGET_ID_FEATURES

    tft_output = tft.TFTransformOutput(out)
    vocab = {e: tft_output.vocabulary_size_by_name(vocabulary_name(e)) for e in VOCABULARIES}
    splits = {}
    for split in SPLITS:
        rows = int(counters.get(f"{split}_rows", 0))
        share = lambda n: round(n / rows, 4) if rows else 0.0  # noqa: E731
        oov = {e: int(counters.get(f"{split}_{e}_oov", 0)) for e in TARGET_ID_FEATURES}
        splits[split] = {"rows": rows, "clicks": int(counters.get(f"{split}_clicks", 0)),
                         "purchases": int(counters.get(f"{split}_purchases", 0)),
                         "oov": oov, "oov_share": {e: share(n) for e, n in oov.items()},
                         "listing_oov_share": share(oov["listing"]),
                         "files": len(fs.list_files(fs.join(out, split), "*.tfrecord.gz")) if fs.exists(fs.join(out, split)) else 0}
    stats = {"vocabulary_sizes": vocab, "top_k": cfg.top_k, "num_oov_buckets": dict(cfg.num_oov_buckets),
             "examples_read": int(counters.get("examples_read", 0)), "splits": splits}
    if coverage is not None:
        stats["listing_coverage"] = coverage
    return stats
