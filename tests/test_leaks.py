"""Memory that stays with the process per frame: ``tracemalloc`` (Python and numpy allocations,
which numpy reports to it) and live object counts over thousands of frames, not RSS.

Real pieces: the exported test bundle on ONNX Runtime CPU, real face crops (a photo), real audio
(noise pushed per frame through the audio timeline: features, rings, the default VAD). A face is
in view for 40 frames and gone for 20 (longer than the tracker's max_age of 15), so tracks are
created and removed all the time; each present frame makes a 112x112 crop (37 KB), the size
of leak a kept crop per tick would be.

Budget: after a warm-up, allocations still alive per frame. The bounded histories must be full
before measuring: the latency history (``affedge.sdk.engine.LATENCY_HISTORY``, 2048 ticks) is
set to 128 here so that the warm-up fills it, and its length is checked to stay at that bound.
The budgets (see BYTES_PER_FRAME) are set from the measurement with a margin, far below one
leaked crop (37,632 bytes).
"""
from __future__ import annotations

import gc
import tracemalloc

import cv2
import numpy as np
import pytest
from media import face_photo_bgr
from test_engine import FPS, bundle_dir  # noqa: F401  (shared session fixture)

WARM = 300
MEASURED = 1400  # two halves; the growth between their ends is what counts
HISTORY = 128
PERIOD = 60  # 40 frames with the face, 20 without
# measured 2026-11-30 on this 2-core CPU (load 10-40): +10.6 bytes/frame between the two
# halves (ONNX Runtime's and numpy's small caches); budget ~50x that, 1/75 of one leaked crop
BYTES_PER_FRAME = 500
# gc-tracked objects: measured +0.0 per frame over 600 frames in a separate run (+96 objects in
# the first 300 after warm-up); budget 0.25 per frame = 175 over the 700 measured frames
OBJECTS_PER_FRAME = 0.25


class FixedFace:
    """A detector object (the Recognizer accepts any object with ``detect``): the face box of
    the frames below while it is in view, nothing otherwise."""

    def __init__(self):
        self.present = True

    def detect(self, frame):
        from affedge.features.faces import FaceBox

        return [FaceBox(8.0, 6.0, 80.0, 88.0, score=0.9)] if self.present else []


@pytest.fixture(scope="module")
def frame():
    img = np.full((100, 96, 3), (90, 110, 120), np.uint8)
    img[6:94, 8:88] = cv2.resize(face_photo_bgr(), (80, 88), interpolation=cv2.INTER_AREA)
    return img


def test_no_per_frame_growth_over_thousands_of_frames(bundle_dir, frame, monkeypatch):  # noqa: F811
    from affedge.sdk.recognizer import Recognizer

    monkeypatch.setattr("affedge.sdk.engine.LATENCY_HISTORY", HISTORY)

    det = FixedFace()
    rng = np.random.default_rng(0)
    hop = int(16000 / FPS)
    noise = (0.05 * rng.standard_normal(hop * PERIOD)).astype(np.float32)
    with Recognizer(bundle_dir, backend="onnxruntime", detector=det, detect_every=1) as rec:
        i = 0

        def run(n):
            nonlocal i
            for _ in range(n):
                k = i % PERIOD
                det.present = k < 40
                rec.push_audio(noise[k * hop:(k + 1) * hop], t=i / FPS)
                rec.push_frame(frame, t=i / FPS + 0.02)
                i += 1

        run(WARM)
        gc.collect()
        tracemalloc.start()
        try:
            run(MEASURED // 2)
            gc.collect()
            mem_a = tracemalloc.get_traced_memory()[0]
            objs_a = len(gc.get_objects())
            run(MEASURED - MEASURED // 2)
            gc.collect()
            mem_b = tracemalloc.get_traced_memory()[0]
            objs_b = len(gc.get_objects())
            snap = tracemalloc.take_snapshot()  # after the counts: it holds objects itself
        finally:
            tracemalloc.stop()
        stats = rec.stats()
        history = len(rec.engine._latencies)
    n = MEASURED - MEASURED // 2
    per_frame = (mem_b - mem_a) / n
    # the biggest allocations made since the warm-up that are still alive (where a leak shows)
    top = "\n".join(str(s) for s in snap.statistics("lineno")[:8])
    print(f"tracemalloc growth {per_frame:+.1f} B/frame, objects "
          f"{(objs_b - objs_a) / n:+.3f}/frame\n{top}")
    assert stats["frames"] == WARM + MEASURED
    assert stats["tracks"] <= 1  # lost tracks' streams were dropped
    assert history == HISTORY  # the latency history stays bounded
    assert per_frame < BYTES_PER_FRAME, f"{per_frame:.0f} B/frame still allocated\n{top}"
    assert (objs_b - objs_a) / n < OBJECTS_PER_FRAME, f"{objs_b - objs_a} objects\n{top}"
