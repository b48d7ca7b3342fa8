"""Audio feature normalisation statistics from a fold's TRAINING trials only.

Per-dimension mean and standard deviation (population, float64 accumulation) of every audio
stream; a deliberate change from the paper's scalar, per-partition statistics (PAPER.md §1.5 and
§8.2 item 3: those include the test partition itself). The statistics are plain JSON
(``{"stream": {"mean": [...], "std": [...]}}``) so they travel in checkpoints and bundles.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from affedge.preprocess import audio_normaliser

__all__ = ["MIN_STD", "apply", "apply_stats", "compute_stats", "validate_stats"]

MIN_STD = 1e-6  # floor for constant dimensions


def compute_stats(audio_trials: Iterable[Mapping[str, np.ndarray]],
                  streams: Iterable[str] | None = None) -> dict[str, dict]:
    """Stats over all rows of all given trials (each a dict name -> float [L, D]).

    ``streams``: only these streams (each must be in every trial); default: all.
    """
    streams = None if streams is None else list(streams)
    sums: dict[str, list] = {}
    for k, trial in enumerate(audio_trials):
        names = list(trial) if streams is None else streams
        for name in names:
            if name not in trial:
                raise KeyError(f"compute_stats: trial {k} has no audio stream {name!r}")
            x = trial[name]
            x = np.asarray(x, np.float64)
            if x.ndim != 2:
                raise ValueError(f"compute_stats: trial {k} stream {name!r} must be [L, D], "
                                 f"got shape {x.shape}")
            if not np.all(np.isfinite(x)):
                raise ValueError(f"compute_stats: trial {k} stream {name!r} has NaN/Inf")
            if name not in sums:
                sums[name] = [0, np.zeros(x.shape[1]), np.zeros(x.shape[1])]
            s = sums[name]
            if s[1].shape[0] != x.shape[1]:
                raise ValueError(f"compute_stats: stream {name!r} dim {x.shape[1]} differs "
                                 f"from earlier trials ({s[1].shape[0]})")
            s[0] += x.shape[0]
            s[1] += x.sum(0)
            s[2] += (x * x).sum(0)
    if not sums:
        raise ValueError("compute_stats: no trials given")
    out = {}
    for name, (n, s1, s2) in sums.items():
        if n == 0:
            raise ValueError(f"compute_stats: stream {name!r} has no rows")
        mean = s1 / n
        var = np.maximum(s2 / n - mean * mean, 0.0)
        std = np.maximum(np.sqrt(var), MIN_STD)
        out[name] = {"mean": mean.tolist(), "std": std.tolist(), "count": int(n)}
    return out


def validate_stats(stats: Mapping) -> None:
    for name, st in stats.items():
        mean, std = np.asarray(st["mean"], float), np.asarray(st["std"], float)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise ValueError(f"normalisation stats for {name!r}: mean/std shapes differ")
        if not (np.all(np.isfinite(mean)) and np.all(std > 0)):
            raise ValueError(f"normalisation stats for {name!r}: non-finite mean or std <= 0")


def apply(audio: Mapping[str, np.ndarray], stats: Mapping) -> dict[str, np.ndarray]:
    """(x - mean) / std per dimension, for every stream in ``audio`` -> float32 (the one
    normalisation of :func:`affedge.preprocess.audio_normaliser`)."""
    out = {}
    for name, x in audio.items():
        if name not in stats:
            raise KeyError(f"no normalisation stats for audio stream {name!r}")
        norm = audio_normaliser({name: stats[name]})[name]
        x = np.asarray(x, np.float32)
        dim = len(stats[name]["mean"])
        if x.shape[-1] != dim:
            raise ValueError(f"stream {name!r}: features have dim {x.shape[-1]}, "
                             f"stats have {dim}")
        out[name] = norm(x)
    return out


apply_stats = apply  # the name the trainer uses
