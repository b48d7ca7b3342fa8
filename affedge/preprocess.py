"""Model-input normalisation read from a bundle's manifest: one function each for crops and audio.

Training writes these values into the checkpoint and the exporter copies them into the bundle's
``crop`` and ``audio_norm`` sections; training, export parity and the runtime all normalise
through the functions here, so a bundle whose statistics differ is also normalised differently.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

#: the crop normalisation of PAPER.md §1.3 (x/255 - 0.5)/0.5 -> [-1, 1], used when a manifest
#: has no ``crop`` section (bundles of the first schema)
DEFAULT_CROP = {"scale": 1.0 / 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}

#: a standard deviation below this is treated as this (constant dimensions; training floors
#: its statistics at 1e-6 already, so this never changes a trained model's numbers)
MIN_STD = 1e-8


@dataclass(frozen=True)
class CropNorm:
    """``(x * scale - mean) / std`` per RGB channel on float32 pixels."""

    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] pixels (0-255) -> the model's input range."""
        x = np.asarray(x, np.float32)
        if self.is_default:  # the exact float32 operations training used since schema 1
            return (x / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
        return (x * np.float32(self.scale) - mean) / std

    @property
    def is_default(self) -> bool:
        return (self.scale == DEFAULT_CROP["scale"] and list(self.mean) == DEFAULT_CROP["mean"]
                and list(self.std) == DEFAULT_CROP["std"])


def crop_normaliser(crop: Mapping | None = None) -> CropNorm:
    """The crop normalisation of a manifest's ``crop`` section (None: :data:`DEFAULT_CROP`).
    ValueError naming the field when a value is not usable."""
    crop = dict(crop or {})
    vals = {k: crop.get(k, DEFAULT_CROP[k]) for k in DEFAULT_CROP}
    try:
        scale = float(vals["scale"])
        mean = tuple(float(v) for v in vals["mean"])
        std = tuple(float(v) for v in vals["std"])
    except (TypeError, ValueError):
        raise ValueError(f"crop normalisation: scale/mean/std must be numbers, got {vals}") \
            from None
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"crop normalisation: mean and std need 3 values (RGB), got "
                         f"{len(mean)} and {len(std)}")
    if not (np.isfinite([scale, *mean, *std]).all() and scale > 0 and min(std) > 0):
        raise ValueError(f"crop normalisation: need finite values, scale > 0 and std > 0, got "
                         f"{vals}")
    return CropNorm(scale, mean, std)


def normalise_audio(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per feature dimension in float32 (rows on the last axis)."""
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are checked by callers
        return ((np.asarray(x, np.float32) - mean) / std).astype(np.float32, copy=False)


def audio_normaliser(audio_norm: Mapping | None) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """``{feature kind: fn(rows) -> normalised rows}`` from ``{kind: {"mean": [...], "std":
    [...]}}`` (a manifest's ``audio_norm`` or a checkpoint's ``norm_stats``)."""
    out = {}
    for kind, st in (audio_norm or {}).items():
        mean = np.asarray(st["mean"], np.float32)
        std = np.maximum(np.asarray(st["std"], np.float32), np.float32(MIN_STD))
        out[kind] = (lambda x, m=mean, s=std: normalise_audio(x, m, s))
    return out
