"""IoU face tracker with stable ids (SORT-like, without a Kalman filter).

Each frame, detections are matched to live tracks greedily by IoU (highest pair first) between
the detection and the track's *predicted* box (last box moved by the track's smoothed velocity,
so two faces that pass each other at a distance keep their ids and a face that reappears
after a short occlusion is re-associated; two faces that cross with one fully hiding the other
may swap ids: there is no appearance model, a kiosk trial saw it). Rules:

* a match needs IoU >= ``iou_threshold``;
* an unmatched detection starts a new track with a new id (ids are never reused within a
  stream; a new stream, after ``reset()`` or a new ``run()``, counts from 0 again);
* a track unmatched for more than ``max_age`` consecutive frames is deleted;
* a track is *confirmed* once it has been matched ``min_hits`` times; only confirmed tracks are
  reported by :meth:`IouTracker.confirmed` (tentative ones still exist, so a real face is not
  delayed by more than ``min_hits - 1`` frames, while a one-frame false positive never shows up).

* each track carries its latest detection as a :class:`~affedge.features.faces.FaceBox`
  (``track.face``, with the detector's keypoints), for ``crop_face(frame, track.face, recipe)``;
* slots: at most ``max_tracks`` live tracks. New tracks are made for the unmatched detections
  best first (score, then area); when the tracker is full, a new detection takes the slot of a
  *weak* track (not detected in this frame and matched fewer than ``slot_min_hits`` times: a
  one- or two-frame false positive) instead of waiting for it to age out.

:func:`select_detections` chooses which of a frame's detections are given to the tracker when
there are more than slots (continuing tracks first, by their age, then new faces by score and
size), and :func:`choose_primary` picks the primary face from score, track age and size with
hysteresis, so a short-lived false positive can neither take a slot from a real face for long
nor become the primary face over a steady track.

:class:`TrackAssistedDetector` schedules the face detector around the tracks: a full-frame
pass every K frames, a small region search around each track in between.

Boxes are ``(x, y, w, h)`` in pixels. Anything with ``.x .y .w .h`` (and optionally ``.score``)
or a 4/5-sequence is accepted as a detection.
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from affedge.features.faces import FaceBox

#: frames after its own frame that an asynchronous full pass joins, for a detector that may be
#: called from two threads at once (TrackAssistedDetector): two frames' model calls to hide
#: the pass behind. With one (the lag of other detectors) the BlazeFace pass (5-6 ms of CPU on
#: the demo clip) outlasted the ~4 ms of model calls left in its frame, and the next frame
#: waited 2.4 ms (p50) for it; with two, push_frame's p99 / p50 is 1.21 against 1.97 for
#: synchronous passes (benchmarks/bench_async_detect.py; benchmarks/README.md)
ASYNC_LAG = 2
#: name prefix of the asynchronous pass's worker thread
WORKER_THREAD_PREFIX = "affedge-face-detect"

#: two boxes with IoU above this are the same face (region searches of two tracks, or a
#: one-frame-old full-pass box and this frame's region-search box)
SAME_FACE_IOU = 0.5


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


def _as_face(det) -> FaceBox:
    """A detection as a FaceBox (a FaceBox is kept as it is; another object's ``keypoints``,
    pairs of numbers, are carried over)."""
    if isinstance(det, FaceBox):
        _as_box(det)  # validates
        return det
    box, score = _as_box(det)
    kps = getattr(det, "keypoints", None)
    if kps is not None:
        try:
            kps = tuple((float(u), float(v)) for u, v in kps)
        except (TypeError, ValueError):
            raise ValueError(f"detection keypoints must be (x, y) pairs; got {kps!r}") from None
    return FaceBox(*box, score=score, keypoints=kps)


def _box_list(got) -> list:
    """A detector's return value as a list of detections; ValueError for anything else (None,
    one bare box): it surfaced as Python's own "'NoneType' object is not iterable"."""
    items = None
    if got is not None and not isinstance(got, (str, bytes, dict)):
        try:
            items = list(got)
        except TypeError:
            pass
    if items is None or (items and isinstance(items[0], (int, float, np.number))):
        raise ValueError(f"detect() must return a list of boxes (FaceBox or (x, y, w, h[, "
                         f"score]); [] when it finds none), got {type(got).__name__} "
                         f"{got!r:.60}")
    return items


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
    if not np.isfinite(score):
        raise ValueError(f"detection score must be a finite number; got {score} for box {box}")
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
    #: the last matched detection (keypoints included when the detector has them)
    face: FaceBox | None = None

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
                 max_tracks: int | None = None, velocity_smoothing: float = 0.5,
                 slot_min_hits: int = 3):
        def whole(x, lo: int) -> bool:
            return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= lo

        # (a Recognizer's max_faces=2.5 became 2 and "2" raised a raw TypeError: a trial)
        for name, v, lo in (("max_faces (max_tracks)", max_tracks, 1), ("max_age", max_age, 0),
                            ("min_hits", min_hits, 1)):
            if not (v is None and name.startswith("max_faces")) and not whole(v, lo):
                raise ValueError(f"{name} must be a whole number >= {lo}, got {v!r}")
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        self.iou_threshold = float(iou_threshold)
        self.max_age = int(max_age)
        self.min_hits = int(min_hits)
        self.max_tracks = max_tracks
        self.velocity_smoothing = float(velocity_smoothing)
        if int(slot_min_hits) < 1:
            raise ValueError(f"slot_min_hits must be >= 1, got {slot_min_hits}")
        self.slot_min_hits = int(slot_min_hits)
        self.tracks: list[Track] = []
        self.removed: list[int] = []
        self._next_id = 0

    def reset(self) -> None:
        self.tracks = []
        self.removed = []
        self._next_id = 0

    def rescale(self, sx: float, sy: float) -> None:
        """Move every track to a frame scaled by ``sx`` x ``sy`` (a camera that changed its
        resolution): boxes, velocities and keypoints; ids, ages and hits stay."""
        for tr in self.tracks:
            x, y, w, h = tr.box
            tr.box = (x * sx, y * sy, w * sx, h * sy)
            vx, vy, vw, vh = tr.velocity
            tr.velocity = (vx * sx, vy * sy, vw * sx, vh * sy)
            f = tr.face
            if f is not None:
                kps = None if f.keypoints is None else \
                    tuple((kx * sx, ky * sy) for kx, ky in f.keypoints)
                tr.face = FaceBox(f.x * sx, f.y * sy, f.w * sx, f.h * sy, f.score, keypoints=kps)

    def update(self, detections) -> list[Track]:
        """Advance one frame with this frame's detections; returns all live tracks (matched,
        new, and those in an occlusion gap), oldest first. Also reports which tracks were
        removed in :attr:`removed` (ids) for the caller to free per-track state."""
        faces = [_as_face(d) for d in detections]
        dets = [(f.as_tuple(), f.score) for f in faces]
        # predicted boxes for this frame (tracks already missed s frames predict s+1 ahead)
        preds = [t.predicted_box(t.time_since_update + 1) for t in self.tracks]
        used_t, used_d = _greedy_match(preds, [d[0] for d in dets], self.iou_threshold)
        for ti, di in used_t.items():
            self._match(self.tracks[ti], faces[di])
        for ti, t in enumerate(self.tracks):
            t.age += 1
            if ti not in used_t:
                t.time_since_update += 1
        # new tracks for unmatched detections, best first (score, then area), up to max_tracks;
        # when full, a new detection replaces the weakest track that is not detected in this
        # frame and has fewer than slot_min_hits matches (a flicker, not a face in a gap)
        evicted: list[int] = []
        new = sorted((f for i, f in enumerate(faces) if i not in used_d),
                     key=lambda f: (-f.score, -f.area))
        for face in new:
            if self.max_tracks is not None and len(self.tracks) >= self.max_tracks:
                weak = [t for t in self.tracks
                        if t.time_since_update > 0 and t.hits < self.slot_min_hits]
                if not weak:
                    break
                victim = min(weak, key=lambda t: (t.hits, -t.time_since_update, t.score))
                self.tracks.remove(victim)
                evicted.append(victim.id)
            t = Track(id=self._next_id, box=face.as_tuple(), score=face.score, face=face)
            t.confirmed = t.hits >= self.min_hits
            self._next_id += 1
            self.tracks.append(t)
        self.removed = evicted + [t.id for t in self.tracks if t.time_since_update > self.max_age]
        self.tracks = [t for t in self.tracks if t.time_since_update <= self.max_age]
        return list(self.tracks)

    def _match(self, t: Track, face: FaceBox) -> None:
        box, score = face.as_tuple(), face.score
        t.face = face
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


def _greedy_match(preds, boxes, thr: float) -> tuple[dict[int, int], set[int]]:
    """Greedy IoU matching (highest pair first): ({track index: detection index}, matched
    detection indices)."""
    pairs = sorted(((iou(pb, db), ti, di) for ti, pb in enumerate(preds)
                    for di, db in enumerate(boxes)), key=lambda p: -p[0])
    used_t: dict[int, int] = {}
    used_d: set[int] = set()
    for v, ti, di in pairs:
        if v < thr:
            break
        if ti in used_t or di in used_d:
            continue
        used_t[ti] = di
        used_d.add(di)
    return used_t, used_d


def select_detections(detections, tracks, max_faces: int, iou_threshold: float = 0.3) -> list:
    """At most ``max_faces`` of this frame's ``detections`` to give to the tracker: first those
    that continue a live track (matched to the tracks' predicted boxes as the tracker matches
    them), the oldest tracks (most matches) first; then new faces by score, then area. Replaces
    sorting by area and truncating, which let a large false positive push a tracked face out.
    Detections are returned as given (FaceBox or tuples)."""
    if int(max_faces) < 1:
        raise ValueError(f"max_faces must be >= 1, got {max_faces}")
    dets = list(detections)
    faces = [_as_face(d) for d in dets]
    tracks = list(tracks)
    preds = [t.predicted_box(t.time_since_update + 1) for t in tracks]
    used_t, used_d = _greedy_match(preds, [f.as_tuple() for f in faces], iou_threshold)
    cont = sorted(used_t.items(), key=lambda p: (-tracks[p[0]].hits, tracks[p[0]].id))
    order = [di for _, di in cont] + sorted(
        (i for i in range(len(dets)) if i not in used_d),
        key=lambda i: (-faces[i].score, -faces[i].area))
    return [dets[i] for i in order[: int(max_faces)]]


#: matches after which a track counts as half established in :func:`choose_primary`
PRIMARY_MATURITY_HITS = 5
#: a challenger must beat the current primary's priority by this factor to take over
PRIMARY_HYSTERESIS = 1.2
#: ... and have been matched at least this many times (or as often as the current primary)
PRIMARY_MIN_HITS = 5
#: the current primary keeps its full weight (not halved as undetected) through a gap of up
#: to this many frames: one missed detection of the person in front switched the shown values
#: to a bystander and back for one frame (a kiosk trial: 20 switches in 240 frames when every
#: 20th detection was missed); a face that really left gives way after this many frames
PRIMARY_GAP_FRAMES = 3
#: a primary unseen for longer than PRIMARY_GAP_FRAMES has left (or the camera cut away): a
#: face detected in this frame and matched at least this many times takes over at once, with
#: no hysteresis (a new-user trial: after a 100 px jump of the only face, the values stayed on
#: the vanished track for 5-9 frames while the face was tracked again). One-frame false
#: positives never qualify.
PRIMARY_TAKEOVER_HITS = 2


def primary_priority(track: Track, frame_shape, gap_ok: int = 0) -> float:
    """How much ``track`` deserves to be the primary face: relative size (box side / frame
    side, not area, so that size does not dominate) x centrality (1 at the centre, 0.5 at a
    corner) x detection score x maturity hits / (hits + 5), halved while the track is not
    detected in this frame (unless its gap is at most ``gap_ok`` frames)."""
    h, w = frame_shape[:2]
    half_diag = 0.5 * math.hypot(w, h)
    x, y, bw, bh = track.box
    d = math.hypot(x + bw / 2 - w / 2, y + bh / 2 - h / 2) / half_diag
    size = math.sqrt((bw * bh) / float(w * h)) * (1.0 - 0.5 * min(d, 1.0))
    maturity = track.hits / (track.hits + PRIMARY_MATURITY_HITS)
    p = size * max(0.0, min(1.0, float(track.score))) * maturity
    return p if track.time_since_update <= gap_ok else 0.5 * p


def choose_primary(confirmed, frame_shape, previous_id: int | None) -> Track | None:
    """The primary face among the ``confirmed`` tracks: the highest :func:`primary_priority`,
    but the previous primary (``previous_id``) stays unless a challenger (a face detected in
    this frame) has more than :data:`PRIMARY_HYSTERESIS` x its priority and has been matched
    at least ``min(PRIMARY_MIN_HITS, current.hits)`` times. So a false positive lasting fewer than 5
    frames, even a large one, never takes over a steady face (a new track also starts at 1/6
    of its full weight), while a real face that stays and is clearly more prominent does
    within a few frames. The current primary is not weakened by a gap of up to
    :data:`PRIMARY_GAP_FRAMES` missed detections; after a longer gap, the best face detected
    in this frame with :data:`PRIMARY_TAKEOVER_HITS` matches takes over at once. None if there
    is no track."""
    confirmed = list(confirmed)
    if not confirmed:
        return None
    current = next((t for t in confirmed if t.id == previous_id), None)
    if current is None:
        return max(confirmed, key=lambda t: primary_priority(t, frame_shape))
    seen = [t for t in confirmed if t.detected and t is not current]
    if current.time_since_update > PRIMARY_GAP_FRAMES:
        seen = [t for t in seen if t.hits >= PRIMARY_TAKEOVER_HITS]
        return max(seen, key=lambda t: primary_priority(t, frame_shape)) if seen else current
    # a challenger is a face detected in this frame: a track that is not (one that left, or
    # one missed once) never takes the values from a face in view
    best = max(seen, key=lambda t: primary_priority(t, frame_shape), default=None)
    if best is None or best.hits < min(PRIMARY_MIN_HITS, current.hits) or \
            primary_priority(best, frame_shape) <= \
            PRIMARY_HYSTERESIS * primary_priority(current, frame_shape, PRIMARY_GAP_FRAMES):
        return current
    return best


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
    (:meth:`affedge.features.detectors.Detector.detect_region`), so boxes are framed as a
    full-frame detection frames them, and the crops match the training crops (the synthetic
    generator also searches a region around the head with a narrowed size range). Detectors
    without ``detect_region`` are run on the cropped region and filtered by size.

    ``async_detect=True`` takes the full-frame pass off the frame it is due on: at frame ``n``
    (``n % detect_every == 0``) the pass over a copy of frame ``n`` is handed to one worker
    thread, and frame ``n`` gets region searches around the tracks like any other frame. At
    frame ``n + lag`` (always exactly ``lag`` frames later, see below) the pass's boxes are
    collected, waiting for the worker if it is not done, so the results never depend on
    timing: a full-pass box that is neither a box this frame's region searches found nor a
    tracked face (IoU > :data:`SAME_FACE_IOU` with the track's predicted box: this frame's
    search of it is newer) is a new face: it seeds a region search around it on that frame (so
    the box is framed on the current frame); if that search finds nothing, the older box is
    used.
    ``lag`` is :data:`ASYNC_LAG` (capped at ``detect_every``) for a detector whose class says
    ``concurrent_safe = True`` (its ``detect`` and ``detect_region`` may run at once on two
    threads: BlazeFace, whose model runner is thread-safe), so the pass has two frames' model
    calls to hide behind; otherwise 1, and the detector is never called from two threads at
    once (the pass runs between two :meth:`detect` calls). A pass due while no track is live
    runs synchronously (nothing is tracked, so the frame has no face crop to encode and no
    model call worth overlapping; the first face of a stream is found on its first frame).
    Cost: a face entering the frame while others are tracked is found at most
    ``detect_every + lag - 1`` frames late. :meth:`reset` and :meth:`close` wait for a running
    pass and stop the worker.

    ``inline`` (attribute, default False): run each asynchronous pass inside the :meth:`detect`
    call that collects it, on the caller's thread, instead of on the worker. The results are
    the same by construction (same frame copy, same frame of merging). The runtime sets it
    where a worker would only compete for the cores: inside loops that already run detection
    on a thread of their own beside the model (``Recognizer.run``'s pipeline, the serve hub)
    and in processes with one usable core. It may change between calls.
    """

    def __init__(self, detector, detect_every: int = 4, roi_scale: float = 1.6,
                 size_range: float = 1.3, async_detect: bool = False):
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
        if not isinstance(async_detect, (bool, np.bool_)):
            raise ValueError(f"async_detect must be True or False, got {async_detect!r}")
        # (with a full pass on every frame there is nothing to take off a frame)
        self.async_detect = bool(async_detect) and self.detect_every > 1
        #: frames between an asynchronous pass's frame and the frame its boxes join
        self.lag = min(ASYNC_LAG, self.detect_every) \
            if getattr(detector, "concurrent_safe", False) else 1
        self.inline = False
        self._n = 0
        self._worker: ThreadPoolExecutor | None = None
        # async: the pending full pass, (Future or the frame copy when inline, frame it joins)
        self._pending: tuple[Future | np.ndarray, int] | None = None
        self._closed = False
        self._lock = threading.Lock()  # close() may come from another thread than detect()

    def reset(self) -> None:
        """Start a new stream: the next frame gets a full-frame pass. Stops the worker thread
        (after the pass it may be running; its boxes are discarded); a later async
        :meth:`detect` starts a new one."""
        self._stop_worker()
        self._n = 0
        self.last_full = False

    def close(self) -> None:
        """Discard a pending full pass (waiting for it if it runs) and stop the worker thread
        for good: later calls still work, with synchronous full passes (so a tick racing with
        ``close()`` on another thread cannot start a new worker). Idempotent."""
        self._stop_worker(close=True)

    def _stop_worker(self, close: bool = False) -> None:
        with self._lock:
            self._closed = self._closed or close
            worker, self._worker = self._worker, None
        if worker is not None:
            # told first, so that its thread ends after the pass it may run even when a
            # KeyboardInterrupt cuts the waits below short (a Ctrl-C test in full-suite runs
            # found the thread alive after close(): the join had been interrupted)
            worker.shutdown(wait=False)
        try:
            self.discard_pending()
        finally:
            if worker is not None:
                worker.shutdown(wait=True)

    def discard_pending(self) -> None:
        """Drop the boxes of a submitted, not yet merged full pass (e.g. when the caller
        supplies a frame's detections itself), waiting for it if it runs."""
        fut = self._take_pending()
        if isinstance(fut, Future) and not fut.cancel():
            fut.exception()  # wait; an error of a discarded pass is not reported

    def _take_pending(self, due: int | None = None) -> Future | np.ndarray | None:
        """The pending pass (its Future, or its frame copy when it was left for an inline run),
        taken out; with ``due``, only one due at or before that frame."""
        with self._lock:
            if self._pending is None or (due is not None and self._pending[1] > due):
                return None
            (job, _), self._pending = self._pending, None
        return job

    def _collect(self, n: int) -> list:
        """The boxes of the pass that joins frame ``n`` ([] if none)."""
        job = self._take_pending(due=n)
        if job is None:
            return []
        if isinstance(job, Future):
            return job.result()
        return self._full_pass(job)

    def _full_pass(self, frame) -> list[FaceBox]:
        """The detector on the whole frame, its detections as FaceBoxes (see ``_as_face``)."""
        return [_as_face(b) for b in _box_list(self.detector.detect(frame))]

    def _submit(self, frame: np.ndarray, n: int) -> None:
        """Start frame ``n``'s full pass (or keep its frame for an inline run)."""
        img = np.array(frame, copy=True)  # the caller may reuse its frame buffer
        with self._lock:
            if self._closed:  # (closed meanwhile from another thread: no new worker)
                return
            self.full_passes += 1
            if self.inline:
                self._pending = (img, n + self.lag)
                return
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix=WORKER_THREAD_PREFIX)
            self._pending = (self._worker.submit(self._full_pass, img), n + self.lag)

    def regions(self, tracks) -> list[tuple[tuple[float, float, float, float], int, int,
                                            tuple[float, float, float, float]]]:
        """``(region (x0, y0, x1, y1), min_size, max_size, predicted box)`` per track."""
        return [self._region(t.predicted_box(t.time_since_update + 1)) for t in tracks]

    def _region(self, pb) -> tuple:
        """``(region, min_size, max_size, pb)`` of the search around the box ``pb``."""
        x, y, w, h = pb
        side = max(w, h)
        cx, cy, half = x + w / 2.0, y + h / 2.0, self.roi_scale * side / 2.0
        lo = max(1, int(math.floor(side / self.size_range)))
        hi = max(lo, int(math.ceil(side * self.size_range)))
        return ((cx - half, cy - half, cx + half, cy + half), lo, hi, pb)

    def unschedule(self) -> None:
        """Forget the last :meth:`detect` in the schedule (its frame was refused), so the
        cadence of full passes stays where it was."""
        if self._n > 0:
            self._n -= 1
            if self.last_full:
                self.full_passes = max(0, self.full_passes - 1)

    def detect(self, frame: np.ndarray, tracks) -> list:
        """This frame's detections (a list of FaceBox), see the class docstring."""
        n = self._n
        full = n % self.detect_every == 0
        self._n += 1
        self.last_full = full
        tracks = list(tracks)
        if not self.async_detect or self._closed or (full and not tracks):
            # synchronous (async with no live track as well: the frame has no face to encode,
            # so there is no model call to overlap with, and a face is found at once)
            self.discard_pending()  # this frame's own pass supersedes an earlier one
            if full:
                self.full_passes += 1
                return self._full_pass(frame)
            return self._region_detections(frame, self.regions(tracks), [])
        seeds = self._collect(n)  # the pass of frame n - lag, if one joins this frame
        regions = self.regions(tracks)
        found = self._region_detections(frame, regions, [])
        # a pass box over a tracked face is that face, lag frames ago: this frame's search of
        # it (found or not) is newer; only the others are new faces (a visitor who left was
        # reported present for one more frame from the older box)
        known = [_box(f) for f in found] + [pb for *_, pb in regions]
        new = [b for b in sorted(seeds, key=lambda b: -b.w * b.h)
               if not any(iou(_box(b), k) > SAME_FACE_IOU for k in known)]
        found = self._region_detections(frame, [self._region(_box(b)) for b in new], found,
                                        fallback=new)
        if full:
            self._submit(frame, n)
        return found

    def _region_detections(self, frame, regions, found: list, fallback=None) -> list:
        """Append to ``found`` the best detection of each region search (the one overlapping
        the region's box most) unless it is a face already in ``found``; where a search finds
        nothing, ``fallback[i]`` (if given) is used instead. Returns ``found``."""
        for i, (region, lo, hi, pb) in enumerate(regions):
            self.region_searches += 1
            cands = self._search(frame, region, lo, hi)
            if cands:
                best = max(cands, key=lambda b: (iou(pb, _box(b)), b.score))
            elif fallback is not None:
                best = fallback[i]
            else:
                continue
            if any(iou(_box(best), _box(f)) > SAME_FACE_IOU for f in found):
                continue  # two regions found the same face: report it once
            found.append(best)
        return found

    def _search(self, frame, region, lo: int, hi: int) -> list:
        fn = getattr(self.detector, "detect_region", None)
        if callable(fn):
            return [_as_face(b) for b in _box_list(fn(frame, region, min_size=lo, max_size=hi))]
        H, W = frame.shape[:2]
        x0, y0 = max(int(round(region[0])), 0), max(int(round(region[1])), 0)
        x1, y1 = min(int(round(region[2])), W), min(int(round(region[3])), H)
        if x1 - x0 < lo or y1 - y0 < lo:
            return []
        return [b.shifted(x0, y0) for b in self._full_pass(
            np.ascontiguousarray(frame[y0:y1, x0:x1])) if lo <= max(b.w, b.h) <= hi]


def _box(b) -> tuple[float, float, float, float]:
    return (float(b.x), float(b.y), float(b.w), float(b.h))
