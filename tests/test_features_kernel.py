"""The engineered features (``components.sessionize.features``) against a plain-Python reference."""
from __future__ import annotations

import math

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from components.sessionize import features
from schemas.raw import EVENTS_SCHEMA, IMPRESSIONS_SCHEMA
from tests import reference_features as ref
from tests.rawdata import loose
from tests.test_sessionize_kernel import ACTIONS, SECONDS, USERS, WINDOW_MS, event, impression

LISTINGS = ["l1", "l2", "l3"]
CATALOG = {
    "l1": {"listing_id": "l1", "title": "Blue Ceramic Lamp", "tags": ["lamp", "home décor"],
           "taxonomy_path": "home_and_living.lighting.lamps"},
    "l2": {"listing_id": "l2", "title": "wool scarf, red", "tags": [], "taxonomy_path": "accessories.scarves"},
    "l3": {"listing_id": "l3", "title": None, "tags": None, "taxonomy_path": "art.prints"},
}
QUERIES = st.sampled_from(["blue lamp", "Lamp", "red scarf!", "", "home décor lamps", "art", "zzz"])


@st.composite
def logs(draw):
    events = []
    for i in range(draw(st.integers(0, 30))):
        user, browser = draw(USERS)
        events.append(event(i, draw(SECONDS) + 3600, draw(ACTIONS), user, browser,
                            listing=draw(st.sampled_from(LISTINGS)), shop=draw(st.sampled_from(["s1", "s2"])),
                            tax=draw(st.sampled_from(["t1", "t2"]))))
    impressions = []
    for i in range(draw(st.integers(1, 10))):
        user, browser = draw(USERS)
        row = impression(i, draw(SECONDS) + 3600, user, browser, listing=draw(st.sampled_from(LISTINGS + ["l9"])))
        row.update(request_id=f"r{draw(st.integers(0, 3))}", price=draw(st.sampled_from([0.0, 1.0, 2.5, 2.5, 10.0])),
                   query=draw(QUERIES), shop_id=draw(st.sampled_from(["s1", "s2"])),
                   taxonomy_id=draw(st.sampled_from(["t1", "t2"])), clicked=draw(st.booleans()))
        impressions.append(row)
    return events, impressions


def close(got: dict, want: dict, rows: int):
    for name, values in got.items():
        got_list = values.to_pylist()
        assert len(got_list) == rows, name
        for g, w in zip(got_list, [r[name] for r in want]):
            assert math.isclose(g, w, rel_tol=1e-6, abs_tol=1e-6), (name, g, w)


def tables(events, impressions):
    return (pa.Table.from_pylist(events, schema=loose(EVENTS_SCHEMA)),
            pa.Table.from_pylist(impressions, schema=loose(IMPRESSIONS_SCHEMA)))


@settings(max_examples=150, deadline=None)
@given(logs())
def test_request_context_and_session_identity_equal_the_reference(log):
    events, impressions = log
    ev, imp = tables(events, impressions)
    close(features.request_context(imp), [ref.request_context(impressions, r) for r in impressions], len(impressions))
    close(features.target_session(ev, imp, WINDOW_MS), [ref.target_session(events, r, WINDOW_MS) for r in impressions],
          len(impressions))


@settings(max_examples=100, deadline=None)
@given(logs())
def test_relevance_equals_the_reference(log):
    _, impressions = log
    _, imp = tables([], impressions)
    catalog = pa.Table.from_pylist(list(CATALOG.values()))
    close(features.relevance(imp, catalog), [ref.relevance(CATALOG, r) for r in impressions], len(impressions))
    # No catalog (an events-and-impressions log): no overlap, but the query is still counted.
    none = features.relevance(imp, None)
    assert set(none["rel_title"].to_pylist()) == {0.0}
    assert none["query_tokens"].to_pylist() == [len(ref.tokens(r["query"])) for r in impressions]


@settings(max_examples=100, deadline=None)
@given(logs(), logs(), st.integers(1, 3), st.sampled_from([1.0, 20.0]))
def test_priors_merged_from_parts_equal_the_reference(log, earlier_log, split, strength):
    """Counts merged from several files (as the Beam job does) equal counts of the whole earlier table."""
    _, impressions = log
    _, earlier = earlier_log
    _, imp = tables([], impressions)
    parts = [earlier[i::split] for i in range(split)]
    partial = [features.prior_counts(tables([], p)[1]) for p in parts if p]
    counts = {kind: features.merge_prior_counts([c[kind] for c in partial], kind) for kind in partial[0]}
    close(features.priors(imp, counts, 2, strength), [ref.priors(earlier, r, strength, 2) for r in impressions],
          len(impressions))
    off = features.priors(imp, {}, 0, strength)
    assert set(off["prior_listing_ctr"].to_pylist()) == {0.0} and set(off["prior_days"].to_pylist()) == {0.0}


def test_window_edges_and_the_ad_clicks_own_view_are_not_seen():
    at = 3600
    events = [event(1, at - 3600, "view", listing="l1"),   # exactly t - window: counted
              event(2, at - 3601, "view", listing="l1"),   # too old
              event(3, at, "view", listing="l1"),          # at t: not seen
              event(4, at + 5, "view", listing="l1"),      # the ad click's own view: not seen
              event(5, at - 100, "view", listing="l2")]
    ev, imp = tables(events, [impression(1, at, listing="l1", clicked=True, click_after=5)])
    got = features.target_session(ev, imp, WINDOW_MS)
    assert got["tgt_listing_view_count"].to_pylist() == [1.0]
    assert got["tgt_listing_view_secs"].to_pylist() == [3600.0]
    assert got["tgt_listing_is_last_view"].to_pylist() == [0.0]  # l2 was viewed after l1
    assert got["tgt_shop_view_count"].to_pylist() == [2.0]  # both views were of shop s1
