"""Sponsored search: candidate retrieval, ranking, true click/purchase probabilities, outcomes.

For each request (a search that shows ads) K ~ U{k_min..k_max} campaign listings are
retrieved, mostly from the query's taxonomy group, sometimes with a campaign listing the session
engaged with (retargeting), de-duplicated and ranked by relevance,
quality and noise into positions 0..K-1. Each impression is clicked with the true p_click;
a click logs a ``view`` a few seconds later, and a purchase (preceded by a cart add) follows
with the true post-click p_purchase after minutes to hours. Formulas: GENERATIVE_MODEL.md.
"""
from __future__ import annotations

import numpy as np

from components.marketplace.queries import Queries, relevance
from components.marketplace.state import CART_ADD, PURCHASE, VIEW, SimContext, match
from components.marketplace.util import categorical, sample_chain, sigmoid

ANYWHERE = 3


def retrieve(ctx: SimContext, q: Queries, k_max: int) -> np.ndarray:
    """(n, k_max) candidate campaign listings: from the query's fine / mid / top group or anywhere (-1 = none)."""
    rng, p = ctx.rng, ctx.pools
    n = len(q.level)
    mode = rng.choice(4, size=(n, k_max), p=np.asarray(ctx.config.ads.retrieval_weights) / sum(ctx.config.ads.retrieval_weights))
    level = np.where(mode == ANYWHERE, ANYWHERE, np.maximum(mode, q.level[:, None])).reshape(-1)
    fine = np.repeat(q.fine, k_max)
    stages = [
        (p.ads_fine, np.where(level == 0, fine, -1)),
        (p.ads_mid, np.where(level <= 1, p.fine_mid[fine], -1)),
        (p.ads_top, np.where(level <= 2, p.fine_top[fine], -1)),
        (p.ads_anywhere, np.zeros(n * k_max, dtype=np.int64)),
    ]
    return sample_chain(rng, stages).reshape(n, k_max)


def retarget(ctx: SimContext, sess: np.ndarray, t: np.ndarray, cand: np.ndarray) -> None:
    """Retargeting: w.p. ``ads.retarget_prob`` a request's first candidate becomes a campaign listing of the
    session's logged events inside the look-back window before ``t``, drawn by the affinity's recency weights
    (recent and deeper engagement first); rows without such an event keep their candidate."""
    cm, rng, s, p = ctx.config.click_model, ctx.rng, ctx.sessions, ctx.pools
    seen = s.buffer.listing[sess]
    w = np.where((seen >= 0) & p.advertised[np.maximum(seen, 0)], s.buffer.recency_weights(cm, sess, t), 0.0)
    rows = np.flatnonzero((w.sum(axis=1) > 0) & (rng.random(len(sess)) < ctx.config.ads.retarget_prob))
    cand[rows, 0] = seen[rows, categorical(rng, w[rows])]


def duplicates(cand: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Cells repeating an earlier valid candidate of the same row."""
    k = cand.shape[1]
    x = np.where(valid & (cand >= 0), cand, -1 - np.arange(k)[None, :])
    order = np.argsort(x, axis=1, kind="stable")
    xs = np.take_along_axis(x, order, axis=1)
    dup_sorted = np.zeros_like(valid)
    dup_sorted[:, 1:] = xs[:, 1:] == xs[:, :-1]
    dup = np.zeros_like(valid)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return dup


def dedupe(ctx: SimContext, cand: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Resamples duplicate candidates from all campaigns a few rounds; returns the mask of usable cells."""
    for _ in range(ctx.config.ads.dedupe_rounds):
        dup = duplicates(cand, valid)
        if not dup.any():
            break
        cand[dup] = ctx.pools.ads_anywhere.sample(np.zeros(int(dup.sum()), dtype=np.int64), ctx.rng.random(int(dup.sum())))
    return valid & (cand >= 0) & ~duplicates(cand, valid)


def click_logits(ctx: SimContext, rel: np.ndarray, position: np.ndarray, listing: np.ndarray, aff: np.ndarray,
                 intent: np.ndarray, platform: np.ndarray) -> np.ndarray:
    """``b0 + w_rel*rel - w_pos*log(1+pos) + w_q*quality + w_price*price_z + w_sess*aff + w_intent*intent + platform``."""
    cm, p = ctx.config.click_model, ctx.pools
    return (cm.b0 + cm.w_relevance * rel - cm.w_position * np.log1p(position) + cm.w_quality * p.quality[listing]
            + cm.w_price * p.price_z[listing] + cm.w_session * aff + cm.w_intent * intent
            + np.asarray(cm.platform_offsets)[platform][:, None])


def purchase_logits(ctx: SimContext, rel: np.ndarray, listing: np.ndarray, aff: np.ndarray, intent: np.ndarray) -> np.ndarray:
    """``c0 + u_rel*rel + u_q*quality + u_price*price_z + u_sess*aff + u_intent*intent`` (post-click)."""
    cm, p = ctx.config.click_model, ctx.pools
    return (cm.c0 + cm.u_relevance * rel + cm.u_quality * p.quality[listing] + cm.u_price * p.price_z[listing]
            + cm.u_session * aff + cm.u_intent * intent)


def serve_requests(ctx: SimContext, sess: np.ndarray, t_search: np.ndarray, order: int) -> np.ndarray:
    """Sponsored requests of sessions ``sess`` (distinct) searching at ``t_search``; logs impressions and
    ad-driven events and returns each session's last time (its latest click, else the search time)."""
    cfg, cm, rng, s, p = ctx.config.ads, ctx.config.click_model, ctx.rng, ctx.sessions, ctx.pools
    n, k_max = len(sess), cfg.k_max
    if n == 0:
        return t_search
    q = s.query.take(sess)
    valid = np.arange(k_max)[None, :] < rng.integers(cfg.k_min, k_max + 1, n)[:, None]
    cand = retrieve(ctx, q, k_max)
    retarget(ctx, sess, t_search, cand)
    valid = dedupe(ctx, cand, valid)
    cand = np.where(valid, cand, 0)
    qcol = Queries(*(a[:, None] for a in (q.level, q.fine, q.color, q.material, q.noun)))
    rel = relevance(cm, ctx.catalog, qcol, cand)
    score = rel + cfg.rank_quality_weight * p.quality[cand] + cfg.rank_noise * rng.gumbel(size=(n, k_max))
    rank = np.argsort(np.where(valid, -score, np.inf), axis=1, kind="stable")
    cand, valid, rel = (np.take_along_axis(a, rank, axis=1) for a in (cand, valid, rel))
    position = np.broadcast_to(np.arange(k_max), (n, k_max))
    t_imp = t_search + cfg.impression_delay_ms
    aff = s.buffer.affinity(cm, p, sess, t_imp, cand)
    intent = match(cm, p, s.fine[sess][:, None], s.color[sess][:, None], s.shop[sess][:, None], cand)
    p_click = sigmoid(click_logits(ctx, rel, position, cand, aff, intent, s.platform[sess]))
    p_buy = sigmoid(purchase_logits(ctx, rel, cand, aff, intent))
    clicked = valid & (rng.random((n, k_max)) < p_click)
    click_ts = t_imp[:, None] + (rng.uniform(*cfg.click_delay_s, size=(n, k_max)) * 1000).astype(np.int64)
    bought = clicked & (rng.random((n, k_max)) < p_buy)
    delay_min = np.minimum(rng.lognormal(np.log(cfg.purchase_delay_median_min), cfg.purchase_delay_sigma, (n, k_max)),
                           cfg.purchase_delay_max_min)
    buy_ts = click_ts + (delay_min * 60_000).astype(np.int64)
    cart_ts = click_ts + ((buy_ts - click_ts) * rng.uniform(*cfg.cart_before_purchase, (n, k_max))).astype(np.int64)

    request = ctx.n_requests + np.arange(n)
    ctx.n_requests += n
    rows, cols = np.nonzero(valid)
    ctx.impressions.add(
        session=sess[rows], request=request[rows], ts=t_imp[rows], listing=cand[rows, cols], position=cols,
        q_color=q.color[rows], q_material=q.material[rows], q_noun=q.noun[rows],
        clicked=clicked[rows, cols], click_ts=np.where(clicked[rows, cols], click_ts[rows, cols], -1),
        p_click=p_click[rows, cols], p_purchase=p_buy[rows, cols],
    )
    for k in range(k_max):
        c, b = clicked[:, k], bought[:, k]
        ctx.log_events(sess[c], click_ts[c, k], VIEW, cand[c, k], order + 3 * k)
        s.buffer.insert(sess[c], p, cand[c, k], cm.action_weights[0], click_ts[c, k])
        ctx.log_events(sess[b], cart_ts[b, k], CART_ADD, cand[b, k], order + 3 * k + 1)
        ctx.log_events(sess[b], buy_ts[b, k], PURCHASE, cand[b, k], order + 3 * k + 2)
    return np.maximum(t_search, np.where(clicked, click_ts, t_search[:, None]).max(axis=1))
