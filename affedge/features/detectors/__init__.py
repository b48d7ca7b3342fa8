"""Registry of face detectors: name -> class, one interface (see :class:`.base.Detector`).

Adding a detector = one new module here with a class decorated ``@register_detector("name")``
and one import line below. Every detector has ``detect(frame_bgr) -> list[FaceBox]`` (best
first, keypoints filled when the model has them), ``detect_region(frame, region, min_size,
max_size)`` (used by :class:`affedge.sdk.tracking.TrackAssistedDetector`), ``name`` and
``model_sha256`` (None when there is no model file, e.g. OpenCV's bundled Haar cascade).

Entries: ``blazeface-short`` (MediaPipe short-range BlazeFace, 128x128, six keypoints: the
default for new bundles, :data:`.base.DEFAULT_DETECTOR` says why), ``blazeface`` (full-range,
192x192), ``haar``
(OpenCV's cascade, no keypoints: the front end of legacy bundles) and ``yunet`` (OpenCV's
``FaceDetectorYN`` with a user-supplied ONNX file, five landmarks).
"""
from __future__ import annotations

# importing a module registers its detectors
from affedge.features.detectors import blazeface as _blazeface  # noqa: F401
from affedge.features.detectors import haar as _haar  # noqa: F401
from affedge.features.detectors import yunet as _yunet  # noqa: F401
from affedge.features.detectors.base import (
    DEFAULT_DETECTOR,
    DETECTORS,
    Detector,
    available_detectors,
    MIN_FACE_PX,
    make_detector,
    register_detector,
)

__all__ = ["DEFAULT_DETECTOR", "DETECTORS", "MIN_FACE_PX", "Detector", "available_detectors",
           "make_detector", "register_detector"]
