"""CCC (reference convention), PCC, RMSE, summarize."""
from __future__ import annotations

import numpy as np
import pytest

from affedge.metrics import ccc, pcc, rmse, summarize


def test_hand_computed_values():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([2.0, 2.0, 4.0, 4.0])
    # means 2.5, 3; biased cov = (1.5 + .5 + .5 + 1.5)/4 = 1; unbiased vars 5/3, 4/3; bias^2 .25
    assert ccc(y, p) == pytest.approx(2.0 / (5 / 3 + 4 / 3 + 0.25), abs=1e-12)
    assert pcc(y, p) == pytest.approx(4.0 / np.sqrt(5.0 * 4.0), abs=1e-12)
    assert rmse(y, p) == pytest.approx(np.sqrt(0.5), abs=1e-12)


def test_perfect_prediction_scores_t_minus_1_over_t():
    # 2 * (T-1)/T * s2 / (2 * s2) with the biased covariance over unbiased variances
    rng = np.random.default_rng(0)
    for t in (2, 10, 300):
        y = rng.uniform(-1, 1, t)
        y -= y.mean()  # so that -y has the same mean (no bias term)
        assert ccc(y, y) == pytest.approx((t - 1) / t, abs=1e-12)
        assert ccc(y, -y) == pytest.approx(-(t - 1) / t, abs=1e-12)
        assert pcc(y, y) == pytest.approx(1.0, abs=1e-12)
        assert rmse(y, y) == 0.0


def test_against_numpy_formulas():
    rng = np.random.default_rng(1)
    y = rng.uniform(-1, 1, 500)
    p = 0.6 * y + 0.3 * rng.standard_normal(500) + 0.1
    cov_b = np.cov(y, p, ddof=0)[0, 1]
    expect = 2 * cov_b / (np.var(y, ddof=1) + np.var(p, ddof=1) + (y.mean() - p.mean()) ** 2)
    assert ccc(y, p) == pytest.approx(expect, abs=1e-12)
    assert pcc(y, p) == pytest.approx(np.corrcoef(y, p)[0, 1], abs=1e-12)
    textbook = 2 * cov_b / (np.var(y) + np.var(p) + (y.mean() - p.mean()) ** 2)
    assert ccc(y, p) < textbook  # the mixed convention is slightly lower
    assert ccc(y, p) == pytest.approx(ccc(p, y), abs=1e-15)  # symmetric


def test_nan_pairs_are_dropped():
    y = np.array([0.1, np.nan, 0.5, -0.2, 0.9, 0.3])
    p = np.array([0.0, 0.4, np.nan, -0.1, 0.7, 0.2])
    ok = ~(np.isnan(y) | np.isnan(p))
    for fn in (ccc, pcc, rmse):
        assert fn(y, p) == pytest.approx(fn(y[ok], p[ok]), abs=1e-15)
    assert np.isnan(ccc([np.nan, 1.0], [1.0, 2.0]))  # < 2 valid steps
    assert np.isnan(pcc([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))  # constant series


def test_two_dimensional_and_summarize():
    rng = np.random.default_rng(2)
    y = rng.uniform(-1, 1, (100, 2))
    p = y + 0.2 * rng.standard_normal((100, 2))
    c = ccc(y, p)
    assert c.shape == (2,)
    assert c[1] == pytest.approx(ccc(y[:, 1], p[:, 1]))
    s = summarize(y, p)
    keys = {f"{n}_{m}" for n in ("valence", "arousal") for m in ("ccc", "pcc", "rmse", "n")}
    assert set(s) == keys | {"mean_ccc"}
    assert s["valence_ccc"] == pytest.approx(c[0])
    assert s["arousal_rmse"] == pytest.approx(rmse(y[:, 1], p[:, 1]))
    assert s["mean_ccc"] == pytest.approx(c.mean())
    assert s["valence_n"] == 100


def test_shape_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        ccc(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"\[T\] or \[T, K\]"):
        rmse(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="columns"):
        summarize(np.zeros((5, 3)), np.zeros((5, 3)))
