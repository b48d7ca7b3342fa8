"""OpenCV's bundled frontal-face Haar cascade as a registry detector (no keypoints)."""
from __future__ import annotations

import os

import cv2
import numpy as np

from affedge.features.detectors.base import Detector, register_detector
from affedge.features.faces import FaceBox, to_gray

#: side of the Haar cascade's detection window (haarcascade_frontalface_default.xml: 24x24);
#: no face smaller than this is found at any scale.
HAAR_WINDOW = 24
HAAR_FILE = "haarcascade_frontalface_default.xml"


@register_detector("haar")
class HaarDetector(Detector):
    """OpenCV's frontal-face Haar cascade from ``cv2.data.haarcascades`` (inside the
    opencv-python wheels, nothing is downloaded). Score = n / (n + min_neighbors), n = the
    number of merged raw detections (OpenCV's ``numDetections``), so it lies in (0, 1).

    model_path: optional cascade XML overriding the bundled one (then ``model_sha256`` is its
        sha256; None for the bundled cascade, which is part of the OpenCV install).
    scale_factor, min_neighbors: search parameters (OpenCV's meaning).
    max_width: full-frame passes on frames wider than this search a copy downscaled to this
        width (INTER_AREA) with min/max size scaled alike (never below the 24-pixel window) and
        map the boxes back; the smallest face found is then ``max(min_size, 24 * W /
        max_width)``. None: never downscale. Region searches are never downscaled.
    providers, threads: accepted so that every detector takes the same options; unused (the
        cascade runs in OpenCV on the CPU, with OpenCV's own threads).
    """

    HAAR_FILE = HAAR_FILE

    def __init__(self, model_path: str | os.PathLike | None = None, min_size: int = 40,
                 max_size: int | None = None, scale_factor: float = 1.1,
                 min_neighbors: int = 4, max_width: int | None = 640,
                 providers=None, threads: int | None = None) -> None:
        super().__init__(min_size, max_size)
        if not scale_factor > 1.0:
            raise ValueError(f"haar: scale_factor must be > 1, got {scale_factor}")
        if max_width is not None and int(max_width) < 32:
            raise ValueError(f"haar: max_width must be >= 32 or None, got {max_width}")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.max_width = None if max_width is None else int(max_width)
        path = os.path.join(cv2.data.haarcascades, HAAR_FILE) if model_path is None \
            else os.fspath(model_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"haar: cascade file not found: {path}")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise ValueError(f"haar: could not load a Haar cascade from {path}")
        self.model_path = path
        if model_path is not None:
            from affedge.features.detectors.base import file_sha256

            self.model_sha256 = file_sha256(path)

    def _detect_full(self, frame: np.ndarray) -> list[FaceBox]:
        gray = to_gray(frame)
        W = gray.shape[1]
        if self.max_width is None or W <= self.max_width:
            return self._detect(gray, self.min_size, self.max_size)
        s = self.max_width / float(W)
        small = cv2.resize(gray, (self.max_width, max(1, round(gray.shape[0] * s))),
                           interpolation=cv2.INTER_AREA)
        lo = max(HAAR_WINDOW, int(round(self.min_size * s)))
        hi = None if self.max_size is None else max(lo, int(round(self.max_size * s)))
        return [b.scaled(1.0 / s) for b in self._detect(small, lo, hi)]

    def _detect(self, image: np.ndarray, min_size: int, max_size: int | None) -> list[FaceBox]:
        gray = to_gray(image)
        if min(gray.shape[:2]) < min_size:
            return []
        rects, counts = self._cascade.detectMultiScale2(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size),
            maxSize=(max_size, max_size) if max_size else (0, 0))
        k = max(self.min_neighbors, 1)
        return [FaceBox(float(x), float(y), float(w), float(h), float(n) / (float(n) + k))
                for (x, y, w, h), n in zip(np.asarray(rects).reshape(-1, 4),
                                           np.asarray(counts).ravel())]
