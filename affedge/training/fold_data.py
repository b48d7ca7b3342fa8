"""The data of one cross-validation fold in memory: trials, normalised audio, windows."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from affedge.config import FeatureConfig


# ============================================================================================
# Data of one fold
# ============================================================================================
@dataclass
class Trial:
    """One labelled trial in memory: frames, per-stream normalised audio, labels."""

    key: str
    frames: np.ndarray  # uint8 [L, 48, 48, 3] RGB
    face: np.ndarray  # bool [L]
    labels: np.ndarray  # float32 [L, 2]
    audio: list[np.ndarray]  # float32 [L, D_i], model stream order, normalised
    fps: float = 30.0

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class FoldData:
    train: list[Trial]
    val: list[Trial]
    norm_stats: dict[str, Any]
    feature_cfg: FeatureConfig
    info: dict[str, Any] = field(default_factory=dict)


def load_fold(data_dir: str | Path, fold: int, feature_cfg: FeatureConfig | None = None,
              cache_dir: str | Path | None = None, require_audio: bool = True) -> FoldData:
    """Read the dataset, split it with ``six_fold_split`` and normalise audio with the fold's
    training-trial statistics (PAPER.md §1.5, but train-only statistics, §8.2 #3).
    ``require_audio=False`` (visual-only training): videos without an audio track are read
    with zero audio features (``AffWild2VA``'s ``require_audio``)."""
    from affedge.features.frontend import dataset_frontend
    from affedge.training.data import affwild2, normalization
    from affedge.training.data import folds as folds_mod

    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory not found: {root}")
    fcfg = feature_cfg or FeatureConfig()
    ds = affwild2.AffWild2VA(root, fcfg, cache_dir=cache_dir, require_audio=require_audio)
    train_ids, val_ids = folds_mod.fold_trials(ds, fold)
    if not train_ids:
        raise ValueError(f"{root}: fold {fold} has no training trials")
    if not val_ids:
        raise ValueError(f"{root}: fold {fold} has no validation trials")
    raw_train = [ds.load(t) for t in train_ids]
    raw_val = [ds.load(t) for t in val_ids]
    _check_faces(root, raw_train + raw_val)
    stats = normalization.compute_stats([r.audio for r in raw_train], fcfg.streams)

    def conv(tid, r) -> Trial:
        audio = normalization.apply_stats(r.audio, stats)
        return Trial(tid.name, r.frames, np.asarray(r.face_present, bool),
                     np.asarray(r.labels, np.float32),
                     [np.asarray(audio[n], np.float32) for n in fcfg.streams], float(r.fps))

    return FoldData([conv(t, r) for t, r in zip(train_ids, raw_train)],
                    [conv(t, r) for t, r in zip(val_ids, raw_val)], stats, fcfg,
                    {"train_trials": [t.name for t in train_ids], "val_trials": [t.name for t in val_ids],
                     "face_frontend": dataset_frontend(root)})


#: below this share of labelled frames with a face crop, training warns (Aff-Wild2's own
#: cropped_aligned has a face in most labelled frames; a low share is usually a naming or
#: path mistake, and the model then learns mostly from the voice)
LOW_FACE_SHARE = 0.2


def _check_faces(root: Path, trials) -> None:
    """ValueError when no labelled frame of the fold has a face crop (the model would learn
    from the audio alone and still be called "learned"); a warning when few have one."""
    from affedge import log

    n = sum(len(r.face_present) for r in trials)
    have = sum(int(np.count_nonzero(r.face_present)) for r in trials)
    where = (f"{root}/cropped_aligned/<video>/NNNNN.jpg (the frame number from 00001, "
             f".jpg)")
    if n and not have:
        raise ValueError(f"{root}: none of the {n} labelled frames has a face crop (looked for "
                         f"{where}); the model would learn from the audio alone")
    if n and have / n < LOW_FACE_SHARE:
        log.status(f"WARNING: only {have / n:.0%} of the labelled frames have a face crop "
                   f"({where}); the rest train as 'no face'")


def trial_windows(length: int, window: int, hop: int) -> list[tuple[int, int]]:
    """``[(start, end)]`` of the windows of a trial (PAPER.md §5 arrangement)."""
    from affedge.training.data.windows import make_windows

    return [(int(s), int(e)) for s, e in make_windows(length, window, hop)]
