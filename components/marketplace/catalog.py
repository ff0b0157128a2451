"""Listings and shops: taxonomy, text, color, material, price, quality, campaigns, daily growth.

The initial catalog depends on the seed only. Each generated day then deactivates a few
listings and adds new ones (created during that day) from the day's own random stream.
Listing text is drawn from words tied to the listing's taxonomy, color and material, so a
text model can learn the taxonomy from the words.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.marketplace.config import CatalogConfig
from components.marketplace.util import Groups, Stream, categorical, format_ids, join_words, stream
from components.marketplace.vocab import ADJECTIVES, COLORS, MATERIALS, Taxonomy, build_taxonomy, pseudo_words
from schemas.raw import MS_PER_DAY, day_start_ms
from schemas.raw import LISTINGS_SCHEMA, TS

N_COLORS = len(COLORS)
N_MATERIALS = len(MATERIALS)
LISTING_ID_WIDTH = 7
SHOP_ID_WIDTH = 5
IMAGE_DIR = "raw/images"


@dataclasses.dataclass
class Shops:
    """Per-shop arrays: specialised taxonomies, color palette, price level, quality part, size weight."""

    taxonomies: np.ndarray  # (n_shops, max) fine ids
    n_taxonomies: np.ndarray  # (n_shops,)
    palette: np.ndarray  # (n_shops, palette_size) color ids
    price_level: np.ndarray
    quality: np.ndarray
    weight: np.ndarray  # share of new listings

    @property
    def n(self) -> int:
        return len(self.weight)


@dataclasses.dataclass
class Listings:
    """Per-listing arrays (index = listing number; ids are ``L`` + zero-padded number)."""

    shop: np.ndarray
    fine: np.ndarray
    color: np.ndarray
    material: np.ndarray
    price: np.ndarray
    quality: np.ndarray
    popularity: np.ndarray  # relative chance of being viewed / retrieved within a bucket (Pareto, Zipf ranks)
    created_ms: np.ndarray
    active: np.ndarray
    campaign: np.ndarray
    title: pa.Array
    tags: pa.Array

    @property
    def n(self) -> int:
        return len(self.shop)

    def extend(self, other: "Listings") -> None:
        """Appends ``other``'s listings (numbered after the existing ones)."""
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, pa.Array):
                setattr(self, f.name, pa.concat_arrays([a, b]))
            else:
                setattr(self, f.name, np.concatenate([a, b]))


@dataclasses.dataclass
class Catalog:
    """The marketplace's catalog: fixed world (taxonomy, words, shops) plus the evolving listings."""

    config: CatalogConfig
    taxonomy: Taxonomy
    words: np.ndarray  # (n_fine, pseudo_words_per_taxonomy) taxonomy-specific words
    taxonomy_popularity: np.ndarray  # (n_fine,) probabilities
    taxonomy_price_mu: np.ndarray  # (n_fine,) mean log price
    taxonomy_materials: np.ndarray  # (n_fine, taxonomy_materials) material ids
    shops: Shops
    listings: Listings

    @property
    def mid(self) -> np.ndarray:
        """Mid-level index of each listing."""
        return self.taxonomy.mid[self.listings.fine]

    @property
    def top(self) -> np.ndarray:
        """Top-level index of each listing."""
        return self.taxonomy.top[self.listings.fine]

    def price_z(self) -> np.ndarray:
        """Each listing's log price relative to its taxonomy, in units of the within-taxonomy sigma."""
        mu = self.taxonomy_price_mu[self.listings.fine]
        return (np.log(self.listings.price) - mu) / max(self.config.price_log_sigma, 1e-6)


def build_catalog(config: CatalogConfig, seed: int, start: dt.date) -> Catalog:
    """The initial catalog for ``seed``: shops and ``config.n_listings`` listings created before ``start``."""
    rng = stream(seed, Stream.CATALOG)
    taxonomy = build_taxonomy(config.n_fine_taxonomies)
    words = pseudo_words(rng, taxonomy.n, config.pseudo_words_per_taxonomy)
    rank = rng.permutation(taxonomy.n)
    popularity = 1.0 / (rank + 1.0) ** config.taxonomy_zipf
    popularity /= popularity.sum()
    price_mu = rng.uniform(config.price_log_mean_min, config.price_log_mean_max, taxonomy.n)
    materials = np.stack([rng.permutation(N_MATERIALS)[: config.taxonomy_materials] for _ in range(taxonomy.n)])
    shops = _build_shops(config, rng, taxonomy, popularity)
    catalog = Catalog(config, taxonomy, words, popularity, price_mu, materials, shops, listings=None)  # type: ignore[arg-type]
    start_ms = day_start_ms(start)
    shop = np.concatenate([np.arange(shops.n), categorical(rng, shops.weight, config.n_listings - shops.n)])
    age_ms = rng.integers(1, config.catalog_age_days * MS_PER_DAY, size=config.n_listings)
    catalog.listings = _draw_listings(catalog, rng, shop, start_ms - age_ms)
    return catalog


def _build_shops(config: CatalogConfig, rng: np.random.Generator, taxonomy: Taxonomy, popularity: np.ndarray) -> Shops:
    """Shops specialised in 1..max fine taxonomies (mostly under one top level) with a color palette."""
    n = config.n_shops
    by_top = Groups(taxonomy.top, np.arange(taxonomy.n), int(taxonomy.top.max()) + 1)
    first = categorical(rng, popularity, n)
    taxonomies = np.empty((n, config.shop_taxonomies_max), dtype=np.int32)
    taxonomies[:, 0] = first
    for j in range(1, config.shop_taxonomies_max):
        same_top = by_top.sample(taxonomy.top[first], rng.random(n))
        anywhere = categorical(rng, popularity, n)
        taxonomies[:, j] = np.where(rng.random(n) < config.shop_same_top_prob, same_top, anywhere)
    palette = np.argsort(rng.random((n, N_COLORS)), axis=1)[:, : config.shop_palette_size].astype(np.int8)
    weight = rng.lognormal(0.0, config.shop_size_sigma, n)
    return Shops(
        taxonomies=taxonomies,
        n_taxonomies=rng.integers(1, config.shop_taxonomies_max + 1, n),
        palette=palette,
        price_level=rng.normal(0.0, config.shop_price_sigma, n),
        quality=rng.normal(0.0, config.shop_quality_sigma, n),
        weight=weight / weight.sum(),
    )


def _draw_listings(catalog: Catalog, rng: np.random.Generator, shop: np.ndarray, created_ms: np.ndarray) -> Listings:
    """Listings of the given shops: taxonomy from the shop, color from its palette, material, price, text."""
    cfg, shops, n = catalog.config, catalog.shops, len(shop)
    slot = (rng.random(n) * shops.n_taxonomies[shop]).astype(np.int64)
    fine = shops.taxonomies[shop, slot]
    palette_color = shops.palette[shop, rng.integers(0, shops.palette.shape[1], n)]
    color = np.where(rng.random(n) < cfg.shop_palette_prob, palette_color, rng.integers(0, N_COLORS, n)).astype(np.int8)
    tax_material = catalog.taxonomy_materials[fine, rng.integers(0, catalog.taxonomy_materials.shape[1], n)]
    material = np.where(rng.random(n) < cfg.taxonomy_material_prob, tax_material, rng.integers(0, N_MATERIALS, n)).astype(np.int8)
    log_price = catalog.taxonomy_price_mu[fine] + shops.price_level[shop] + rng.normal(0.0, cfg.price_log_sigma, n)
    price = np.round(np.maximum(np.exp(log_price), cfg.price_min), 2)
    quality = (shops.quality[shop] + rng.normal(0.0, cfg.listing_quality_sigma, n)).astype(np.float64)
    title, tags = _listing_text(catalog, rng, fine, color, material)
    popularity = listing_popularity(rng.random(n), cfg.listing_popularity_zipf)
    return Listings(
        shop=shop.astype(np.int32),
        fine=fine.astype(np.int32),
        color=color,
        material=material,
        price=price,
        quality=quality,
        popularity=popularity,
        created_ms=created_ms.astype(np.int64),
        active=np.ones(n, dtype=bool),
        campaign=rng.random(n) < cfg.campaign_fraction,
        title=title,
        tags=tags,
    )


def listing_popularity(u: np.ndarray, zipf: float) -> np.ndarray:
    """Popularity weights ``(1 - u) ** -zipf`` (Pareto with tail index ``1 / zipf``, minimum 1) from uniforms ``u``.

    Sorted, ``n`` such weights fall as ``(rank / n) ** -zipf``: a Zipf law of exponent ``zipf`` within any set of
    listings (a taxonomy, a shop, the campaigns), whatever its size. ``zipf = 0`` gives equal weights.
    """
    return (1.0 - np.asarray(u, dtype=np.float64)) ** -zipf


def _listing_text(catalog: Catalog, rng: np.random.Generator, fine: np.ndarray, color: np.ndarray, material: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """Titles and tag lists from words tied to taxonomy, color and material (plus generic adjectives)."""
    cfg, tax, n = catalog.config, catalog.taxonomy, len(fine)
    color_words = pa.array(list(COLORS))
    material_words = pa.array(list(MATERIALS))
    adjectives = pa.array(list(ADJECTIVES))
    flat_words = pa.array(catalog.words.reshape(-1).tolist())
    per_tax = catalog.words.shape[1]

    def maybe(values: pa.Array, index: np.ndarray, prob: float) -> pa.Array:
        keep = rng.random(n) < prob
        return values.take(pa.array(index, mask=~keep))

    def tax_word() -> np.ndarray:
        return fine.astype(np.int64) * per_tax + rng.integers(0, per_tax, n)

    leaf = pa.array(tax.leaf_words.tolist()).take(pa.array(fine))
    adjective = rng.integers(0, len(ADJECTIVES), n)
    title_parts = [
        maybe(adjectives, adjective, cfg.title_adjective_prob),
        maybe(color_words, color, cfg.title_color_prob),
        maybe(material_words, material, cfg.title_material_prob),
        leaf,
    ] + [flat_words.take(pa.array(tax_word())) for _ in range(cfg.title_pseudo_words)]
    title = join_words(*title_parts)

    candidates = [
        leaf,
        maybe(pa.array(tax.mid_words.tolist()), tax.mid[fine], cfg.tag_keep_prob),
        maybe(color_words, color, cfg.tag_keep_prob),
        maybe(material_words, material, cfg.tag_keep_prob),
        maybe(flat_words, tax_word(), cfg.tag_keep_prob),
        maybe(flat_words, tax_word(), cfg.tag_keep_prob),
        maybe(adjectives, rng.integers(0, len(ADJECTIVES), n), cfg.tag_keep_prob),
    ]
    matrix = pa.table({str(i): c for i, c in enumerate(candidates)})
    values = pa.concat_arrays([matrix.column(i).combine_chunks() for i in range(len(candidates))])
    # row-major order of the (n, n_candidates) matrix, nulls (dropped tags) removed
    order = np.arange(n * len(candidates)).reshape(len(candidates), n).T.reshape(-1)
    values = values.take(pa.array(order))
    valid = values.is_valid().to_numpy(zero_copy_only=False).reshape(n, len(candidates))
    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32)
    tags = pa.ListArray.from_arrays(pa.array(offsets), values.filter(values.is_valid()))
    return title, tags


def advance_day(catalog: Catalog, seed: int, day_index: int, day_start: int) -> np.ndarray:
    """Day ``day_index``: deactivates a few listings and adds new ones created during the day.

    Returns the numbers of the new listings (their images must be rendered).
    """
    cfg, lst = catalog.config, catalog.listings
    rng = stream(seed, Stream.DAY_CATALOG, day_index)
    lst.active &= ~(rng.random(lst.n) < cfg.deactivate_per_day)
    n_new = int(rng.poisson(cfg.new_listings_per_day * cfg.n_listings))
    first = lst.n
    if n_new:
        shop = categorical(rng, catalog.shops.weight, n_new)
        created = day_start + np.sort(rng.integers(0, MS_PER_DAY, n_new))
        lst.extend(_draw_listings(catalog, rng, shop, created))
    return np.arange(first, first + n_new)


def listing_ids(n: int) -> pa.Array:
    """``L0000000`` .. for listing numbers 0..n-1."""
    return format_ids("L", np.arange(n), LISTING_ID_WIDTH)


def shop_ids(n: int) -> pa.Array:
    """``S00000`` .. for shop numbers 0..n-1."""
    return format_ids("S", np.arange(n), SHOP_ID_WIDTH)


def snapshot_table(catalog: Catalog, images: bool) -> pa.Table:
    """The daily catalog snapshot, cast to ``LISTINGS_SCHEMA`` (ordered by listing_id)."""
    lst, tax = catalog.listings, catalog.taxonomy
    ids = listing_ids(lst.n)
    if images:
        image_uri = pc.binary_join_element_wise(pa.scalar(IMAGE_DIR + "/"), ids, pa.scalar(".png"), pa.scalar(""))
    else:
        image_uri = pa.nulls(lst.n, pa.string())
    columns = {
        "listing_id": ids,
        "shop_id": shop_ids(catalog.shops.n).take(pa.array(lst.shop)),
        "taxonomy_id": pa.array(tax.ids.tolist()).take(pa.array(lst.fine)),
        "taxonomy_path": pa.array(tax.paths.tolist()).take(pa.array(lst.fine)),
        "title": lst.title,
        "tags": lst.tags,
        "price": pa.array(lst.price),
        "primary_color": pa.array(list(COLORS)).take(pa.array(lst.color)),
        "material": pa.array(list(MATERIALS)).take(pa.array(lst.material)),
        "image_uri": image_uri,
        "created_ts": pa.array(lst.created_ms, TS),
        "is_active": pa.array(lst.active),
        "has_active_campaign": pa.array(lst.campaign & lst.active),
    }
    return pa.Table.from_pydict(columns, schema=LISTINGS_SCHEMA)
