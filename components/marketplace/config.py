"""Typed configuration of the synthetic marketplace (DESIGN §10).

Every size and knob of the generator lives here; the code holds no magic constants.
The defaults are the ``local`` preset (what ``make pipeline-local`` generates);
the ``tiny`` and ``bench`` sizes are overrides in the YAML presets of ``pipelines/configs/``.

The formulas these knobs parameterize are documented in ``GENERATIVE_MODEL.md``.
"""
from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogConfig(_Section):
    """Listings, shops, taxonomy and listing text."""

    n_listings: int = Field(
        40_000, ge=10, description="listings in the initial catalog (local: twice the 20k it was, as many as the "
                                   "10-minute pipeline-local budget allows; GENERATIVE_MODEL.md §8)")
    n_shops: int = Field(1_500, ge=1, description="shops selling the listings")
    n_fine_taxonomies: int = Field(100, ge=10, le=100, description="leaf taxonomies used (of the 100 built in)")
    taxonomy_zipf: float = Field(0.8, ge=0, description="Zipf exponent of the taxonomy popularity")
    shop_size_sigma: float = Field(1.0, ge=0, description="lognormal sigma of shop sizes (listings per shop)")
    shop_taxonomies_max: int = Field(3, ge=1, description="a shop sells in 1..max fine taxonomies")
    shop_same_top_prob: float = Field(0.8, ge=0, le=1, description="P(extra shop taxonomy shares the first one's top level)")
    shop_palette_size: int = Field(3, ge=1, description="colors in a shop's palette")
    shop_palette_prob: float = Field(0.7, ge=0, le=1, description="P(listing color comes from the shop palette)")
    taxonomy_materials: int = Field(3, ge=1, description="dominant materials per fine taxonomy")
    taxonomy_material_prob: float = Field(0.8, ge=0, le=1, description="P(listing material is one of its taxonomy's dominant ones)")
    pseudo_words_per_taxonomy: int = Field(4, ge=1, description="taxonomy-specific product words in titles/tags/queries")
    title_pseudo_words: int = Field(2, ge=0, description="taxonomy words in a title")
    title_adjective_prob: float = Field(0.7, ge=0, le=1, description="P(title starts with a generic adjective)")
    title_color_prob: float = Field(0.8, ge=0, le=1, description="P(title names the color)")
    title_material_prob: float = Field(0.6, ge=0, le=1, description="P(title names the material)")
    tag_keep_prob: float = Field(0.75, ge=0, le=1, description="P(each candidate tag is kept)")
    price_log_mean_min: float = Field(2.0, description="min of the per-taxonomy mean log price")
    price_log_mean_max: float = Field(4.8, description="max of the per-taxonomy mean log price")
    price_log_sigma: float = Field(0.45, ge=0, description="within-taxonomy sigma of log price")
    shop_price_sigma: float = Field(0.25, ge=0, description="sigma of a shop's log-price level")
    price_min: float = Field(1.0, gt=0, description="price floor")
    shop_quality_sigma: float = Field(0.5, ge=0, description="sigma of the shop part of latent quality")
    listing_quality_sigma: float = Field(0.85, ge=0, description="sigma of the listing part of latent quality")
    listing_popularity_zipf: float = Field(
        0.42, ge=0, lt=1, description="Zipf exponent of listing popularity within a bucket (views and ad retrieval "
                                      "are drawn in proportion to a Pareto weight of tail index 1/zipf). Set so that "
                                      "a local day's views have the rank-frequency slope of ../shared/data's Taobao "
                                      "page views (0.36 over ranks 10-1000 of 98,361 views; GENERATIVE_MODEL.md §8)")
    campaign_fraction: float = Field(0.35, ge=0, le=1, description="P(listing has an active ad campaign)")
    catalog_age_days: int = Field(1_000, ge=1, description="initial listings were created up to this many days before the start")
    new_listings_per_day: float = Field(0.01, ge=0, description="new listings per day, as a fraction of the initial catalog")
    deactivate_per_day: float = Field(0.003, ge=0, le=1, description="fraction of active listings deactivated per day")


class ImageConfig(_Section):
    """Listing images: one PNG per listing showing color (fill), top-level taxonomy (shape) and material (texture)."""

    enabled: bool = Field(True, description="write images (bench may skip them)")
    size: int = Field(64, ge=16, description="image side in pixels")
    batch: int = Field(256, ge=1, description="listings rendered per vectorized batch")
    background_rgb: tuple[int, int, int] = Field((232, 228, 220), description="neutral background")
    background_noise: float = Field(5.0, ge=0, description="std of background pixel noise")
    color_jitter: float = Field(10.0, ge=0, description="std of the per-listing fill color jitter")
    pixel_noise: float = Field(3.0, ge=0, description="std of per-pixel noise on the shape")
    texture_strength: float = Field(0.22, ge=0, le=1, description="darkening of texture pixels (fraction)")
    shape_scale_min: float = Field(0.55, gt=0, description="min shape half-size as a fraction of the half image")
    shape_scale_max: float = Field(0.75, gt=0, description="max shape half-size as a fraction of the half image")
    center_jitter: float = Field(0.12, ge=0, description="max shape center offset as a fraction of the half image")
    png_compress_level: int = Field(1, ge=0, le=9, description="zlib level of the PNG encoder")
    threads: int = Field(2, ge=1, description="threads encoding PNGs (Pillow releases the GIL)")


class PopulationConfig(_Section):
    """Logged-in users and logged-out browsers with long-term tastes and power-law activity."""

    n_user_keys: int = Field(45_000, ge=1, description="user keys (users + logged-out browsers) in the population")
    logged_in_fraction: float = Field(0.7, ge=0, le=1, description="share of keys that are logged-in users")
    second_browser_prob: float = Field(0.3, ge=0, le=1, description="P(logged-in user has a second browser)")
    platform_weights: tuple[float, float, float] = Field((0.45, 0.35, 0.20), description="web, ios, android")
    activity_log_mean: float = Field(-0.8, description="mean of log(sessions per day)")
    activity_log_sigma: float = Field(1.2, ge=0, description="sigma of log(sessions per day): heavy tail")
    activity_max: float = Field(30.0, gt=0, description="cap on expected sessions per day")
    taste_taxonomies: int = Field(3, ge=1, description="favourite fine taxonomies per key")
    taste_colors: int = Field(2, ge=1, description="favourite colors per key")
    taste_alpha: float = Field(0.7, gt=0, description="Dirichlet concentration of the taste weights")


class SessionConfig(_Section):
    """One-hour-ish sessions: intent, drift, searches, refinements, views and the organic funnel."""

    diurnal_weights: tuple[float, ...] = Field(
        (3, 2, 1.5, 1, 1, 1, 1.5, 2, 3, 4, 5, 5, 5, 5, 5, 5, 6, 7, 8, 9, 9, 8, 6, 4),
        description="relative session starts per UTC hour (24 values)",
    )
    length_alpha: float = Field(1.15, gt=0, description="power-law exponent of session length (steps)")
    length_max: int = Field(250, ge=1, description="cap on steps per session")
    gap_median_s: float = Field(30.0, gt=0, description="median seconds between steps")
    gap_sigma: float = Field(1.0, ge=0, description="lognormal sigma of the gaps")
    gap_max_s: float = Field(1_200.0, gt=0, description="cap on a gap")
    action_gap_median_s: float = Field(8.0, gt=0, description="median seconds view -> favorite/cart -> purchase")
    intent_taste_taxonomy_prob: float = Field(0.85, ge=0, le=1, description="P(intent taxonomy from the key's taste)")
    intent_taste_color_prob: float = Field(0.75, ge=0, le=1, description="P(intent color from the key's taste)")
    intent_shop_prob: float = Field(0.45, ge=0, le=1, description="P(intent includes the key's shop for that taxonomy)")
    drift_prob: float = Field(0.06, ge=0, le=1, description="P(intent drifts at a step)")
    drift_taxonomy_prob: float = Field(0.6, ge=0, le=1, description="P(a drift changes the taxonomy) else the color")
    drift_same_mid_prob: float = Field(0.7, ge=0, le=1, description="P(taxonomy drift stays in the same mid level)")
    first_search_prob: float = Field(0.5, ge=0, le=1, description="P(session starts with a search)")
    search_prob: float = Field(0.2, ge=0, le=1, description="P(a later step is a search)")
    refine_prob: float = Field(0.65, ge=0, le=1, description="P(a follow-up search refines the previous query)")
    query_level_weights: tuple[float, float, float] = Field((0.55, 0.3, 0.15), description="new query names the fine / mid / top level")
    query_pseudo_word_prob: float = Field(0.3, ge=0, le=1, description="P(fine-level query uses a taxonomy word instead of the leaf name)")
    query_color_prob: float = Field(0.3, ge=0, le=1, description="P(new query names the intent color)")
    query_material_prob: float = Field(0.15, ge=0, le=1, description="P(new query names a material)")
    view_shop_prob: float = Field(0.45, ge=0, le=1, description="P(view comes from the intent shop, when there is one)")
    view_match_prob: float = Field(0.75, ge=0, le=1, description="P(view matches the intent taxonomy)")
    view_color_prob: float = Field(0.65, ge=0, le=1, description="P(matched view also has the intent color)")
    view_same_top_prob: float = Field(0.6, ge=0, le=1, description="P(unmatched view is in the intent's top level)")
    favorite_logit: tuple[float, float] = Field((-4.0, 0.8), description="intercept, slope on intent match")
    cart_logit: tuple[float, float] = Field((-4.8, 0.8), description="intercept, slope on intent match")
    purchase_after_cart_prob: float = Field(0.3, ge=0, le=1, description="P(organic purchase | cart add)")


class ClickModelConfig(_Section):
    """True click and post-click purchase probabilities (logistic), written to oracle/."""

    b0: float = Field(-7.2, description="click intercept")
    w_relevance: float = Field(1.6, description="click weight of query-listing relevance")
    w_position: float = Field(0.55, ge=0, description="click penalty per log(1+position)")
    w_quality: float = Field(0.35, description="click weight of latent quality")
    w_price: float = Field(-0.25, description="click weight of the taxonomy-relative log price (z)")
    w_session: float = Field(2.6, description="click weight of the logged session affinity")
    w_intent: float = Field(1.0, description="click weight of the latent intent match")
    platform_offsets: tuple[float, float, float] = Field((0.0, 0.15, -0.1), description="web, ios, android")
    c0: float = Field(-7.3, description="purchase intercept")
    u_relevance: float = Field(0.6, description="purchase weight of relevance")
    u_quality: float = Field(0.4, description="purchase weight of quality")
    u_price: float = Field(-0.5, description="purchase weight of the relative price (z)")
    u_session: float = Field(1.4, description="purchase weight of the session affinity")
    u_intent: float = Field(1.0, description="purchase weight of the intent match")
    relevance_taxonomy: tuple[tuple[float, float, float, float], ...] = Field(
        ((1.0, 0.45, 0.15, 0.0), (0.8, 0.8, 0.2, 0.0), (0.5, 0.5, 0.5, 0.0)),
        description="taxonomy relevance [query level fine/mid/top][deepest common level fine/mid/top/none]",
    )
    relevance_color: tuple[float, float] = Field((0.5, -0.3), description="query color matches / differs")
    relevance_material: tuple[float, float] = Field((0.3, -0.15), description="query material matches / differs")
    match_fine: float = Field(1.0, description="affinity/intent match weight: same fine taxonomy")
    match_top: float = Field(0.3, description="match weight: same top level")
    match_color: float = Field(0.8, description="match weight: same color")
    match_shop: float = Field(1.0, description="match weight: same shop")
    match_listing: float = Field(
        2.0, description="session-affinity match weight: the ad is the very listing of the logged event (coming back "
                         "to a listing engaged with; in ../shared/data's OTTO sample 29% of clicks revisit an aid "
                         "seen in the hour before). The one planted signal no content representation carries")
    recency_gamma: float = Field(0.75, gt=0, le=1, description="weight decay per step back in the session")
    action_weights: tuple[float, float, float, float] = Field((1.0, 2.0, 2.5, 1.5), description="view, favorite, cart_add, purchase")
    affinity_prior: float = Field(1.0, ge=0, description="pseudo-weight shrinking the affinity of short histories")
    buffer_size: int = Field(16, ge=1, description="most recent session listing events the affinity looks at")
    window_s: int = Field(3_600, gt=0, description="affinity look-back window (the sessionizer's window)")


class AdsConfig(_Section):
    """Sponsored-search requests: candidate retrieval, ranking, click and purchase timing."""

    request_prob: float = Field(0.6, ge=0, le=1, description="P(a search shows sponsored results)")
    k_min: int = Field(4, ge=1, description="min ads per request")
    k_max: int = Field(8, ge=1, description="max ads per request")
    retrieval_weights: tuple[float, float, float, float] = Field(
        (0.45, 0.25, 0.2, 0.1), description="candidate from the query's fine / mid / top group / anywhere"
    )
    retarget_prob: float = Field(
        0.25, ge=0, le=1, description="P(a request retrieves, in its first candidate slot, a campaign listing the "
                                      "session engaged with in the look-back window, when it has one: retargeting)")
    dedupe_rounds: int = Field(3, ge=0, description="resampling rounds for duplicate candidates")
    rank_quality_weight: float = Field(0.3, description="ad ranker weight of quality")
    rank_noise: float = Field(0.5, ge=0, description="Gumbel noise scale of the ad ranker")
    impression_delay_ms: int = Field(1_000, ge=0, description="impression ts = search ts + this")
    click_delay_s: tuple[float, float] = Field((2.0, 25.0), description="uniform range of impression -> click")
    purchase_delay_median_min: float = Field(14.0, gt=0, description="median minutes click -> purchase")
    purchase_delay_sigma: float = Field(1.0, ge=0, description="lognormal sigma of the purchase delay")
    purchase_delay_max_min: float = Field(360.0, gt=0, description="cap on the purchase delay (minutes)")
    cart_before_purchase: tuple[float, float] = Field((0.2, 0.8), description="cart add at this fraction of click -> purchase (uniform)")


class OutputConfig(_Section):
    """How partitions are written."""

    chunk_user_keys: int = Field(100_000, ge=1, description="user keys simulated per chunk (one part file each)")
    compression: str = Field("zstd", description="parquet compression codec")
    row_group_size: int = Field(1_000_000, ge=1_000, description="parquet rows per row group")


class MarketplaceConfig(_Section):
    """All knobs of the synthetic marketplace; defaults are the ``local`` preset."""

    catalog: CatalogConfig = CatalogConfig()
    images: ImageConfig = ImageConfig()
    population: PopulationConfig = PopulationConfig()
    sessions: SessionConfig = SessionConfig()
    click_model: ClickModelConfig = ClickModelConfig()
    ads: AdsConfig = AdsConfig()
    output: OutputConfig = OutputConfig()

    @field_validator("images", mode="before")
    @classmethod
    def _images_shorthand(cls, value: Any) -> Any:
        """Accept ``images: false`` / ``images: true`` as shorthand for ``images.enabled``."""
        if isinstance(value, bool):
            return {"enabled": value}
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> "MarketplaceConfig":
        """Cross-field checks with messages that say what to change."""
        if self.ads.k_max < self.ads.k_min:
            raise ValueError(f"ads.k_max ({self.ads.k_max}) must be >= ads.k_min ({self.ads.k_min})")
        if len(self.sessions.diurnal_weights) != 24:
            raise ValueError(f"sessions.diurnal_weights needs 24 values, got {len(self.sessions.diurnal_weights)}")
        if self.images.shape_scale_max < self.images.shape_scale_min:
            raise ValueError("images.shape_scale_max must be >= images.shape_scale_min")
        if self.catalog.n_shops > self.catalog.n_listings:
            raise ValueError("catalog.n_shops must not exceed catalog.n_listings")
        return self
