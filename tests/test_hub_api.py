"""The ``Hub`` Python API (what ``affedge serve`` is a thin layer over), in-process."""
from __future__ import annotations

import re
import threading
import time

import pytest

from tests.test_serve_helpers import cut_clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("hubclips")
    return [cut_clip(d / "a.mp4", 1.0, start=0.0), cut_clip(d / "b.mp4", 1.5, start=3.0)]


class Collect:
    """A sink that takes the source name (as the zmq:// and ws:// sinks do)."""

    accepts_source = True

    def __init__(self):
        self.got: dict[str, list] = {}
        self.statuses: list[dict] = []
        self.closed = False
        self.lock = threading.Lock()

    def write(self, p, source=None):
        with self.lock:
            self.got.setdefault(source, []).append(p)

    def publish_status(self, status):
        self.statuses.append(status)

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_hub_api_two_files_every_frame_in_order_and_an_ended_status(clips):
    import cv2

    from affedge.serve import Hub

    sink = Collect()
    with Hub(status_every_s=0.2) as hub:
        for name, c in zip(("a", "b"), clips):
            hub.add_source(str(c), audio="video", name=name)
        hub.add_sink(sink)
        with pytest.raises(RuntimeError, match=r"call start\(\) first"):
            hub.wait()  # used to block for ever: nothing ends before start()
        hub.start()
        assert hub.wait(timeout=120)
        st = hub.status()
    for name, c in zip(("a", "b"), clips):
        cap = cv2.VideoCapture(str(c))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        preds = sink.got[name]
        assert [p.frame for p in preds] == list(range(n))
        assert all(not p.stale and p.audio_present for p in preds)
        s = st["sources"][name]
        assert s["state"] == "ended" and s["frames"] == n
        # an ended source reports no rate (it used to show its last rate for 2 s more)
        assert s["fps"] == 0.0
    assert st["ticks"] >= max(len(v) for v in sink.got.values())
    assert sink.closed  # leaving the with-block closed the sinks
    assert sink.statuses and "sources" in sink.statuses[0]


class SlowStart(Collect):
    """A sink that takes 0.4 s over its first few predictions (a subscriber's first connect, a
    disk's first write): the loop falls behind the paced files for a while."""

    def write(self, p, source=None):
        if sum(len(v) for v in self.got.values()) < 4:
            import time

            time.sleep(0.1)
        super().write(p, source)


def test_realtime_files_are_paced_and_every_frame_still_predicted(clips):
    """``realtime=True`` (``affedge serve --realtime``) paces files to their media clock; a loop
    that falls behind delays them and skips nothing (it used to skip the frames it was late
    for, without a stale prediction or a count: frames 1-3 of a source were missing)."""
    import time

    import cv2

    from affedge.serve import Hub

    sink = SlowStart()
    t0 = time.monotonic()
    with Hub() as hub:
        for name, c in zip(("a", "b"), clips):
            hub.add_source(str(c), audio="video", name=name, realtime=True)
        hub.add_sink(sink)
        hub.start()
        assert hub.wait(timeout=120)
    wall = time.monotonic() - t0
    longest = 0.0
    for name, c in zip(("a", "b"), clips):
        cap = cv2.VideoCapture(str(c))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        longest = max(longest, n / cap.get(cv2.CAP_PROP_FPS))
        cap.release()
        preds = sink.got[name]
        assert [p.frame for p in preds] == list(range(n)), name
        assert not any(p.stale for p in preds)
    assert wall >= longest  # paced: not faster than the longest file's own duration


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A recording cut in half after its index (a faststart MP4 whose copy was interrupted):
    OpenCV decodes the video up to the cut, PyAV's audio decoder fails mid-stream."""
    import subprocess

    from affedge.sdk.recognizer import DEMO_CLIP

    d = tmp_path_factory.mktemp("damaged")
    whole = d / "whole.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(DEMO_CLIP), "-t", "6", "-c", "copy",
                    "-movflags", "+faststart", str(whole)], check=True, timeout=120)
    data = whole.read_bytes()
    half = d / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    return half


def _frames(path) -> int:
    """Frames OpenCV decodes from ``path`` (benchmarks/bench_serve.py's count)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_serve import frame_count

    return frame_count(Path(path))


def test_a_damaged_audio_track_ends_the_audio_not_the_run(damaged):
    """``run()`` goes on without audio where a file's audio track cannot be decoded further
    (it used to stop with the decoder's error a few frames before the end), and says why."""
    from affedge.sdk.recognizer import Recognizer

    n = _frames(damaged)
    with Recognizer.demo() as rec:
        preds = list(rec.run(str(damaged), audio="video"))
        (err,) = rec.audio_errors
        assert [p.frame for p in preds] == list(range(n)) and n > 30
        assert "error decoding the audio of" in err and "have no audio" in err
        assert len(list(rec.run(str(damaged), max_frames=5))) == 5
        assert rec.audio_errors == []  # each run() reports its own


def test_a_damaged_source_drops_no_frame_of_another(damaged, clips, capfd):
    """In a hub, one source's failing audio decoder used to lose that tick's frame of *every*
    source (reported as a face-detection failure). The file's early end is said, as affedge
    run says it (found by a new-user trial: serve ended such a file without a word)."""
    import re

    from affedge.serve import Hub

    sink = Collect()
    with Hub() as hub:
        hub.add_source(str(clips[1]), audio=None, name="ok")
        hub.add_source(str(damaged), audio="video", name="damaged")
        hub.add_sink(sink)
        hub.start()
        assert hub.wait(timeout=120)
        st = hub.status()
        errors = list(hub.recognizer("damaged").audio_errors)
    for name, path in (("ok", clips[1]), ("damaged", damaged)):
        assert [p.frame for p in sink.got[name]] == list(range(_frames(path))), name
        assert st["sources"][name]["errors"] == 0
    assert st["tick_errors"] == 0
    assert len(errors) == 1 and "have no audio" in errors[0]
    n = _frames(damaged)
    note = st["sources"]["damaged"]["note"]
    assert re.search(rf"ended after {n} of the \d+ frames its container declares", note), note
    assert st["sources"]["ok"]["note"] is None
    assert f"affedge serve: source damaged: {note}" in capfd.readouterr().err


def test_stage_one_of_the_next_tick_fills_the_pool_and_results_equal_serial_runs(clips):
    """The hub keeps several ticks' stage 1 in flight: a source whose stage 1 is done starts
    its next frame's while another source's stage 1 of the previous tick still runs (the tick
    barrier used to leave a core idle there), but never overlaps its own previous one; and the
    batched, pipelined Predictions equal each file's serial ``Recognizer.run``."""
    import os
    import time

    import numpy as np

    from affedge.sdk.recognizer import Recognizer
    from affedge.serve import Hub

    if (os.cpu_count() or 1) < 2:
        pytest.skip("the hub's stage-1 pool needs 2 cores")
    spans: dict[str, dict] = {"slow": {}, "fast": {}}  # frame index -> (start, end)
    tick_of: dict[tuple[str, int], int] = {}  # (source, frame index) -> tick number

    def timed(name, fn, pause):
        def begin_tick(frame, t, index, *a, **k):
            t0 = time.monotonic()
            if pause:
                time.sleep(pause)
            try:
                return fn(frame, t, index, *a, **k)
            finally:
                spans[name][index] = (t0, time.monotonic())
        return begin_tick

    sink = Collect()
    with Hub() as hub:
        hub.add_source(str(clips[0]), audio="video", name="slow")
        hub.add_source(str(clips[1]), audio="video", name="fast")
        for name, pause in (("slow", 0.03), ("fast", 0.0)):
            eng = hub.recognizer(name).engine
            eng.begin_tick = timed(name, eng.begin_tick, pause)
        begin = hub._begin

        def numbered(batch):
            n = len({v for v in tick_of.values()})
            for (_, _, _, index, _), src in zip(batch[0], batch[1]):
                tick_of[(src.name, index)] = n
            return begin(batch)
        hub._begin = numbered
        hub.add_sink(sink)
        hub.start()
        assert hub.wait(timeout=120)
    ticks: dict[int, dict[str, tuple]] = {}
    for name, by_index in spans.items():
        s = [by_index[i] for i in sorted(by_index)]
        # a source's stage 1 never overlaps its own previous one
        assert all(b[0] >= a[1] for a, b in zip(s, s[1:])), name
        for i, span in by_index.items():
            ticks.setdefault(tick_of[(name, i)], {})[name] = span
    # "fast"'s stage 1 of tick T+1 starting before "slow"'s of tick T ended: the tick barrier
    # made this impossible
    pairs = [(ticks[n]["slow"], ticks[n + 1]["fast"]) for n in sorted(ticks)
             if "slow" in ticks[n] and "fast" in ticks.get(n + 1, {})]
    ahead = sum(1 for slow, fast in pairs if fast[0] < slow[1])
    assert len(pairs) >= 20 and ahead >= len(pairs) // 2, (ahead, len(pairs))
    for name, c in (("slow", clips[0]), ("fast", clips[1])):
        with Recognizer.demo() as rec:
            serial = list(rec.run(str(c), audio="video"))
        got = sink.got[name]
        assert [p.frame for p in got] == [p.frame for p in serial]
        a = np.array([[p.valence, p.arousal] for p in got], np.float64)
        b = np.array([[p.valence, p.arousal] for p in serial], np.float64)
        assert np.isfinite(a).all() and np.abs(a - b).max() < 1e-4, name


def test_synchronous_full_passes_in_the_hub_skip_that_frames_search_and_equal_run(clips):
    """``Hub(async_detect=False)`` (``affedge serve --sync-detect``) runs a source's full-frame
    pass inside its stage 1: that frame needs no region search, which the default asynchronous
    schedule runs on every frame (benchmarks/README.md: ~10 % more frames/s for 4 sources).
    Either way a source's Predictions equal ``Recognizer.run`` with the same setting."""
    import numpy as np

    from affedge.sdk.recognizer import Recognizer
    from affedge.serve import Hub

    clip = str(clips[0])
    for async_detect in (True, False):
        sink = Collect()
        with Hub(async_detect=async_detect) as hub:
            hub.add_source(clip, audio="video", name="a")
            hub.add_sink(sink)
            hub.start()
            assert hub.wait(timeout=120)
            stats = hub.recognizer("a").engine.stats()
        got = sink.got["a"]
        n, full = len(got), stats["full_detections"]
        assert n >= 20 and full == -(-n // 4), (n, full)  # every 4th frame (detect_every 4)
        if async_detect:
            # a search on every frame but the first (no track yet: its pass runs at once)
            assert stats["region_searches"] >= n - 1, stats
        else:
            assert stats["region_searches"] == n - full, stats  # none on a full-pass frame
        with Recognizer.demo(async_detect=async_detect) as rec:
            serial = list(rec.run(clip, audio="video"))
        a = np.array([[p.valence, p.arousal] for p in got], np.float64)
        b = np.array([[p.valence, p.arousal] for p in serial], np.float64)
        assert a.shape == b.shape and np.isfinite(a).all() and np.abs(a - b).max() < 1e-4


def test_duck_typed_and_failing_sinks_neither_stop_nor_break_the_hub(clips, capfd):
    """Found by a new-user trial: a sink with write() alone made stop() raise AttributeError
    before anything was closed, and a sink raising once stopped the whole library hub (only
    ``affedge serve`` stops when no output is left). The report names the sink by its class,
    not as ``<... object at 0x7f...>`` (another trial)."""
    from affedge.serve import Hub

    class Plain:
        def __init__(self):
            self.got = []

        def write(self, p, source=None):
            self.got.append((source, p.frame))

    class Bad:
        def write(self, p):
            raise RuntimeError("sink boom")

    plain, bad, kept = Plain(), Bad(), Collect()
    hub = Hub()
    hub.add_source(str(clips[0]), audio="video", name="a")
    n = _frames(clips[0])
    hub.add_sink(bad)
    hub.start()
    assert hub.wait(timeout=120)  # the only sink failed at once: the hub went on
    assert hub.stopped_reason is None and hub.recognizer("a").emitted == n
    said = capfd.readouterr().err
    assert "output Bad failed: RuntimeError('sink boom'); it is dropped" in said, said
    hub.stop()
    assert hub.recognizer("a")._closed
    with pytest.raises(RuntimeError, match="closed"):
        hub.add_source(str(clips[0]))
    with Hub() as hub:
        hub.add_source(str(clips[0]), audio="video", name="a")
        hub.add_sink(plain)
        hub.add_sink(kept)
        with pytest.raises(TypeError, match="Hub.add_sink needs a Sink"):
            hub.add_sink(42)
        hub.start()
        assert hub.wait(timeout=120)
    assert kept.closed and plain.got == [("a", i) for i in range(n)]


def test_a_raising_callback_is_reported_and_every_source_goes_on(clips, capfd):
    """A Hub trial: a Python callback raising at its third call stopped the whole hub, both
    sources stuck "running", and wait() still said every source had ended."""
    from affedge.serve import Hub

    calls = {"n": 0}

    def cb(p):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise ValueError("callback oops")

    kept = Collect()
    with Hub() as hub:
        for name, clip in zip("ab", clips):
            hub.add_source(str(clip), audio="video", name=name)
        hub.recognizer("a").on_prediction(cb)
        hub.add_sink(kept)
        hub.start()
        assert hub.wait(timeout=120) and hub.loop_error is None
        st = hub.status()["sources"]
    n = [_frames(c) for c in clips]
    assert [len(kept.got[k]) for k in "ab"] == n and calls["n"] == n[0]
    assert st["a"]["state"] == st["b"]["state"] == "ended"
    said = capfd.readouterr().err
    assert said.count("source a: a callback raised ValueError('callback oops')") == 1, said


def test_the_next_ticks_encoder_runs_while_this_ticks_step_does(clips):
    """Stage 2 (one encoder call over every source's faces) needs no stream state, so it runs
    on its own thread: tick n+1's encoder call overlaps tick n's step call on the inference
    thread (they ran one after the other there before)."""
    import os
    import time

    import affedge.serve.batching as batching
    from affedge.serve import Hub

    if (os.cpu_count() or 1) < 2:
        pytest.skip("the hub's stage-1 pool and encoder thread need 2 cores")
    enc_spans, step_spans = [], []
    encode_many, step_all = batching.encode_many, batching._step_all

    def slow_encode(items, began):
        t0 = time.monotonic()
        time.sleep(0.01)
        encode_many(items, began)
        enc_spans.append((t0, time.monotonic()))

    def slow_step(ticks):
        t0 = time.monotonic()
        time.sleep(0.01)
        try:
            return step_all(ticks)
        finally:
            step_spans.append((t0, time.monotonic()))
    sink = Collect()
    mp = pytest.MonkeyPatch()
    mp.setattr(batching, "encode_many", slow_encode)
    mp.setattr(batching, "_step_all", slow_step)
    try:
        with Hub() as hub:
            hub.add_source(str(clips[0]), audio="video", name="a")
            hub.add_source(str(clips[1]), audio="video", name="b")
            hub.add_sink(sink)
            hub.start()
            assert hub.wait(timeout=120)
    finally:
        mp.undo()
    assert [p.frame for p in sink.got["a"]] == list(range(_frames(clips[0])))
    assert len(enc_spans) == len(step_spans) >= 30
    # encoder of tick n+1 starts before the step of tick n has ended
    overlaps = sum(1 for (s0, s1), (e0, _) in zip(step_spans, enc_spans[1:]) if e0 < s1)
    assert overlaps >= len(step_spans) // 2, (overlaps, len(step_spans))


def test_an_encoder_failure_loses_that_tick_only_and_is_reported(clips, capfd):
    """A backend error in the encoder thread's call: that tick's frames get no Prediction,
    the error is reported as an inference failure, and every other frame of both sources
    still comes, in order."""
    from affedge.serve import Hub

    sink = Collect()
    with Hub() as hub:
        hub.add_source(str(clips[0]), audio="video", name="a")
        hub.add_source(str(clips[1]), audio="video", name="b")
        calls = []
        for name in ("a", "b"):
            eng = hub.recognizer(name).engine
            encode = eng.encode

            def failing(crops, encode=encode):
                calls.append(1)
                if len(calls) == 5:
                    raise RuntimeError("encoder boom")
                return encode(crops)
            eng.encode = failing
        hub.add_sink(sink)
        hub.start()
        assert hub.wait(timeout=120)
        assert hub.status()["tick_errors"] == 1
    err = capfd.readouterr().err
    assert "affedge serve: inference failed for" in err and "encoder boom" in err
    for name, clip in (("a", clips[0]), ("b", clips[1])):
        frames = [p.frame for p in sink.got[name]]
        assert frames == sorted(frames)
        assert len(frames) >= _frames(clip) - 1, name  # at most the failed tick's frame
    lost = sum(_frames(c) for c in clips) - sum(len(v) for v in sink.got.values())
    assert 1 <= lost <= 2


def test_an_unknown_recognizer_option_is_refused_when_the_hub_is_made():
    """Found by a new-user trial: Hub(threads=1) was accepted and failed only at add_source
    with Recognizer's TypeError."""
    from affedge.serve import Hub

    with pytest.raises(TypeError, match=r"Hub: unknown keyword 'threads' \(threads: "
                                        r"backend_options=\{'intra_op_threads': N\}\)"):
        Hub(threads=1)
    with pytest.raises(TypeError, match="unknown keyword 'smoothin'.*smoothing"):
        Hub(smoothin=0.5)
    Hub(smoothing=0.5, detect_every=2).close()


@pytest.mark.parametrize("options, says", [
    ({"smoothing": 1.5}, "smoothing must be in [0, 1)"),
    ({"detector": "nope"}, "detector must be one of"),
    ({"detect_every": 0}, "detect_every must be an integer >= 1"),
    ({"min_face": 3}, "min_face must be an integer >= 8 pixels"),
])
def test_a_bad_recognizer_option_value_is_refused_when_the_hub_is_made(options, says):
    """Found by a new-user trial: Hub(smoothing=1.5) and Hub(detector="nope") were accepted
    and failed only at the first add_source."""
    from affedge.serve import Hub

    with pytest.raises(ValueError, match=re.escape(f"Hub: {says}")):
        Hub(**options)


def test_a_shared_detector_object_is_called_by_one_thread_at_a_time(clips):
    """Found by a new-user trial: ``Hub(detector=obj)`` gave every source the one object and
    called it from two pool threads at once (a cv2.dnn net or a detector with state breaks
    there). One that does not say ``concurrent_safe`` is now called one call at a time; every
    frame still gets its prediction."""
    import time

    from affedge.features.detectors import make_detector
    from affedge.serve import Hub

    class Counting:
        """BlazeFace-short behind an object that counts calls running at once."""

        def __init__(self):
            self.inner = make_detector("blazeface-short")
            self.name, self.has_keypoints = "counting", True
            self.model_sha256 = self.inner.model_sha256
            self.now = self.most = self.calls = 0
            self.lock = threading.Lock()

        def _call(self, fn, *args, **kwargs):
            with self.lock:
                self.now += 1
                self.calls += 1
                self.most = max(self.most, self.now)
            try:
                time.sleep(0.002)  # long enough for two threads to meet here
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.now -= 1

        def detect(self, frame):
            return self._call(self.inner.detect, frame)

        def detect_region(self, frame, region, **kw):
            return self._call(self.inner.detect_region, frame, region, **kw)

    det, sink = Counting(), Collect()
    with Hub(detector=det) as hub:
        for name, c in zip(("a", "b"), clips):
            hub.add_source(str(c), audio="video", name=name)
        hub.add_sink(sink)
        hub.start()
        assert hub.wait(timeout=120)
    assert det.calls > 40 and det.most == 1, (det.calls, det.most)
    assert all(len(sink.got[n]) > 20 for n in ("a", "b"))


def test_frames_a_live_source_skipped_get_times_spread_between_their_neighbours(tmp_path):
    """Found by a new-user trial: the stale Predictions of skipped frames bunched up against
    the next frame's time (each one was placed between the last *emitted* one and the frame,
    so the gaps halved: 2.2320, 2.2329, 2.2332, 2.2333, 2.2333, ...), and frames shared times."""

    from affedge.serve import Hub
    from tests.test_serve_helpers import cut_clip, http_stream

    clip = cut_clip(tmp_path / "c.mp4", 3.0)
    url, server = http_stream(clip)
    preds = []

    class Slow:  # a sink slower than the stream: the loop falls behind and frames are skipped
        def write(self, p):
            preds.append(p)
            if not p.stale:
                time.sleep(0.08)

    try:
        with Hub(backend="ort-cpu") as hub:
            hub.add_source(url, name="cam")
            hub.add_sink(Slow())
            hub.start()
            deadline = time.monotonic() + 30
            while hub.status()["sources"]["cam"]["state"] not in ("retrying", "failed") \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        server.kill()
        server.wait(10)
    frames = [p.frame for p in preds]
    assert frames == list(range(len(frames))) and len(frames) >= 60
    stale = [k for k, p in enumerate(preds) if p.stale]
    assert len(stale) >= 10
    times = [p.timestamp for p in preds]
    assert all(b > a for a, b in zip(times, times[1:])), "times must increase frame by frame"
    fresh = [k for k, p in enumerate(preds) if not p.stale]
    for a, b in zip(fresh, fresh[1:]):
        if b - a > 1:  # the skipped frames a+1..b-1 step evenly from frame a's time to b's
            step = (times[b] - times[a]) / (b - a)
            assert all(abs(times[k] - (times[a] + (k - a) * step)) < 1e-6 for k in range(a, b))


def test_the_status_rate_reads_a_burst_after_an_outage_as_a_burst():
    """Found by a new-user trial: right after a stream came back, the status said 33 and then
    231 frames/s for a 30 fps camera (the rate was taken over the few bunched frames' span)."""
    from affedge.serve.hub import FPS_WINDOW_S, _Source

    now = time.monotonic()
    s = _Source("cam", None, None, "url", None)
    s.first_at = now - 20.0
    s.wall.extend(now - 0.05 + 0.0025 * i for i in range(20))  # 20 frames within 50 ms
    assert s.fps() == 20 / FPS_WINDOW_S
    s.wall.clear()
    s.wall.extend(now - k / 30.0 for k in range(59, -1, -1))  # a steady 30 fps
    assert abs(s.fps() - 30.0) < 0.6
    s.wall.clear()
    s.wall.extend(now - k / 300.0 for k in range(255, -1, -1))  # an unpaced file: 300/s
    assert abs(s.fps() - 300.0) < 1.0
    fresh = _Source("new", None, None, "url", None)  # running for under the window
    fresh.first_at = now - 0.5
    fresh.wall.extend(now - 0.5 + k / 30.0 for k in range(15))
    assert abs(fresh.fps() - 30.0) < 0.6


def test_a_live_source_that_stops_sending_reads_stalled_in_the_status(tmp_path):
    """Found by a new-user trial: a stream paused (SIGSTOP) read "running" for 5 s, until its
    read timed out and it was "retrying"; a watchdog had to infer it from fps 0."""
    import signal

    from affedge.serve import Hub
    from tests.test_serve_helpers import cut_clip, http_stream

    clip = cut_clip(tmp_path / "c.mp4", 20.0)
    url, server = http_stream(clip)
    states = []
    try:
        with Hub(backend="ort-cpu") as hub:
            hub.add_source(url, name="cam")
            hub.start()
            deadline = time.monotonic() + 30
            while hub.status()["sources"]["cam"]["frames"] < 15 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert hub.status()["sources"]["cam"]["state"] == "running"
            server.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            while time.monotonic() - stopped < 4.0:
                states.append(hub.status()["sources"]["cam"]["state"])
                if states[-1] == "stalled":
                    break
                time.sleep(0.1)
            server.send_signal(signal.SIGCONT)
    finally:
        server.kill()
        server.wait(10)
    assert states[-1] == "stalled", states


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_inference_loop_reads_failed_not_running(clips, monkeypatch):
    """A Hub trial: after the loop died, wait() said every source had ended and the status
    still showed them running."""
    from affedge.serve import Hub

    def gather(self, ready):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(Hub, "_gather", gather)
    with Hub() as hub:
        hub.add_source(str(clips[0]), audio="video", name="a")
        hub.start()
        assert hub.wait(timeout=60) is False
        assert isinstance(hub.loop_error, OSError)
        assert hub.status()["sources"]["a"]["state"] == "failed"


def test_one_file_or_one_sink_twice_is_refused(tmp_path):
    """A Hub trial: two outputs to one file through a symlink (or one path given twice in
    Python) kept 119 of 120 rows; the same sink object twice wrote every prediction twice."""
    from affedge.serve import Hub

    real = tmp_path / "real.jsonl"
    (tmp_path / "link.jsonl").symlink_to(real)
    with Hub() as hub:
        first = hub.add_sink(str(real))
        for again in (str(tmp_path / "link.jsonl"), str(real), first):
            with pytest.raises(ValueError, match="Hub.add_sink: "):
                hub.add_sink(again)
        assert hub.sinks == [first]


def test_a_failing_status_output_is_said_once(clips, capfd):
    """A Hub trial: a sink whose publish_status raised was reported every second, forever."""
    from affedge.serve import Hub

    class StatusBoom(Collect):
        def publish_status(self, status):
            raise RuntimeError("status boom")

    sink = StatusBoom()
    with Hub(status_every_s=0.02) as hub:
        hub.add_source(str(clips[1]), audio="video", name="b")
        hub.add_sink(sink)
        hub.start()
        assert hub.wait(timeout=120)
    said = capfd.readouterr().err
    assert said.count("status boom") == 1, said
    assert len(sink.got["b"]) == _frames(clips[1])  # its predictions went on


def test_stop_waits_once_for_every_dead_stream_not_once_each():
    """A Hub trial: SIGTERM with 10 URLs that accept and never answer took 45 s (5 s per
    source in turn) and tripped the shutdown watchdog. The sources now share one wait."""
    import socket

    from affedge.serve import Hub
    from affedge.serve.hub import WORKER_STOP_S

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port, held = srv.getsockname()[1], []

    def accept():
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        hub = Hub()
        for i in range(2):
            hub.add_source(f"http://127.0.0.1:{port}/x{i}.ts", name=f"u{i}")
        hub.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        hub.stop()
        took = time.monotonic() - t0
        assert took < WORKER_STOP_S + 2.0, took  # (2 x 5 s before)
    finally:
        srv.close()
        for c in held:
            c.close()


def test_source_names_and_status_period_are_checked(clips):
    """A Hub trial: an automatic name clashed with the user's own "src0" given to the second
    source; name="" got an automatic name in Python but was refused by the config; and
    status_every_s=0 or -1 was taken."""
    from affedge.serve import Hub

    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="status_every_s must be > 0"):
            Hub(status_every_s=bad)
    with Hub() as hub:
        assert hub.add_source(str(clips[0]), name="src0") == "src0"
        assert hub.add_source(str(clips[0])) == "src1"
        assert hub.add_source(str(clips[0]), name="src3") == "src3"
        assert hub.add_source(str(clips[0])) == "src2"
        with pytest.raises(ValueError, match="source name ''"):
            hub.add_source(str(clips[0]), name="")
        with pytest.raises(ValueError, match="'src1' is used twice .it is an earlier source's "
                                             "automatic name: name that one too.$"):
            hub.add_source(str(clips[0]), name="src1")
