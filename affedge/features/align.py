"""Put rows of a timestamped feature stream onto other times (e.g. 100 Hz audio onto video frames).

``sample_at(times, feats, query_times, mode)``, vectorised with ``np.searchsorted``. Training uses
it to align audio rows with video frame times; the runtime ring buffer's ``at()`` follows the same
rules:

* ``"previous"``: the last row with ``times[j] <= t`` (causal: never a row from the future);
  a query before the first row gets row 0.
* ``"nearest"``: the row whose time is closest to ``t``; an exact tie goes to the earlier row.
* ``"linear"``: linear interpolation between the two rows around ``t``, clamped to the first/last
  row outside ``[times[0], times[-1]]``.

``times`` must be finite and strictly increasing (duplicates are an error, as in the ring buffer).
"""
from __future__ import annotations

import numpy as np

__all__ = ["MODES", "sample_at", "sample_indices"]

MODES = ("previous", "nearest", "linear")


def _check(times, feats, query_times):
    times = np.asarray(times, dtype=np.float64)
    feats = np.asarray(feats)
    q = np.asarray(query_times, dtype=np.float64)
    if times.ndim != 1:
        raise ValueError(f"sample_at: times must be 1-D, got shape {times.shape}")
    if times.size == 0:
        raise ValueError("sample_at: the stream is empty (no rows to sample)")
    if feats.ndim != 2 or feats.shape[0] != times.size:
        raise ValueError(
            f"sample_at: feats must be [len(times)={times.size}, D], got shape {feats.shape}"
        )
    if not np.all(np.isfinite(times)):
        raise ValueError("sample_at: times contain NaN or Inf")
    if times.size > 1 and not np.all(np.diff(times) > 0):
        bad = int(np.argmin(np.diff(times) > 0)) + 1
        raise ValueError(
            f"sample_at: times must be strictly increasing; times[{bad}]={times[bad]!r} "
            f"<= times[{bad - 1}]={times[bad - 1]!r}"
        )
    if q.ndim != 1:
        raise ValueError(f"sample_at: query_times must be 1-D, got shape {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError("sample_at: query_times contain NaN or Inf")
    return times, feats, q


def sample_indices(times, query_times, mode: str = "previous") -> np.ndarray:
    """Row index picked for each query by ``"previous"`` or ``"nearest"`` (int64[q])."""
    times = np.asarray(times, dtype=np.float64)
    q = np.asarray(query_times, dtype=np.float64)
    last = times.size - 1
    if mode == "previous":
        return np.clip(np.searchsorted(times, q, side="right") - 1, 0, last)
    if mode == "nearest":
        right = np.clip(np.searchsorted(times, q, side="left"), 0, last)  # first time >= t
        left = np.clip(right - 1, 0, last)
        take_right = (times[right] - q) < (q - times[left])  # strict: ties go to the earlier row
        return np.where(take_right, right, left)
    raise ValueError(f"sample_indices: mode must be 'previous' or 'nearest', got {mode!r}")


def sample_at(times, feats, query_times, mode: str = "previous") -> np.ndarray:
    """Rows of ``feats [m, D]`` (timestamps ``times [m]``) at ``query_times [q]`` -> float32[q, D].

    ``query_times`` need not be sorted. See the module docstring for the modes.
    """
    if mode not in MODES:
        raise ValueError(f"sample_at: mode must be one of {MODES}, got {mode!r}")
    times, feats, q = _check(times, feats, query_times)
    if mode in ("previous", "nearest"):
        return np.ascontiguousarray(feats[sample_indices(times, q, mode)], dtype=np.float32)
    last = times.size - 1
    hi = np.clip(np.searchsorted(times, q, side="right"), 1, max(last, 1))
    lo = hi - 1
    if last == 0:
        return np.repeat(feats[:1].astype(np.float32), q.size, axis=0)
    w = np.clip((q - times[lo]) / (times[hi] - times[lo]), 0.0, 1.0)[:, None]
    f = feats.astype(np.float64, copy=False)
    return ((1.0 - w) * f[lo] + w * f[hi]).astype(np.float32)
