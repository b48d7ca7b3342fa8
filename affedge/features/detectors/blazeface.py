"""MediaPipe BlazeFace (short and full range) on ONNX Runtime: anchors, keypoints, weighted NMS."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from affedge.features.detectors.base import Detector, file_sha256, register_detector, size_ok
from affedge.features.faces import FaceBox, to_bgr

#: the shipped models (scripts/build_face_models.py; licence, source and sha256 in the NOTICE)
MODEL_DIR = Path(__file__).resolve().parents[2] / "assets" / "models" / "blazeface"

#: The decoding constants of MediaPipe's face detection graphs (mediapipe/modules/
#: face_detection/face_detection.pbtxt and face_detection_{short,full}_range*.pbtxt):
#: input side, anchor layout ((stride, anchors per cell), ...) with fixed-size anchors, box and
#: keypoint scale = the input side, min_score_thresh, weighted NMS at IoU 0.3.
VARIANTS = {
    "short": {"file": "blazeface_short.onnx", "side": 128,
              "layout": ((8, 2), (16, 6)), "min_score": 0.5},
    "full": {"file": "blazeface_full.onnx", "side": 192, "layout": ((4, 1),), "min_score": 0.6},
}
NMS_IOU = 0.3
_SHA_CACHE: dict[Path, str] = {}
#: a region search gives the model a square of at least this many face sides around the face:
#: BlazeFace was trained on whole scenes, and scores a face that fills its input poorly
#: (measured on the astronaut: see tests/test_blazeface.py)
REGION_CONTEXT = {"short": 2.0, "full": 3.0}


def ssd_anchor_centres(side: int, layout) -> np.ndarray:
    """Anchor centres [N, 2] (x, y) in [0, 1]: per stride, a grid of (side/stride)^2 cells in
    row-major order, each repeated ``per_cell`` times (MediaPipe's SSD anchors with
    ``fixed_anchor_size``, so every anchor has width = height = 1)."""
    out = []
    for stride, per_cell in layout:
        n = int(np.ceil(side / stride))
        c = (np.arange(n, dtype=np.float32) + 0.5) / n
        yy, xx = np.meshgrid(c, c, indexing="ij")
        grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
        out.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float = NMS_IOU):
    """MediaPipe's weighted NMS: take the best remaining candidate, average the boxes and
    keypoints of all candidates overlapping it by IoU > ``iou_thr`` (weights = scores), keep the
    best score. ``boxes`` [N, 16] = (x0, y0, x1, y1, 6 keypoints (x, y)). Returns (boxes, scores).
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    keep_b, keep_s = [], []
    alive = np.ones(len(scores), bool)
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    for i in range(len(scores)):
        if not alive[i]:
            continue
        ix0 = np.maximum(boxes[i, 0], boxes[:, 0])
        iy0 = np.maximum(boxes[i, 1], boxes[:, 1])
        ix1 = np.minimum(boxes[i, 2], boxes[:, 2])
        iy1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.maximum(ix1 - ix0, 0) * np.maximum(iy1 - iy0, 0)
        iou = inter / np.maximum(area[i] + area - inter, 1e-12)
        group = alive & (iou > iou_thr)
        group[i] = True
        w = scores[group]
        keep_b.append((boxes[group] * w[:, None]).sum(0) / w.sum())
        keep_s.append(scores[i])
        alive &= ~group
    if not keep_b:
        return np.zeros((0, 16), np.float32), np.zeros(0, np.float32)
    return np.stack(keep_b).astype(np.float32), np.asarray(keep_s, np.float32)


class BlazeFaceDetector(Detector):
    """MediaPipe BlazeFace on ONNX Runtime (numpy decoding, no TensorFlow).

    The frame (BGR) is letterboxed into the model's square input (aspect kept, black padding,
    INTER_AREA when shrinking), RGB scaled to [-1, 1]; boxes and the six keypoints
    (:data:`affedge.features.faces.KEYPOINTS`) are decoded from the anchors, scores =
    sigmoid(logit), thresholded at ``min_score``, merged by weighted NMS and mapped back to
    frame pixels; faces outside [min_size, max_size] (larger box side) are dropped.

    Options: ``min_size`` (default 20: BlazeFace finds faces smaller than Haar's 40),
    ``max_size``, ``min_score`` (default: MediaPipe's, 0.5 short / 0.6 full), ``model_path``
    (default: the shipped model), ``providers`` (ONNX Runtime execution providers, default
    ``["CPUExecutionProvider"]``; e.g. ``["CUDAExecutionProvider", "CPUExecutionProvider"]``),
    ``threads`` (intra-op threads, default 1: the detector shares the CPU with the model).
    """

    has_keypoints = True
    variant = "full"

    @classmethod
    def default_model_sha256(cls) -> str | None:
        path = MODEL_DIR / VARIANTS[cls.variant]["file"]
        if path not in _SHA_CACHE:
            _SHA_CACHE[path] = file_sha256(path)
        return _SHA_CACHE[path]

    def __init__(self, min_size: int = 20, max_size: int | None = None,
                 min_score: float | None = None, model_path: str | os.PathLike | None = None,
                 providers=None, threads: int = 1) -> None:
        super().__init__(min_size, max_size)
        import onnxruntime as ort

        spec = VARIANTS[self.variant]
        self.side = int(spec["side"])
        self.min_score = float(spec["min_score"] if min_score is None else min_score)
        if not 0.0 < self.min_score < 1.0:
            raise ValueError(f"{self.name}: min_score must be in (0, 1), got {self.min_score}")
        path = Path(MODEL_DIR / spec["file"] if model_path is None else model_path)
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: model file not found: {path} (built by "
                                    f"scripts/build_face_models.py)")
        self.model_path = str(path)
        self.model_sha256 = self.default_model_sha256() if model_path is None \
            else file_sha256(path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self._sess = ort.InferenceSession(self.model_path, so, providers=self.providers)
        self._input = self._sess.get_inputs()[0].name
        self._anchors = ssd_anchor_centres(self.side, spec["layout"])
        n_out = self._sess.get_outputs()[0].shape[1]
        if n_out != len(self._anchors):
            raise ValueError(f"{self.name}: model has {n_out} anchors, expected "
                             f"{len(self._anchors)} for a {self.side}x{self.side} BlazeFace")

    # ----------------------------------------------------------------- model call
    def _run_square(self, square_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw decode of a ``side`` x ``side`` BGR image: boxes [N,16] in [0,1] units
        (x0, y0, x1, y1, keypoints) after NMS, and their scores."""
        x = cv2.cvtColor(square_bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
        x = (x * np.float32(1 / 127.5) - np.float32(1.0)).transpose(2, 0, 1)[None]
        reg, cls = self._sess.run(None, {self._input: np.ascontiguousarray(x)})
        logits = np.clip(cls.reshape(-1).astype(np.float64), -100.0, 100.0)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= self.min_score
        if not keep.any():
            return np.zeros((0, 16), np.float32), np.zeros(0, np.float32)
        r = reg.reshape(-1, 16)[keep] / np.float32(self.side)
        a = self._anchors[keep]
        cx, cy = a[:, 0] + r[:, 0], a[:, 1] + r[:, 1]
        hw, hh = r[:, 2] / 2.0, r[:, 3] / 2.0
        out = np.empty_like(r)
        out[:, 0], out[:, 1], out[:, 2], out[:, 3] = cx - hw, cy - hh, cx + hw, cy + hh
        out[:, 4::2] = r[:, 4::2] + a[:, :1]
        out[:, 5::2] = r[:, 5::2] + a[:, 1:]
        ok = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
        return weighted_nms(out[ok], scores[keep][ok])

    def _detect_square(self, image: np.ndarray, x0: float, y0: float, span: float,
                       min_size: int, max_size: int | None) -> list[FaceBox]:
        """Faces in the square [x0, x0+span) x [y0, y0+span) of ``image`` (parts outside are
        black), in ``image`` coordinates."""
        bgr = to_bgr(image)
        H, W = bgr.shape[:2]
        s = self.side / span  # image pixels -> model pixels
        # the part of the square inside the image, and where it lands in the model input
        ix0, iy0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        ix1, iy1 = min(int(np.ceil(x0 + span)), W), min(int(np.ceil(y0 + span)), H)
        sq = np.zeros((self.side, self.side, 3), np.uint8)
        if ix1 > ix0 and iy1 > iy0:
            dx0, dy0 = int(round((ix0 - x0) * s)), int(round((iy0 - y0) * s))
            dw = min(max(int(round((ix1 - ix0) * s)), 1), self.side - dx0)
            dh = min(max(int(round((iy1 - iy0) * s)), 1), self.side - dy0)
            if dw > 0 and dh > 0:
                part = bgr[iy0:iy1, ix0:ix1]
                interp = cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR
                sq[dy0:dy0 + dh, dx0:dx0 + dw] = cv2.resize(part, (dw, dh), interpolation=interp)
                # exact mapping of the pasted part (rounding): model px -> image px
                sx, sy = (ix1 - ix0) / dw, (iy1 - iy0) / dh
                ox, oy = ix0 - dx0 * sx, iy0 - dy0 * sy
            else:
                return []
        else:
            return []
        boxes, scores = self._run_square(sq)
        faces = []
        for b, sc in zip(boxes, scores):
            px = b[0::2] * self.side * sx + ox
            py = b[1::2] * self.side * sy + oy
            box = FaceBox(float(px[0]), float(py[0]), float(px[1] - px[0]), float(py[1] - py[0]),
                          float(sc), keypoints=tuple((float(u), float(v))
                                                     for u, v in zip(px[2:], py[2:])))
            if size_ok(box, min_size, max_size):
                faces.append(box)
        return faces

    # ----------------------------------------------------------------- Detector interface
    def _detect(self, image: np.ndarray, min_size: int, max_size: int | None) -> list[FaceBox]:
        H, W = image.shape[:2]
        span = float(max(H, W))  # letterbox: the square centred on the image
        return self._detect_square(image, (W - span) / 2.0, (H - span) / 2.0, span,
                                   min_size, max_size)

    def detect_region(self, frame: np.ndarray, region, min_size: int | None = None,
                      max_size: int | None = None) -> list[FaceBox]:
        """Faces in ``region`` (x0, y0, x1, y1), frame coordinates, best first. The model sees
        the square centred on the region, of side max(region side, REGION_CONTEXT x the
        largest face searched for), so a face is seen with the context it was trained with;
        only faces whose centre lies in the region are returned."""
        from affedge.features.faces import check_frame

        check_frame(frame)
        lo = self.min_size if min_size is None else max(1, int(min_size))
        hi = self.max_size if max_size is None else max(lo, int(max_size))
        rx0, ry0, rx1, ry1 = (float(v) for v in region)
        H, W = frame.shape[:2]
        if min(rx1, W) - max(rx0, 0) < lo or min(ry1, H) - max(ry0, 0) < lo:
            return []
        span = max(rx1 - rx0, ry1 - ry0, REGION_CONTEXT[self.variant] * (hi or lo))
        cx, cy = (rx0 + rx1) / 2.0, (ry0 + ry1) / 2.0
        faces = self._detect_square(frame, cx - span / 2.0, cy - span / 2.0, span, lo, hi)
        faces = [f for f in faces if rx0 <= f.center[0] <= rx1 and ry0 <= f.center[1] <= ry1]
        return sorted(faces, key=lambda b: (b.score, b.area), reverse=True)


@register_detector("blazeface")
class BlazeFaceFull(BlazeFaceDetector):
    __doc__ = "Full-range BlazeFace (192x192 input, faces up to ~5 m). " + \
        (BlazeFaceDetector.__doc__ or "")
    variant = "full"


@register_detector("blazeface-short")
class BlazeFaceShort(BlazeFaceDetector):
    __doc__ = "Short-range BlazeFace (128x128 input, faces within ~2 m). " + \
        (BlazeFaceDetector.__doc__ or "")
    variant = "short"
