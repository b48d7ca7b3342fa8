"""OpenCV's YuNet (``cv2.FaceDetectorYN``) with a user-supplied ONNX file, as a registry detector."""
from __future__ import annotations

import os

import cv2
import numpy as np

from affedge.features.detectors.base import Detector, file_sha256, register_detector
from affedge.features.faces import FaceBox, to_bgr


@register_detector("yunet")
class YuNetDetector(Detector):
    """``cv2.FaceDetectorYN`` with ``model_path`` = an ONNX YuNet model (e.g. OpenCV Zoo's
    ``face_detection_yunet_2023mar.onnx``; affedge never downloads it). Score = the model's face
    score; keypoints = its five landmarks (right eye, left eye, nose tip, right and left mouth
    corner, YuNet's order) reduced to the four of :data:`affedge.features.faces.KEYPOINTS`'
    first entries (mouth centre = mean of the corners). ``providers``/``threads`` are accepted
    like every detector's options and unused (OpenCV's DNN module runs it)."""

    has_keypoints = True

    @classmethod
    def default_model_sha256(cls) -> str | None:
        raise ValueError("yunet has no default model file: build it with model_path= the ONNX "
                         "file the bundle was trained with")

    def __init__(self, model_path: str | os.PathLike | None = None, min_size: int = 40,
                 max_size: int | None = None, score_threshold: float = 0.6,
                 providers=None, threads: int | None = None) -> None:
        super().__init__(min_size, max_size)
        if model_path is None:
            raise ValueError(
                "yunet needs model_path= an ONNX YuNet model file (e.g. "
                "face_detection_yunet_2023mar.onnx from the OpenCV Zoo); affedge never "
                "downloads models")
        path = os.fspath(model_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"yunet: model file not found: {path}")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise ImportError("this OpenCV build has no cv2.FaceDetectorYN (needs >= 4.5.4)")
        self.model_path = path
        self.model_sha256 = file_sha256(path)
        self.score_threshold = float(score_threshold)
        self._net = cv2.FaceDetectorYN.create(path, "", (320, 320), self.score_threshold)
        self._size: tuple[int, int] | None = None

    def _detect(self, image: np.ndarray, min_size: int, max_size: int | None) -> list[FaceBox]:
        bgr = np.ascontiguousarray(to_bgr(image))
        h, w = bgr.shape[:2]
        if self._size != (w, h):
            self._net.setInputSize((w, h))
            self._size = (w, h)
        _, faces = self._net.detect(bgr)
        out = []
        for f in np.asarray(faces if faces is not None else []).reshape(-1, 15):
            if min(f[2], f[3]) < min_size or (max_size and max(f[2], f[3]) > max_size):
                continue
            p = f[4:14].reshape(5, 2).astype(float)
            kps = (tuple(p[0]), tuple(p[1]), tuple(p[2]), tuple((p[3] + p[4]) / 2.0))
            out.append(FaceBox(float(f[0]), float(f[1]), float(f[2]), float(f[3]),
                               float(f[14]), keypoints=kps))
        return out
