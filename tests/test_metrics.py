"""Evaluation metrics (DESIGN §8): brute-force definitions, scikit-learn, and hand-computed numbers as oracles."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from components.evaluate import metrics as m

# ---------------------------------------------------------------------------------------------
# Independent reference implementations (quadratic / loops, small data only)
# ---------------------------------------------------------------------------------------------


def brute_auc(y, s, w):
    """Sum over (positive, negative) pairs: 1 if ordered, 1/2 if tied, weighted by w_i w_j."""
    num = den = 0.0
    for i in np.flatnonzero(y == 1):
        for j in np.flatnonzero(y == 0):
            pair = w[i] * w[j]
            den += pair
            num += pair * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    return num / den


def brute_ap(y, s, w):
    """AP = sum_k (R_k - R_{k-1}) P_k over distinct thresholds, descending; ties form one threshold."""
    total_pos = w[y == 1].sum()
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(s.tolist()), reverse=True):
        sel = s >= t
        tp = w[sel & (y == 1)].sum()
        fp = w[sel & (y == 0)].sum()
        recall = tp / total_pos
        precision = tp / (tp + fp) if tp + fp > 0 else 1.0
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def loop_ece(y, p, bins, w):
    total = 0.0
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        sel = (p >= lo) & ((p < hi) if k < bins - 1 else (p <= hi))
        if w[sel].sum() > 0:
            total += abs(np.average(p[sel], weights=w[sel]) - np.average(y[sel], weights=w[sel])) * w[sel].sum()
    return total / w.sum()


@st.composite
def labeled(draw, min_size=2, max_size=40, tie_levels=6):
    n = draw(st.integers(min_size, max_size))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    if y.min() == y.max():  # force both classes
        y[draw(st.integers(0, n - 1))] = 1 - y[0]
    s = np.array(draw(st.lists(st.integers(0, tie_levels), min_size=n, max_size=n)), dtype=float) / tie_levels
    w = np.array(draw(st.lists(st.floats(0.1, 5.0), min_size=n, max_size=n)))
    return y, s, w


# ---------------------------------------------------------------------------------------------
# Ranking metrics
# ---------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(labeled())
def test_roc_auc_is_the_pairwise_mann_whitney_statistic_with_ties(data):
    y, s, w = data
    assert m.roc_auc(y, s) == pytest.approx(brute_auc(y, s, np.ones_like(w)), abs=1e-12)
    assert m.roc_auc(y, s, w) == pytest.approx(brute_auc(y, s, w), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(labeled())
def test_pr_auc_is_stepwise_average_precision_with_ties(data):
    y, s, w = data
    assert m.pr_auc(y, s) == pytest.approx(brute_ap(y, s, np.ones_like(w)), abs=1e-12)
    assert m.pr_auc(y, s, w) == pytest.approx(brute_ap(y, s, w), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_and_logloss_equal_scikit_learn_on_large_random_data(seed):
    rng = np.random.default_rng(seed)
    n = 50_000
    y = (rng.random(n) < 0.05).astype(int)
    s = np.round(rng.normal(size=n) + 0.8 * y, 2)  # rounded: many ties
    p = np.clip(1 / (1 + np.exp(-(s - 3))), 0, 1)
    p[:10] = 0.0  # clipping territory
    p[10:20] = 1.0
    w = rng.uniform(0.2, 3.0, n)
    assert m.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m.roc_auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert m.pr_auc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert m.pr_auc(y, s, w) == pytest.approx(average_precision_score(y, s, sample_weight=w), abs=1e-12)
    assert m.logloss(y, p) == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-12)
    assert m.logloss(y, p, w) == pytest.approx(log_loss(y, p, sample_weight=w, labels=[0, 1]), rel=1e-12)


def test_ranking_metrics_accept_bool_and_float_labels_and_float32_scores():
    y = np.array([True, False, True, False, False])
    s = np.array([0.9, 0.1, 0.4, 0.4, 0.2], dtype=np.float32)
    # pairs: (0.9 > all 3 negatives) + (0.4 vs 0.1 win, 0.4 tie, 0.2 win) = 3 + 2.5 of 6
    assert m.roc_auc(y, s) == pytest.approx(5.5 / 6)
    assert m.roc_auc(y.astype(float), s) == m.roc_auc(y, s)
    # thresholds 0.9 (R=1/2, P=1), 0.4 (R=1, P=2/3) -> 1/2 + 1/2 * 2/3
    assert m.pr_auc(y, s) == pytest.approx(0.5 + 0.5 * 2 / 3)


@pytest.mark.parametrize("fn", [m.roc_auc, m.pr_auc])
def test_ranking_metrics_refuse_a_single_class(fn):
    with pytest.raises(ValueError, match="only one class"):
        fn([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only one class"):
        fn([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="only one class"):  # the positives weigh nothing
        fn([1, 0, 0], [0.3, 0.1, 0.2], [0.0, 1.0, 1.0])


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="not 0 or 1"):
        m.roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="one value per label"):
        m.roc_auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="1 of 3 scores are NaN"):
        m.roc_auc([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        m.logloss([0, 1], [-0.5, 2.0])
    with pytest.raises(ValueError, match="negative"):
        m.ece([0, 1], [0.2, 0.3], sample_weight=[1.0, -1.0])
    with pytest.raises(ValueError, match="no rows"):
        m.logloss([], [])
    with pytest.raises(ValueError, match="bins"):
        m.ece([0, 1], [0.2, 0.3], bins=0)


# ---------------------------------------------------------------------------------------------
# Probability metrics
# ---------------------------------------------------------------------------------------------


def test_logloss_clips_like_scikit_learn_per_dtype():
    y = [0, 1, 1, 0]
    p = np.array([0.0, 1.0, 0.0, 0.5])  # one confidently wrong row
    expected = (0 + 0 - math.log(np.finfo(np.float64).eps) + math.log(2)) / 4
    assert m.logloss(y, p) == pytest.approx(expected, rel=1e-12)
    p32 = p.astype(np.float32)
    assert m.logloss(y, p32) == pytest.approx(log_loss(y, p32, labels=[0, 1]), rel=1e-7)
    assert m.logloss([1, 1], [0.5, 0.25]) == pytest.approx((math.log(2) + math.log(4)) / 2)  # one class is fine


@pytest.mark.parametrize("rate", [0.01, 0.3, 0.5])
def test_nce_of_the_base_rate_predictor_is_one(rate):
    rng = np.random.default_rng(7)
    y = (rng.random(20_000) < rate).astype(int)
    assert m.nce(y, np.full(y.size, y.mean())) == pytest.approx(1.0, abs=1e-12)
    w = rng.uniform(0.5, 2.0, y.size)
    weighted_rate = np.average(y, weights=w)
    assert m.nce(y, np.full(y.size, weighted_rate), w) == pytest.approx(1.0, abs=1e-12)
    # the unweighted base rate is not the weighted one's optimum: NCE > 1
    assert m.nce(y, np.full(y.size, y.mean()), w) > 1.0


def test_nce_hand_computed_and_better_than_one_for_an_informative_model():
    y = np.array([1, 0, 0, 0])
    p = np.array([0.5, 0.25, 0.25, 0.25])
    ll = -(math.log(0.5) + 3 * math.log(0.75)) / 4
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert m.nce(y, p) == pytest.approx(ll / h, rel=1e-12)
    assert m.nce(y, p) < 1.0
    with pytest.raises(ValueError, match="only one class"):
        m.nce([0, 0], [0.1, 0.2])


ECE_P = np.array([0.05, 0.15, 0.12, 0.9, 1.0, 0.3])
ECE_Y = np.array([0, 1, 0, 1, 1, 0])


def test_ece_hand_computed_with_boundary_values():
    # bins of width 0.1: [0,.1): 0.05|0 ; [.1,.2): .15,.12|1,0 ; [.3,.4): 0.3|0 ; [.9,1]: 0.9, 1.0|1,1
    expected = (0.05 * 1 + abs(0.135 - 0.5) * 2 + 0.3 * 1 + abs(0.95 - 1.0) * 2) / 6
    assert expected == pytest.approx(1.18 / 6)
    assert m.ece(ECE_Y, ECE_P, bins=10) == pytest.approx(expected, abs=1e-12)
    # weighted: bin [.1,.2) has weights 2 (p=.15, y=1) and 1 (p=.12, y=0); the 0.3 row weighs 3
    w = np.array([1, 2, 1, 1, 1, 3], dtype=float)
    expected_w = (0.05 * 1 + abs(0.14 - 2 / 3) * 3 + 0.3 * 3 + 0.05 * 2) / 9
    assert m.ece(ECE_Y, ECE_P, bins=10, sample_weight=w) == pytest.approx(expected_w, abs=1e-12)
    assert m.ece(ECE_Y, ECE_P, bins=1) == pytest.approx(abs(ECE_P.mean() - ECE_Y.mean()))
    assert m.ece([0, 1], [0.0, 1.0], bins=10) == 0.0


def test_reliability_table_hand_computed_and_json_ready():
    r = m.reliability(ECE_Y, ECE_P, bins=10)
    assert r.count.tolist() == [1, 2, 0, 1, 0, 0, 0, 0, 0, 2]
    np.testing.assert_allclose(r.edges, np.linspace(0, 1, 11))
    np.testing.assert_allclose(r.mean_prob[[0, 1, 3, 9]], [0.05, 0.135, 0.3, 0.95])
    np.testing.assert_allclose(r.mean_label[[0, 1, 3, 9]], [0.0, 0.5, 0.0, 1.0])
    assert np.isnan(r.mean_prob[2]) and np.isnan(r.mean_label[8])
    d = json.loads(json.dumps(r.to_dict()))
    assert d["count"][1] == 2 and d["mean_prob"][2] is None and d["mean_label"][9] == 1.0
    assert r.ece == m.ece(ECE_Y, ECE_P, bins=10)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 60), st.integers(1, 20), st.integers(0, 2**32 - 1), st.booleans())
def test_ece_matches_a_loop_over_bins(n, bins, seed, weighted):
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    p[: n // 4] = rng.integers(0, bins + 1, n // 4) / bins  # values exactly on bin edges
    y = (rng.random(n) < p).astype(int)
    w = rng.uniform(0.1, 4.0, n) if weighted else np.ones(n)
    got = m.ece(y, p, bins=bins, sample_weight=w if weighted else None)
    assert got == pytest.approx(loop_ece(y, p, bins, w), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_reliability_matches_scikit_learn_calibration_curve_and_histogram(seed):
    rng = np.random.default_rng(seed)
    p = rng.beta(0.5, 3.0, 30_000)  # continuous: no value on a bin edge
    y = (rng.random(p.size) < p).astype(int)
    r = m.reliability(y, p, bins=12)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=12, strategy="uniform")
    full = r.count > 0
    np.testing.assert_allclose(r.mean_label[full], prob_true, atol=1e-12)
    np.testing.assert_allclose(r.mean_prob[full], prob_pred, atol=1e-12)
    np.testing.assert_array_equal(r.count, np.histogram(p, bins=12, range=(0, 1))[0])


def test_summary_keys_and_consistency():
    rng = np.random.default_rng(3)
    logits = rng.normal(-2, 1.5, 5_000)
    p = 1 / (1 + np.exp(-logits))
    y = (rng.random(p.size) < p).astype(int)
    s = m.summary(y, p, logits, bins=10)
    assert list(s) == ["n", "positives", "roc_auc", "pr_auc", "logloss", "nce", "ece"]
    assert s["n"] == 5_000 and s["positives"] == int(y.sum())
    assert s["roc_auc"] == m.roc_auc(y, p)  # logits and probs rank alike
    assert s["logloss"] == m.logloss(y, p) and s["ece"] == m.ece(y, p, bins=10)
    assert all(isinstance(v, float) for k, v in s.items() if k not in ("n", "positives"))
    w = rng.uniform(0.5, 2, p.size)
    sw = m.summary(y, p, sample_weight=w)
    assert sw["nce"] == m.nce(y, p, w) and sw["pr_auc"] == m.pr_auc(y, p, w)


def test_lift_headroom_and_sample_rate_weights():
    assert m.lift_pct(0.78, 0.75) == pytest.approx(4.0)
    assert m.lift_pct(0.70, 0.75) == pytest.approx(-100 / 15)
    with pytest.raises(ValueError):
        m.lift_pct(0.7, 0.0)
    assert m.headroom_captured(0.78, 0.75, 0.80) == pytest.approx(0.6)
    assert m.headroom_captured(0.74, 0.75, 0.80) == pytest.approx(-0.2)
    assert m.headroom_captured(0.78, 0.75, 0.75) is None
    assert m.headroom_captured(0.78, 0.75, None) is None
    np.testing.assert_allclose(m.weights_from_sample_rate([1.0, 0.5, 0.25]), [1, 2, 4])
    with pytest.raises(ValueError, match="outside"):
        m.weights_from_sample_rate([0.5, 0.0])


def test_inverse_sample_rate_weights_undo_negative_downsampling():
    """Metrics on a split with negatives kept at 30%, weighted by 1/sample_rate ≈ metrics on the full split."""
    rng = np.random.default_rng(11)
    n = 400_000
    logits = rng.normal(-2.5, 1.2, n)
    p = 1 / (1 + np.exp(-logits))
    y = (rng.random(n) < p).astype(int)
    rate = np.where(y == 1, 1.0, 0.3)
    kept = rng.random(n) < rate
    w = m.weights_from_sample_rate(rate[kept])
    full = m.summary(y, p)
    sub_w = m.summary(y[kept], p[kept], sample_weight=w)
    sub_raw = m.summary(y[kept], p[kept])
    for key in ("roc_auc", "pr_auc", "logloss", "nce", "ece"):
        assert sub_w[key] == pytest.approx(full[key], rel=0.03, abs=0.003), key
    assert sub_raw["ece"] > 0.1 and sub_raw["pr_auc"] > full["pr_auc"] + 0.1  # unweighted is biased
