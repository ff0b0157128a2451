"""An obviously-correct reference of the engineered features (``schemas.features``), one row at a time.

Loops, sets and ``re`` only; no code shared with ``components.sessionize.features``.
"""
from __future__ import annotations

import re

from tests.reference_sessionize import key, ms

ENTITY = {"listing": "listing_id", "shop": "shop_id", "taxonomy": "taxonomy_id"}
ACTIONS = ("view", "favorite", "cart_add", "purchase")


def tokens(text) -> set[str]:
    if text is None:
        return set()
    if isinstance(text, list):
        text = " ".join(text)
    return {t for t in re.split(r"[^\w]|_", text.lower()) if t}


def request_context(impressions: list[dict], row: dict) -> dict:
    same = [i for i in impressions if i["request_id"] == row["request_id"]]
    mean = sum(i["price"] for i in same) / len(same)
    lower = sum(1 for i in same if i["price"] < row["price"])
    return {"req_candidates": len(same), "req_price_ratio": row["price"] / mean if mean > 0 else 1.0,
            "req_price_rank": lower / max(len(same) - 1, 1)}


def relevance(catalog: dict[str, dict], row: dict) -> dict:
    q = tokens(row["query"])
    listing = catalog.get(row["listing_id"])
    fields = {name: tokens(listing[col]) if listing else set()
              for name, col in (("rel_title", "title"), ("rel_tags", "tags"), ("rel_taxonomy", "taxonomy_path"))}
    out = {name: len(q & f) / len(q) if q else 0.0 for name, f in fields.items()}
    out["rel_all"] = float(bool(q) and q <= set().union(*fields.values()))
    out["query_tokens"] = len(q)
    return out


def target_session(events: list[dict], row: dict, window_ms: int) -> dict:
    t = ms(row["ts"])
    recent = [e for e in events if key(e) == key(row) and t - window_ms <= ms(e["ts"]) < t]
    out = {}
    for entity, column in ENTITY.items():
        for action in ACTIONS:
            hits = [ms(e["ts"]) for e in recent if e["action"] == action and e[column] == row[column]]
            out[f"tgt_{entity}_{action}_count"] = len(hits)
            out[f"tgt_{entity}_{action}_secs"] = (t - max(hits)) / 1000 if hits else window_ms / 1000
    views = [e for e in recent if e["action"] == "view"]
    latest = max((ms(e["ts"]) for e in views), default=None)
    out["tgt_listing_is_last_view"] = float(any(ms(e["ts"]) == latest and e["listing_id"] == row["listing_id"]
                                                for e in views))
    return out


def priors(earlier: list[dict], row: dict, strength: float, days: int) -> dict:
    p0 = sum(i["clicked"] for i in earlier) / len(earlier) if earlier else 0.0
    out = {}
    for kind, cols in (("listing", ("listing_id",)), ("shop", ("shop_id",)), ("query_listing", ("query", "listing_id"))):
        same = [i for i in earlier if all(i[c] == row[c] for c in cols)]
        clicks = sum(i["clicked"] for i in same)
        out[f"prior_{kind}_imps"] = len(same)
        out[f"prior_{kind}_ctr"] = (clicks + strength * p0) / (len(same) + strength) if days else 0.0
    out["prior_days"] = days
    return out
