"""A deliberately simple reference for the corpora semantics: one Python loop per user key.

Sessions: a key's events sorted by (ts, event_id); a session opens at an event and holds
every later event of the key with ts < open + window. Pairs: a session's first N
distinct viewed listings, every unordered pair once, as (smaller, larger).
"""
from __future__ import annotations

import collections
import itertools


def key_of(e):
    return e["user_id"] if e["user_id"] is not None else e["browser_id"]


def sessions(events, window_ms):
    by_key = collections.defaultdict(list)
    for e in events:
        if e["action"] in ("view", "purchase"):
            by_key[key_of(e)].append(e)
    out = []
    for key, evs in by_key.items():
        evs.sort(key=lambda e: (e["ts"], e["event_id"]))
        current = None
        for e in evs:
            ts = int(e["ts"].timestamp() * 1000)
            if current is None or ts >= current["open"] + window_ms:
                current = {"user_key": key, "open": ts, "start_ts": e["ts"], "listings": [], "purchased": False}
                out.append(current)
            if e["action"] == "view":
                current["listings"].append(e["listing_id"])
            else:
                current["purchased"] = True
    return [{k: s[k] for k in ("user_key", "start_ts", "listings", "purchased")} for s in out if s["listings"]]


def pairs(sessions, max_listings):
    counts = collections.Counter()
    for s in sessions:
        distinct = list(dict.fromkeys(s["listings"]))[:max_listings]
        for a, b in itertools.combinations(distinct, 2):
            counts[(min(a, b), max(a, b))] += 1
    return counts
