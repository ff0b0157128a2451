"""Session simulation, vectorized across all sessions of a chunk of user keys.

Each key starts Poisson(activity) sessions a day at diurnal start times. A session has a
power-law number of steps and an intent (fine taxonomy, color, maybe shop) drawn from the
key's taste; the intent drifts with a small probability per step. A step is a search (new
query or a refinement of the previous one; sponsored results with some probability) or a
view of a listing that mostly matches the intent, followed by the organic funnel
(favorite, cart add, purchase). Steps run for all live sessions at once: sessions are
sorted by length so the live ones are always a prefix of the arrays.
"""
from __future__ import annotations

import numpy as np

from components.marketplace import ads
from components.marketplace.catalog import N_COLORS, Catalog
from components.marketplace.config import MarketplaceConfig, SessionConfig
from components.marketplace.pools import DayPools
from components.marketplace.population import BROWSERS_PER_KEY, Population
from components.marketplace.queries import Queries, QueryVocab, new_queries, refine_queries
from components.marketplace.state import (
    CART_ADD, FAVORITE, PURCHASE, SEARCH, VIEW, AffinityBuffer, Sessions, SimContext, match,
)
from components.marketplace.util import categorical, sample_chain, sigmoid

MS_PER_HOUR = 3_600_000
# event order within a step (ties in ts): main action, favorite, cart add, purchase, then ad events
ORDER_MAIN, ORDER_FAVORITE, ORDER_CART, ORDER_PURCHASE, ORDER_ADS = 0, 1, 2, 3, 4
ORDER_STRIDE = 1024  # > ORDER_ADS + 3 * ads.k_max


def power_law_lengths(rng: np.random.Generator, n: int, alpha: float, maximum: int) -> np.ndarray:
    """Discrete power law on 1..maximum with ``P(L >= k) = k ** -alpha``."""
    u = 1.0 - rng.random(n)  # (0, 1]
    return np.minimum(np.floor(u ** (-1.0 / alpha)), maximum).astype(np.int64)


def gaps_ms(rng: np.random.Generator, n: int, median_s: float, sigma: float, max_s: float) -> np.ndarray:
    """Lognormal time gaps in ms, at least one second."""
    g = rng.lognormal(np.log(median_s), sigma, n)
    return (np.clip(g, 1.0, max_s) * 1000).astype(np.int64)


def start_sessions(rng: np.random.Generator, config: MarketplaceConfig, catalog: Catalog, pop: Population,
                   keys: np.ndarray, day_start: int) -> Sessions:
    """The day's sessions of ``keys``: browser, platform, start time, length and initial intent."""
    cfg = config.sessions
    per_key = rng.poisson(pop.activity[keys])
    key = np.repeat(keys, per_key)
    n = len(key)
    slot = (rng.random(n) * pop.n_browsers[key]).astype(np.int64)
    hour = categorical(rng, np.asarray(cfg.diurnal_weights), n)
    start = day_start + hour * MS_PER_HOUR + rng.integers(0, MS_PER_HOUR, n)
    length = power_law_lengths(rng, n, cfg.length_alpha, cfg.length_max)
    fine, color, shop = initial_intent(rng, cfg, catalog, pop, key)
    order = np.argsort(-length, kind="stable")
    return Sessions(
        key=key[order],
        browser=(key * BROWSERS_PER_KEY + slot)[order],
        platform=pop.browser_platform[key, slot][order].astype(np.int64),
        length=length[order],
        t=start[order],
        fine=fine[order],
        color=color[order],
        shop=shop[order],
        query=Queries.empty(n),
        query_stale=np.zeros(n, dtype=bool),
        buffer=AffinityBuffer(n, config.click_model.buffer_size),
    )


def initial_intent(rng: np.random.Generator, cfg: SessionConfig, catalog: Catalog, pop: Population,
                   key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intent (fine, color, shop) from the key's taste; shop only for taste taxonomies (-1 = none)."""
    n = len(key)
    tslot = categorical(rng, pop.taste_taxonomy_w[key])
    from_taste = rng.random(n) < cfg.intent_taste_taxonomy_prob
    fine = np.where(from_taste, pop.taste_taxonomy[key, tslot], categorical(rng, catalog.taxonomy_popularity, n))
    cslot = categorical(rng, pop.taste_color_w[key])
    color = np.where(rng.random(n) < cfg.intent_taste_color_prob, pop.taste_color[key, cslot], rng.integers(0, N_COLORS, n))
    shop = np.where(from_taste & (rng.random(n) < cfg.intent_shop_prob), pop.taste_shop[key, tslot], -1)
    return fine.astype(np.int64), color.astype(np.int64), shop.astype(np.int64)


def drift(ctx: SimContext, idx: np.ndarray, pop: Population) -> None:
    """Intent drift of sessions ``idx``: a related taxonomy (same mid level, or another taste) or a new color."""
    cfg, rng, s, pools = ctx.config.sessions, ctx.rng, ctx.sessions, ctx.pools
    n = len(idx)
    change_tax = rng.random(n) < cfg.drift_taxonomy_prob
    same_mid = pools.fines_by_mid.sample(pools.fine_mid[s.fine[idx]], rng.random(n))
    key = s.key[idx]
    tslot = categorical(rng, pop.taste_taxonomy_w[key])
    use_mid = (rng.random(n) < cfg.drift_same_mid_prob) & (same_mid >= 0)
    new_fine = np.where(use_mid, same_mid, pop.taste_taxonomy[key, tslot])
    new_shop = np.where(~use_mid & (rng.random(n) < cfg.intent_shop_prob), pop.taste_shop[key, tslot], -1)
    s.fine[idx] = np.where(change_tax, new_fine, s.fine[idx])
    s.shop[idx] = np.where(change_tax, new_shop, s.shop[idx])
    s.color[idx] = np.where(change_tax, s.color[idx], rng.integers(0, N_COLORS, n))
    s.query_stale[idx] = True


def choose_views(ctx: SimContext, idx: np.ndarray) -> np.ndarray:
    """Listings viewed by sessions ``idx``: from the intent shop, the intent taxonomy (and color), or noise."""
    cfg, rng, s, p = ctx.config.sessions, ctx.rng, ctx.sessions, ctx.pools
    n = len(idx)
    fine, color, shop = s.fine[idx], s.color[idx], s.shop[idx]
    from_shop = (shop >= 0) & (rng.random(n) < cfg.view_shop_prob)
    matched = from_shop | (rng.random(n) < cfg.view_match_prob)
    with_color = matched & ~from_shop & (rng.random(n) < cfg.view_color_prob)
    same_top = ~matched & (rng.random(n) < cfg.view_same_top_prob)
    n_fine = p.n_fine
    stages = [
        (p.by_shop_fine, np.where(from_shop, shop * n_fine + fine, -1)),
        (p.by_shop, np.where(from_shop, shop, -1)),
        (p.by_fine_color, np.where(with_color, fine * N_COLORS + color, -1)),
        (p.by_fine, np.where(matched, fine, -1)),
        (p.by_mid, np.where(matched, p.fine_mid[fine], -1)),
        (p.by_top, np.where(matched | same_top, p.fine_top[fine], -1)),
        (p.anywhere, np.zeros(n, dtype=np.int64)),
    ]
    return sample_chain(rng, stages)


def view_step(ctx: SimContext, idx: np.ndarray, step: int) -> np.ndarray:
    """Views plus the organic funnel for sessions ``idx``; returns the time of each session's last event."""
    cfg, cm, rng, s, p = ctx.config.sessions, ctx.config.click_model, ctx.rng, ctx.sessions, ctx.pools
    n, base = len(idx), step * ORDER_STRIDE
    listing = choose_views(ctx, idx)
    t = s.t[idx]
    ctx.log_events(idx, t, VIEW, listing, base + ORDER_MAIN)
    s.buffer.insert(idx, p, listing, cm.action_weights[0], t)
    m = match(cm, p, s.fine[idx], s.color[idx], s.shop[idx], listing)
    fav = rng.random(n) < sigmoid(cfg.favorite_logit[0] + cfg.favorite_logit[1] * m)
    cart = rng.random(n) < sigmoid(cfg.cart_logit[0] + cfg.cart_logit[1] * m)
    buy = cart & (rng.random(n) < cfg.purchase_after_cart_prob)

    def gap() -> np.ndarray:
        return gaps_ms(rng, n, cfg.action_gap_median_s, cfg.gap_sigma, cfg.gap_max_s)

    t_fav = t + gap()
    t_cart = np.where(fav, t_fav, t) + gap()
    t_buy = t_cart + gap()
    for mask, ts, action, weight, order in (
        (fav, t_fav, FAVORITE, cm.action_weights[1], ORDER_FAVORITE),
        (cart, t_cart, CART_ADD, cm.action_weights[2], ORDER_CART),
        (buy, t_buy, PURCHASE, cm.action_weights[3], ORDER_PURCHASE),
    ):
        ctx.log_events(idx[mask], ts[mask], action, listing[mask], base + order)
        s.buffer.insert(idx[mask], p, listing[mask], weight, ts[mask])
    return np.select([buy, cart, fav], [t_buy, t_cart, t_fav], t)


def search_step(ctx: SimContext, idx: np.ndarray, step: int) -> np.ndarray:
    """Searches (new queries or refinements) and sponsored requests; returns each session's last event time."""
    cfg, rng, s = ctx.config.sessions, ctx.rng, ctx.sessions
    n = len(idx)
    fresh = (s.query.level[idx] < 0) | s.query_stale[idx] | (rng.random(n) >= cfg.refine_prob)
    q = Queries.empty(n)
    f, r = np.flatnonzero(fresh), np.flatnonzero(~fresh)
    q.assign(f, new_queries(rng, cfg, ctx.vocab, ctx.catalog, s.fine[idx[f]], s.color[idx[f]]))
    q.assign(r, refine_queries(rng, cfg, ctx.vocab, ctx.catalog, s.query.take(idx[r]), s.color[idx[r]]))
    s.query.assign(idx, q)
    s.query_stale[idx] = False
    t = s.t[idx]
    ctx.log_events(idx, t, SEARCH, None, step * ORDER_STRIDE + ORDER_MAIN, q)
    t_last = t.copy()
    shown = rng.random(n) < ctx.config.ads.request_prob
    t_last[shown] = ads.serve_requests(ctx, idx[shown], t[shown], step * ORDER_STRIDE + ORDER_ADS)
    return t_last


def simulate(config: MarketplaceConfig, catalog: Catalog, pools: DayPools, vocab: QueryVocab, pop: Population,
             keys: np.ndarray, day_start: int, rng: np.random.Generator) -> SimContext:
    """Runs all sessions of ``keys`` starting on the day ``day_start``; the logs are in the returned context."""
    cfg = config.sessions
    sessions = start_sessions(rng, config, catalog, pop, keys, day_start)
    ctx = SimContext(config=config, catalog=catalog, pools=pools, vocab=vocab, rng=rng, sessions=sessions)
    lengths_desc = sessions.length
    max_len = int(lengths_desc[0]) if sessions.n else 0
    for step in range(max_len):
        n = int(np.searchsorted(-lengths_desc, -step, side="left"))  # sessions with length > step
        live = np.arange(n)
        if step > 0:
            drifting = live[rng.random(n) < cfg.drift_prob]
            drift(ctx, drifting, pop)
        search = rng.random(n) < (cfg.first_search_prob if step == 0 else cfg.search_prob)
        t_last = np.empty(n, dtype=np.int64)
        t_last[search] = search_step(ctx, live[search], step)
        t_last[~search] = view_step(ctx, live[~search], step)
        sessions.t[:n] = t_last + gaps_ms(rng, n, cfg.gap_median_s, cfg.gap_sigma, cfg.gap_max_s)
    return ctx

