"""The face-detector interface and the name -> class registry."""
from __future__ import annotations

import hashlib
import os

import numpy as np

from affedge.features.faces import FaceBox, check_frame

#: name -> detector class; filled by :func:`register_detector`
DETECTORS: dict[str, type[Detector]] = {}

#: the detector of new bundles and of ``affedge run`` without ``--detector``. The short-range
#: model, chosen by benchmarks/bench_detectors.py on 130 real faces at 40-300 px rolled up to
#: +-45 degrees: recall 0.969 vs the full-range model's 0.685, at 0.83x its cost, one track id
#: and no phantom face on the moving-photo clip for both. The detector's scale pyramid shows it
#: small (far) faces enlarged, so the short/full "range" of MediaPipe's fixed input does not
#: apply here (recall on faces under 60 px: 0.92 short, 0.58 full).
DEFAULT_DETECTOR = "blazeface-short"
#: the smallest ``min_size`` (face side in pixels) a recognizer accepts
MIN_FACE_PX = 8


def register_detector(name: str):
    """Class decorator: register a :class:`Detector` subclass under ``name``."""

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"register_detector needs a non-empty name (a string), got {name!r}")

    def deco(cls):
        if name in DETECTORS and DETECTORS[name] is not cls:
            raise ValueError(f"face detector {name!r} is already registered")
        cls.name = name
        DETECTORS[name] = cls
        return cls

    return deco


def available_detectors() -> list[str]:
    """Registered detector names, sorted."""
    return sorted(DETECTORS)


def make_detector(name: str, **options) -> Detector:
    """A new detector ``name`` built with ``options`` (see each class)."""
    cls = DETECTORS.get(name)
    if cls is None:
        raise ValueError(f"unknown face detector {name!r}; known: {', '.join(available_detectors())}")
    return cls(**options)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Detector:
    """Base of all detectors. Subclasses implement :meth:`_detect` (whole image -> boxes in its
    coordinates, any order) and may override :meth:`detect_region`.

    Attributes: ``name`` (registry name), ``model_sha256`` (of the model file, None without
    one), ``has_keypoints``, ``min_size``/``max_size`` (face side range in pixels; may be changed
    on the instance between calls), ``concurrent_safe`` (``detect`` and ``detect_region`` may
    run at the same time on two threads; lets an asynchronous full pass overlap the next
    frame's region searches, see :class:`affedge.sdk.tracking.TrackAssistedDetector`).
    """

    name: str = "?"
    has_keypoints: bool = False
    concurrent_safe: bool = False
    model_sha256: str | None = None

    @classmethod
    def default_model_sha256(cls) -> str | None:
        """``model_sha256`` of an instance built without ``model_path``."""
        return None

    def __init__(self, min_size: int = 40, max_size: int | None = None) -> None:
        if int(min_size) < 1:
            raise ValueError(f"{type(self).__name__}: min_size must be >= 1, got {min_size}")
        self.min_size = int(min_size)
        self.max_size = None if max_size is None else int(max_size)

    def detect(self, frame: np.ndarray) -> list[FaceBox]:
        """Faces in a BGR uint8 [H,W,3] (or gray [H,W]) frame, by score then area, descending."""
        check_frame(frame)
        return _sorted(self._detect_full(frame))

    def _detect_full(self, frame: np.ndarray) -> list[FaceBox]:
        return self._detect(frame, self.min_size, self.max_size)

    def _detect(self, image: np.ndarray, min_size: int, max_size: int | None) -> list[FaceBox]:
        raise NotImplementedError

    def detect_region(self, frame: np.ndarray, region, min_size: int | None = None,
                      max_size: int | None = None) -> list[FaceBox]:
        """Faces inside ``region`` = (x0, y0, x1, y1) of ``frame`` (clipped to the frame), in
        frame coordinates, best first, with side in [min_size, max_size] (default: the
        instance's)."""
        check_frame(frame)
        H, W = frame.shape[:2]
        x0, y0, x1, y1 = (int(round(float(v))) for v in region)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        lo = self.min_size if min_size is None else max(1, int(min_size))
        hi = self.max_size if max_size is None else max(lo, int(max_size))
        if x1 - x0 < lo or y1 - y0 < lo:
            return []
        sub = np.ascontiguousarray(frame[y0:y1, x0:x1])
        return _sorted([b.shifted(x0, y0) for b in self._detect(sub, lo, hi)])


def _sorted(boxes: list[FaceBox]) -> list[FaceBox]:
    return sorted(boxes, key=lambda b: (b.score, b.area), reverse=True)


def size_ok(box: FaceBox, min_size: int, max_size: int | None) -> bool:
    """The box's larger side lies in [min_size, max_size]."""
    side = max(box.w, box.h)
    return side >= min_size and (max_size is None or side <= max_size)
