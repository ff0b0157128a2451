"""User keys: logged-in users (user_id + 1-2 browsers) and logged-out browsers (no user_id).

Each key has a power-law activity (expected sessions per day, lognormal with a heavy tail)
and a long-term taste: a few favourite fine taxonomies and colors with Dirichlet weights,
and for each favourite taxonomy a favourite shop that sells in it. Depends on the seed only.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from components.marketplace.catalog import N_COLORS, Catalog
from components.marketplace.config import PopulationConfig
from components.marketplace.util import Groups, Stream, categorical, format_ids, stream

USER_ID_WIDTH = 8
BROWSER_ID_WIDTH = 9
BROWSERS_PER_KEY = 2


@dataclasses.dataclass
class Population:
    """Per-key arrays (index = key number). Browser number = key * 2 + slot."""

    logged_in: np.ndarray  # bool
    n_browsers: np.ndarray  # 1 or 2
    browser_platform: np.ndarray  # (n, 2) platform codes
    activity: np.ndarray  # expected sessions per day
    taste_taxonomy: np.ndarray  # (n, k) fine ids
    taste_taxonomy_w: np.ndarray  # (n, k)
    taste_shop: np.ndarray  # (n, k) shop per favourite taxonomy
    taste_color: np.ndarray  # (n, c)
    taste_color_w: np.ndarray  # (n, c)

    @property
    def n(self) -> int:
        return len(self.logged_in)


def build_population(config: PopulationConfig, catalog: Catalog, seed: int) -> Population:
    """The population for ``seed`` (independent of the dates generated)."""
    rng = stream(seed, Stream.POPULATION)
    n = config.n_user_keys
    logged_in = rng.random(n) < config.logged_in_fraction
    n_browsers = np.where(logged_in & (rng.random(n) < config.second_browser_prob), 2, 1)
    platform = categorical(rng, np.asarray(config.platform_weights), n * BROWSERS_PER_KEY).reshape(n, BROWSERS_PER_KEY)
    activity = np.minimum(rng.lognormal(config.activity_log_mean, config.activity_log_sigma, n), config.activity_max)
    taste_tax = categorical(rng, catalog.taxonomy_popularity, n * config.taste_taxonomies).reshape(n, -1)
    lst = catalog.listings
    by_fine = Groups(lst.fine, np.arange(lst.n), catalog.taxonomy.n)
    shop_listing = by_fine.sample(taste_tax.reshape(-1), rng.random(taste_tax.size)).reshape(taste_tax.shape)
    taste_shop = np.where(shop_listing >= 0, lst.shop[np.maximum(shop_listing, 0)], -1)
    taste_color = np.argsort(rng.random((n, N_COLORS)), axis=1)[:, : config.taste_colors]
    return Population(
        logged_in=logged_in,
        n_browsers=n_browsers.astype(np.int8),
        browser_platform=platform.astype(np.int8),
        activity=activity,
        taste_taxonomy=taste_tax.astype(np.int32),
        taste_taxonomy_w=rng.dirichlet(np.full(config.taste_taxonomies, config.taste_alpha), n),
        taste_shop=taste_shop.astype(np.int32),
        taste_color=taste_color.astype(np.int8),
        taste_color_w=rng.dirichlet(np.full(config.taste_colors, config.taste_alpha), n),
    )


def user_ids(keys: np.ndarray) -> pa.Array:
    """``U`` + zero-padded key number."""
    return format_ids("U", keys, USER_ID_WIDTH)


def browser_ids(browsers: np.ndarray) -> pa.Array:
    """``B`` + zero-padded browser number."""
    return format_ids("B", browsers, BROWSER_ID_WIDTH)
