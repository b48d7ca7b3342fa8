"""CCC-centring merge of fold predictions (PAPER.md §6.2) and fold parsing."""
import numpy as np
import pytest

from affedge.training.crossval import ccc_centre_merge, merge_folds, parse_folds


def _ccc(a, b):
    n = len(a)
    ma, mb = a.mean(), b.mean()
    cov = np.sum((a - ma) * (b - mb)) / n
    return 2 * cov / (a.var(ddof=1) + b.var(ddof=1) + (ma - mb) ** 2 + 1e-100)


def _steps(preds):
    """The seven steps of PAPER.md §6.2, written out literally."""
    m, n = preds.shape
    agree = np.zeros(m)
    for i in range(m):
        agree[i] = np.mean([_ccc(preds[i], preds[j]) for j in range(m) if j != i])
    mu = preds.mean(axis=1)
    w = np.sum(agree * mu) / np.sum(agree)
    centred = np.stack([preds[i] - mu[i] + w for i in range(m)])
    return np.clip(centred.mean(axis=0), -1, 1), w


def _folds(seed=0, m=6, n=400):
    rng = np.random.default_rng(seed)
    base = np.sin(np.linspace(0, 12, n)) * 0.5
    # folds agree on the shape but have different offsets/noise (one outlier fold)
    offs = rng.normal(0, 0.1, size=m)
    offs[2] = 0.6
    noise = rng.normal(0, 0.05, size=(m, n))
    noise[2] *= 8
    return base + offs[:, None] + noise


def test_matches_the_literal_steps_and_the_closed_form():
    p = _folds()
    got = ccc_centre_merge(p, clip=False)
    want, w = _steps(p)
    np.testing.assert_allclose(got, np.clip(want, -9, 9), atol=1e-6)
    closed = p.mean(axis=0) - p.mean(axis=1).mean() + w  # PAPER.md §6.2 closed form
    np.testing.assert_allclose(got, closed, atol=1e-6)
    # only the offset changes: the merge minus the plain average is a constant
    d = got - p.mean(axis=0)
    assert np.ptp(d) < 1e-6
    # the disagreeing outlier fold pulls the offset less than in the plain mean of means
    assert abs(w - np.delete(p, 2, 0).mean()) < abs(p.mean() - np.delete(p, 2, 0).mean())


def test_late_clip_and_merge_folds_per_dimension():
    p = _folds(1) * 3
    merged = ccc_centre_merge(p)
    assert merged.min() >= -1 and merged.max() <= 1
    want, _ = _steps(p)
    np.testing.assert_allclose(merged, want, atol=1e-6)
    pv = np.stack([_folds(2), _folds(3)], axis=-1)
    out = merge_folds(pv)
    assert out.shape == (400, 2)
    np.testing.assert_allclose(out[:, 1], ccc_centre_merge(pv[:, :, 1]), atol=1e-7)


def test_single_fold_is_returned_unchanged_and_bad_input():
    p = _folds(4)[:1] * 0.5
    np.testing.assert_allclose(ccc_centre_merge(p), p[0], atol=1e-6)
    with pytest.raises(ValueError, match="M folds"):
        ccc_centre_merge(np.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        ccc_centre_merge(np.full((2, 5), np.nan))


def test_parse_folds():
    assert parse_folds("all") == [0, 1, 2, 3, 4, 5]
    assert parse_folds("0") == [0]
    assert parse_folds("3,1") == [1, 3]
    with pytest.raises(ValueError, match="0..5"):
        parse_folds("7")
    with pytest.raises(ValueError, match="comma"):
        parse_folds("x")

