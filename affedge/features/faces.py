"""Face boxes, the face-detector entry point, the box crop framing, and crop -> model input.

Shared by training (the synthetic generator writes its ``cropped_aligned`` images with a
detector + :func:`affedge.features.crops.crop_face`; the Aff-Wild2 reader resizes crops with
:func:`resize_crops`) and the runtime (same detector, same crop, same :func:`to_model_input`), so
there is no train/serve skew. numpy + OpenCV only.

Crop pipeline (PAPER.md §1.3):

    frame (BGR) --detect--> FaceBox --crop_face(recipe)--> 112x112 BGR crop
        --resize_crops (INTER_AREA)--> 48x48 --centre 40x40--> RGB --(x/255-0.5)/0.5--> [3,40,40]

Detectors live in the registry :mod:`affedge.features.detectors` (``blazeface``,
``blazeface-short``, ``haar``, ``yunet``); :func:`FaceDetector` is the compatibility entry point.
Crop recipes (``box-v1`` = :func:`align_crop`, ``landmarks5-v1``) live in
:mod:`affedge.features.crops`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "CROP_ENLARGE",
    "FILLER_CROP",
    "KEYPOINTS",
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

#: the image used when no face is available (PAPER.md §1.3: an all-black image).
FILLER_CROP = np.zeros((112, 112, 3), dtype=np.uint8)
FILLER_CROP.setflags(write=False)

#: the order of :attr:`FaceBox.keypoints`, MediaPipe face detection's names. "Right" is the
#: person's right, i.e. the image's LEFT side for a camera (non-mirrored) frame of a frontal
#: face. Detectors with fewer points give a prefix (YuNet: the first four, the mouth centre
#: being the mean of its two mouth corners).
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion",
             "left_ear_tragion")


@dataclass(frozen=True)
class FaceBox:
    """A detected face: top-left corner, size (pixels, floats), a score in [0, 1], and the
    detector's keypoints (frame pixels, order :data:`KEYPOINTS`) or None when it has none."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0
    keypoints: tuple[tuple[float, float], ...] | None = None

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

    def shifted(self, dx: float, dy: float) -> FaceBox:
        """The same face moved by (dx, dy) pixels (keypoints too)."""
        kps = None if self.keypoints is None else \
            tuple((u + dx, v + dy) for u, v in self.keypoints)
        return FaceBox(self.x + dx, self.y + dy, self.w, self.h, self.score, kps)

    def scaled(self, s: float) -> FaceBox:
        """The same face in an image scaled by ``s`` (keypoints too)."""
        kps = None if self.keypoints is None else \
            tuple((u * s, v * s) for u, v in self.keypoints)
        return FaceBox(self.x * s, self.y * s, self.w * s, self.h * s, self.score, kps)


def check_frame(frame: np.ndarray, what: str = "frame") -> np.ndarray:
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



def to_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1:
        return frame[:, :, 0]
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def to_bgr(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 1:
        return cv2.cvtColor(frame[:, :, 0], cv2.COLOR_GRAY2BGR)
    return frame



def FaceDetector(kind: str = "haar", model_path: str | os.PathLike | None = None,
                 min_size: int = 40, max_size: int | None = None, **options):
    """Compatibility entry point: ``make_detector(kind, ...)`` from
    :mod:`affedge.features.detectors` (``kind``: a registered name such as ``"haar"``,
    ``"yunet"``, ``"blazeface"``, ``"blazeface-short"``). Haar options: ``scale_factor``,
    ``min_neighbors``, ``max_width``; YuNet: ``score_threshold``; BlazeFace: ``min_score``,
    ``providers``, ``threads``.
    """
    from affedge.features.detectors import DETECTORS, available_detectors, make_detector

    if kind not in DETECTORS:
        raise ValueError(f"FaceDetector: unknown kind {kind!r}; known: "
                         f"{', '.join(available_detectors())}")
    if model_path is not None:
        options["model_path"] = model_path
    elif kind == "yunet":
        options["model_path"] = None
    return make_detector(kind, min_size=min_size, max_size=max_size, **options)


def align_crop(frame_bgr: np.ndarray, box: FaceBox, size: int = 112) -> np.ndarray:
    """THE crop framing: the square of side ``round(CROP_ENLARGE * max(w, h))`` centred on the
    box (corner rounded to whole pixels), resized to ``size`` x ``size`` (INTER_AREA when
    shrinking, bilinear when enlarging). Parts outside the frame are black.

    Returns uint8 [size, size, 3] BGR (a grayscale frame is converted to BGR).
    """
    check_frame(frame_bgr, "align_crop frame")
    size = int(size)
    if size < 1:
        raise ValueError(f"align_crop: size must be >= 1, got {size}")
    if not (np.isfinite([box.x, box.y, box.w, box.h]).all() and box.w > 0 and box.h > 0):
        raise ValueError(f"align_crop: invalid face box {box}")
    bgr = to_bgr(frame_bgr)
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
