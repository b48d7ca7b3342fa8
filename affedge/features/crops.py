"""Named, versioned face-crop recipes: frame + FaceBox -> 112x112 crop (:func:`crop_face`).

One function for the runtime, the synthetic generator and the Aff-Wild2 reader.

* ``box-v1``: :func:`affedge.features.faces.align_crop`, the square of ``CROP_ENLARGE`` x the
  detector box centred on it. Tuned to Haar boxes; the front end of legacy bundles (the demo
  bundle) and the recipe for detectors without keypoints.
* ``landmarks5-v1``: a similarity transform (rotation, uniform scale, translation; least squares)
  taking the detector's eyes, nose tip and mouth centre to the standard 112x112 five-point
  template of ArcFace-style aligned crops (insightface's ``arcface_dst``), then
  ``cv2.warpAffine`` (bilinear, black outside the frame). Needs keypoints.

What ``landmarks5-v1`` matches of Aff-Wild2's ``cropped_aligned`` frames, and what it cannot:
the ABAW competition papers (Kollias et al., 2020-2022) describe those frames as detected faces
aligned from five facial landmarks with a similarity transform and stored at 112x112 (they name
RetinaFace as the detector, as far as we can tell from the papers' text). We match: landmark-
based similarity alignment, the 112x112 output, the eyes/nose/mouth geometry of the standard
five-point template. We cannot match: the template and interpolation they used are not
published (we assume the standard ArcFace template, which the same group's ArcFace work
uses), RetinaFace's two mouth corners (BlazeFace gives one mouth centre, so our fit uses four
points with the mean of the template's mouth corners; YuNet's corners are averaged likewise),
and RetinaFace's landmark accuracy (BlazeFace's keypoints are coarser, a few pixels at 112).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from affedge.features.faces import FaceBox, align_crop, check_frame, to_bgr

#: the five-point template of 112x112 ArcFace-style crops (insightface's ``arcface_dst``):
#: image-left eye (the person's right), image-right eye, nose tip, mouth corners (image left,
#: image right), in pixels of the 112x112 crop.
ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
    [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)

#: the four points ``landmarks5-v1`` fits, in the order of :data:`affedge.features.faces.KEYPOINTS`
#: (right eye, left eye, nose tip, mouth centre = mean of the template's mouth corners)
TEMPLATE4_112 = np.vstack([ARCFACE_TEMPLATE_112[:3], ARCFACE_TEMPLATE_112[3:].mean(0)])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation + uniform scale + translation, no reflection) that maps the
    points ``src`` [N,2] onto ``dst`` [N,2] with least squared error (closed form)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"similarity_transform: need two [N>=2, 2] point sets, got "
                         f"{src.shape} and {dst.shape}")
    ms, md = src.mean(0), dst.mean(0)
    p, q = src - ms, dst - md
    norm = float((p ** 2).sum())
    if not norm > 1e-12:
        raise ValueError("similarity_transform: the source points coincide")
    a = float((p[:, 0] * q[:, 0] + p[:, 1] * q[:, 1]).sum()) / norm
    b = float((p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]).sum()) / norm
    R = np.array([[a, -b], [b, a]])
    return np.hstack([R, (md - R @ ms)[:, None]])


def landmark_transform(face: FaceBox, size: int = 112) -> np.ndarray:
    """The 2x3 frame -> crop transform of ``landmarks5-v1`` for ``face`` (needs keypoints)."""
    kps = face.keypoints
    if kps is None or len(kps) < 4:
        raise ValueError("crop recipe 'landmarks5-v1' needs a face with keypoints (eyes, nose, "
                         "mouth: FaceBox.keypoints, in affedge.features.faces.KEYPOINTS "
                         "order); a detector without them (haar, or your own) needs a bundle "
                         "trained on 'box-v1' crops (affedge synth --crop-recipe box-v1)")
    src = np.asarray(kps[:4], np.float64)
    if not np.isfinite(src).all():
        raise ValueError(f"crop recipe 'landmarks5-v1': keypoints are not finite: {kps[:4]}")
    return similarity_transform(src, TEMPLATE4_112 * (size / 112.0))


def _landmarks5_v1(frame_bgr: np.ndarray, face: FaceBox, size: int) -> np.ndarray:
    M = landmark_transform(face, size)
    return cv2.warpAffine(to_bgr(frame_bgr), M, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


@dataclass(frozen=True)
class CropRecipe:
    """A named crop recipe. ``version`` changes whenever its output changes."""

    name: str
    version: int
    needs_keypoints: bool
    fn: Callable[[np.ndarray, FaceBox, int], np.ndarray]


CROP_RECIPES: dict[str, CropRecipe] = {
    "box-v1": CropRecipe("box-v1", 1, False, lambda f, face, size: align_crop(f, face, size)),
    "landmarks5-v1": CropRecipe("landmarks5-v1", 1, True, _landmarks5_v1),
}

#: the recipe of detectors with keypoints / without them
DEFAULT_RECIPE = "landmarks5-v1"
BOX_RECIPE = "box-v1"


def get_recipe(name: str) -> CropRecipe:
    r = CROP_RECIPES.get(name)
    if r is None:
        raise ValueError(f"unknown crop recipe {name!r}; known: {', '.join(sorted(CROP_RECIPES))}")
    return r


def crop_face(frame_bgr: np.ndarray, face: FaceBox, recipe: str, size: int = 112) -> np.ndarray:
    """THE face crop: ``recipe`` (a :data:`CROP_RECIPES` name) applied to ``face`` in
    ``frame_bgr`` -> uint8 BGR [size, size, 3]. ``landmarks5-v1`` raises ValueError for a face
    without keypoints (a detector without keypoints pairs with ``box-v1``)."""
    r = get_recipe(recipe)
    check_frame(frame_bgr, "crop_face frame")
    size = int(size)
    if size < 1:
        raise ValueError(f"crop_face: size must be >= 1, got {size}")
    return r.fn(frame_bgr, face, size)
