"""The sessionization kernel against the reference, on random logs and on the named edge cases."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from components.sessionize.kernel import SessionSpec, purchased, sequences
from schemas.examples import DEFAULT_PAIRS
from schemas.raw import EVENTS_SCHEMA, IMPRESSIONS_SCHEMA
from tests import reference_sessionize as ref
from tests.rawdata import loose

T0 = dt.datetime(2026, 3, 1, 23, 0, tzinfo=dt.timezone.utc)  # windows cross midnight
WINDOW_MS = 60 * 60 * 1000
SPEC = SessionSpec(window_ms=WINDOW_MS, max_len=4, pairs=DEFAULT_PAIRS, attribution_ms=WINDOW_MS)


def when(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def event(i, seconds, action, user=None, browser="b1", listing="l1", shop="s1", tax="t1", query=None):
    listing_action = action != "search"
    return {"event_id": f"e{i:04d}", "user_id": user, "browser_id": browser, "ts": when(seconds), "action": action,
            "listing_id": listing if listing_action else None, "shop_id": shop if listing_action else None,
            "taxonomy_id": tax if listing_action else None, "query": query or (f"q{i % 3}" if not listing_action else None),
            "platform": "web"}


def impression(i, seconds, user=None, browser="b1", listing="l1", clicked=False, click_after=None):
    return {"impression_id": f"i{i:04d}", "request_id": f"r{i}", "user_id": user, "browser_id": browser,
            "ts": when(seconds), "query": "q", "listing_id": listing, "shop_id": "s1", "taxonomy_id": "t1",
            "position": 0, "platform": "web", "price": 1.0, "clicked": clicked,
            "click_ts": when(seconds + click_after) if clicked and click_after is not None else None}


def run(events, impressions, spec=SPEC):
    ev = pa.Table.from_pylist(events, schema=loose(EVENTS_SCHEMA))
    imp = pa.Table.from_pylist(impressions, schema=loose(IMPRESSIONS_SCHEMA))
    return sequences(ev, imp, spec), purchased(ev, imp, spec)


def expected(events, impressions, spec=SPEC):
    seqs = {f"seq_{e}_{a}": [ref.sequences(events, imp, (e, a), spec.window_ms, spec.max_len) for imp in impressions]
            for e, a in spec.pairs}
    return seqs, [ref.purchased(events, imp, spec.attribution_ms) for imp in impressions]


def assert_matches(events, impressions, spec=SPEC):
    got_seqs, got_buy = run(events, impressions, spec)
    want_seqs, want_buy = expected(events, impressions, spec)
    assert {k: v.to_pylist() for k, v in got_seqs.items()} == want_seqs
    assert got_buy.tolist() == want_buy


USERS = st.sampled_from([(None, "b1"), (None, "b2"), ("u1", "b1"), ("u1", "b3"), ("u2", "b2")])
ACTIONS = st.sampled_from(["view", "view", "favorite", "cart_add", "purchase", "search"])
# Seconds on a coarse grid around the window edges, so boundaries and ties are frequent.
SECONDS = st.sampled_from([-3601, -3600, -3599, -1800, -60, -1, 0, 1, 30, 60, 1800, 3599, 3600, 3601, 5400, 7200])


@st.composite
def logs(draw):
    n_events = draw(st.integers(0, 30))
    events = []
    for i in range(n_events):
        user, browser = draw(USERS)
        events.append(event(i, draw(SECONDS) + 3600, draw(ACTIONS), user, browser,
                            listing=draw(st.sampled_from(["l1", "l2", "l3"])), shop=draw(st.sampled_from(["s1", "s2"])),
                            tax=draw(st.sampled_from(["t1", "t2"]))))
    impressions = []
    for i in range(draw(st.integers(0, 8))):
        user, browser = draw(USERS)
        clicked = draw(st.booleans())
        impressions.append(impression(i, draw(SECONDS) + 3600, user, browser,
                                      listing=draw(st.sampled_from(["l1", "l2", "l3"])), clicked=clicked,
                                      click_after=draw(st.sampled_from([None, 0, 2, 30]))))
    return events, impressions


@settings(max_examples=200, deadline=None)
@given(logs(), st.sampled_from([1, 2, 4, 50]))
def test_kernel_equals_reference_on_random_logs(log, max_len):
    events, impressions = log
    assert_matches(events, impressions, SessionSpec(WINDOW_MS, max_len, DEFAULT_PAIRS, WINDOW_MS))


def test_window_edges_click_view_and_midnight():
    imp_at = 3600  # 2026-03-02 00:00: the window reaches back into 03-01
    events = [
        event(1, imp_at - 3600, "view", listing="edge_in"),       # exactly t - window: included
        event(2, imp_at - 3601, "view", listing="too_old"),       # just before: excluded
        event(3, imp_at - 10, "view", listing="before_midnight_recent"),
        event(4, imp_at, "view", listing="at_t"),                 # exactly t: excluded
        event(5, imp_at + 2, "view", listing="ad_click_view"),    # the ad click's own view: excluded
    ]
    seqs, _ = run(events, [impression(1, imp_at, clicked=True, click_after=1)])
    assert seqs["seq_listing_view"].to_pylist() == [["before_midnight_recent", "edge_in"]]


def test_equal_timestamps_have_a_deterministic_order_and_the_cap_keeps_the_most_recent():
    events = [event(i, 100, "view", listing=f"l{i}") for i in (3, 1, 2)] + [event(9, 50, "view", listing="older")]
    seqs, _ = run(events, [impression(1, 200)], SessionSpec(WINDOW_MS, 3, DEFAULT_PAIRS, WINDOW_MS))
    assert seqs["seq_listing_view"].to_pylist() == [["l3", "l2", "l1"]]


def test_logged_out_browser_and_logged_in_user_are_different_keys():
    events = [event(1, 10, "view", user=None, browser="b1", listing="anon"),
              event(2, 20, "view", user="u1", browser="b1", listing="logged_in")]
    seqs, _ = run(events, [impression(1, 100, user=None, browser="b1"), impression(2, 100, user="u1", browser="b9")])
    assert seqs["seq_listing_view"].to_pylist() == [["anon"], ["logged_in"]]


def test_purchase_attribution_window_edges():
    events = [event(1, 100 + 3600 - 1, "purchase", listing="l1"),  # just inside the hour after the click
              event(2, 100 + 3600, "purchase", listing="l2")]       # exactly one hour after: outside
    imps = [impression(1, 99, listing="l1", clicked=True, click_after=1),
            impression(2, 99, listing="l2", clicked=True, click_after=1),
            impression(3, 99, listing="l1", clicked=False)]
    _, bought = run(events, imps)
    assert bought.tolist() == [True, False, False]


def test_impressions_without_events_get_empty_sequences():
    seqs, bought = run([], [impression(1, 10)])
    assert all(v.to_pylist() == [[]] for v in seqs.values()) and bought.tolist() == [False]


def test_a_bot_key_with_100k_events_in_an_hour_is_capped():
    import numpy as np

    n = 100_000
    ts = pa.array((np.datetime64("2026-03-02T00:00:00", "ms") - np.arange(n)[::-1] * 30).astype("datetime64[ms]"))
    events = pa.table({
        "event_id": pa.array([f"e{i:06d}" for i in range(n)]), "user_id": pa.nulls(n, pa.string()),
        "browser_id": pa.array(["bot"] * n), "ts": pc_cast_utc(ts), "action": pa.array(["view"] * n),
        "listing_id": pa.array([f"l{i}" for i in range(n)]), "shop_id": pa.array(["s"] * n),
        "taxonomy_id": pa.array(["t"] * n), "query": pa.nulls(n, pa.string()), "platform": pa.array(["web"] * n)})
    imp = pa.Table.from_pylist([impression(1, 3601, browser="bot")], schema=loose(IMPRESSIONS_SCHEMA))
    seqs = sequences(events, imp, SESSION_50)
    got = seqs["seq_listing_view"].to_pylist()[0]
    assert got == [f"l{i}" for i in range(n - 1, n - 51, -1)]


SESSION_50 = SessionSpec(WINDOW_MS, 50, DEFAULT_PAIRS, WINDOW_MS)


def pc_cast_utc(arr):
    import pyarrow.compute as pc

    return pc.cast(pc.cast(arr, pa.int64()), pa.timestamp("ms", tz="UTC"))
