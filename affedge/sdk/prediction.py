"""``Prediction``: the per-video-frame output of the runtime.

One ``Prediction`` per video frame, never dropped. Field names follow conventions users know:
OpenFace's ``frame``, ``timestamp``, ``confidence``, ``success`` columns and ROS4HRI's
``hri_msgs/Expression`` (valence and arousal in [-1, 1] plus a confidence in [0, 1]).

Values
  ``valence``/``arousal``: the model output for this frame, clipped to [-1, 1] (raw: no
  smoothing). ``valence_smoothed``/``arousal_smoothed``: the same after the causal exponential
  smoother (``smoothing`` knob; see :mod:`affedge.sdk.smoothing` for its lag).

Confidence (in [0, 1]), the product of four documented factors
  ``face``     the detector score of the face in this frame (0 when no face was detected:
               the model then saw the training filler, a black crop, PAPER.md §1.3);
  ``presence`` the fraction of the last ``presence_window`` frames (default 30) in which this
               track's face was detected, so a flickering or just-lost face is trusted less;
  ``audio``    1.0 when aligned audio features existed at this frame time, 0.5 when the model
               got silence-equivalent zeros instead (no audio source, or audio not yet arrived);
               1.0 always for a visual-only model;
  ``warmup``   0.5 + 0.5 * min(1, frames_seen / receptive_field): the temporal network sees its
               full history (121 frames for the paper's TCN) only after that many frames.
  With no face detected the confidence is therefore 0 (OpenFace: ``success = 0``).

Face fields
  ``face_present`` (alias ``success``): a face was detected for the reported track in this
  frame. ``face_box`` (x, y, w, h) in pixels and ``track_id`` of the *primary* face (largest and
  most central, with hysteresis); the box is the track's last box when it is in an occlusion gap,
  None when no track exists. ``faces`` holds one :class:`FaceResult` per tracked face, primary
  first (several people at a kiosk), each with its own stream state.

Clocks
  ``timestamp`` is the source's own clock (a file's media time, a stream's presentation time,
  the time you pushed); ``wall_time`` is when the Prediction was made, Unix seconds
  (``time.time()``): a log of a day's rows says when each was (a live frame was captured about
  ``latency_ms`` earlier). Neither it nor ``latency_ms`` is compared by ``==``.

Live mode
  When inference falls behind a live camera, skipped frames still get a ``Prediction`` with
  ``stale=True`` that carries the previous frame's values (frame index and timestamp are the
  skipped frame's own). Files are processed completely, never stale.

Non-finite model output
  When the backend returns NaN/Inf for a frame (e.g. an fp16 engine overflowing), that frame is
  left out of the stream's state and its Prediction is ``stale=True`` with the previous values
  (NaN if there are none yet) and confidence 0; see ``StreamingEngine`` and
  ``stats()["nonfinite_*"]``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FaceResult:
    """Per tracked face output (one stream state per track)."""

    track_id: int
    box: tuple[float, float, float, float]
    detected: bool
    score: float
    valence: float
    arousal: float
    valence_smoothed: float
    arousal_smoothed: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "box": list(self.box),
            "detected": self.detected,
            "score": self.score,
            "valence": self.valence,
            "arousal": self.arousal,
            "valence_smoothed": self.valence_smoothed,
            "arousal_smoothed": self.arousal_smoothed,
            "confidence": self.confidence,
        }


@dataclass(frozen=True)
class Prediction:
    """Valence/arousal for one video frame (see the module docstring for every field)."""

    frame: int
    timestamp: float
    valence: float
    arousal: float
    valence_smoothed: float
    arousal_smoothed: float
    confidence: float
    face_present: bool
    speech_present: bool
    face_box: tuple[float, float, float, float] | None = None
    track_id: int | None = None
    face_score: float = 0.0
    audio_present: bool = False
    latency_ms: float = field(default=0.0, compare=False)  # (timing, as wall_time)
    backend: str = ""
    stale: bool = False
    faces: tuple[FaceResult, ...] = field(default_factory=tuple)
    wall_time: float = field(default_factory=time.time, compare=False)

    @property
    def success(self) -> bool:
        """OpenFace's name for ``face_present``."""
        return self.face_present

    # CSV columns, in order (flat: the primary face only; JSONL carries ``faces`` too)
    CSV_FIELDS = (
        "frame", "timestamp", "valence", "arousal", "valence_smoothed", "arousal_smoothed",
        "confidence", "success", "face_present", "speech_present", "audio_present", "track_id",
        "face_x", "face_y", "face_w", "face_h", "face_score", "latency_ms", "backend", "stale",
        "n_faces", "wall_time",
    )

    def to_dict(self, include_faces: bool = True) -> dict[str, Any]:
        """A flat JSON-ready dict (``faces`` as a list of dicts unless ``include_faces=False``)."""
        box = self.face_box
        d: dict[str, Any] = {
            "frame": self.frame,
            "timestamp": self.timestamp,
            "valence": self.valence,
            "arousal": self.arousal,
            "valence_smoothed": self.valence_smoothed,
            "arousal_smoothed": self.arousal_smoothed,
            "confidence": self.confidence,
            "success": self.face_present,
            "face_present": self.face_present,
            "speech_present": self.speech_present,
            "audio_present": self.audio_present,
            "track_id": self.track_id,
            "face_x": None if box is None else box[0],
            "face_y": None if box is None else box[1],
            "face_w": None if box is None else box[2],
            "face_h": None if box is None else box[3],
            "face_score": self.face_score,
            "latency_ms": self.latency_ms,
            "backend": self.backend,
            "stale": self.stale,
            "n_faces": len(self.faces),
            "wall_time": self.wall_time,
        }
        if include_faces:
            d["faces"] = [f.to_dict() for f in self.faces]
        return d

    def to_csv_row(self) -> list[str]:
        """Values for :attr:`CSV_FIELDS` as strings (empty for None/NaN, 0/1 for booleans,
        floats at full precision); the CSV sink's formatting (:mod:`affedge.sdk.sinks`)."""
        from affedge.sdk.sinks import csv_row

        return csv_row(self)


class PredictionWriter:
    """Streams Predictions to ``.csv`` or ``.jsonl``: kept for existing callers, it delegates to
    the sinks (:func:`affedge.sdk.sinks.open_sink`), which flush every row and fsync on close."""

    def __init__(self, path):
        import os

        from affedge.sdk.sinks import open_sink

        self.path = os.fspath(path)
        ext = os.path.splitext(self.path)[1].lower()
        if ext not in (".csv", ".jsonl"):
            raise ValueError(f"output file must end in .csv or .jsonl, got {self.path!r}")
        self.kind = ext[1:]
        self._sink = open_sink(self.path)

    @property
    def rows(self) -> int:
        return self._sink.rows

    def write(self, p: Prediction) -> None:
        self._sink.write(p)

    def flush(self) -> None:
        self._sink.flush()

    def close(self) -> None:
        self._sink.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
