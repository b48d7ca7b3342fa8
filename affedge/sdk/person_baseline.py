"""Per-person baseline: shrink each tracked face's running mean prediction toward the training mean.

A model trained on few people carries each new person's constant offset (eyebrow height, eye
size, a resting face) into its output: on unseen synthetic identities the arousal prediction's
shape was right (Pearson 0.86-0.95) but each video sat 0.18-0.53 away from its label mean
(docs/RESULTS.md, "Where the 10-minute arousal is lost"). Subject-wise normalisation is the usual
answer in affect recognition; this is its causal, shrunken form. For one person (a tracked face)
with raw outputs ``y_0 .. y_t``:

    m_t  = mean(y_0 .. y_t)                      (the person's running mean, this frame included)
    y'_t = y_t - alpha * (m_t - mu)              (then clipped to [-1, 1])

``mu`` is the training labels' mean and ``alpha`` in [0, 1] per output: 0 leaves the model as it
is, 1 replaces the person's mean by the population's. ``affedge train`` fits ``alpha`` on its
validation videos (people it did not train on; :mod:`affedge.training.person_baseline_fit`) and
the bundle records both in its manifest (``person_baseline``). The state is a running sum and a
count per person, O(1) per frame. The first frame of a person is pulled ``alpha`` of the way to
``mu``, and the pull fades as the person's own mean settles.

Who is a person (:class:`PersonBaselines`, the engine's per-track registry): each face track has
one baseline, updated on every frame the track lives (also the few frames its face goes
undetected before the tracker drops it). The tracker gives a face that was out of sight for more than its ``max_age``
frames, or came back elsewhere, a new track id; a new track that starts within
:data:`HANDOVER_S` of the last detection of a face that is not in view now carries on with a copy
of that face's baseline (the most recent one; each is handed on once). On the synthetic held-out
videos, whose faces leave for 9-25 frames, restarting at every new id gave a held-out arousal
CCC of 0.731, the handover 0.755 (docs/RESULTS.md). The stream without a face (audio only) has
no baseline: it is not a face's output.

One implementation for training's fit and the runtime: :func:`shrink_offline` (a whole stream at
once) equals :class:`PersonBaseline` applied frame by frame.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

METHOD = "running-mean-shrink"
VERSION = 1
OUTPUTS = ("valence", "arousal")


def _number(x, lo: float, hi: float) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) \
        and lo <= x <= hi


def implemented(rec: Mapping) -> bool:
    """Whether this runtime implements the record's method and version."""
    return rec.get("method") == METHOD and type(rec.get("version")) is int \
        and rec.get("version") == VERSION


def check_record(rec: Any, *, applying: bool = True) -> dict[str, Any]:
    """A manifest's ``person_baseline`` record, checked: an object; ``alpha`` in [0, 1] and
    ``mean`` in [-1, 1] per output; the fit's context (``val_ccc_before``/``after``: a CCC in
    [-1, 1] per output; ``val_trials``/``val_frames``: counts; ``fitted_on``: text). A method
    or version this runtime does not implement is refused only when ``applying`` (a bundle from
    a newer affedge still runs with the baseline switched off). Raises ValueError."""
    if not isinstance(rec, Mapping):
        raise ValueError(f"must be an object, got {type(rec).__name__}")
    if not implemented(rec):
        if applying:
            raise ValueError(f"method {rec.get('method')!r} version {rec.get('version')!r} is "
                             f"not the one this affedge implements ({METHOD!r} version "
                             f"{VERSION}); switch it off for the model's own outputs "
                             f"(run --no-person-baseline, Recognizer(person_baseline=False))")
        return dict(rec)
    for key, lo in (("alpha", 0.0), ("mean", -1.0)):
        v = rec.get(key)
        if (not isinstance(v, (list, tuple)) or len(v) != len(OUTPUTS)
                or not all(_number(x, lo, 1.0) for x in v)):
            raise ValueError(f"{key} must be {len(OUTPUTS)} numbers in [{lo:g}, 1], got {v!r}")
    for key in ("val_ccc_before", "val_ccc_after"):
        v = rec.get(key)
        if v is not None and not (isinstance(v, Mapping) and set(v) <= set(OUTPUTS)
                                  and all(_number(x, -1.0, 1.0) for x in v.values())):
            raise ValueError(f"{key} must map {list(OUTPUTS)} to a CCC in [-1, 1], got {v!r}")
    for key in ("val_trials", "val_frames"):
        v = rec.get(key)
        if v is not None and not (type(v) is int and v >= 0):
            raise ValueError(f"{key} must be a count, got {v!r}")
    if rec.get("fitted_on") is not None and not isinstance(rec["fitted_on"], str):
        raise ValueError(f"fitted_on must be text, got {rec['fitted_on']!r}")
    return dict(rec)


def make_record(alpha, mean, **context: Any) -> dict[str, Any]:
    """The manifest record for ``alpha`` and ``mean`` (plus any fit context: how, on what)."""
    return check_record({"method": METHOD, "version": VERSION,
                         "alpha": [float(a) for a in alpha], "mean": [float(m) for m in mean],
                         **context})


#: a new track within this many seconds of a lost face's last sighting is taken to be that face
#: (long enough for a look away or a brief occlusion; a new person rarely steps in that fast)
HANDOVER_S = 2.0


class PersonBaseline:
    """One person's state: the running sum and count of the raw outputs (module docstring)."""

    def __init__(self, alpha, mean):
        self.alpha = np.asarray(alpha, np.float64)
        self.mean = np.asarray(mean, np.float64)
        self._sum = np.zeros_like(self.alpha)
        self._n = 0

    def update(self, y: np.ndarray) -> np.ndarray:
        """One frame's raw outputs -> the shifted ones (float32, clipped to [-1, 1])."""
        self._sum += y
        self._n += 1
        shift = self.alpha * (self._sum / self._n - self.mean)
        return np.clip(np.asarray(y, np.float64) - shift, -1.0, 1.0).astype(np.float32)

    def reset(self) -> None:
        self._sum[:] = 0.0
        self._n = 0

    def copy(self) -> "PersonBaseline":
        c = PersonBaseline(self.alpha, self.mean)
        c._sum[:] = self._sum
        c._n = self._n
        return c


class PersonBaselines:
    """One baseline per face track, handed on to a track that starts within ``handover_s`` of
    a lost face's last sighting (module docstring). The engine calls :meth:`update` in track
    order from its commit stage only, so a pipelined run hands on exactly as a serial one."""

    def __init__(self, alpha, mean, handover_s: float = HANDOVER_S):
        self.alpha, self.mean, self.handover_s = alpha, mean, float(handover_s)
        self._by_track: dict[int, PersonBaseline] = {}
        self._seen: dict[int, float] = {}  # track id -> time its face was last detected
        self._touched: dict[int, float] = {}  # track id -> time of its last update

    @classmethod
    def from_record(cls, rec) -> "PersonBaselines | None":
        return None if rec is None else cls(rec["alpha"], rec["mean"])

    def update(self, track_id: int, y: np.ndarray, t: float, detected: bool,
               in_view: set) -> np.ndarray:
        """Track ``track_id``'s raw outputs at time ``t`` -> shifted ones. ``in_view``: the ids
        of the tracks whose face was detected in this frame (they hand nothing on)."""
        b = self._by_track.get(track_id)
        if b is None:
            b = self._by_track[track_id] = self._inherit(track_id, t, in_view)
        if detected:
            self._seen[track_id] = t
        self._touched[track_id] = t
        for k in [k for k, last in self._touched.items() if t - last > self.handover_s]:
            self._forget(k)  # a track gone for longer than the handover time
        return b.update(y)

    def _forget(self, track_id: int) -> None:
        self._by_track.pop(track_id, None)
        self._seen.pop(track_id, None)
        self._touched.pop(track_id, None)

    def _inherit(self, track_id: int, t: float, in_view: set) -> PersonBaseline:
        lost = [(seen, k) for k, seen in self._seen.items()
                if k != track_id and k not in in_view and t - seen <= self.handover_s]
        if not lost:
            return PersonBaseline(self.alpha, self.mean)
        _, k = max(lost)
        del self._seen[k]  # handed on once
        return self._by_track[k].copy()

    def reset(self) -> None:
        self._by_track.clear()
        self._seen.clear()
        self._touched.clear()


def shrink_offline(preds: np.ndarray, alpha, mean) -> np.ndarray:
    """A whole stream ``[L, 2]`` at once: the same values as :class:`PersonBaseline` frame by
    frame (float64 running sums, so the two agree to float32 rounding)."""
    y = np.asarray(preds, np.float64)
    m = np.cumsum(y, axis=0) / np.arange(1, len(y) + 1)[:, None]
    out = y - np.asarray(alpha, np.float64) * (m - np.asarray(mean, np.float64))
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def describe(rec: dict[str, Any]) -> str:
    """One line: alpha per output, the mean it shifts toward, validation CCC before -> after."""
    a, m = rec["alpha"], rec["mean"]
    parts = [f"alpha V {a[0]:.2f} / A {a[1]:.2f}, toward the training mean V {m[0]:+.3f} / "
             f"A {m[1]:+.3f}"]
    before, after = rec.get("val_ccc_before"), rec.get("val_ccc_after")
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        n = rec.get("val_trials")
        parts.append(f"on {n} validation videos" if isinstance(n, int) else "fitted")
        parts.append("validation CCC (clipped as at run time) " + ", ".join(
            f"{o[0].upper()} {before[o]:.3f} -> {after[o]:.3f}" for o in OUTPUTS
            if o in before and o in after))
    return "; ".join(parts)
