"""Faults: a backend that fails mid-stream, Ctrl-C and close() during a live capture run,
the Recognizer as a context manager.

Real pieces: the exported bundle (ONNX Runtime CPU), an MJPEG-over-HTTP camera on 127.0.0.1,
a PulseAudio null-sink monitor captured through pyaudio (``scripts/start_sound_server.sh``), a
real SIGINT delivered to this process. The backend failure is real too: after N calls the wrapper
releases the ONNX Runtime backend's sessions (as a lost device would) and the next call fails
inside that backend.
"""
from __future__ import annotations

import inspect
import os
import shutil
import signal
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest

import media
from test_engine import FPS, bundle_dir  # noqa: F401  (shared session fixtures)
from test_sources_live import sound_server  # noqa: F401  (PulseAudio null sink)

SR = 16000


@pytest.fixture(scope="module")
def frames():
    face = cv2.resize(media.face_photo_bgr(), (80, 90), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(16):
        img = np.full((120, 160, 3), (90, 110, 120), np.uint8)
        img[14 + (i % 4):104 + (i % 4), 20 + 4 * i:100 + 4 * i] = face
        out.append(img)
    return out


class FailingAfter:
    """Delegates to a real backend; after ``n_ok`` calls it closes that backend (its ONNX Runtime
    sessions are released, like a lost GPU context) so the next call fails inside it."""

    def __init__(self, inner, n_ok: int):
        self.inner, self.n_ok, self.calls = inner, n_ok, 0
        self.name = inner.name

    def run(self, model_name, inputs):
        self.calls += 1
        if self.calls > self.n_ok:
            self.inner.close()
        return self.inner.run(model_name, inputs)

    def close(self):
        self.inner.close()


#: the threads alive when the current test began (another test's are not its to end)
_PRESENT: set = set()


@pytest.fixture(autouse=True)
def _threads_present_before():
    _PRESENT.clear()
    _PRESENT.update(t.ident for t in threading.enumerate())
    yield


def _affedge_threads_after_wait(timeout: float = 10.0) -> list[str]:
    """The affedge threads (capture, face detection: named ``affedge-*``) still alive once they
    all ended or ``timeout`` s passed. Named threads, not a total count: PortAudio's callback
    thread leaves a ``Dummy-N`` entry behind and servers' handler threads end on their own
    schedule, so totals are not a reliable measure."""
    import gc

    # an unreachable Recognizer of an earlier test (a reference cycle) keeps its detection
    # worker until the cyclic collector runs: three tests here failed on such a thread in
    # full-suite runs, never alone; the check is about the objects still in use
    gc.collect()
    deadline = time.monotonic() + timeout
    while True:
        alive = [t.name for t in threading.enumerate()
                 if t.name.startswith("affedge-") and t.ident not in _PRESENT]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


#: a live run waits at most this long for the microphone's first audio (PulseAudio null sink)
AUDIO_WAIT_S = 30.0


def _va(preds):
    return np.array([(p.valence, p.arousal) for p in preds])


# ---------------------------------------------------------------------- backend failure
@pytest.mark.parametrize("detect_every", [1, 4])
def test_backend_failure_mid_stream_then_fallback_keeps_the_stream(bundle_dir, frames,  # noqa: F811
                                                                   detect_every):
    """A backend that dies at frame ~8: the FallbackBackend records the failure and re-runs the
    failed call on the next backend inside the same tick (running a model changes no state, so
    the detection cadence and the tracker advance once) and every prediction equals the
    uninterrupted run."""
    from affedge.bundle import load_bundle
    from affedge.features.faces import FaceDetector
    from affedge.sdk.backends import select_backend
    from affedge.sdk.backends.fallback import FallbackBackend
    from affedge.sdk.engine import StreamingEngine

    bundle = load_bundle(bundle_dir)
    speech = (np.sin(2 * np.pi * 200 * np.arange(SR) / SR) * 0.3).astype(np.float32)

    def engine(backend):
        e = StreamingEngine(bundle, backend, FaceDetector("haar"), detect_every=detect_every)
        e.audio.push(speech, 0.0, SR)
        return e

    ref_engine = engine(select_backend(bundle, "onnxruntime"))
    ref = [ref_engine.process_frame(f, i / FPS) for i, f in enumerate(frames)]

    flaky = FailingAfter(select_backend(bundle, "onnxruntime"), n_ok=10**9)
    failures = []
    fb = FallbackBackend(bundle, [flaky, "onnxruntime"], on_failure=lambda name, exc: failures.append(
        (eng.frame_index, type(exc).__name__, str(exc))))
    eng = engine(fb)  # the filler embedding is computed at construction: 1 call
    flaky.n_ok = flaky.calls + 2 * 8 - 1  # encoder + step per frame: dies inside frame 7
    got = [eng.process_frame(f, i / FPS) for i, f in enumerate(frames)]
    assert [f[0] for f in failures] == [7], failures
    assert [p.frame for p in got] == list(range(len(frames)))
    np.testing.assert_allclose(_va(got), _va(ref), atol=1e-6, rtol=0)
    assert all(p.face_present for p in got[1:])


def test_closed_backend_fails_with_a_clear_error(bundle_dir):  # noqa: F811
    from affedge.sdk.backends import select_backend

    be = select_backend(bundle_dir, "onnxruntime")
    be.close()
    with pytest.raises(RuntimeError, match="backend closed"):
        be.run("encoder", {"frames": np.zeros((1, 3, 40, 40), np.float32)})


def test_recognizer_fallback_api(bundle_dir, frames):  # noqa: F811
    """The public form of the test above: ``Recognizer(..., fallback=True)`` records
    ``backend_failures`` and keeps going. Skipped until the Recognizer has it (reported)."""
    from affedge.sdk.backends import select_backend
    from affedge.sdk.recognizer import Recognizer

    params = inspect.signature(Recognizer).parameters
    if "fallback" not in params:
        pytest.skip("Recognizer has no fallback= option yet (requested: Recognizer(bundle, "
                    "backend=[Backend | name, ...], fallback=True), rec.backend_failures)")
    flaky = FailingAfter(select_backend(bundle_dir, "onnxruntime"), n_ok=12)
    with Recognizer(bundle_dir, backend=[flaky, "onnxruntime"], fallback=True) as rec, \
            Recognizer(bundle_dir, backend="onnxruntime") as ref:
        got = [rec.push_frame(f, t=i / FPS) for i, f in enumerate(frames)]
        want = [ref.push_frame(f, t=i / FPS) for i, f in enumerate(frames)]
        assert len(rec.backend_failures) == 1
        _frame, name, err = rec.backend_failures[0]
        assert name == flaky.name and "backend closed" in err
        assert got[-1].backend == rec.backend_name
    np.testing.assert_allclose(_va(got), _va(want), atol=1e-6, rtol=0)


def test_recognizer_fallback_with_no_candidate_left_names_every_failure(bundle_dir,  # noqa: F811
                                                                        frames):
    from affedge.sdk.backends import select_backend
    from affedge.sdk.recognizer import Recognizer

    first = FailingAfter(select_backend(bundle_dir, "onnxruntime"), n_ok=3)
    second = FailingAfter(select_backend(bundle_dir, "onnxruntime"), n_ok=0)
    with Recognizer(bundle_dir, backend=[first, second], fallback=True) as rec:
        assert rec.push_frame(frames[0], t=0.0).frame == 0  # filler + encoder + step: 3 calls
        with pytest.raises(RuntimeError, match="every backend failed") as info:
            rec.push_frame(frames[1], t=1 / FPS)
        assert [(f, name) for f, name, _ in rec.backend_failures] == \
            [(1, first.name), (1, second.name)]
        assert str(info.value).count("backend closed") == 2
        assert rec.stats()["frames"] == 1  # the failed tick was not half-applied


def test_recognizer_auto_fallback_candidates_follow_select_backend(bundle_dir, frames):  # noqa: F811
    """backend="auto", fallback=True: the first candidate of select_backend's order that works
    runs; the others stay in order for a fallback; predictions equal backend="auto"."""
    from affedge.sdk.backends.select import ORDER
    from affedge.sdk.recognizer import Recognizer

    with Recognizer(bundle_dir, backend="auto", fallback=True) as rec, \
            Recognizer(bundle_dir, backend="auto") as ref:
        assert rec.backend_name == ref.backend_name
        left = list(rec.backend.remaining)
        assert left == list(ORDER[len(ORDER) - len(left):])
        got = [rec.push_frame(f, t=i / FPS) for i, f in enumerate(frames[:4])]
        want = [ref.push_frame(f, t=i / FPS) for i, f in enumerate(frames[:4])]
        assert rec.backend_failures == []
    np.testing.assert_allclose(_va(got), _va(want), atol=1e-6, rtol=0)


# ------------------------------------------------------------- Ctrl-C / close in live runs
def _source_outputs() -> list[str]:
    """PulseAudio recording streams open right now (one line each)."""
    r = subprocess.run(["pactl", "list", "short", "source-outputs"], capture_output=True,
                       text=True, timeout=10, check=True, env=dict(os.environ))
    return [line for line in r.stdout.splitlines() if line.strip()]


def _live_sources(server):
    from affedge.sdk.sources import MicrophoneSource, VideoSource

    cam = VideoSource(server.url, reconnect=0, timeout=5.0)
    mic = MicrophoneSource(chunk_ms=20)
    return cam, mic


@pytest.mark.skipif(shutil.which("pactl") is None, reason="pactl (pulseaudio-utils) missing")
def test_ctrl_c_during_live_run_stops_threads_and_releases_devices(bundle_dir, frames,  # noqa: F811
                                                                   sound_server):  # noqa: F811
    from affedge.sdk.recognizer import Recognizer

    assert _source_outputs() == []
    # What this test checks is run()'s reaction to a KeyboardInterrupt. In full-suite CI runs
    # every SIGINT was ignored here (never alone): some native library loaded by an earlier
    # test left the process's SIGINT disposition or this thread's mask changed behind Python's
    # back. Restore Python's own state first and say what was found.
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)  # re-installs the C-level handler
    if blocked:
        print("SIGINT was blocked in the main thread before this test; unblocked")
    got, fired = [], []
    with media.MjpegServer(frames, fps=25.0) as server:
        rec = Recognizer(bundle_dir, backend="onnxruntime")
        cam, mic = _live_sources(server)
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            for p in rec.run(cam, audio=mic, max_frames=10_000):
                got.append(p)
                if not fired and time.monotonic() - t0 > AUDIO_WAIT_S:
                    rec.close()
                    pytest.fail(f"no audio from the microphone within {AUDIO_WAIT_S:g} s "
                                f"({len(got)} frames; PulseAudio delivered nothing)")
                assert time.monotonic() - t0 < AUDIO_WAIT_S + 30, "SIGINT did not stop run()"
                # once audio flows: a real SIGINT, delivered while run() is busy or blocked
                if not fired and len(got) >= 6 and rec.stats()["audio_seconds"] > 0.2:
                    assert len(_source_outputs()) == 1  # the microphone is recording
                    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
                    fired.append(time.monotonic())
                # In two full-suite CI runs (never alone, nor after every test file before
                # this one) the first SIGINT was not acted upon for 30 s while frames kept
                # coming; a user presses Ctrl-C again. Resend every 5 s (at most 3 more) so
                # that the clean-up below is still checked; the count is printed. One native
                # culprit was found later: OpenVINO Cores closed in creation order left the
                # main thread's alternate signal stack on unmapped memory (the next signal
                # killed the suite with SIGSEGV; fixed by openvino_backend.shared_core).
                # Whether it also explains the ignored SIGINT is not known.
                elif fired and len(fired) < 4 and time.monotonic() - fired[-1] > 5.0:
                    print(f"SIGINT #{len(fired)} not acted upon after 5 s; sending another")
                    os.kill(os.getpid(), signal.SIGINT)
                    fired.append(time.monotonic())
        # run()'s cleanup released both devices and joined its capture threads
        assert mic._stream is None and mic._closed
        assert cam._closed
        assert _source_outputs() == []
        assert rec.stats()["audio_seconds"] > 0  # audio did flow before the interrupt
        rec.close()
        assert _affedge_threads_after_wait() == []
    assert not server._thread.is_alive()  # the camera server's thread ended too
    assert len(got) >= 6
    with pytest.raises(RuntimeError, match="closed"):
        rec.push_frame(frames[0], t=time.monotonic())


@pytest.mark.skipif(shutil.which("pactl") is None, reason="pactl (pulseaudio-utils) missing")
def test_close_from_another_thread_ends_a_live_run(bundle_dir, frames, sound_server):  # noqa: F811
    from affedge.sdk.recognizer import Recognizer

    with media.MjpegServer(frames, fps=25.0) as server:
        rec = Recognizer(bundle_dir, backend="onnxruntime")
        cam, mic = _live_sources(server)
        ends = []
        it = rec.predictions()  # an iterator on another thread must end too
        consumer = threading.Thread(target=lambda: ends.append(sum(1 for _ in it)))
        consumer.start()
        n = 0
        t0 = time.monotonic()
        for _p in rec.run(cam, audio=mic, max_frames=10_000):
            n += 1
            if n == 5:
                threading.Timer(0.2, rec.close).start()
            assert time.monotonic() - t0 < 60, "run() did not stop after close()"
        consumer.join(10)
        assert not consumer.is_alive() and ends and ends[0] >= 5
        assert mic._stream is None and cam._closed
        assert _source_outputs() == []
        assert _affedge_threads_after_wait() == []
    assert not server._thread.is_alive()


def test_recognizer_is_a_context_manager(bundle_dir, frames, tmp_path):  # noqa: F811
    from affedge.sdk.recognizer import Recognizer

    video = media.make_face_video(tmp_path / "v.mp4", seconds=0.4, fps=FPS)
    with pytest.raises(ZeroDivisionError):
        with Recognizer(bundle_dir, backend="onnxruntime") as rec:
            for i, _p in enumerate(rec.run(str(video.path))):
                if i == 3:
                    1 / 0  # an error in user code inside the with block
    with pytest.raises(RuntimeError, match="closed"):
        rec.push_frame(frames[0], t=1.0)
    with pytest.raises(RuntimeError, match="closed"):
        next(rec.run(str(video.path)))
    rec.close()  # idempotent
    assert _affedge_threads_after_wait() == []
