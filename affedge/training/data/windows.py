"""Training windows over a trial's labelled frames (PAPER.md §5, ``ABAW2_VA_Arranger``).

* ``make_windows(L, 300, 200)``: starts 0, 200, 400, ... while start + 300 < L, plus one final
  window [L - 300, L); a trial with L <= 300 gets the single window [0, L), which the caller
  zero-pads to 300 (``pad_window``; the padding counts in the loss, as in the paper).
* ``apply_label_delay(labels, n)``: labels move n frames earlier, the last value is repeated.
* ``overlap_average(L, windows, preds)``: frames covered by several windows get the mean.
"""
from __future__ import annotations

import numpy as np

__all__ = ["apply_label_delay", "make_windows", "overlap_average", "pad_window"]


def make_windows(L: int, window: int = 300, hop: int = 200) -> list[tuple[int, int]]:
    """[start, end) windows over a sequence of L frames (PAPER.md §5)."""
    L, window, hop = int(L), int(window), int(hop)
    if L < 1:
        raise ValueError(f"make_windows: sequence length must be >= 1, got {L}")
    if window < 1 or hop < 1:
        raise ValueError(f"make_windows: window and hop must be >= 1, got {window}, {hop}")
    if L <= window:
        return [(0, L)]
    out = []
    start = 0
    while start + window < L:
        out.append((start, start + window))
        start += hop
    out.append((L - window, L))
    return out


def pad_window(x: np.ndarray, window: int) -> np.ndarray:
    """Zero-pad ``x`` [T, ...] at the end to ``window`` rows (T <= window)."""
    x = np.asarray(x)
    if x.shape[0] > window:
        raise ValueError(f"pad_window: {x.shape[0]} rows exceed the window {window}")
    if x.shape[0] == window:
        return x
    pad = np.zeros((window - x.shape[0],) + x.shape[1:], x.dtype)
    return np.concatenate([x, pad], axis=0)


def apply_label_delay(labels: np.ndarray, n: int) -> np.ndarray:
    """Shift labels ``n`` frames earlier (out[t] = labels[t + n]), repeating the last value."""
    labels = np.asarray(labels)
    n = int(n)
    if n < 0:
        raise ValueError(f"apply_label_delay: delay must be >= 0, got {n}")
    if n == 0 or labels.shape[0] == 0:
        return labels.copy()
    idx = np.minimum(np.arange(labels.shape[0]) + n, labels.shape[0] - 1)
    return labels[idx]


def overlap_average(L, windows, preds) -> np.ndarray:
    """Average per-window predictions into one [L, D] (or [L]) sequence.

    ``preds[k]`` has at least ``end - start`` rows (padded windows may be longer; the extra rows
    are ignored). Every frame must be covered by some window. The order
    ``overlap_average(preds, windows, L)`` is accepted too (the trainer's call).
    """
    if not isinstance(L, (int, np.integer)) and isinstance(preds, (int, np.integer)):
        L, preds = preds, L
    windows = list(windows)
    preds = [np.asarray(p, np.float64) for p in preds]
    if len(windows) != len(preds):
        raise ValueError(f"overlap_average: {len(windows)} windows but {len(preds)} predictions")
    if not preds:
        raise ValueError("overlap_average: no windows")
    D = preds[0].shape[1] if preds[0].ndim == 2 else None
    shape = (int(L),) if D is None else (int(L), D)
    acc = np.zeros(shape)
    cnt = np.zeros(int(L))
    for (s, e), p in zip(windows, preds):
        if not 0 <= s < e <= L:
            raise ValueError(f"overlap_average: window [{s}, {e}) outside [0, {L})")
        if p.shape[0] < e - s:
            raise ValueError(f"overlap_average: window [{s}, {e}) has only {p.shape[0]} rows")
        acc[s:e] += p[: e - s]
        cnt[s:e] += 1
    if np.any(cnt == 0):
        raise ValueError(f"overlap_average: frame {int(np.argmin(cnt))} is covered by no window")
    return (acc / (cnt if D is None else cnt[:, None])).astype(np.float32)
