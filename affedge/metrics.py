"""Agreement metrics for continuous valence/arousal: CCC, PCC, RMSE (numpy only).

CCC follows the reference code's convention (PAPER.md §5), which mixes denominators:

    CCC = 2 * c / (s2_y + s2_yhat + (mean_y - mean_yhat)^2 + eps)

with ``c = mean((y - mean_y) * (yhat - mean_yhat))`` (biased covariance, divides by T) and
``s2`` the unbiased variances (divide by T - 1). Consequently a perfect prediction of a
non-constant series scores ``ccc(y, y) = (T - 1) / T`` rather than 1 (0.99667 for T = 300), and
in general ``ccc = (T-1)/T * textbook_ccc`` when the means are equal. ``eps`` defaults to 1e-100
as in the reference evaluation; the training loss uses 1e-8.

NaN handling (all functions): a time step where ``y`` or ``yhat`` is NaN is dropped (pairwise
complete). With fewer than 2 remaining steps the result is NaN; PCC of a constant series is NaN.
Arguments are 1-D ``[T]`` (a float is returned) or 2-D ``[T, K]`` (one value per column).
"""
from __future__ import annotations

import numpy as np

__all__ = ["ccc", "pcc", "rmse", "summarize"]


def _pairs(y, yhat, name: str):
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    if y.shape != yhat.shape:
        raise ValueError(f"{name}: y and yhat shapes differ: {y.shape} vs {yhat.shape}")
    if y.ndim not in (1, 2):
        raise ValueError(f"{name}: expected [T] or [T, K] arrays, got shape {y.shape}")
    return y, yhat


def _per_column(fn, y, yhat, name: str, **kw):
    y, yhat = _pairs(y, yhat, name)
    if y.ndim == 1:
        ok = ~(np.isnan(y) | np.isnan(yhat))
        return fn(y[ok], yhat[ok], **kw)
    return np.array([_per_column(fn, y[:, k], yhat[:, k], name, **kw) for k in range(y.shape[1])])


def _ccc1(y, yhat, eps):
    if y.size < 2:
        return float("nan")
    my, mp = y.mean(), yhat.mean()
    cov = np.mean((y - my) * (yhat - mp))  # biased (T)
    vy, vp = y.var(ddof=1), yhat.var(ddof=1)  # unbiased (T - 1)
    return float(2.0 * cov / (vy + vp + (my - mp) ** 2 + eps))


def _pcc1(y, yhat):
    if y.size < 2:
        return float("nan")
    dy, dp = y - y.mean(), yhat - yhat.mean()
    den = np.sqrt(np.sum(dy * dy) * np.sum(dp * dp))
    return float(np.sum(dy * dp) / den) if den > 0 else float("nan")


def _rmse1(y, yhat):
    if y.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((y - yhat) ** 2)))


def ccc(y, yhat, eps: float = 1e-100):
    """Concordance correlation coefficient, reference convention (module docstring)."""
    return _per_column(_ccc1, y, yhat, "ccc", eps=eps)


def pcc(y, yhat):
    """Pearson correlation coefficient."""
    return _per_column(_pcc1, y, yhat, "pcc")


def rmse(y, yhat):
    """Root mean squared error."""
    return _per_column(_rmse1, y, yhat, "rmse")


def summarize(y, yhat, names=("valence", "arousal"), eps: float = 1e-100) -> dict[str, float]:
    """Flat metric dict for ``[T, K]`` labels/predictions with column names ``names``.

    Keys: ``"<name>_ccc"``, ``"<name>_pcc"``, ``"<name>_rmse"``, ``"<name>_n"`` (valid steps)
    for each column, and ``"mean_ccc"`` (the mean over columns, the challenge score). A 1-D
    input is one column named ``names[0]``.
    """
    y, yhat = _pairs(y, yhat, "summarize")
    if y.ndim == 1:
        y, yhat = y[:, None], yhat[:, None]
    if len(names) < y.shape[1]:
        raise ValueError(f"summarize: {y.shape[1]} columns but only names {tuple(names)}")
    out: dict[str, float] = {}
    cccs = []
    for k in range(y.shape[1]):
        n = names[k]
        out[f"{n}_ccc"] = c = ccc(y[:, k], yhat[:, k], eps)
        out[f"{n}_pcc"] = pcc(y[:, k], yhat[:, k])
        out[f"{n}_rmse"] = rmse(y[:, k], yhat[:, k])
        out[f"{n}_n"] = int(np.sum(~(np.isnan(y[:, k]) | np.isnan(yhat[:, k]))))
        cccs.append(c)
    out["mean_ccc"] = float(np.mean(cccs))
    return out
