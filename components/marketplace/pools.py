"""Per-day sampling pools over the catalog: what can be viewed and what can be advertised.

A listing is viewable on day D when it is active in D's snapshot and was created before D
starts (listings created during D become visible from D+1). Ads come from the viewable
listings with an active campaign. Within a bucket, views and ad candidates are drawn in
proportion to the listings' popularity weights (a Zipf law within every bucket).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from components.marketplace.catalog import N_COLORS, Catalog
from components.marketplace.util import Groups


@dataclasses.dataclass
class DayPools:
    """Bucketed listing numbers for vectorized sampling on one day, plus per-listing lookups."""

    fine: np.ndarray
    mid: np.ndarray
    top: np.ndarray
    color: np.ndarray
    shop: np.ndarray
    quality: np.ndarray
    price_z: np.ndarray
    advertised: np.ndarray  # bool per listing: in the ad pools (viewable with an active campaign)
    by_shop_fine: Groups
    by_shop: Groups
    by_fine_color: Groups
    by_fine: Groups
    by_mid: Groups
    by_top: Groups
    anywhere: Groups
    ads_fine: Groups
    ads_mid: Groups
    ads_top: Groups
    ads_anywhere: Groups
    fines_by_mid: Groups  # fine taxonomy ids per mid level (for intent drift)
    fine_top: np.ndarray  # top level per fine taxonomy
    fine_mid: np.ndarray  # mid level per fine taxonomy
    n_fine: int


def build_pools(catalog: Catalog, day_start_ms: int) -> DayPools:
    """Pools of the listings viewable on the day starting at ``day_start_ms``."""
    lst, tax = catalog.listings, catalog.taxonomy
    fine, mid, top = lst.fine, catalog.mid, catalog.top
    visible = lst.active & (lst.created_ms < day_start_ms)
    ads = visible & lst.campaign
    ids = np.arange(lst.n)
    n_mid, n_top, n_shop = len(tax.mid_words), len(tax.top_words), catalog.shops.n

    def groups(mask: np.ndarray, key: np.ndarray, n_keys: int) -> Groups:
        return Groups(key[mask], ids[mask], n_keys, weights=lst.popularity[mask])

    zeros = np.zeros(lst.n, dtype=np.int64)
    return DayPools(
        fine=fine, mid=mid, top=top, color=lst.color.astype(np.int32), shop=lst.shop, quality=lst.quality,
        price_z=catalog.price_z(), advertised=ads,
        by_shop_fine=groups(visible, lst.shop.astype(np.int64) * tax.n + fine, n_shop * tax.n),
        by_shop=groups(visible, lst.shop, n_shop),
        by_fine_color=groups(visible, fine.astype(np.int64) * N_COLORS + lst.color, tax.n * N_COLORS),
        by_fine=groups(visible, fine, tax.n),
        by_mid=groups(visible, mid, n_mid),
        by_top=groups(visible, top, n_top),
        anywhere=groups(visible, zeros, 1),
        ads_fine=groups(ads, fine, tax.n),
        ads_mid=groups(ads, mid, n_mid),
        ads_top=groups(ads, top, n_top),
        ads_anywhere=groups(ads, zeros, 1),
        fines_by_mid=Groups(tax.mid, np.arange(tax.n), n_mid),
        fine_top=tax.top,
        fine_mid=tax.mid,
        n_fine=tax.n,
    )
