"""The detector model runner: OpenVINO (static shape per input size) and ONNX Runtime agree, and
the OpenVINO requests are safe when a full pass and a region search run at once (two threads).

Real pieces: the shipped BlazeFace ONNX models, OpenVINO and ONNX Runtime on this CPU, the
astronaut photo from scikit-image.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from affedge.features.detectors import make_detector
from affedge.features.detectors.blazeface import MODEL_DIR
from affedge.features.detectors.model_runner import DetectorModel, openvino_available

pytestmark = pytest.mark.skipif(not openvino_available(), reason="openvino not installed")


def _scene() -> np.ndarray:
    from skimage import data

    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    frame = np.full((480, 640, 3), 110, np.uint8)
    frame[60:60 + 300, 280:280 + 300] = cv2.resize(face, (300, 300))
    return frame


@pytest.mark.parametrize("model", ["blazeface_short.onnx", "blazeface_full.onnx"])
def test_openvino_and_onnxruntime_give_the_same_outputs(model):
    path = MODEL_DIR / model
    ov, ort = DetectorModel(path, runtime="openvino"), DetectorModel(path, runtime="onnxruntime")
    assert (ov.runtime, ort.runtime) == ("openvino", "onnxruntime")
    assert ov.output_names == ort.output_names
    rng = np.random.default_rng(0)
    for shape in ((1, 3, 128, 128), (1, 3, 192, 192), (1, 3, 288, 384), (1, 3, 128, 128)):
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        for a, b in zip(ov.run(x), ort.run(x)):
            assert a.shape == b.shape and a.dtype == np.float32
            np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-4)
    assert len(ov._compiled) == 3  # one compiled model per input size, reused


def test_auto_is_the_measured_default_and_openvino_stays_on_the_cpu():
    from affedge.features.detectors.model_runner import DEFAULT_RUNTIME

    path = MODEL_DIR / "blazeface_short.onnx"
    assert DetectorModel(path).runtime == DEFAULT_RUNTIME == "onnxruntime"
    assert DetectorModel(path, providers=["CPUExecutionProvider"],
                         runtime="openvino").runtime == "openvino"
    with pytest.raises(ValueError, match="runs on the CPU"):
        DetectorModel(path, providers=["CUDAExecutionProvider"], runtime="openvino")
    with pytest.raises(ValueError, match="runtime must be one of"):
        DetectorModel(path, runtime="tflite")


def test_detector_boxes_agree_across_runtimes():
    frame = _scene()
    a = make_detector("blazeface-short", runtime="openvino").detect(frame)
    b = make_detector("blazeface-short", runtime="onnxruntime").detect(frame)
    assert len(a) == len(b) == 1
    assert np.allclose(a[0].as_tuple(), b[0].as_tuple(), atol=0.05)
    assert np.allclose(a[0].keypoints, b[0].keypoints, atol=0.05)


def test_concurrent_full_passes_and_region_searches_match_sequential_ones():
    det = make_detector("blazeface-short", runtime="openvino")
    frame = _scene()
    full = det.detect(frame)[0]
    region = (full.x - 20, full.y - 20, full.x + full.w + 20, full.y + full.h + 20)
    want_full, want_region = det.detect(frame), det.detect_region(frame, region)
    got: dict[str, list] = {"full": [], "region": []}

    def loop(kind):
        for _ in range(15):
            got[kind].append(det.detect(frame) if kind == "full"
                             else det.detect_region(frame, region))

    threads = [threading.Thread(target=loop, args=(k,)) for k in ("full", "region")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == want_full for r in got["full"])
    assert all(r == want_region for r in got["region"])
