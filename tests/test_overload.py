"""A backend slower than a live camera: frames captured while inference was busy are skipped,
and every skipped frame still yields a Prediction (``stale=True``, the previous values).

Real pieces: an MJPEG-over-HTTP camera on 127.0.0.1 (``media.MjpegServer``, port 0, the port it
bound is reported back) read by the real ``VideoSource`` (live, with its capture thread that keeps
only the newest frame), the exported test bundle on ONNX Runtime CPU. The backend is that real
ONNX Runtime backend plus a fixed 0.2 s delay per step call, five times the 40 ms frame period,
so inference falls behind on every tick whatever the machine's load: the skip path always runs
(not a timing assumption that a fast machine could break). The number of frames skipped per
tick depends on timing; the properties checked do not.
"""
from __future__ import annotations

import itertools
import threading
import time

import cv2
import media
import numpy as np
import pytest
from test_engine import bundle_dir  # noqa: F401  (shared session fixture)

STEP_DELAY_S = 0.2
CAMERA_FPS = 25.0


class SlowBackend:
    """A real backend whose step call takes ``delay`` s longer (an overloaded device)."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay = inner, delay
        self.name, self.models = inner.name, inner.models
        self.step_calls = 0

    def run(self, model_name, inputs):
        if model_name == "step":
            self.step_calls += 1
            time.sleep(self.delay)
        return self.inner.run(model_name, inputs)

    def close(self):
        self.inner.close()


@pytest.fixture(scope="module")
def camera_frames():
    face = cv2.resize(media.face_photo_bgr(), (80, 90), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(10):
        img = np.full((120, 160, 3), (90, 110, 120), np.uint8)
        img[14:104, 20 + 3 * i:100 + 3 * i] = face
        out.append(img)
    return out


def _wait_thread_ended(prefix: str, timeout: float = 10.0) -> list[str]:
    """Names of live threads starting with ``prefix`` once they ended or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [t.name for t in threading.enumerate() if t.name.startswith(prefix)]
        if not alive:
            return []
        time.sleep(0.05)
    return alive


def test_slow_backend_on_live_camera_every_frame_gets_a_prediction(bundle_dir,  # noqa: F811
                                                                   camera_frames):
    from affedge.bundle import load_bundle
    from affedge.sdk.backends import select_backend
    from affedge.sdk.recognizer import Recognizer
    from affedge.sdk.sources import VideoSource

    bundle = load_bundle(bundle_dir)
    slow = SlowBackend(select_backend(bundle, "onnxruntime"), STEP_DELAY_S)
    called: list = []
    n_infer = 8
    with media.MjpegServer(camera_frames, fps=CAMERA_FPS) as server:
        assert server.port > 0 and server.url.endswith(f":{server.port}/stream.mjpg")
        cam = VideoSource(server.url, reconnect=0, timeout=5.0)
        assert cam.is_live and cam.realtime  # the capture thread keeps the newest frame only
        with Recognizer(bundle, backend=slow, on_prediction=called.append) as rec:
            t0 = time.monotonic()
            pairs = list(rec.run(cam, max_frames=n_infer, with_frames=True))
            assert time.monotonic() - t0 < 120, "the live run took far too long"
            stats = rec.stats()
        assert _wait_thread_ended("affedge-video-") == []  # run() joined the capture thread

    preds = [p for _, p in pairs]
    stale = [p for p in preds if p.stale]
    fresh = [p for p in preds if not p.stale]
    assert slow.step_calls == n_infer and len(fresh) == n_infer
    # the skip path ran: inference (>= 0.2 s a tick) is slower than the camera (40 ms a frame)
    assert stats["skipped_frames"] == len(stale) > 0
    assert stats["predictions"] == len(preds) == len(called)
    assert called == preds  # callbacks saw exactly what the iterator yielded, in order
    # every captured frame from the first to the last has exactly one Prediction, in order
    first, last = preds[0].frame, preds[-1].frame
    assert [p.frame for p in preds] == list(range(first, last + 1))
    assert not preds[0].stale and not preds[-1].stale
    ts = [p.timestamp for p in preds]
    assert all(b > a for a, b in itertools.pairwise(ts))  # stale times lie between their neighbours
    prev = None
    for img, p in pairs:
        if p.stale:
            assert img is None  # no image for a frame that was never inferred
            assert prev is not None
            assert (p.valence, p.arousal, p.confidence, p.face_present, p.face_box) == \
                (prev.valence, prev.arousal, prev.confidence, prev.face_present, prev.face_box)
            assert p.latency_ms == 0.0
        else:
            assert img is not None and img.shape == (120, 160, 3)
            prev = p
    assert any(p.face_present for p in fresh)  # the camera shows a face


class SignallingBackend(SlowBackend):
    """SlowBackend that sets ``in_step`` when a step call has started (before its delay)."""

    def __init__(self, inner, delay: float):
        super().__init__(inner, delay)
        self.in_step = threading.Event()

    def run(self, model_name, inputs):
        if model_name == "step":
            self.in_step.set()
        return super().run(model_name, inputs)


def test_close_from_another_thread_during_a_tick_ends_the_run_cleanly(bundle_dir, tmp_path):  # noqa: F811
    """Deterministic version of the race: close() is called exactly while a step call runs."""
    from affedge.bundle import load_bundle
    from affedge.sdk.recognizer import Recognizer

    video = media.make_face_video(tmp_path / "v.mp4", seconds=0.6, fps=25.0)
    bundle = load_bundle(bundle_dir)
    # the Recognizer must own the backend (close() releases only what it created): wrap the
    # real backend it creates by name
    rec = Recognizer(bundle, backend="onnxruntime")
    sig = SignallingBackend(rec.engine.backend, 0.3)
    rec.engine.backend = sig
    closer = threading.Thread(target=lambda: (sig.in_step.wait(30), rec.close()),
                              name="test-closer")
    closer.start()
    got = []
    try:
        got.extend(rec.run(str(video.path)))
    finally:
        closer.join(30)
        rec.close()
    assert not closer.is_alive()
    assert len(got) <= 1  # the run ended at the close, without an error
