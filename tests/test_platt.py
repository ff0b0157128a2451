"""Platt scaling (DESIGN §8): recovers known maps, undoes negative downsampling, keeps the ranking."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from components.calibrate import Platt, PlattFitError, downsampling_correction, fit_platt
from components.evaluate import metrics as m


def platt_data(a, b, n, seed, scale=2.0, shift=0.0):
    rng = np.random.default_rng(seed)
    f = rng.normal(shift, scale, n)
    y = (rng.random(n) < expit(a * f + b)).astype(np.int8)
    return f, y


def sklearn_mle(f, y, w=None):
    """Unpenalized logistic regression on one feature: the oracle for the weighted MLE."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(f[:, None], y, sample_weight=w)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


@pytest.mark.parametrize("a,b,shift", [(0.7, -1.3, 0.0), (1.0, 0.0, 0.0), (2.5, -4.0, 1.0), (0.3, 0.8, -5.0)])
def test_recovers_a_known_map(a, b, shift):
    f, y = platt_data(a, b, 200_000, seed=1, shift=shift)
    fit = fit_platt(f, y)
    assert fit.a == pytest.approx(a, abs=0.03)
    assert fit.b == pytest.approx(b, abs=0.03 + 0.03 * abs(shift))
    # first-order optimality: the log-likelihood's gradient vanishes at the fit (the exact MLE)
    residual = expit(fit.a * f + fit.b) - y
    assert abs(residual.mean()) < 1e-7 and abs((residual * f).mean()) < 1e-7


def test_matches_scikit_learn_unpenalized_logistic_regression():
    f, y = platt_data(0.7, -1.3, 100_000, seed=6)
    fit = fit_platt(f, y)
    a_ref, b_ref = sklearn_mle(f, y)
    assert fit.a == pytest.approx(a_ref, abs=1e-4) and fit.b == pytest.approx(b_ref, abs=1e-4)


def test_weighted_fit_is_the_weighted_mle_and_scale_free():
    f, y = platt_data(0.8, -2.0, 50_000, seed=2)
    w = np.random.default_rng(3).uniform(0.2, 5.0, f.size)
    fit = fit_platt(f, y, sample_weight=w)
    a_ref, b_ref = sklearn_mle(f, y, w)
    assert fit.a == pytest.approx(a_ref, abs=1e-4) and fit.b == pytest.approx(b_ref, abs=1e-4)
    # the weights' scale does not matter; an affine change of the logits is absorbed exactly
    assert fit_platt(f, y, sample_weight=1000 * w).to_dict() == pytest.approx(fit.to_dict(), abs=1e-8)
    moved = fit_platt(100.0 * f - 3e4, y, sample_weight=w)
    np.testing.assert_allclose(moved.apply(100.0 * f - 3e4), fit.apply(f), atol=1e-8)


def test_apply_is_a_stable_sigmoid_and_serializes():
    p = Platt(0.9, -0.4)
    with np.errstate(all="raise"):
        out = p.apply(np.array([-1e6, -50.0, 0.0, 50.0, 1e6]))
    assert out[0] == 0.0 and out[-1] == 1.0 and out[2] == pytest.approx(1 / (1 + math.exp(0.4)))
    np.testing.assert_allclose(p.logits([1.0, 2.0]), [0.5, 1.4])
    again = Platt.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again == p and p.to_dict() == {"a": 0.9, "b": -0.4}
    with pytest.raises(ValueError, match="missing key"):
        Platt.from_dict({"a": 1.0})
    with pytest.raises(ValueError, match="a must be > 0"):
        Platt.from_dict({"a": -0.5, "b": 0.0})
    with pytest.raises(ValueError, match="finite"):
        Platt(float("nan"), 0.0)


def test_downsampling_correction_is_the_closed_form_and_a_platt_map():
    f = np.array([-3.0, 0.0, 2.0])
    w = 0.5
    p = expit(f)
    np.testing.assert_allclose(expit(downsampling_correction(f, w)), p / (p + (1 - p) / w), rtol=1e-12)
    np.testing.assert_allclose(Platt.for_downsampling(w).apply(f), expit(downsampling_correction(f, w)))
    assert downsampling_correction(f, 1.0).tolist() == f.tolist()
    with pytest.raises(ValueError, match="\\(0, 1\\]"):
        downsampling_correction(f, 0.0)


@pytest.fixture(scope="module")
def downsampled_model():
    """A logistic 'model' trained on a day whose non-clicks were kept with probability 0.5."""
    rng = np.random.default_rng(5)
    beta, intercept = np.array([1.0, -0.7, 0.5]), -3.0

    def day(n):
        x = rng.normal(size=(n, 3))
        return x, (rng.random(n) < expit(x @ beta + intercept)).astype(np.int8)

    x_train, y_train = day(300_000)
    kept = (y_train == 1) | (rng.random(y_train.size) < 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(C=np.inf).fit(x_train[kept], y_train[kept])
    score = lambda x: model.decision_function(x)  # noqa: E731  raw logits
    x_val, y_val = day(200_000)  # representative validation and test days
    x_test, y_test = day(200_000)
    return score(x_val), y_val, score(x_test), y_test


def test_platt_on_a_representative_day_undoes_negative_downsampling(downsampled_model):
    val_logits, y_val, test_logits, y_test = downsampled_model
    raw = expit(test_logits)
    platt = fit_platt(val_logits, y_val)
    calibrated = platt.apply(test_logits)

    raw_ece, cal_ece = m.ece(y_test, raw), m.ece(y_test, calibrated)
    assert raw_ece > 0.03, "downsampled training should inflate raw probabilities"
    assert raw.mean() > 1.5 * y_test.mean()
    assert cal_ece <= 0.01
    assert calibrated.mean() == pytest.approx(y_test.mean(), rel=0.05)
    assert m.logloss(y_test, calibrated) < m.logloss(y_test, raw)
    # Platt learned the closed-form correction (a = 1, b = log 0.5) from the data
    assert platt.a == pytest.approx(1.0, abs=0.05) and platt.b == pytest.approx(math.log(0.5), abs=0.1)
    assert m.ece(y_test, expit(downsampling_correction(test_logits, 0.5))) <= 0.01

    # a monotone map: the ranking, hence ROC-AUC and PR-AUC, is unchanged
    assert np.array_equal(np.argsort(test_logits, kind="stable"), np.argsort(calibrated, kind="stable"))
    assert m.roc_auc(y_test, calibrated) == pytest.approx(m.roc_auc(y_test, test_logits), abs=1e-12)
    assert m.pr_auc(y_test, calibrated) == pytest.approx(m.pr_auc(y_test, raw), abs=1e-12)

    # correcting first, then fitting, gives the same calibrated probabilities (shift invariance)
    both = fit_platt(downsampling_correction(val_logits, 0.5), y_val)
    np.testing.assert_allclose(both.apply(downsampling_correction(test_logits, 0.5)), calibrated, atol=1e-9)


def test_downsampled_validation_rows_carry_their_weights(downsampled_model):
    val_logits, y_val, _, _ = downsampled_model
    reference = fit_platt(val_logits, y_val)
    rng = np.random.default_rng(9)
    sample_rate = np.where(y_val == 1, 1.0, 0.25)
    kept = rng.random(y_val.size) < sample_rate
    f, y, rate = val_logits[kept], y_val[kept], sample_rate[kept]

    weighted = fit_platt(f, y, sample_weight=m.weights_from_sample_rate(rate))
    assert weighted.a == pytest.approx(reference.a, abs=0.05)
    assert weighted.b == pytest.approx(reference.b, abs=0.08)
    by_rate = fit_platt(f, y, negative_sampling_rate=0.25)
    assert by_rate.to_dict() == pytest.approx(weighted.to_dict(), abs=1e-9)
    naive = fit_platt(f, y)  # ignoring the weights: intercept off by -log(0.25)
    assert naive.b - reference.b == pytest.approx(-math.log(0.25), abs=0.1)


def test_useless_or_degenerate_models_are_refused():
    f, y = platt_data(-0.8, -1.0, 20_000, seed=4)  # logits anti-correlated with clicks
    with pytest.raises(PlattFitError, match="a=.* <= 0"):
        fit_platt(f, y)
    with pytest.raises(PlattFitError, match="no ranking signal"):
        fit_platt(np.full(100, 0.3), np.arange(100) % 2)
    with pytest.raises(PlattFitError, match="separate the classes perfectly"):
        fit_platt([-2.0, -1.0, 1.0, 1.0], [0, 0, 1, 1])
    with pytest.raises(PlattFitError, match="separate the classes perfectly"):  # touching at one value
        fit_platt([-2.0, 0.0, 0.0, 1.0], [0, 0, 1, 1])
    with pytest.raises(PlattFitError, match="invert the ranking"):
        fit_platt([2.0, 3.0, -1.0, 0.0], [0, 0, 1, 1])
    with pytest.raises(PlattFitError, match="only one class"):
        fit_platt([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(PlattFitError, match="only one class"):  # the negatives weigh nothing
        fit_platt([0.1, 0.2, 0.3], [1, 0, 1], sample_weight=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="not 0 or 1"):
        fit_platt([0.1, 0.2], [0, 3])
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_platt([0.1, np.inf], [0, 1])
    with pytest.raises(ValueError, match="equal length"):
        fit_platt([0.1, 0.2], [0, 1, 1])


def test_an_optimizer_stop_at_the_optimum_is_accepted_and_one_far_from_it_is_refused(monkeypatch):
    """trust-exact can end "unsuccessfully" at the optimum (no step predicts an improvement; seen on a
    real validation day): accepted when the gradient vanishes, refused when it does not."""
    import scipy.optimize

    import components.calibrate.platt as platt_mod

    rng = np.random.default_rng(5)
    f = rng.normal(0, 1.5, 4000)
    y = (rng.random(4000) < expit(0.8 * f - 2.2)).astype(float)
    exact = fit_platt(f, y)

    def stops_unsuccessfully(*args, **kwargs):
        res = scipy.optimize.minimize(*args, **kwargs)
        res.success, res.message = False, "A bad approximation caused failure to predict improvement."
        return res

    monkeypatch.setattr(platt_mod, "minimize", stops_unsuccessfully)
    assert fit_platt(f, y) == exact
    with pytest.raises(PlattFitError, match="did not converge"):
        fit_platt(f, y, max_iter=1)  # one step from the base rate: far from stationary
