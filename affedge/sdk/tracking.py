"""IoU face tracker with stable ids (SORT-like, without a Kalman filter).

Each frame, detections are matched to live tracks greedily by IoU (highest pair first) between
the detection and the track's *predicted* box (last box moved by the track's smoothed velocity,
so two faces that cross keep their ids and a face that reappears after a short occlusion is
re-associated). Rules:

* a match needs IoU >= ``iou_threshold``;
* an unmatched detection starts a new track with a new id (ids are never reused);
* a track unmatched for more than ``max_age`` consecutive frames is deleted;
* a track is *confirmed* once it has been matched ``min_hits`` times; only confirmed tracks are
  reported by :meth:`IouTracker.confirmed` (tentative ones still exist, so a real face is not
  delayed by more than ``min_hits - 1`` frames, while a one-frame false positive never shows up).

:class:`TrackAssistedDetector` schedules the face detector around the tracks: a full-frame
pass every K frames, a small region search around each track in between.

Boxes are ``(x, y, w, h)`` in pixels. Anything with ``.x .y .w .h`` (and optionally ``.score``)
or a 4/5-sequence is accepted as a detection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = (float(v) for v in a[:4])
    bx, by, bw, bh = (float(v) for v in b[:4])
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0.0 or ih <= 0.0:
        return 0.0
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0.0 else 0.0


def _as_box(det) -> tuple[tuple[float, float, float, float], float]:
    if hasattr(det, "x"):
        box = (float(det.x), float(det.y), float(det.w), float(det.h))
        score = float(getattr(det, "score", 1.0))
    else:
        seq = list(det)
        if len(seq) not in (4, 5):
            raise ValueError(f"detection must be (x, y, w, h[, score]); got {det!r}")
        box = tuple(float(v) for v in seq[:4])  # type: ignore[assignment]
        score = float(seq[4]) if len(seq) == 5 else 1.0
    if not all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"detection box must be finite with positive size; got {box}")
    return box, score  # type: ignore[return-value]


@dataclass
class Track:
    """One tracked face. ``box`` is the last matched box; ``time_since_update`` counts the frames
    since it was last matched (0 = detected in the current frame)."""

    id: int
    box: tuple[float, float, float, float]
    score: float
    hits: int = 1
    age: int = 1  # frames since the track was created (inclusive)
    time_since_update: int = 0
    velocity: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    confirmed: bool = False

    @property
    def detected(self) -> bool:
        return self.time_since_update == 0

    def predicted_box(self, steps: int = 1) -> tuple[float, float, float, float]:
        x, y, w, h = self.box
        vx, vy, vw, vh = self.velocity
        w2 = max(1.0, w + vw * steps)
        h2 = max(1.0, h + vh * steps)
        return (x + vx * steps, y + vy * steps, w2, h2)


class IouTracker:
    """Greedy IoU tracker with constant-velocity prediction; see the module docstring."""

    def __init__(self, iou_threshold: float = 0.3, max_age: int = 15, min_hits: int = 1,
                 max_tracks: int | None = None, velocity_smoothing: float = 0.5):
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_age < 0 or min_hits < 1:
            raise ValueError(f"need max_age >= 0 and min_hits >= 1, got {max_age}, {min_hits}")
        self.iou_threshold = float(iou_threshold)
        self.max_age = int(max_age)
        self.min_hits = int(min_hits)
        self.max_tracks = max_tracks
        self.velocity_smoothing = float(velocity_smoothing)
        self.tracks: list[Track] = []
        self.removed: list[int] = []
        self._next_id = 0

    def reset(self) -> None:
        self.tracks = []
        self.removed = []
        self._next_id = 0

    def update(self, detections) -> list[Track]:
        """Advance one frame with this frame's detections; returns all live tracks (matched,
        new, and those in an occlusion gap), oldest first. Also reports which tracks were
        removed in :attr:`removed` (ids) for the caller to free per-track state."""
        dets = [_as_box(d) for d in detections]
        # predicted boxes for this frame (tracks already missed s frames predict s+1 ahead)
        preds = [t.predicted_box(t.time_since_update + 1) for t in self.tracks]
        pairs = []
        for ti, pb in enumerate(preds):
            for di, (db, _) in enumerate(dets):
                v = iou(pb, db)
                if v >= self.iou_threshold:
                    pairs.append((v, ti, di))
        pairs.sort(key=lambda p: -p[0])
        used_t: set[int] = set()
        used_d: set[int] = set()
        for _, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            self._match(self.tracks[ti], *dets[di])
        for ti, t in enumerate(self.tracks):
            t.age += 1
            if ti not in used_t:
                t.time_since_update += 1
        # new tracks for unmatched detections, largest first, up to max_tracks
        new = sorted((d for i, d in enumerate(dets) if i not in used_d),
                     key=lambda d: -d[0][2] * d[0][3])
        for box, score in new:
            if self.max_tracks is not None and len(self.tracks) >= self.max_tracks:
                break
            t = Track(id=self._next_id, box=box, score=score)
            t.confirmed = t.hits >= self.min_hits
            self._next_id += 1
            self.tracks.append(t)
        self.removed = [t.id for t in self.tracks if t.time_since_update > self.max_age]
        self.tracks = [t for t in self.tracks if t.time_since_update <= self.max_age]
        return list(self.tracks)

    def _match(self, t: Track, box, score: float) -> None:
        gap = t.time_since_update + 1
        inst = tuple((b - a) / gap for a, b in zip(t.box, box))
        if t.hits == 1:
            t.velocity = inst  # type: ignore[assignment]
        else:
            k = self.velocity_smoothing
            t.velocity = tuple(k * v + (1 - k) * i for v, i in zip(t.velocity, inst))  # type: ignore[assignment]
        t.box = box
        t.score = score
        t.hits += 1
        t.time_since_update = 0
        if t.hits >= self.min_hits:
            t.confirmed = True

    def confirmed(self) -> list[Track]:
        """Confirmed live tracks (matched at least ``min_hits`` times)."""
        return [t for t in self.tracks if t.confirmed]


class TrackAssistedDetector:
    """Face detection scheduled around the tracker: a full-frame pass every ``detect_every``
    frames, and in between only a search of a small region around each live track.

    Per frame (:meth:`detect`), given the tracker's live tracks *before* this frame's update:

    * frame ``n`` with ``n % detect_every == 0`` (the first frame after construction or
      :meth:`reset` included): ``detector.detect(frame)`` on the whole frame;
    * otherwise, for each track: the square of side ``roi_scale * max(w, h)`` centred on the
      track's predicted box (last box moved by its velocity) is searched for faces whose side
      lies in ``[side / size_range, side * size_range]``; the detection overlapping the
      prediction most is the track's detection for this frame. A track whose region search
      finds nothing gets no detection, so the tracker counts it as missed for this frame
      (the engine's missing-face policy applies unchanged: filler embedding, face_present
      False, the track deleted after ``max_age`` misses).

    Trade-off: a face that *enters* the frame (or moves more than about
    ``(roi_scale - 1) / 2`` of its size in one frame, or changes scale by more than
    ``size_range``) is found at the next full-frame pass, i.e. at most ``detect_every - 1``
    frames late (at 30 fps and detect_every=4: 100 ms). Region searches cost a small fraction
    of a full-frame pass, so the mean detection cost per frame falls roughly by
    ``detect_every``; the frames with a full pass cost as much as before (they set the p99).

    The region search uses the *same* detector, cascade and parameters
    (:meth:`affedge.features.faces.FaceDetector.detect_region`), so boxes are framed as a
    full-frame detection frames them, and the crops match the training crops (the synthetic
    generator also searches a region around the head with a narrowed size range). Detectors
    without ``detect_region`` are run on the cropped region and filtered by size.
    """

    def __init__(self, detector, detect_every: int = 4, roi_scale: float = 1.6,
                 size_range: float = 1.3):
        if not hasattr(detector, "detect"):
            raise TypeError(f"detector must have detect(frame); got {type(detector).__name__}")
        if isinstance(detect_every, bool) or int(detect_every) != detect_every or \
                int(detect_every) < 1:
            raise ValueError(f"detect_every must be an integer >= 1, got {detect_every!r}")
        if not roi_scale >= 1.0:
            raise ValueError(f"roi_scale must be >= 1 (region side / face side), got {roi_scale}")
        if not size_range > 1.0:
            raise ValueError(f"size_range must be > 1, got {size_range}")
        self.detector = detector
        self.detect_every = int(detect_every)
        self.roi_scale = float(roi_scale)
        self.size_range = float(size_range)
        self.full_passes = 0
        self.region_searches = 0
        self.last_full = False
        self._n = 0

    def reset(self) -> None:
        """Start a new stream: the next frame gets a full-frame pass."""
        self._n = 0
        self.last_full = False

    def regions(self, tracks) -> list[tuple[tuple[float, float, float, float], int, int,
                                            tuple[float, float, float, float]]]:
        """``(region (x0, y0, x1, y1), min_size, max_size, predicted box)`` per track."""
        out = []
        for t in tracks:
            pb = t.predicted_box(t.time_since_update + 1)
            x, y, w, h = pb
            side = max(w, h)
            cx, cy, half = x + w / 2.0, y + h / 2.0, self.roi_scale * side / 2.0
            lo = max(1, int(math.floor(side / self.size_range)))
            hi = max(lo, int(math.ceil(side * self.size_range)))
            out.append(((cx - half, cy - half, cx + half, cy + half), lo, hi, pb))
        return out

    def detect(self, frame: np.ndarray, tracks) -> list:
        """This frame's detections (a list of FaceBox), see the class docstring."""
        full = self._n % self.detect_every == 0
        self._n += 1
        self.last_full = full
        if full:
            self.full_passes += 1
            return list(self.detector.detect(frame))
        found: list = []
        for region, lo, hi, pb in self.regions(tracks):
            self.region_searches += 1
            cands = self._search(frame, region, lo, hi)
            if not cands:
                continue
            best = max(cands, key=lambda b: (iou(pb, _box(b)), b.score))
            if any(iou(_box(best), _box(f)) > 0.5 for f in found):
                continue  # two tracks' regions found the same face: report it once
            found.append(best)
        return found

    def _search(self, frame, region, lo: int, hi: int) -> list:
        fn = getattr(self.detector, "detect_region", None)
        if callable(fn):
            return list(fn(frame, region, min_size=lo, max_size=hi))
        from affedge.features.faces import FaceBox

        H, W = frame.shape[:2]
        x0, y0 = max(int(round(region[0])), 0), max(int(round(region[1])), 0)
        x1, y1 = min(int(round(region[2])), W), min(int(round(region[3])), H)
        if x1 - x0 < lo or y1 - y0 < lo:
            return []
        out = []
        for b in self.detector.detect(np.ascontiguousarray(frame[y0:y1, x0:x1])):
            if lo <= max(b.w, b.h) <= hi:
                out.append(FaceBox(b.x + x0, b.y + y0, b.w, b.h, getattr(b, "score", 1.0)))
        return out


def _box(b) -> tuple[float, float, float, float]:
    return (float(b.x), float(b.y), float(b.w), float(b.h))
