"""Face detector, crop framing and model-input preprocessing (affedge.features.faces)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from affedge.config import FeatureConfig
from affedge.features.faces import (
    CROP_ENLARGE,
    FILLER_CROP,
    FaceBox,
    FaceDetector,
    align_crop,
    frames_to_input,
    resize_crops,
    to_model_input,
)
from affedge.training.data import synthetic as S


def _face_frame(identity=3, valence=0.3, arousal=0.2, fx=160.0, fy=122.0):
    rng = np.random.default_rng(identity)
    r = S.FaceRenderer(S.make_identity(identity), light=0.2)
    frame = S.make_background(rng)
    patch = r.draw(valence, arousal, talk=0.0, blink=0.0, gaze=0.0)
    S.composite(frame, patch, r.alpha, S.pose_matrix(r.cx, r.cy, fx, fy, 0.0, 1.0))
    return frame


@pytest.fixture(scope="module")
def det():
    return FaceDetector()


def test_haar_finds_drawn_face_near_truth(det):
    frame = _face_frame(fx=150.0, fy=118.0)
    boxes = det.detect(frame)
    assert boxes, "no face found on a drawn frontal face"
    b = boxes[0]
    cx, cy = b.center
    assert abs(cx - 150) < 15 and abs(cy - 118) < 15
    assert 0.0 < b.score < 1.0 and 80 < b.w < 170
    # grayscale input gives the same boxes
    gray = det.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    assert [g.as_tuple() for g in gray] == [x.as_tuple() for x in boxes]


def test_no_face_in_blank_or_small_frames(det):
    assert det.detect(np.full((240, 320, 3), 128, np.uint8)) == []
    assert det.detect(np.zeros((10, 10), np.uint8)) == []


def test_detections_sorted_best_first(det):
    frame = np.concatenate([_face_frame(3, fx=160), _face_frame(8, fx=160)], axis=1)
    boxes = det.detect(frame)
    assert len(boxes) >= 2
    keys = [(b.score, b.area) for b in boxes]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((20, 20, 3), np.float32), "dtype"),
    (np.zeros((20, 20, 4), np.uint8), "shape"),
    (np.zeros((2, 20, 20, 3), np.uint8), "shape"),
])
def test_detect_rejects_bad_frames(det, bad, msg):
    with pytest.raises(ValueError, match=msg):
        det.detect(bad)


def test_yunet_needs_an_existing_model(tmp_path):
    with pytest.raises(ValueError, match="model_path"):
        FaceDetector("yunet")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        FaceDetector("yunet", model_path=tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="unknown kind"):
        FaceDetector("dlib")


def test_align_crop_is_the_enlarged_square():
    frame = (np.arange(240 * 320 * 3) % 251).astype(np.uint8).reshape(240, 320, 3)
    side = 112
    w = side / CROP_ENLARGE  # the square is exactly 112 px: the crop is a plain copy
    box = FaceBox(100.0, 60.0, w, w, 1.0)
    crop = align_crop(frame, box, 112)
    cx, cy = box.center
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, frame[y0:y0 + side, x0:x0 + side])


def test_align_crop_out_of_frame_is_black_and_gray_ok():
    frame = np.full((100, 100), 200, np.uint8)
    crop = align_crop(frame, FaceBox(-40.0, -40.0, 80.0, 80.0), 112)
    assert crop.shape == (112, 112, 3)
    assert np.all(crop[:20, :20] == 0) and np.all(crop[-20:, -20:] == 200)
    with pytest.raises(ValueError, match="invalid face box"):
        align_crop(frame, FaceBox(0, 0, 0, 10))


def test_to_model_input_matches_the_recipe():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)
    x = to_model_input(crops, FeatureConfig())
    assert x.shape == (3, 3, 40, 40) and x.dtype == np.float32
    small = cv2.resize(crops[1], (48, 48), interpolation=cv2.INTER_AREA)[4:44, 4:44, ::-1]
    ref = (small.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(x[1], ref, atol=1e-6)
    # BGR -> RGB: a pure blue BGR crop is blue in channel 2
    blue = np.zeros((1, 112, 112, 3), np.uint8)
    blue[..., 0] = 255
    y = to_model_input(blue)
    assert np.allclose(y[0, 2], 1.0) and np.allclose(y[0, 0], -1.0)
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(crops.astype(np.float32))


def test_resize_crops_and_filler():
    crops = np.full((2, 112, 112, 3), 77, np.uint8)
    out = resize_crops(crops, 48)
    assert out.shape == (2, 48, 48, 3) and np.all(out == 77)
    assert FILLER_CROP.shape == (112, 112, 3) and not FILLER_CROP.any()
    assert not FILLER_CROP.flags.writeable
    f = frames_to_input(resize_crops(FILLER_CROP, 48), 40)
    assert np.all(f == -1.0)
    flipped = frames_to_input(out, 40, top=0, left=8, flip=True)
    assert flipped.shape == (2, 3, 40, 40)


def test_detect_region_gives_frame_coordinates_and_honours_sizes(det):
    frame = _face_frame(fx=150.0, fy=118.0)
    (full,) = det.detect(frame)[:1]
    x, y, w, h = full.as_tuple()
    side = max(w, h)
    region = (x - 0.3 * side, y - 0.3 * side, x + 1.3 * side, y + 1.3 * side)
    got = det.detect_region(frame, region, min_size=int(side / 1.3), max_size=int(side * 1.3))
    assert got and got[0].iou(full) >= 0.8
    assert region[0] <= got[0].x and got[0].x + got[0].w <= region[2]
    # a size range that excludes the face finds nothing; a region elsewhere neither
    assert det.detect_region(frame, region, min_size=int(side * 1.5)) == []
    assert det.detect_region(frame, (250, 0, 320, 60)) == []
    # regions are clipped to the frame (partly or wholly outside is fine)
    assert det.detect_region(frame, (-50, -50, 400, 300))[0].iou(full) >= 0.8
    assert det.detect_region(frame, (400, 300, 500, 400)) == []
    with pytest.raises(ValueError, match="uint8"):
        det.detect_region(frame.astype(np.float32), region)


def test_large_frames_are_searched_downscaled(det):
    frame = _face_frame(fx=150.0, fy=118.0)
    big = cv2.resize(frame, (1280, 960), interpolation=cv2.INTER_LINEAR)  # 4x
    (ref,) = FaceDetector(max_width=None).detect(big)[:1]
    (small,) = det.detect(frame)[:1]
    (got,) = det.detect(big)[:1]  # default max_width=640: searched at 640x480
    assert got.iou(ref) >= 0.8
    assert got.iou(FaceBox(small.x * 4, small.y * 4, small.w * 4, small.h * 4)) >= 0.8
    assert det.detect(frame) == FaceDetector(max_width=None).detect(frame)  # 320 wide: as is
    with pytest.raises(ValueError, match="max_width"):
        FaceDetector(max_width=8)
