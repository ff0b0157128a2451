"""Vectorized simulation state: sessions, their affinity buffers and the event/impression logs.

All arrays are indexed by session number; sessions are sorted by length (descending), so the
sessions still running at step ``j`` are always a prefix ``[0, n_j)``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from components.marketplace.catalog import Catalog
from components.marketplace.config import ClickModelConfig, MarketplaceConfig
from components.marketplace.pools import DayPools
from components.marketplace.queries import Queries, QueryVocab
from schemas.raw import ACTIONS

VIEW, FAVORITE, CART_ADD, PURCHASE, SEARCH = (ACTIONS.index(a) for a in ("view", "favorite", "cart_add", "purchase", "search"))


class AffinityBuffer:
    """Ring buffer of each session's most recent logged listing events (listing, taxonomy, color, shop, action
    weight, ts).

    The session affinity of an ad is the recency-weighted match between the ad listing and these
    events inside the look-back window — the signal a sessionizer that sees the last hour recovers.
    """

    def __init__(self, n_sessions: int, size: int):
        self.size = size
        self.listing = np.full((n_sessions, size), -1, dtype=np.int64)
        self.fine = np.full((n_sessions, size), -1, dtype=np.int32)
        self.color = np.full((n_sessions, size), -1, dtype=np.int32)
        self.shop = np.full((n_sessions, size), -1, dtype=np.int32)
        self.weight = np.zeros((n_sessions, size), dtype=np.float64)
        self.ts = np.zeros((n_sessions, size), dtype=np.int64)
        self.count = np.zeros(n_sessions, dtype=np.int64)

    def insert(self, sessions: np.ndarray, pools: DayPools, listing: np.ndarray, weight: float, ts: np.ndarray) -> None:
        """Appends one event per given session (sessions must be distinct)."""
        slot = self.count[sessions] % self.size
        self.listing[sessions, slot] = listing
        self.fine[sessions, slot] = pools.fine[listing]
        self.color[sessions, slot] = pools.color[listing]
        self.shop[sessions, slot] = pools.shop[listing]
        self.weight[sessions, slot] = weight
        self.ts[sessions, slot] = ts
        self.count[sessions] += 1

    def recency_weights(self, cfg: ClickModelConfig, sessions: np.ndarray, t: np.ndarray) -> np.ndarray:
        """``w_action(e) * gamma**rank(e)`` (n, size) of the buffered events of ``sessions`` inside the look-back
        window before ``t`` (n,); 0 for empty slots and events outside it. Rank 0 = most recent."""
        slots = np.arange(self.size)
        count = self.count[sessions][:, None]
        rank = (count - 1 - slots) % self.size
        ts = self.ts[sessions]
        usable = (slots < count) & (ts >= (t - cfg.window_s * 1000)[:, None]) & (ts < t[:, None])
        return np.where(usable, self.weight[sessions] * cfg.recency_gamma ** rank, 0.0)

    def affinity(self, cfg: ClickModelConfig, pools: DayPools, sessions: np.ndarray, t: np.ndarray, listing: np.ndarray) -> np.ndarray:
        """Affinity (n, K) of ads ``listing`` (n, K) for ``sessions`` (n,) at times ``t`` (n,).

        ``sum_e w_action(e) * gamma**rank(e) * match(e, ad) / (prior + sum_e w_action(e) * gamma**rank(e))``
        over the buffered events ``e`` with ``t - window <= ts(e) < t``; rank 0 = most recent.
        """
        w = self.recency_weights(cfg, sessions, t)
        m = match(cfg, pools, self.fine[sessions][:, None, :], self.color[sessions][:, None, :],
                  self.shop[sessions][:, None, :], listing[:, :, None], self.listing[sessions][:, None, :])
        return (m * w[:, None, :]).sum(axis=2) / (cfg.affinity_prior + w.sum(axis=1))[:, None]


def match(cfg: ClickModelConfig, pools: DayPools, fine: np.ndarray, color: np.ndarray, shop: np.ndarray,
          listing: np.ndarray, seen: np.ndarray | None = None) -> np.ndarray:
    """Match of (fine, color, shop) with ``listing``; arguments broadcast, empty entries (fine < 0) match nothing.

    ``match_fine * [same fine] + match_top * [same top] + match_color * [same color] + match_shop * [same shop]``
    ``+ match_listing * [listing = seen]`` when the entries are logged events of listings ``seen`` (the
    session affinity; the latent intent has no listing).
    """
    m = (
        cfg.match_fine * (pools.fine[listing] == fine)
        + cfg.match_top * (pools.top[listing] == pools.fine_top[np.maximum(fine, 0)])
        + cfg.match_color * (pools.color[listing] == color)
        + cfg.match_shop * (pools.shop[listing] == shop)
    )
    if seen is not None:
        m = m + cfg.match_listing * (listing == seen)
    return np.where(fine >= 0, m, 0.0)


@dataclasses.dataclass
class Sessions:
    """Per-session state (sorted by length, descending)."""

    key: np.ndarray
    browser: np.ndarray
    platform: np.ndarray
    length: np.ndarray
    t: np.ndarray  # current time, epoch ms
    fine: np.ndarray  # intent: fine taxonomy
    color: np.ndarray  # intent: color
    shop: np.ndarray  # intent: shop (-1 = none)
    query: Queries  # last query (level -1 = none yet)
    query_stale: np.ndarray  # intent drifted since the last query
    buffer: AffinityBuffer

    @property
    def n(self) -> int:
        return len(self.key)


class Log:
    """Column parts appended step by step, concatenated once at the end."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name in names}

    def add(self, **columns: np.ndarray) -> None:
        n = len(next(iter(columns.values())))
        if n == 0:
            return
        for name in self.names:
            self.parts[name].append(np.broadcast_to(columns[name], (n,)) if np.ndim(columns[name]) == 0 else columns[name])

    def columns(self, dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
        return {
            name: (np.concatenate(parts).astype(dtypes[name], copy=False) if parts else np.empty(0, dtypes[name]))
            for name, parts in self.parts.items()
        }


EVENT_COLUMNS = {
    "session": np.int64, "ts": np.int64, "action": np.int8, "listing": np.int64, "order": np.int64,
    "q_color": np.int32, "q_material": np.int32, "q_noun": np.int32,
}
IMPRESSION_COLUMNS = {
    "session": np.int64, "request": np.int64, "ts": np.int64, "listing": np.int64, "position": np.int32,
    "q_color": np.int32, "q_material": np.int32, "q_noun": np.int32,
    "clicked": np.bool_, "click_ts": np.int64, "p_click": np.float64, "p_purchase": np.float64,
}


@dataclasses.dataclass
class SimContext:
    """Everything a simulation step needs."""

    config: MarketplaceConfig
    catalog: Catalog
    pools: DayPools
    vocab: QueryVocab
    rng: np.random.Generator
    sessions: Sessions
    events: Log = dataclasses.field(default_factory=lambda: Log(tuple(EVENT_COLUMNS)))
    impressions: Log = dataclasses.field(default_factory=lambda: Log(tuple(IMPRESSION_COLUMNS)))
    n_requests: int = 0

    def log_events(self, session: np.ndarray, ts: np.ndarray, action: int, listing: np.ndarray | None, order: int,
                   query: Queries | None = None) -> None:
        """Logs one event per row (listing -1 / empty query slots for events without them)."""
        n = len(session)
        none = np.full(n, -1, dtype=np.int32)
        self.events.add(
            session=session, ts=ts, action=np.full(n, action, dtype=np.int8),
            listing=listing if listing is not None else np.full(n, -1, dtype=np.int64),
            order=np.full(n, order, dtype=np.int64),
            q_color=query.color if query is not None else none,
            q_material=query.material if query is not None else none,
            q_noun=query.noun if query is not None else none,
        )
