"""The pictures a training run leaves in its fold directory: validation predictions and curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from affedge.training.train_utils import read_csv


def plot_validation(out: Path, trial, preds: dict[int, np.ndarray], best_epoch: int,
                    best_score: float) -> None:
    """``val_pred.png``: predictions vs labels of the first validation trial (``preds[0]``)."""
    from affedge.plotting import plot_va

    if trial is None or 0 not in preds:
        return
    p = preds[0]
    time_s = np.arange(len(trial)) / trial.fps
    plot_va(Path(out) / "val_pred.png", time_s,
            {"labels": (trial.labels[:, 0], trial.labels[:, 1]),
             "prediction": (p[:, 0], p[:, 1])},
            title=f"validation trial {trial.key} (epoch {best_epoch}, "
                  f"mean CCC {best_score:.3f})", masks={"no face": ~trial.face})


def plot_training_curves(out: Path) -> None:
    """``curves.png``: training loss and validation CCC per epoch, from ``metrics.csv``."""
    from affedge.plotting import plot_curves

    rows = read_csv(Path(out) / "metrics.csv")
    if not rows:
        return
    x = [float(r["epoch"]) for r in rows]
    plot_curves(Path(out) / "curves.png", x,
                {k: [float(r[k]) for r in rows]
                 for k in ("train_loss", "valence_ccc", "arousal_ccc")},
                title="training loss and validation CCC", ylabel="loss / CCC")
