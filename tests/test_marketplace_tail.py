"""The synthetic marketplace's long tail against real logs (GENERATIVE_MODEL.md §8).

- listing popularity within a bucket is a Zipf law (Pareto weights) and the weighted sampler follows it;
- a generated local day's views have the rank-frequency slope of the Taobao page views in ``../shared/data``
  (the statistic ``catalog.listing_popularity_zipf`` is set from), within a stated tolerance;
- a top-10k listing vocabulary of the local preset's training days leaves part of the impressions out, more
  on the days after (new listings), but not more than the real log the issue cites (54% / 84%);
- the candidates of one request differ in price.
"""
from __future__ import annotations

import datetime as dt
import pathlib

import numpy as np
import pytest

from components.marketplace import generate
from components.marketplace.catalog import listing_popularity
from components.marketplace.realism import (
    generated_view_slope, rank_frequency_slope, real_item_views, request_price_spread, vocabulary_oov,
)
from components.marketplace.util import Groups
from pipelines.config import load_config

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "taobao_userbehavior_sample").exists(), reason="../shared/data is not there")
START = dt.date(2026, 3, 1)
DAYS = [(START + dt.timedelta(days=i)).isoformat() for i in range(4)]
SEED = 7
SLOPE_TOLERANCE = 0.05
"""|generated - Taobao| slope allowed: the generated slope moves by about ±0.01 between days and subsamples; the
two real samples differ by 0.07 (Taobao 0.36, Diginetica 0.43)."""
CITED_OOV = {"training_day": 0.54, "next_day": 0.84}
"""A held-out real sponsored-listing log (the issue tracker): a top-10k vocabulary of the training day's
target listings left these shares of training-day and next-day impressions out of vocabulary."""


def test_listing_popularity_is_a_zipf_law():
    u = np.random.default_rng(0).random(200_000)
    for zipf in (0.2, 0.42, 0.7):
        w = np.sort(listing_popularity(u, zipf))[::-1]
        r = np.arange(10, 20_001)
        slope = -np.polyfit(np.log(r), np.log(w[r - 1]), 1)[0]
        assert abs(slope - zipf) < 0.02, (zipf, slope)
        assert w.min() >= 1.0
    assert np.all(listing_popularity(u[:10], 0.0) == 1.0)


def test_weighted_groups_draw_in_proportion_to_weight():
    keys = np.array([0, 0, 0, 2, 2])
    members = np.array([10, 11, 12, 20, 21])
    weights = np.array([1.0, 2.0, 7.0, 1.0, 3.0])
    groups = Groups(keys, members, 3, weights=weights)
    rng = np.random.default_rng(1)
    n = 200_000
    draws = groups.sample(np.zeros(n, dtype=np.int64), rng.random(n))
    share = np.array([np.mean(draws == m) for m in (10, 11, 12)])
    assert np.allclose(share, [0.1, 0.2, 0.7], atol=0.01), share
    draws = groups.sample(np.full(n, 2), rng.random(n))
    assert abs(np.mean(draws == 21) - 0.75) < 0.01
    assert np.all(groups.sample(np.array([1, -1]), np.array([0.5, 0.5])) == -1)  # empty bucket, no key
    assert groups.sample(np.array([0, 0]), np.array([0.0, 1.0 - 1e-12])).tolist() == [10, 12]  # edges stay inside
    uniform = Groups(keys, members, 3)
    draws = uniform.sample(np.zeros(n, dtype=np.int64), rng.random(n))
    assert np.allclose([np.mean(draws == m) for m in (10, 11, 12)], 1 / 3, atol=0.01)


@pytest.fixture(scope="module")
def local_lake(tmp_path_factory) -> str:
    """Four days of the local preset without images (~200k events a day)."""
    root = str(tmp_path_factory.mktemp("local_tail"))
    generate(load_config("local", ["marketplace.images=false"]).marketplace, root, START, len(DAYS), SEED)
    return root


@needs_data
def test_view_popularity_has_the_taobao_rank_frequency_slope(local_lake):
    real = real_item_views(str(DATA))
    taobao = rank_frequency_slope(real)
    diginetica = rank_frequency_slope(real_item_views(str(DATA), "diginetica"))
    assert len(real) == 98_361 and abs(taobao - 0.359) < 0.005 and abs(diginetica - 0.430) < 0.005, (taobao, diginetica)
    # the same number of views from a generated day, so that the counts at ranks 10..1000 sit at the same levels
    generated = [generated_view_slope(local_lake, d, len(real), seed=s) for d in DAYS[:2] for s in (0, 1)]
    assert all(abs(g - taobao) <= SLOPE_TOLERANCE for g in generated), (taobao, generated)
    # the uniform within-bucket draw it replaces was far flatter
    flat = rank_frequency_slope(np.random.default_rng(0).integers(0, 40_000, len(real)))
    assert flat < taobao - 3 * SLOPE_TOLERANCE, flat


def test_top_10k_vocabulary_leaves_the_tail_and_new_listings_out(local_lake):
    oov = vocabulary_oov(local_lake, DAYS[:2], DAYS, k=10_000)
    training, next_day, test_day = oov[DAYS[1]], oov[DAYS[2]], oov[DAYS[3]]
    # the tail: a sixth of training-day impressions fall outside the top 10k (was 0.04% with 20k uniform listings)
    assert 0.12 < training < CITED_OOV["training_day"], oov
    # new listings and the tail's turnover add to it on the days after, still short of the cited real log
    assert training + 0.02 < next_day < test_day < CITED_OOV["next_day"], oov


def test_candidates_of_a_request_differ_in_price(tmp_path):
    root = str(tmp_path)
    generate(load_config("tiny", ["marketplace.images=false"]).marketplace, root, START, 1, SEED)
    spread = request_price_spread(root, DAYS[0])
    assert spread["requests"] > 500
    assert spread["median_max_min_ratio"] > 3 and spread["share_ratio_above_2"] > 0.8, spread
    assert spread["median_std_log_price"] > 0.4 and spread["median_std_taxonomy_relative_log_price"] > 0.25, spread
    assert spread["corr_relative_vs_taxonomy_relative"] > 0.3, spread
