"""The engineered point-in-time features of an example (DESIGN §5): names, groups, formulas.

Four groups, each a set of float32 columns of ``derived/examples`` beside the sequences:

- ``request`` (the candidates of the impression's request):
  ``req_candidates`` = n, the number of impressions of the request;
  ``req_price_ratio`` = price / mean price of the request's candidates (1 when that mean is 0);
  ``req_price_rank`` = #(candidates with a strictly lower price) / max(n - 1, 1), in [0, 1].
- ``relevance`` (normalized query tokens Q against the listing's catalog text):
  ``rel_title`` / ``rel_tags`` / ``rel_taxonomy`` = |Q ∩ tokens(field)| / |Q| (0 when Q is empty or
  the listing has no catalog row); ``rel_all`` = 1 when every token of Q is in the union of the
  three; ``query_tokens`` = |Q|. Tokens: lower-cased, split on anything but letters and digits.
- ``prior`` (impressions of the ``prior_days`` days strictly before the example's day):
  ``prior_<k>_imps`` = impressions of the key, ``prior_<k>_ctr`` = (clicks + α p0) / (imps + α),
  α = ``prior_strength``, p0 = the click rate of those days, for the keys ``listing``
  (listing_id), ``shop`` (shop_id) and ``query_listing`` (query, listing_id); ``prior_days`` = how many
  earlier days were found (0: no priors for this day; everything then holds 0).
- ``session`` (the user key's events with t - window <= ts < t, compared by raw id, so they hold
  for listings outside every vocabulary): for the target's listing, shop and taxonomy and each
  listing action a, ``tgt_<entity>_<a>_count`` = events of a on that id, ``tgt_<entity>_<a>_secs`` =
  seconds since the most recent one (the window's length when there is none);
  ``tgt_listing_is_last_view`` = 1 when the target is the most recently viewed listing.
"""
from __future__ import annotations

import pyarrow as pa

from schemas.raw import LISTING_ACTIONS

TARGET_ENTITIES = ("listing", "shop", "taxonomy")
PRIOR_KEYS = {"listing": ("listing_id",), "shop": ("shop_id",), "query_listing": ("query", "listing_id")}

REQUEST_FEATURES = ("req_candidates", "req_price_ratio", "req_price_rank")
RELEVANCE_FEATURES = ("rel_title", "rel_tags", "rel_taxonomy", "rel_all", "query_tokens")
PRIOR_FEATURES = tuple(f"prior_{k}_{s}" for k in PRIOR_KEYS for s in ("imps", "ctr")) + ("prior_days",)
SESSION_FEATURES = tuple(f"tgt_{e}_{a}_{s}" for e in TARGET_ENTITIES for a in LISTING_ACTIONS
                         for s in ("count", "secs")) + ("tgt_listing_is_last_view",)

FEATURE_GROUPS = {"request": REQUEST_FEATURES, "relevance": RELEVANCE_FEATURES,
                  "prior": PRIOR_FEATURES, "session": SESSION_FEATURES}
ENGINEERED_FEATURES = tuple(f for group in FEATURE_GROUPS.values() for f in group)
MIN_RATIO = 1e-3  # the price ratio's floor before its log (a free listing among priced ones)
NONPERSONALIZED_GROUPS = ("request", "relevance", "prior")
"""The groups a model without the user's session may read (the session group is personalization)."""


def scaling(name: str) -> str:
    """How a model input is made of a feature before standardization: ``log1p`` for counts,
    ``hours`` for seconds, ``log`` for the price ratio, ``none`` otherwise."""
    if name.endswith(("_count", "_imps")) or name in ("req_candidates", "query_tokens"):
        return "log1p"
    if name.endswith("_secs"):
        return "hours"
    if name == "req_price_ratio":
        return "log"
    return "none"


def group_of(name: str) -> str:
    """The :data:`FEATURE_GROUPS` key of an engineered feature."""
    return next(group for group, names in FEATURE_GROUPS.items() if name in names)


def feature_fields() -> list[pa.Field]:
    """The engineered columns of ``derived/examples``, in :data:`ENGINEERED_FEATURES` order."""
    return [pa.field(name, pa.float32(), nullable=False) for name in ENGINEERED_FEATURES]
