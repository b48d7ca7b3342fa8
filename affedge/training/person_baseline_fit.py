"""Fit the per-person baseline's strength (``alpha`` per output) on the validation videos.

The validation videos are people the model did not train on, which is what the baseline is for
(:mod:`affedge.sdk.person_baseline`). For each output on its own, ``alpha`` is the value on a
0.05 grid in [0, 1] whose shifted predictions give the highest CCC over the concatenated
validation frames (ties: the smallest), and ``mean`` is the training labels' mean. The record
keeps the validation CCC before and after (on predictions clipped to [-1, 1], as the runtime
clips them), so ``affedge doctor --bundle`` can show what the fit bought. ``alpha`` 0 is always
a candidate, so on its own data the fit never makes the model worse; with two or three
validation people the choice is still noisy, and with fewer than :data:`MIN_VAL_TRIALS` nothing
is fitted.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from affedge.metrics import ccc
from affedge.sdk.person_baseline import OUTPUTS, make_record, shrink_offline

GRID = np.round(np.arange(0.0, 1.0 + 1e-9, 0.05), 2)
#: fewer validation videos than this and nothing is fitted: with one person, alpha would undo
#: that person's own offset, not a population's (a new-user trial: fitted on 1 video, alpha
#: 0.70 lowered valence CCC on 3 new people from 0.34-0.57 to 0.25-0.56)
MIN_VAL_TRIALS = 2


def _valid(labels: np.ndarray) -> np.ndarray:
    return (np.asarray(labels) > -5).all(axis=1)  # Aff-Wild2's -5 marks an unlabelled frame


def training_mean(train_labels: Sequence[np.ndarray]) -> np.ndarray:
    """Mean valence and arousal over every labelled training frame."""
    ys = [np.asarray(y, np.float64)[_valid(y)] for y in train_labels]
    y = np.concatenate(ys) if ys else np.zeros((0, len(OUTPUTS)))
    if not len(y):
        raise ValueError("person baseline: the training trials have no labelled frame")
    return y.mean(axis=0)


def fit(val_preds: Sequence[np.ndarray], val_labels: Sequence[np.ndarray],
        mean: np.ndarray) -> dict[str, Any]:
    """``alpha`` per output from whole validation trials (each trial one stream, frames in
    order) -> the manifest record (:func:`affedge.sdk.person_baseline.make_record`)."""
    if not val_preds or len(val_preds) != len(val_labels):
        raise ValueError("person baseline: needs the predictions of every validation trial")
    labels = np.concatenate([np.asarray(y)[_valid(y)] for y in val_labels])
    raw = [np.clip(np.asarray(p, np.float64), -1.0, 1.0) for p in val_preds]

    def shifted(alpha: np.ndarray) -> np.ndarray:
        return np.concatenate([shrink_offline(p, alpha, mean)[_valid(y)]
                               for p, y in zip(raw, val_labels)])

    scores = np.array([[ccc(labels[:, k], s[:, k]) for k in range(len(OUTPUTS))]
                       for s in (shifted(np.full(len(OUTPUTS), a)) for a in GRID)])
    best = np.argmax(np.nan_to_num(scores, nan=-2.0), axis=0)  # first maximum: smallest alpha
    alpha = GRID[best]
    return make_record(alpha, mean, fitted_on="validation", val_trials=len(val_preds),
                       val_frames=int(len(labels)),
                       val_ccc_before={o: float(scores[0, k]) for k, o in enumerate(OUTPUTS)},
                       val_ccc_after={o: float(scores[best[k], k]) for k, o in enumerate(OUTPUTS)})


def fit_for_run(data, val_preds: dict[int, np.ndarray], enabled: bool = True) -> dict[str, Any]:
    """The trainer's call: the record for a fold's best model (``val_preds``: validation trial
    index -> its predictions), or ``{"off": why}`` when it is switched off or cannot be fitted."""
    if not enabled:
        return {"off": "not fitted (--no-person-baseline, or the paper profile)"}
    if len(data.val) < MIN_VAL_TRIALS:
        return {"off": f"not fitted: {len(data.val)} validation video(s), fewer than the "
                       f"{MIN_VAL_TRIALS} it needs to choose alpha for people it has not seen"}
    if len(val_preds) != len(data.val):
        return {"off": "not fitted: the predictions of some validation trials are missing (a "
                       "distributed run gives each rank a share)"}
    order = sorted(val_preds)
    return fit([val_preds[i] for i in order], [data.val[i].labels for i in order],
               training_mean([t.labels for t in data.train]))
