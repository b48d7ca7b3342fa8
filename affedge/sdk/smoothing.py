"""The one causal smoothing knob of the runtime.

``ExponentialSmoother(alpha)`` is a first-order exponential moving average applied per video
frame:

    s_0 = x_0,        s_t = alpha * s_{t-1} + (1 - alpha) * x_t,      0 <= alpha < 1

``alpha = 0`` passes the raw value through. It is causal (uses only past and present frames)
and costs O(1) per frame. Its lag, in frames (multiply by the frame period for seconds):

* mean delay (group delay at low frequencies) ``alpha / (1 - alpha)`` frames,
  e.g. 0.5 -> 1 frame, 0.8 -> 4 frames, 0.9 -> 9 frames, 0.95 -> 19 frames;
* time constant ``-1 / ln(alpha)`` frames (a step reaches 63 % after that many frames),
  e.g. 0.8 -> 4.5 frames, 0.9 -> 9.5 frames.

Both are exposed as :func:`lag_frames` and :func:`time_constant_frames`. The smoother works in
frames (not seconds) on purpose: the model itself is a per-frame network, so a knob value means
the same amount of model-output averaging at any frame rate.
"""
from __future__ import annotations

import math

import numpy as np


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not (0.0 <= alpha < 1.0) or not math.isfinite(alpha):
        raise ValueError(f"smoothing must be in [0, 1) (0 = raw), got {alpha!r}")
    return alpha


def lag_frames(alpha: float) -> float:
    """Mean delay of the exponential smoother in frames: alpha / (1 - alpha)."""
    alpha = _check_alpha(alpha)
    return alpha / (1.0 - alpha)


def time_constant_frames(alpha: float) -> float:
    """Frames for a step to reach 1 - 1/e of its final value: -1 / ln(alpha) (0 for alpha=0)."""
    alpha = _check_alpha(alpha)
    return 0.0 if alpha == 0.0 else -1.0 / math.log(alpha)


class ExponentialSmoother:
    """Causal EMA over a small vector (valence, arousal); see the module docstring."""

    def __init__(self, alpha: float = 0.0, dim: int = 2):
        self.alpha = _check_alpha(alpha)
        self.dim = int(dim)
        self._state: np.ndarray | None = None

    def reset(self) -> None:
        self._state = None

    @property
    def value(self) -> np.ndarray | None:
        """The last smoothed value (None before the first update)."""
        return None if self._state is None else self._state.copy()

    def update(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(self.dim)
        if self._state is None or self.alpha == 0.0:
            self._state = x.copy()
        else:
            self._state = self.alpha * self._state + (1.0 - self.alpha) * x
        return self._state.copy()
