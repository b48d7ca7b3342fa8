"""Face detection, THE crop framing, and crop -> model-input preprocessing.

Shared by training (the synthetic generator writes its ``cropped_aligned`` images with
:class:`FaceDetector` + :func:`align_crop`; the Aff-Wild2 reader resizes crops with
:func:`resize_crops`) and the runtime (same detector, same crop, same :func:`to_model_input`), so
there is no train/serve skew. numpy + OpenCV only.

Crop pipeline (PAPER.md §1.3):

    frame (BGR) --detect--> FaceBox --align_crop--> 112x112 BGR crop
        --resize_crops (INTER_AREA)--> 48x48 --centre 40x40--> RGB --(x/255-0.5)/0.5--> [3,40,40]

Detectors:

* ``kind="haar"`` (default): OpenCV's bundled frontal-face Haar cascade from
  ``cv2.data.haarcascades`` (ships inside the opencv-python wheels, nothing is downloaded).
  Score = n / (n + min_neighbors) where n is the number of merged raw detections (OpenCV's
  ``numDetections``), so it lies in (0, 1) and grows with detector agreement.
* ``kind="yunet"``: ``cv2.FaceDetectorYN`` with a user-supplied ONNX model file (e.g. OpenCV
  Zoo's ``face_detection_yunet_2023mar.onnx``); score = the model's face score.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "CROP_ENLARGE",
    "FILLER_CROP",
    "FaceBox",
    "FaceDetector",
    "align_crop",
    "frames_to_input",
    "resize_crops",
    "to_model_input",
]

#: side of the square crop = CROP_ENLARGE * max(w, h) of the detector box. The Haar box spans
#: roughly brows-to-chin; the enlargement keeps the whole face with a small margin, like the
#: Aff-Wild2 cropped-aligned images.
CROP_ENLARGE = 1.25

#: side of the Haar cascade's detection window (haarcascade_frontalface_default.xml: 24x24);
#: no face smaller than this is found at any scale.
_HAAR_WINDOW = 24

#: the image used when no face is available (PAPER.md §1.3: an all-black image).
FILLER_CROP = np.zeros((112, 112, 3), dtype=np.uint8)
FILLER_CROP.setflags(write=False)


@dataclass(frozen=True)
class FaceBox:
    """A detected face: top-left corner, size (pixels, floats) and a score in [0, 1]."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0

    @property
    def area(self) -> float:
        return self.w * self.h

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.w / 2.0, self.y + self.h / 2.0)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.w, self.h)

    def iou(self, other: FaceBox) -> float:
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1 = min(self.x + self.w, other.x + other.w)
        y1 = min(self.y + self.h, other.y + other.h)
        inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
        union = self.area + other.area - inter
        return float(inter / union) if union > 0 else 0.0


def _check_frame(frame: np.ndarray, what: str = "frame") -> np.ndarray:
    """Validate a frame: uint8, [H,W] gray or [H,W,3] BGR (or [H,W,1]). Returns it as given."""
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 (BGR or grayscale), got dtype {frame.dtype}")
    ok = frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3))
    if not ok:
        raise ValueError(
            f"{what} must have shape [H,W] (gray) or [H,W,3] (BGR), got shape {frame.shape}"
        )
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"{what} is empty: shape {frame.shape}")
    return frame


def _to_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1:
        return frame[:, :, 0]
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def _to_bgr(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 1:
        return cv2.cvtColor(frame[:, :, 0], cv2.COLOR_GRAY2BGR)
    return frame


class FaceDetector:
    """Frontal face detector.

    Parameters
    ----------
    kind: "haar" (OpenCV's bundled cascade, default) or "yunet" (needs ``model_path``).
    model_path: ONNX model for "yunet"; for "haar" an optional cascade XML overriding the
        bundled ``haarcascade_frontalface_default.xml``.
    min_size: smallest face side in pixels that is searched for.
    max_size: largest face side searched for (None: no limit). ``min_size``/``max_size`` may be
        changed on the instance between calls (the generator narrows them per video for speed).
    scale_factor, min_neighbors: Haar search parameters (OpenCV's meaning).
    score_threshold: YuNet score threshold.
    max_width: full-frame Haar passes on frames wider than this search a copy downscaled to
        this width (INTER_AREA), with ``min_size``/``max_size`` scaled alike (never below the
        cascade's 24-pixel window), and map the boxes back. The scale ladder then starts at
        the downscaled size, so the smallest face found is ``max(min_size, 24 * W / max_width)``
        pixels; boxes are quantised to ``W / max_width`` pixels. None: never downscale. Frames
        of the training data (320x240) and region searches (:meth:`detect_region`) are never
        downscaled.

    Region search (:meth:`detect_region`) runs the same cascade with the same parameters on a
    sub-rectangle, with the face-size range given per call: the boxes are framed like
    full-frame boxes (this is also how the synthetic generator finds its training faces).
    """

    HAAR_FILE = "haarcascade_frontalface_default.xml"

    def __init__(
        self,
        kind: str = "haar",
        model_path: str | os.PathLike | None = None,
        min_size: int = 40,
        max_size: int | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 4,
        score_threshold: float = 0.6,
        max_width: int | None = 640,
    ) -> None:
        if kind not in ("haar", "yunet"):
            raise ValueError(f"FaceDetector: unknown kind {kind!r}; use 'haar' or 'yunet'")
        if int(min_size) < 1:
            raise ValueError(f"FaceDetector: min_size must be >= 1, got {min_size}")
        if not scale_factor > 1.0:
            raise ValueError(f"FaceDetector: scale_factor must be > 1, got {scale_factor}")
        self.kind = kind
        self.min_size = int(min_size)
        self.max_size = None if max_size is None else int(max_size)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.score_threshold = float(score_threshold)
        if max_width is not None and int(max_width) < 32:
            raise ValueError(f"FaceDetector: max_width must be >= 32 or None, got {max_width}")
        self.max_width = None if max_width is None else int(max_width)
        self._yunet = None
        self._yunet_size: tuple[int, int] | None = None
        if kind == "haar":
            if model_path is None:
                path = os.path.join(cv2.data.haarcascades, self.HAAR_FILE)
            else:
                path = os.fspath(model_path)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"FaceDetector: Haar cascade file not found: {path}")
            self._cascade = cv2.CascadeClassifier(path)
            if self._cascade.empty():
                raise ValueError(f"FaceDetector: could not load Haar cascade from {path}")
            self.model_path = path
        else:
            if model_path is None:
                raise ValueError(
                    "FaceDetector(kind='yunet') needs model_path= an ONNX YuNet model file "
                    "(e.g. face_detection_yunet_2023mar.onnx from the OpenCV Zoo); "
                    "affedge never downloads models"
                )
            path = os.fspath(model_path)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"FaceDetector: YuNet model file not found: {path}")
            if not hasattr(cv2, "FaceDetectorYN"):
                raise ImportError("this OpenCV build has no cv2.FaceDetectorYN (needs >= 4.5.4)")
            self.model_path = path
            self._yunet = cv2.FaceDetectorYN.create(path, "", (320, 320), self.score_threshold)

    def detect(self, frame: np.ndarray) -> list[FaceBox]:
        """Faces in a BGR uint8 [H,W,3] or grayscale uint8 [H,W] frame, best first.

        Sorted by score, then by area (both descending).
        """
        _check_frame(frame)
        if self.kind == "haar":
            gray = _to_gray(frame)
            W = gray.shape[1]
            if self.max_width is not None and W > self.max_width:
                s = self.max_width / float(W)
                small = cv2.resize(gray, (self.max_width, max(1, round(gray.shape[0] * s))),
                                   interpolation=cv2.INTER_AREA)
                lo = max(_HAAR_WINDOW, int(round(self.min_size * s)))
                hi = None if self.max_size is None else max(lo, int(round(self.max_size * s)))
                boxes = [FaceBox(b.x / s, b.y / s, b.w / s, b.h / s, b.score)
                         for b in self._detect_haar(small, lo, hi)]
            else:
                boxes = self._detect_haar(gray, self.min_size, self.max_size)
        else:
            boxes = self._detect_yunet(_to_bgr(frame), self.min_size, self.max_size)
        boxes.sort(key=lambda b: (b.score, b.area), reverse=True)
        return boxes

    def detect_region(self, frame: np.ndarray, region, min_size: int | None = None,
                      max_size: int | None = None) -> list[FaceBox]:
        """Faces inside ``region`` = (x0, y0, x1, y1) of ``frame`` (clipped to the frame), in
        *frame* coordinates, best first; ``min_size``/``max_size`` (default: the instance's)
        bound the face side searched for.

        Same cascade, same scale ladder and parameters as :meth:`detect` (never downscaled),
        so a face found here is framed like a full-frame detection of it (up to the position
        grid of the search, about a pixel). Costs a small fraction of a full-frame pass when
        the region is a little larger than the face and the size range is narrow.
        """
        _check_frame(frame)
        H, W = frame.shape[:2]
        x0, y0, x1, y1 = (int(round(float(v))) for v in region)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        lo = self.min_size if min_size is None else max(1, int(min_size))
        hi = self.max_size if max_size is None else max(lo, int(max_size))
        if x1 - x0 < lo or y1 - y0 < lo:
            return []
        sub = frame[y0:y1, x0:x1]
        if self.kind == "haar":
            boxes = self._detect_haar(_to_gray(sub), lo, hi)
        else:
            boxes = self._detect_yunet(np.ascontiguousarray(_to_bgr(sub)), lo, hi)
        boxes = [FaceBox(b.x + x0, b.y + y0, b.w, b.h, b.score) for b in boxes]
        boxes.sort(key=lambda b: (b.score, b.area), reverse=True)
        return boxes

    def _detect_haar(self, gray: np.ndarray, min_size: int,
                     max_size: int | None) -> list[FaceBox]:
        if min(gray.shape[:2]) < min_size:
            return []
        rects, counts = self._cascade.detectMultiScale2(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size),
            maxSize=(max_size, max_size) if max_size else (0, 0),
        )
        out = []
        for (x, y, w, h), n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(counts).ravel()):
            score = float(n) / (float(n) + max(self.min_neighbors, 1))
            out.append(FaceBox(float(x), float(y), float(w), float(h), score))
        return out

    def _detect_yunet(self, bgr: np.ndarray, min_size: int,
                      max_size: int | None) -> list[FaceBox]:
        h, w = bgr.shape[:2]
        if self._yunet_size != (w, h):
            self._yunet.setInputSize((w, h))
            self._yunet_size = (w, h)
        _, faces = self._yunet.detect(bgr)
        out = []
        if faces is None:
            return out
        for f in np.asarray(faces).reshape(-1, 15):
            if min(f[2], f[3]) < min_size:
                continue
            if max_size and max(f[2], f[3]) > max_size:
                continue
            out.append(FaceBox(float(f[0]), float(f[1]), float(f[2]), float(f[3]), float(f[14])))
        return out


def align_crop(frame_bgr: np.ndarray, box: FaceBox, size: int = 112) -> np.ndarray:
    """THE crop framing: the square of side ``round(CROP_ENLARGE * max(w, h))`` centred on the
    box (corner rounded to whole pixels), resized to ``size`` x ``size`` (INTER_AREA when
    shrinking, bilinear when enlarging). Parts outside the frame are black.

    Returns uint8 [size, size, 3] BGR (a grayscale frame is converted to BGR).
    """
    _check_frame(frame_bgr, "align_crop frame")
    size = int(size)
    if size < 1:
        raise ValueError(f"align_crop: size must be >= 1, got {size}")
    if not (np.isfinite([box.x, box.y, box.w, box.h]).all() and box.w > 0 and box.h > 0):
        raise ValueError(f"align_crop: invalid face box {box}")
    bgr = _to_bgr(frame_bgr)
    H, W = bgr.shape[:2]
    cx, cy = box.center
    n = max(int(round(CROP_ENLARGE * max(box.w, box.h))), 1)
    x0 = int(round(cx - n / 2.0))
    y0 = int(round(cy - n / 2.0))
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + n, W), min(y0 + n, H)
    if fx0 == x0 and fy0 == y0 and fx1 == x0 + n and fy1 == y0 + n:
        sq = bgr[y0 : y0 + n, x0 : x0 + n]
    else:
        sq = np.zeros((n, n, 3), np.uint8)
        if fx1 > fx0 and fy1 > fy0:
            sq[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] = bgr[fy0:fy1, fx0:fx1]
    if n == size:
        return np.ascontiguousarray(sq)
    interp = cv2.INTER_AREA if n > size else cv2.INTER_LINEAR
    return cv2.resize(sq, (size, size), interpolation=interp)


def _as_batch(crops: np.ndarray, what: str) -> np.ndarray:
    crops = np.asarray(crops)
    if crops.dtype != np.uint8:
        raise ValueError(f"{what}: crops must be uint8, got dtype {crops.dtype}")
    if crops.ndim == 3 and crops.shape[2] == 3:
        crops = crops[None]
    if crops.ndim != 4 or crops.shape[3] != 3:
        raise ValueError(f"{what}: crops must have shape [N,S,S,3] (or [S,S,3]), got {crops.shape}")
    return crops


def resize_crops(crops: np.ndarray, size: int = 48) -> np.ndarray:
    """Resize uint8 crops [N,h,w,3] (any size) to [N,size,size,3] with INTER_AREA.

    Channel order is kept. This is the 112 -> 48 step of PAPER.md §1.3, used by the reader
    and at run time.
    """
    crops = _as_batch(crops, "resize_crops")
    out = np.empty((crops.shape[0], size, size, 3), np.uint8)
    for i in range(crops.shape[0]):
        if crops.shape[1] == size and crops.shape[2] == size:
            out[i] = crops[i]
        else:
            out[i] = cv2.resize(crops[i], (size, size), interpolation=cv2.INTER_AREA)
    return out


def frames_to_input(
    frames_rgb: np.ndarray, crop_size: int = 40, top: int | None = None, left: int | None = None,
    flip: bool = False, norm=None,
) -> np.ndarray:
    """RGB uint8 [N,S,S,3] (S = frame_size, 48) -> float32 [N,3,crop,crop] in [-1, 1].

    Takes the ``crop_size`` square at (top, left) (default: centred, PAPER.md §1.3 evaluation),
    optionally flips horizontally (training augmentation), then normalises with ``norm`` (an
    :class:`affedge.preprocess.CropNorm`; default (x/255 - 0.5)/0.5).
    """
    frames_rgb = _as_batch(frames_rgb, "frames_to_input")
    _, h, w, _ = frames_rgb.shape
    if crop_size > min(h, w):
        raise ValueError(f"frames_to_input: crop {crop_size} larger than frames {h}x{w}")
    top = (h - crop_size) // 2 if top is None else int(top)
    left = (w - crop_size) // 2 if left is None else int(left)
    if not (0 <= top <= h - crop_size and 0 <= left <= w - crop_size):
        raise ValueError(f"frames_to_input: crop offset ({top},{left}) outside {h}x{w}")
    x = frames_rgb[:, top : top + crop_size, left : left + crop_size]
    if flip:
        x = x[:, :, ::-1]
    from affedge.preprocess import crop_normaliser

    return (norm or crop_normaliser())(x.transpose(0, 3, 1, 2).astype(np.float32))


def to_model_input(crops_bgr: np.ndarray, cfg=None, norm=None) -> np.ndarray:
    """BGR uint8 crops [N,S,S,3] -> float32 [N,3,40,40] RGB model input (INTERFACES.md).

    Resize to ``cfg.frame_size`` (48, INTER_AREA), centre ``cfg.crop_size`` (40) crop,
    BGR -> RGB, normalised with ``norm`` (see :func:`frames_to_input`). ``cfg`` is a
    FeatureConfig (default: FeatureConfig()).
    """
    if cfg is None:
        from affedge.config import FeatureConfig

        cfg = FeatureConfig()
    small = resize_crops(crops_bgr, cfg.frame_size)
    rgb = small[..., ::-1]
    return frames_to_input(np.ascontiguousarray(rgb), cfg.crop_size, norm=norm)
