"""Asynchronous full passes that join two frames later (BlazeFace) and the Recognizer's default
schedule: same results on the worker thread, inline, and with a slow pass; a new face found at
most K + 1 frames late; ``run()``'s pipeline and the serve hub keep synchronous passes unless
asked. Real BlazeFace, real synthetic clips and the demo bundle on ONNX Runtime."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from affedge.sdk.tracking import IouTracker, TrackAssistedDetector


@pytest.fixture(scope="module")
def synth_frames(tmp_path_factory):
    """The frames of a 3 s clip of the synthetic generator (decoded from its mp4)."""
    from affedge.sdk.sources import open_video
    from affedge.training.data.synthetic import generate

    out = tmp_path_factory.mktemp("synth_clip")
    generate(out, 1, seed=3, seconds=3.0, progress=False)
    src = open_video(str(next((out / "raw_videos").glob("*.mp4"))))
    try:
        return [f.image for f in src]
    finally:
        src.close()


@pytest.fixture(scope="module")
def blazeface():
    from affedge.features.detectors import make_detector

    return make_detector("blazeface-short")


class _Slow:
    """The real BlazeFace detector whose full pass takes ``delay`` s longer (a loaded CPU), or
    waits for ``gate`` (up to 20 s) when one is given."""

    concurrent_safe = True

    def __init__(self, det, delay: float = 0.0, gate: threading.Event | None = None):
        self.det, self.delay, self.gate = det, delay, gate
        self.opened: list[bool] = []  # per gated pass: the gate was opened (not timed out)

    def detect(self, frame):
        time.sleep(self.delay)
        if self.gate is not None:
            self.opened.append(self.gate.wait(20.0))
        return self.det.detect(frame)

    def detect_region(self, frame, region, min_size, max_size):
        return self.det.detect_region(frame, region, min_size=min_size, max_size=max_size)


def _run(search, frames):
    tracker = IouTracker(max_tracks=4)
    out = []
    for f in frames:
        dets = search.detect(f, tracker.tracks)
        tracker.update(dets)
        out.append(([d.as_tuple() for d in dets], [(t.id, t.detected) for t in tracker.tracks]))
    search.close()
    return out


def test_lag_is_two_frames_only_for_detectors_safe_on_two_threads(blazeface):
    from affedge.features.faces import FaceDetector

    assert blazeface.concurrent_safe and not FaceDetector("haar").concurrent_safe
    assert TrackAssistedDetector(blazeface, 4, async_detect=True).lag == 2
    assert TrackAssistedDetector(blazeface, 2, async_detect=True).lag == 2
    assert TrackAssistedDetector(blazeface, 1, async_detect=True).lag == 1
    assert TrackAssistedDetector(FaceDetector("haar"), 4, async_detect=True).lag == 1


@pytest.mark.parametrize("k", [2, 4])
def test_lagged_pass_gives_the_same_results_threaded_inline_and_slow(synth_frames, blazeface,
                                                                     k):
    """The results never depend on where or how fast the pass runs: on the worker, inline
    in the collecting call, and on a worker slowed by 30 ms (which the next frame's region
    search then overlaps, as the two-frame lag allows)."""
    frames = synth_frames[:30]
    threaded = _run(TrackAssistedDetector(blazeface, k, async_detect=True), frames)
    inline = TrackAssistedDetector(blazeface, k, async_detect=True)
    inline.inline = True
    assert _run(inline, frames) == threaded
    assert _run(TrackAssistedDetector(_Slow(blazeface, 0.03), k, async_detect=True),
                frames) == threaded
    # the face is tracked from the first frame to the last, under one id
    assert all(tracks == [(0, True)] for _, tracks in threaded)
    assert not [t for t in threading.enumerate() if t.name.startswith("affedge-face-detect")]


def test_the_frame_after_a_pass_does_not_wait_for_it(synth_frames, blazeface):
    """Frame n + 1's region searches run while frame n's pass is still running (it waits for
    a gate the test opens only after frame n + 1 is done); frame n + 2 collects it."""
    det = _Slow(blazeface)
    search = TrackAssistedDetector(det, 4, async_detect=True)
    tracker = IouTracker()
    for i in range(4):  # frame 0: no track yet, its pass runs at once
        tracker.update(search.detect(synth_frames[i], tracker.tracks))
    gate = det.gate = threading.Event()
    tracker.update(search.detect(synth_frames[4], tracker.tracks))  # pass 4 goes to the worker
    dets = search.detect(synth_frames[5], tracker.tracks)  # returns with the pass held
    assert len(dets) == 1 and not search._pending[0].done() and not det.opened
    gate.set()
    search.detect(synth_frames[6], tracker.tracks)  # collects pass 4
    assert det.opened == [True] and search._pending is None
    search.close()


@pytest.mark.parametrize("inline", [False, True])
def test_face_entering_is_found_two_frames_after_the_next_full_pass(synth_frames, blazeface,
                                                                    inline):
    k, m = 4, 7
    blank = np.full_like(synth_frames[0], 110)
    frames = [np.concatenate([synth_frames[i], synth_frames[40 + i] if i >= m else blank], 1)
              for i in range(m + k + 4)]
    search = TrackAssistedDetector(blazeface, k, async_detect=True)
    search.inline = inline
    got = _run(search, frames)
    first_seen = next(i for i, (_, tracks) in enumerate(got) if len(tracks) == 2)
    assert first_seen == -(-m // k) * k + 2  # the pass of frame 8 joins frame 10
    assert first_seen - m <= k + 1
    assert all(tracks[0][0] == 0 for _, tracks in got)


@pytest.mark.parametrize("gone_at", [8, 9, 10, 11])
def test_a_face_that_leaves_is_not_reported_from_the_older_pass(synth_frames, blazeface,
                                                               gone_at):
    """Found by a new-user trial: a visitor who left between a full pass and the frame its boxes
    join (lag 2) was reported on that frame from the pass's older box: the region search around
    the track found nothing, and the pass box was taken as a new face. A pass box over a
    tracked face is that face: on every faceless frame, nothing is detected."""
    blank = np.full_like(synth_frames[0], 110)
    frames = [synth_frames[i] if i < gone_at else blank for i in range(gone_at + 8)]
    search = TrackAssistedDetector(blazeface, 4, async_detect=True)
    got = _run(search, frames)
    assert all(len(dets) == 1 for dets, _ in got[:gone_at])
    assert [i for i, (dets, _) in enumerate(got) if i >= gone_at and dets] == []


def test_async_setting_is_checked_and_moot_with_a_pass_every_frame(blazeface):
    with pytest.raises(ValueError, match="async_detect must be True or False"):
        TrackAssistedDetector(blazeface, 4, async_detect="false")
    assert not TrackAssistedDetector(blazeface, 1, async_detect=True).async_detect
    assert TrackAssistedDetector(blazeface, 2, async_detect=True).async_detect


@pytest.fixture(scope="module")
def demo_frames():
    from affedge.sdk.recognizer import DEMO_CLIP
    from affedge.sdk.sources import open_video

    src = open_video(str(DEMO_CLIP))
    try:
        return [f.image for _, f in zip(range(48), src)]
    finally:
        src.close()


def _push(rec, frames):
    out = []
    for i, f in enumerate(frames):
        out.append(rec.push_frame(f, t=i / 30.0))
    return [(p.valence, p.arousal, p.face_present) for p in out]


def _clip(tmp_path, frames):
    import cv2

    path = tmp_path / "clip.mp4"
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    for f in frames:
        vw.write(f)
    vw.release()
    return path


def _threads():
    return [t for t in threading.enumerate() if t.name.startswith("affedge-face-detect")]


def test_recognizer_default_is_one_schedule_in_every_api(demo_frames, tmp_path):
    """Default: asynchronous passes everywhere, so push_frame, run() pipelined and run() serial
    give the same Predictions (the pipeline runs the pass inline, push_frame on the worker);
    async_detect=False is the other schedule."""
    from affedge.sdk.recognizer import DEMO_BUNDLE, Recognizer

    opts = {"bundle_path": DEMO_BUNDLE, "backend": "onnxruntime",
            "backend_options": {"intra_op_threads": 1}}
    from affedge.sdk.sources import open_video

    clip = _clip(tmp_path, demo_frames)
    src = open_video(str(clip))  # the frames run() decodes (the writer's codec is lossy)
    try:
        frames = [f.image for f in src]
    finally:
        src.close()
    with Recognizer(**opts) as default, Recognizer(async_detect=False, **opts) as off:
        assert default.stats()["async_detect"] is True
        assert off.stats()["async_detect"] is False
        pushed = _push(default, frames)
        assert all(face for _, _, face in pushed)
        assert pushed != _push(off, frames)  # full-pass frames are framed differently
        runs = {}
        for pipelined in (True, False):
            default.reset()
            default.pipeline = pipelined
            runs[pipelined] = [(p.valence, p.arousal, p.face_present)
                               for p in default.run(str(clip), audio=None)]
        assert runs[True] == runs[False] == pushed
        assert default.engine.face_search.inline is False  # restored after the run
    assert not _threads()


def test_one_core_runs_the_pass_inline_with_the_same_results(demo_frames, monkeypatch):
    """A process with one usable core gets the same Predictions, with no worker thread (the
    pass runs inline in the call that collects it)."""
    import affedge.sdk.backends.threads as threads
    from affedge.sdk.recognizer import DEMO_BUNDLE, Recognizer

    opts = {"bundle_path": DEMO_BUNDLE, "backend": "onnxruntime",
            "backend_options": {"intra_op_threads": 1}}
    with Recognizer(**opts) as two:
        want = _push(two, demo_frames)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 1)
    with Recognizer(**opts) as one:
        assert one.engine.face_search.inline and one.stats()["async_detect"]
        assert _push(one, demo_frames) == want
        assert not _threads()


@pytest.mark.parametrize("async_detect,late", [(True, 5), (False, 3)])
def test_values_follow_the_face_after_a_jump(demo_frames, async_detect, late):
    """A new-user trial: the only face jumped 100 px (a camera cut) at frame 10; it was tracked
    again at once, but face_present and the values stayed on the vanished track for 8-9
    frames. Now the face is shown again at most ``late`` frames after the jump (the README's
    "found at most 5 frames late", 3 with async_detect=False) and stays."""
    from affedge.sdk.recognizer import Recognizer

    with Recognizer.demo(backend="onnxruntime", async_detect=async_detect,
                         backend_options={"intra_op_threads": 1}) as rec:
        shown = []
        for i, f in enumerate(demo_frames[:24]):
            p = rec.push_frame(f if i < 10 else np.roll(f, 100, axis=1), t=i / 30.0)
            shown.append(p.face_present)
    assert all(shown[:10])
    back = shown.index(True, 10)
    assert back <= 10 + late and all(shown[back:]), shown
