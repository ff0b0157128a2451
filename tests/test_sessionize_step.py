"""The sessionize step on Beam: equal to the kernel on whole days, runner-independent, honest about labels."""
from __future__ import annotations

import datetime as dt
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from components.lake import Lake, parquet
from components.sessionize import step as sessionize
from components.sessionize import features
from components.sessionize.examples import FeatureContext, build_examples
from components.step import StepError
from components.validate.step import validated_dir
from pipelines.cli import main
from pipelines.config import load_config

DATE = dt.date(2026, 3, 3)  # tiny: example days 03-01..03-03, labels from 03-04


@pytest.fixture(scope="module")
def validated_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    assert main(["run", "--root", str(root), "--preset", "tiny", "--steps", "generate,validate"]) == 0
    return root


def fresh_copy(src, dst):
    shutil.copytree(src / "raw", dst / "raw")
    shutil.copytree(src / "derived", dst / "derived")
    return Lake(str(dst))


def examples(lake: Lake, day) -> pa.Table:
    return parquet.read_partition(sessionize.examples_dir(lake, day)).sort_by("impression_id")


def whole_day_context(lake, cfg, day) -> FeatureContext:
    """The features' side inputs from whole partitions: the day's catalog, earlier days' impressions in one table."""
    earlier = [parquet.read_partition(validated_dir(lake, "impressions", day - dt.timedelta(days=k)))
               for k in range(1, cfg.sessionize.prior_days + 1)
               if lake.complete(validated_dir(lake, "impressions", day - dt.timedelta(days=k)))]
    catalog = parquet.read_partition(validated_dir(lake, "listings", day))
    return FeatureContext(catalog=catalog, prior_counts=features.prior_counts(pa.concat_tables(earlier)) if earlier else {},
                          prior_days=len(earlier), prior_strength=cfg.sessionize.prior_strength)


def test_beam_output_equals_the_kernel_on_whole_days(validated_lake, tmp_path):
    lake = fresh_copy(validated_lake, tmp_path)
    cfg = load_config("tiny")
    sessionize.run(cfg, DATE, lake, progress=lambda *_: None)
    spec = sessionize.session_spec(cfg.sessionize)
    for day in cfg.window.example_dates(DATE):
        events = [parquet.read_partition(validated_dir(lake, "events", d))
                  for d in (day - dt.timedelta(days=1), day, day + dt.timedelta(days=1))
                  if lake.complete(validated_dir(lake, "events", d))]
        impressions = parquet.read_partition(validated_dir(lake, "impressions", day))
        want = build_examples(pa.concat_tables(events), impressions, spec, cfg.sessionize.negative_sample_rate,
                              whole_day_context(lake, cfg, day))
        got = examples(lake, day)
        assert got.num_rows == impressions.num_rows > 0
        assert got.equals(want.sort_by("impression_id"))
        # Personalization has something to read: most impressions follow some activity in the hour.
        assert pc.mean(pc.greater(pc.list_value_length(got.column("seq_listing_view")), 0)).as_py() > 0.3
        assert set(pc.unique(got.column("sample_rate")).to_pylist()) <= {1.0, cfg.sessionize.negative_sample_rate}
        # The engineered features are not constant: each group has rows that differ.
        for name in ("req_price_ratio", "rel_title", "tgt_listing_view_count", "tgt_taxonomy_view_secs"):
            assert pc.count_distinct(got.column(name)).as_py() > 1, name
        prior_days = min((day - cfg.marketplace_start).days, cfg.sessionize.prior_days)
        assert set(got.column("prior_days").to_pylist()) == {float(prior_days)}
        if prior_days:
            assert pc.count_distinct(got.column("prior_listing_ctr")).as_py() > 1


def test_immature_labels_are_refused_unless_allowed(validated_lake, tmp_path):
    lake = fresh_copy(validated_lake, tmp_path)
    shutil.rmtree(validated_dir(lake, "events", DATE + dt.timedelta(days=1)))
    with pytest.raises(StepError, match="labels immature.*allow_immature_labels"):
        sessionize.run(load_config("tiny"), DATE, lake, progress=lambda *_: None)
    result = sessionize.run(load_config("tiny", ["sessionize.allow_immature_labels=true"]), DATE, lake,
                            progress=lambda *_: None)
    assert any("labels immature" in n for n in result.notes)


@pytest.mark.slow
def test_three_runners_give_identical_examples(validated_lake, tmp_path):
    runs = {
        "in_memory": [],
        "multi_processing": ["beam.direct_running_mode=multi_processing", "beam.direct_num_workers=2"],
        "portable_embed": ["beam.runner=PortableRunner", "beam.extra_args=[--job_endpoint=embed, --environment_type=LOOPBACK]"],
    }
    outputs = {}
    for name, overrides in runs.items():
        lake = fresh_copy(validated_lake, tmp_path / name)
        cfg = load_config("tiny", overrides)
        sessionize.run(cfg, DATE, lake, progress=lambda *_: None)
        outputs[name] = {d: examples(lake, d) for d in cfg.window.example_dates(DATE)}
    for name in ("multi_processing", "portable_embed"):
        for day, table in outputs["in_memory"].items():
            assert outputs[name][day].equals(table), (name, day)
