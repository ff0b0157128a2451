"""A deliberately simple, obviously-correct reference of DESIGN §5, one impression at a time.

Slow on purpose: loops and sorted() only, no shared code with the kernel under test.
"""
from __future__ import annotations

ENTITY = {"listing": "listing_id", "shop": "shop_id", "taxonomy": "taxonomy_id", "query": "query"}


def key(row: dict) -> str:
    return row["user_id"] if row["user_id"] is not None else row["browser_id"]


def ms(ts) -> int:
    return int(ts.timestamp() * 1000)


def sequences(events: list[dict], impression: dict, pair, window_ms: int, max_len: int) -> list:
    entity, action = pair
    t = ms(impression["ts"])
    hits = [e for e in events
            if key(e) == key(impression) and e["action"] == action and t - window_ms <= ms(e["ts"]) < t]
    hits.sort(key=lambda e: (ms(e["ts"]), e["event_id"]), reverse=True)  # most recent first
    return [e[ENTITY[entity]] for e in hits[:max_len]]


def purchased(events: list[dict], impression: dict, attribution_ms: int) -> bool:
    if not impression["clicked"]:
        return False
    click = ms(impression["click_ts"] or impression["ts"])
    return any(e["action"] == "purchase" and key(e) == key(impression)
               and e["listing_id"] == impression["listing_id"] and click <= ms(e["ts"]) < click + attribution_ms
               for e in events)
