"""Cross-validation: the fold loop and the CCC-centring merge of fold predictions.

* :func:`ccc_centre_merge` — PAPER.md §6.2: merge M folds' predictions of one video and one
  dimension. It only changes the constant offset of the plain fold average (closed form:
  ``mean_m(y_m) - mean_m(mu_m) + w``), so it is an *offline* tool (it needs whole-video means);
  streaming uses the plain per-frame fold average (PAPER.md §8.2 #4).
* :func:`cross_validate` — train every requested fold (folds from
  :func:`affedge.training.data.folds.six_fold_split`, per-fold normalisation statistics from
  that fold's training trials only) and write ``crossval.json`` with per-fold metrics.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

MERGE_EPS = 1e-100  # PAPER.md §6.2: evaluation CCC epsilon


def _pair_ccc(a: np.ndarray, b: np.ndarray) -> float:
    """CCC with the reference convention (biased covariance, unbiased variances)."""
    from affedge.metrics import ccc

    return float(ccc(a, b))


def fold_agreement(preds: np.ndarray) -> np.ndarray:
    """a_m = mean over n != m of CCC(y_m, y_n) for ``preds`` ``[M, N]`` -> ``[M]``."""
    m = preds.shape[0]
    pair = np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            pair[i, j] = pair[j, i] = _pair_ccc(preds[i], preds[j])
    return (pair.sum(axis=1) - 1.0) / (m - 1)


def ccc_centre_merge(preds: np.ndarray, clip: bool = True) -> np.ndarray:
    """Merge per-fold predictions ``[M, N]`` (M folds, N frames) of one dimension -> ``[N]``.

    Steps (PAPER.md §6.2): agreement a_m of each fold with the others (pairwise CCC), temporal
    means mu_m, agreement-weighted target mean w = sum(a_m mu_m) / sum(a_m), re-centre every fold
    to w, average over folds, clip to [-1, 1] (late clip). With one fold, or when the agreements
    sum to zero, w falls back to the plain mean of the fold means (the merge is then the plain
    average). Unlike the reference, an ``[M, N]`` input is never transposed.
    """
    p = np.asarray(preds, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"ccc_centre_merge: expected preds [M folds, N>=2 frames], got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("ccc_centre_merge: predictions contain NaN/inf")
    mu = p.mean(axis=1)
    w = mu.mean()
    if p.shape[0] > 1:
        a = fold_agreement(p)
        if abs(a.sum()) > 1e-12:
            w = float((a * mu).sum() / a.sum())
    merged = (p - mu[:, None] + w).mean(axis=0)
    if clip:
        merged = np.clip(merged, -1.0, 1.0)
    return merged.astype(np.float32)


def merge_folds(preds: np.ndarray, clip: bool = True) -> np.ndarray:
    """``[M, N, C]`` fold predictions of one video -> ``[N, C]``, CCC-centred per dimension."""
    p = np.asarray(preds)
    if p.ndim != 3:
        raise ValueError(f"merge_folds: expected [M, N, C], got shape {p.shape}")
    return np.stack([ccc_centre_merge(p[:, :, c], clip=clip) for c in range(p.shape[2])], axis=1)


def parse_folds(spec: str | int | list[int] | tuple[int, ...], n_folds: int = 6) -> list[int]:
    """``"0"`` / ``"all"`` / ``"0,1"`` -> list of fold indices, validated."""
    if isinstance(spec, int):
        out = [spec]
    elif isinstance(spec, (list, tuple)):
        out = [int(f) for f in spec]
    else:
        s = str(spec).strip().lower()
        if s == "all":
            out = list(range(n_folds))
        else:
            try:
                out = [int(x) for x in s.split(",") if x.strip()]
            except ValueError:
                raise ValueError(f"--folds: expected 'all' or comma-separated fold numbers, got {spec!r}") from None
    bad = [f for f in out if not 0 <= f < n_folds]
    if not out or bad:
        raise ValueError(f"--folds: fold numbers must be in 0..{n_folds - 1}, got {spec!r}")
    return sorted(set(out))


def cross_validate(data_dir: str | Path, out_dir: str | Path, folds: list[int],
                   deadline: float | None = None, **train_kwargs: Any) -> dict:
    """Train each fold with :func:`affedge.training.trainer.train_fold`; write ``crossval.json``.

    ``deadline`` (a ``time.time()`` value) bounds all folds together: each fold gets an equal
    share of the time still left when it starts.
    Returns ``{"folds": {fold: summary}, "mean": {metric: mean over folds}}``.
    """
    import time

    from affedge.config import FeatureConfig, from_dict
    from affedge.training.model import check_same_model
    from affedge.training.trainer import model_config_for, train_fold

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    resume = getattr(train_kwargs.get("opts"), "resume", False) or train_kwargs.get("resume")
    if resume and train_kwargs.get("opts") is not None:  # before any data is loaded or cached:
        for f in folds:  # each fold's checkpoint holds the model asked for
            ck = next((d for d in (out / f"fold{f}" / "best", out / f"fold{f}" / "last")
                       if (d / "config.json").is_file()), None)
            if ck is not None:
                feats = json.loads((ck / "config.json").read_text()).get("features") or {}
                check_same_model(ck, model_config_for(train_kwargs["opts"],
                                                      from_dict(FeatureConfig, feats)))
    for i, f in enumerate(folds):
        done = out / f"fold{f}" / "summary.json"
        if resume and done.is_file():  # finished before the stop (its model checked above)
            results[str(f)] = json.loads(done.read_text())
            print(f"fold {f}: finished before (its summary.json); kept", file=sys.stderr,
                  flush=True)
            continue
        fold_deadline = None
        if deadline is not None:
            now = time.time()
            fold_deadline = now + (deadline - now) / (len(folds) - i)
        r = train_fold(data_dir, out / f"fold{f}", fold=f, deadline=fold_deadline, **train_kwargs)
        r.pop("model", None)
        results[str(f)] = r
    keys = [k for k in next(iter(results.values()))["best_metrics"] if isinstance(
        next(iter(results.values()))["best_metrics"][k], (int, float))]
    mean = {k: float(np.mean([r["best_metrics"][k] for r in results.values()])) for k in keys}
    summary = {"folds": results, "mean": mean}
    from affedge.training import ddp

    if ddp.context().is_main:
        (out / "crossval.json").write_text(json.dumps(summary, indent=2))
    return summary
