"""Time and re-entrancy families of the reliability review (issue 14, families 1 and 4).

Real pieces: the bundled demo model on ONNX Runtime CPU, real frames (a blank frame and the demo
clip's first frame), real PCM. A property-based test drives ``push_frame``/``push_audio`` with
random interleavings and timestamps (finite, repeated, NaN, inf, far past, far future) and checks
the rules: only the documented exceptions, a refused call changes nothing, one prediction per
accepted frame, and no frame sees audio that lies wholly after it.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affedge.sdk.recognizer import DEMO_CLIP, Recognizer

SR = 16000
BLANK = np.full((96, 128, 3), 90, np.uint8)  # no face: fast ticks, audio still used
TONE = (0.3 * np.sin(2 * np.pi * 220 * np.arange(SR // 10) / SR)).astype(np.float32)  # 100 ms


@pytest.fixture(scope="module")
def rec():
    with Recognizer.demo(backend="onnxruntime", detect_every=1) as r:
        yield r


def _state(r):
    e = r.engine
    return (e.audio.time, e.frames, e.frame_index, r.emitted)


TIMES = st.one_of(
    st.floats(min_value=0.0, max_value=3.0, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e20, -1e20, 1e13, 0.0]),
)
OPS = st.lists(st.tuples(st.sampled_from(["frame", "audio"]), TIMES), min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(ops=OPS)
def test_random_interleavings_keep_the_time_rules(rec, ops):
    rec.reset()
    audio_starts: list[float] = []
    last_frame_t = None
    accepted_frames = 0
    emitted0 = rec.emitted
    for kind, t in ops:
        before = _state(rec)
        try:
            if kind == "audio":
                rec.push_audio(TONE, t=t, sample_rate=SR)
                audio_starts.append(t)
            else:
                p = rec.push_frame(BLANK, t=t)
                accepted_frames += 1
                # never audio from wholly after the frame (the first row of a stream may end
                # one 25 ms window after a frame at the stream start, as in training)
                if p.audio_present:
                    assert min(audio_starts) <= t + 1e-9, (t, audio_starts)
                last_frame_t = t
        except (ValueError, TypeError) as exc:  # the documented refusals, nothing else
            assert _state(rec) == before, f"refused {kind} at {t!r} changed state: {exc}"
            if kind == "frame" and math.isfinite(t) and abs(t) <= 1e12 and last_frame_t is not None:
                assert t <= last_frame_t  # a finite frame time is refused only when not later
    assert rec.emitted - emitted0 == accepted_frames  # one prediction per accepted frame


def test_bad_first_audio_timestamp_does_not_poison_the_origin(rec):
    rec.reset()
    for bad in (math.nan, math.inf, 1e20):
        with pytest.raises(ValueError, match="timestamp"):
            rec.push_audio(TONE, t=bad)
        assert rec.engine.audio.time is None
    rec.push_audio(TONE, t=0.0)
    assert rec.engine.audio.time == pytest.approx(0.1)
    assert rec.push_frame(BLANK, t=0.09).audio_present


def test_audio_from_the_future_is_not_used(rec):
    """Audio pushed for 10-12 s; a frame at 0 s gets no audio and the values of a stream
    without any audio."""
    rec.reset()
    no_audio = rec.push_frame(BLANK, t=0.0)
    rec.reset()
    pcm = (0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * SR) / SR)).astype(np.float32)
    rec.push_audio(pcm, t=10.0)
    p = rec.push_frame(BLANK, t=0.0)
    assert not p.audio_present
    assert (p.valence, p.arousal) == (no_audio.valence, no_audio.arousal)
    assert rec.push_frame(BLANK, t=10.5).audio_present  # and it is used once its time comes


def test_public_methods_work_from_a_callback():
    """reset(), push_frame() and latest() from on_prediction (reset used to deadlock on the
    tick lock its own caller held)."""
    calls = []
    with Recognizer.demo(backend="onnxruntime", detect_every=1) as r:
        def cb(p):
            calls.append(p.frame)
            if p.frame == 2 and len(calls) == 3:
                r.reset()
                r.push_frame(BLANK, t=0.0)  # a nested tick on the same thread, new stream
            assert r.latest() is not None
        r.on_prediction(cb)
        for i in range(4):
            r.push_frame(BLANK, t=i / 30)
    # frames 0-2; the reset + nested frame (index 0 of the new stream); the outer frame 3
    # (t = 0.1) continues the new stream as its frame 1
    assert calls == [0, 1, 2, 0, 1]


class _Broken:
    """A custom detector returning what a buggy model might."""

    def __init__(self, box, name="broken"):
        self.box, self.name = box, name

    def detect(self, frame):
        return [self.box]


@pytest.mark.parametrize("box,match", [
    ((0, 0, 1e9, 1e9, 0.9), "cannot be a face"),
    ((10, 10, 50, 50, float("nan")), "score"),
    ((float("nan"), 10, 50, 50, 0.9), "finite"),
    ((10, 10, -5, 50, 0.9), "positive size"),
])
def test_broken_detector_output_is_refused_naming_the_detector(box, match):
    with Recognizer.demo(backend="onnxruntime", detector=_Broken(box), detect_every=1) as r:
        with pytest.raises(ValueError, match=match) as info:
            r.push_frame(BLANK, t=0.0)
        assert "'broken'" in str(info.value)
        assert r.engine.frames == 0 and r.emitted == 0


def test_refused_detector_frame_leaves_the_detection_schedule_alone():
    """With detect_every=4 a refused frame does not shift the full-pass cadence: the stream
    after it equals a stream in which it never happened."""
    frame = cv2.VideoCapture(str(DEMO_CLIP)).read()[1]

    class Flaky:
        name = "flaky"

        def __init__(self):
            from affedge.features.detectors import make_detector

            self.inner, self.bad = make_detector("blazeface-short"), False  # the demo's

        def detect(self, f):
            return [(0, 0, 1e9, 1e9, 0.9)] if self.bad else self.inner.detect(f)

        def detect_region(self, *a, **k):
            return self.inner.detect_region(*a, **k)

    def run(refuse_at):
        det = Flaky()
        # synchronous passes: the broken pass is refused on its own frame (an asynchronous
        # one would be, on the frame it joins)
        with Recognizer.demo(backend="onnxruntime", detector=det, detect_every=4,
                             async_detect=False) as r:
            out = []
            for i in range(10):
                if i == refuse_at:
                    det.bad = True
                    with pytest.raises(ValueError, match="flaky"):
                        r.push_frame(frame, t=i / 30 - 0.001)
                    det.bad = False
                out.append(r.push_frame(frame, t=i / 30))
            return [(p.valence, p.arousal, p.face_present) for p in out], \
                r.stats()["full_detections"]

    assert run(refuse_at=None) == run(refuse_at=4)


@pytest.mark.parametrize("kw,match", [
    ({"audio_capacity_s": float("nan")}, "audio_capacity_s"),
    ({"audio_capacity_s": float("inf")}, "audio_capacity_s"),
    ({"audio_capacity_s": 1e7}, "audio_capacity_s"),
    ({"backend_options": {"intra_op_threads": 256}}, "intra_op_threads"),
    ({"min_face": 2}, "min_face"),
])
def test_constructor_arguments_are_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        Recognizer.demo(backend="onnxruntime", **kw)


@pytest.mark.parametrize("n", [0, -5])
def test_max_frames_must_be_positive(n):
    with Recognizer.demo(backend="onnxruntime") as r:
        with pytest.raises(ValueError, match="max_frames"):
            next(iter(r.run(str(DEMO_CLIP), max_frames=n)))
        assert r.emitted == 0


def test_a_second_run_resets_by_itself():
    """run() on a second file without reset(): each run is a new stream (timestamps start at
    0 again) and equals a fresh Recognizer's."""
    with Recognizer.demo(backend="onnxruntime") as r:
        a = [(p.valence, p.arousal) for p in r.run(str(DEMO_CLIP), audio="video", max_frames=8)]
        b = [(p.valence, p.arousal) for p in r.run(str(DEMO_CLIP), audio="video", max_frames=8)]
    assert a == b and len(a) == 8
