"""The pipelined capture loop (affedge.sdk.frame_pipeline): the same Predictions as the serial loop.

Real pieces: the bundled demo model on ONNX Runtime CPU, the demo clip with its own audio
track, the real BlazeFace detector. The worker thread really runs the next frame's front end
while the model runs this frame's (both release the GIL); these tests check that the results do
not depend on that, also when the stream is reset from a callback, when the detector fails,
when the caller stops early, and after ``max_frames``.
"""
from __future__ import annotations

import dataclasses
import threading

import pytest

from affedge.sdk.recognizer import DEMO_CLIP, Recognizer

N = 90  # frames of the demo clip per run (3 s: several full passes and region searches)


def _key(p) -> dict:
    d = dataclasses.asdict(p)
    d.pop("latency_ms")  # wall times, the only fields allowed to differ
    d.pop("wall_time")
    return d


def _run(pipeline: bool, audio="video", on_prediction=None, **kw):
    with Recognizer.demo(backend="onnxruntime", pipeline=pipeline,
                         on_prediction=on_prediction, **kw) as r:
        out = [_key(p) for p in r.run(video=str(DEMO_CLIP), audio=audio, max_frames=N)]
        stats = r.stats()
    return out, stats


def _frontend_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "affedge-frontend"]


def test_pipelined_run_equals_the_serial_run_field_by_field():
    serial, s_stats = _run(False)
    piped, p_stats = _run(True)
    assert len(serial) == N and any(p["face_present"] for p in serial)
    assert piped == serial
    # the front end ran exactly once per frame in both (max_frames stops the worker's reads)
    for k in ("full_detections", "region_searches", "frames"):
        assert p_stats[k] == s_stats[k], k
    assert not _frontend_threads()


def test_default_pipeline_follows_the_usable_cores():
    import os

    with Recognizer.demo(backend="onnxruntime") as r:
        assert r.pipeline == (len(os.sched_getaffinity(0)) >= 2)


@pytest.mark.parametrize("audio", [None, "video"])
def test_reset_from_a_callback_mid_run_matches_the_serial_loop(audio):
    """A reset() from on_prediction at frame 40 invalidates the frame the worker has begun;
    it is begun again in the new stream and the run goes on without the worker."""
    def runs(pipeline):
        holder = {}

        def cb(p):
            if p.frame == 40 and not holder.get("done"):
                holder["done"] = True
                holder["rec"].reset()

        with Recognizer.demo(backend="onnxruntime", pipeline=pipeline, on_prediction=cb) as r:
            holder["rec"] = r
            return [_key(p) for p in r.run(video=str(DEMO_CLIP), audio=audio, max_frames=N)]

    serial, piped = runs(False), runs(True)
    assert len(piped) == N
    # the reset took effect (zero states from frame 41): the values differ from a run without
    plain, _ = _run(False, audio)
    assert serial[:41] == plain[:41] and serial[41]["valence"] != plain[41]["valence"]
    if audio is None:
        assert piped == serial
    else:
        # the file audio was read ahead of the frame the worker had begun, so up to that
        # frame's audio may differ after the reset; the video side is identical
        for a, b in zip(piped, serial):
            assert (a["frame"], a["track_id"], a["face_box"], a["face_present"]) == \
                (b["frame"], b["track_id"], b["face_box"], b["face_present"])
        assert piped[:41] == serial[:41]
    assert not _frontend_threads()


class _FailsAt:
    """The demo's detector, raising on its n-th call (a broken model file, say)."""

    def __init__(self, inner, n):
        self.inner, self.n, self.calls = inner, n, 0
        self.name = "fails-at"

    def detect(self, frame):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("detector crashed")
        return self.inner.detect(frame)


@pytest.mark.parametrize("pipeline", [False, True])
def test_a_front_end_error_surfaces_after_the_frames_before_it(pipeline):
    from affedge.features.detectors import make_detector

    det = _FailsAt(make_detector("blazeface-short"), 25)
    got = []
    with Recognizer.demo(backend="onnxruntime", pipeline=pipeline, detector=det,
                         detect_every=1) as r:
        with pytest.raises(RuntimeError, match="detector crashed"):
            for p in r.run(video=str(DEMO_CLIP), audio="video"):
                got.append(p.frame)
    assert got == list(range(24))  # every frame before the failing one, nothing after
    assert not _frontend_threads()


def test_stopping_early_leaves_no_worker_and_the_recognizer_usable():
    with Recognizer.demo(backend="onnxruntime", pipeline=True) as r:
        for p in r.run(video=str(DEMO_CLIP), audio="video"):
            if p.frame == 10:
                break
        assert not _frontend_threads()
        again = [p.frame for p in r.run(video=str(DEMO_CLIP), max_frames=5)]
        assert again == [0, 1, 2, 3, 4]


def test_close_from_a_callback_ends_the_run():
    seen = []
    with Recognizer.demo(backend="onnxruntime", pipeline=True) as r:
        def cb(p):
            seen.append(p.frame)
            if p.frame == 5:
                r.close()
        r.on_prediction(cb)
        frames = [p.frame for p in r.run(video=str(DEMO_CLIP), audio="video")]
    assert frames == list(range(6)) and seen == frames
    assert not _frontend_threads()


def test_a_stream_change_before_the_worker_begins_its_frame_does_not_hang():
    """The worker finds the epoch moved before it begins the next frame (a reset while it was
    still reading): it stops without handing anything over, and the caller goes on inline."""
    import time

    from affedge.sdk.frame_pipeline import FramePipeline

    frames = iter(range(6))
    epoch = [0]
    begun = []

    def read():
        time.sleep(0.1)  # a slow source: the caller's change lands while the worker reads
        return next(frames, None)

    def begin(f):
        begun.append((f, epoch[0]))
        return f

    pipe = FramePipeline(read, begin, lambda: epoch[0], threading.RLock())
    out = []

    def consume():
        for item in pipe:
            item = pipe.current(item)
            out.append((item.frame, item.epoch))
            if item.frame == 1:
                epoch[0] += 1  # reset() from the frame's callback

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "the pipeline hung"
    assert [f for f, _ in out] == [0, 1, 2, 3, 4, 5]
    assert [e for f, e in out if f >= 2] == [1, 1, 1, 1]  # begun again in the new epoch
    assert not pipe.threaded
