"""Recognizer API: smoothing, callbacks, iterators, lifecycle, Prediction records, errors."""
from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
from media import face_frames
from test_engine import FPS, bundle_dir  # noqa: F401  (shared session fixture)


def test_smoothing_is_the_documented_causal_ema(bundle_dir):  # noqa: F811
    from affedge.sdk.recognizer import Recognizer
    from affedge.sdk.smoothing import lag_frames, time_constant_frames

    alpha = 0.8
    frames, _ = face_frames(20, FPS)
    with Recognizer(bundle_dir, backend="onnxruntime", smoothing=alpha) as rec:
        preds = [rec.push_frame(f, t=i / FPS) for i, f in enumerate(frames)]
    raw = np.array([(p.valence, p.arousal) for p in preds])
    sm = np.array([(p.valence_smoothed, p.arousal_smoothed) for p in preds])
    ema = np.empty_like(raw)
    ema[0] = raw[0]
    for i in range(1, len(raw)):
        ema[i] = alpha * ema[i - 1] + (1 - alpha) * raw[i]
    np.testing.assert_allclose(sm, ema, atol=1e-6)
    assert np.abs(np.diff(sm, axis=0)).sum() < np.abs(np.diff(raw, axis=0)).sum()
    assert lag_frames(alpha) == pytest.approx(4.0)
    assert time_constant_frames(0.9) == pytest.approx(-1 / np.log(0.9))
    with pytest.raises(ValueError, match="smoothing"):
        Recognizer(bundle_dir, smoothing=1.0)


def test_a_failing_callback_never_keeps_a_prediction_from_the_others(bundle_dir):  # noqa: F811
    """A callback that raises (a publisher down) no longer keeps the prediction from the
    callbacks after it; its exception propagates from push_frame, and the next frame is
    processed normally; in run() it ends the run."""
    from affedge.sdk.recognizer import Recognizer

    frames, _ = face_frames(3, FPS)
    after = []

    def down(p):
        if p.frame == 1:
            raise ConnectionError("publisher down")

    with Recognizer(bundle_dir, backend="onnxruntime") as rec:
        rec.on_prediction(down)
        rec.on_prediction(after.append)
        rec.push_frame(frames[0], t=0.0)
        with pytest.raises(ConnectionError, match="publisher down"):
            rec.push_frame(frames[1], t=1 / FPS)
        assert rec.latest().frame == 1
        assert rec.push_frame(frames[2], t=2 / FPS).frame == 2
    assert [p.frame for p in after] == [0, 1, 2]


def test_close_from_another_thread_ends_predictions_after_the_tick_in_flight(bundle_dir):  # noqa: F811
    """close() during a push_frame on another thread: the iterator still yields that frame's
    prediction, then ends (it used to end first: the last frame returned by push_frame and
    held by latest() never reached predictions())."""
    from affedge.sdk.recognizer import Recognizer

    frames, _ = face_frames(3, FPS)
    rec = Recognizer(bundle_dir, backend="onnxruntime")
    in_tick, real = threading.Event(), rec.engine.run_models

    def slow_last(tick):  # the real model call, held up on the last frame
        if not in_tick.is_set() and rec.emitted == len(frames) - 1:
            in_tick.set()
            time.sleep(0.5)  # close() is called meanwhile
        return real(tick)

    rec.engine.run_models = slow_last
    it = rec.predictions()
    got, done = [], threading.Event()

    def consume():
        got.extend(p.frame for p in it)
        done.set()

    def produce():
        for i, f in enumerate(frames):
            rec.push_frame(f, t=i / FPS)

    threads = [threading.Thread(target=consume), threading.Thread(target=produce)]
    threads[0].start()
    time.sleep(0.2)  # the consumer is subscribed
    threads[1].start()
    assert in_tick.wait(60)
    rec.close()
    for th in threads:
        th.join(60)
    assert done.is_set() and rec.latest().frame == len(frames) - 1
    assert got == list(range(len(frames))), got


def test_callbacks_iterator_latest_and_close(bundle_dir):  # noqa: F811
    from affedge.sdk.recognizer import Recognizer

    frames, _ = face_frames(6, FPS)
    seen = []
    rec = Recognizer(bundle_dir, backend="onnxruntime", on_prediction=seen.append)
    extra = []
    rec.on_prediction(extra.append)
    got = []
    ready = threading.Event()

    def consume():
        it = rec.predictions()
        ready.set()
        for p in it:  # ends when the recognizer is closed
            got.append(p)

    th = threading.Thread(target=consume)
    th.start()
    ready.wait(10)
    assert rec.latest() is None
    for i, f in enumerate(frames):
        p = rec.push_frame(f, t=10.0 + i / FPS)
        assert rec.latest() is p
    with rec:
        pass  # __exit__ closes
    th.join(10)
    assert not th.is_alive()
    assert [p.frame for p in seen] == [p.frame for p in extra] == [p.frame for p in got] \
        == list(range(6))
    rec.close()  # idempotent


def test_prediction_record_conventions(bundle_dir):  # noqa: F811
    from affedge.sdk.prediction import Prediction
    from affedge.sdk.recognizer import Recognizer

    frames, _ = face_frames(3, FPS)
    with Recognizer(bundle_dir, backend="onnxruntime") as rec:
        p = [rec.push_frame(f, t=i / FPS) for i, f in enumerate(frames)][-1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.valence = 0.0  # type: ignore[misc]
    d = p.to_dict()
    for key in ("frame", "timestamp", "confidence", "success", "valence", "arousal",
                "face_present", "speech_present", "track_id", "latency_ms", "backend", "stale"):
        assert key in d
    assert d["success"] == d["face_present"] is True
    assert d["faces"][0]["track_id"] == p.track_id
    row = p.to_csv_row()
    assert len(row) == len(Prediction.CSV_FIELDS)
    assert row[Prediction.CSV_FIELDS.index("frame")] == "2"
    assert p.latency_ms > 0 and p.backend.startswith("onnxruntime")
    assert 0 < p.confidence <= 1


def test_stale_prediction_carries_previous_values(bundle_dir):  # noqa: F811
    from affedge.sdk.recognizer import Recognizer

    frames, _ = face_frames(2, FPS)
    with Recognizer(bundle_dir, backend="onnxruntime") as rec:
        first = rec.engine.stale_prediction(0, 0.0, None)
        assert first.stale and np.isnan(first.valence) and first.confidence == 0.0
        p = rec.push_frame(frames[0], t=0.0)
        s = rec.engine.stale_prediction(1, 0.04, p)
    assert s.stale and s.frame == 1 and s.timestamp == 0.04
    assert (s.valence, s.arousal, s.face_box) == (p.valence, p.arousal, p.face_box)


def test_constructor_errors(bundle_dir, tmp_path):  # noqa: F811
    from affedge.sdk.recognizer import DEMO_BUNDLE, Recognizer, demo_assets_missing

    with pytest.raises(FileNotFoundError, match="bundle not found"):
        Recognizer(tmp_path / "nope")
    with pytest.raises(ValueError, match="detector"):
        Recognizer(bundle_dir, detector="dlib")
    with pytest.raises(ValueError, match="yunet"):
        Recognizer(bundle_dir, detector="yunet")  # needs yunet_model=
    with pytest.raises(ValueError, match="max_faces"):
        Recognizer(bundle_dir, max_faces=0)
    # (a kiosk trial: 2.5 silently became 2, True 1, and "2" raised a raw TypeError)
    for bad in (2.5, True, "2"):
        with pytest.raises(ValueError, match=r"max_faces \(max_tracks\) must be a whole number"):
            Recognizer(bundle_dir, max_faces=bad)
    if (DEMO_BUNDLE / "manifest.json").exists():
        # the demo's crops are landmark-aligned: a keypoint-less detector is refused at once
        # (it used to be accepted, then every frame with a face was refused)
        with pytest.raises(ValueError, match="'haar' gives no face keypoints.*landmarks5-v1"):
            Recognizer.demo(detector="haar")
    if not (DEMO_BUNDLE / "manifest.json").exists():
        with pytest.raises(FileNotFoundError, match="demo bundle is missing"):
            Recognizer.demo()
        assert demo_assets_missing()
    else:
        with Recognizer.demo(backend="onnxruntime") as rec:
            assert rec.bundle.receptive_field > 0


def test_run_with_the_video_files_own_audio_track(bundle_dir, tmp_path):  # noqa: F811
    from media import make_face_video, make_speech_wav, mux

    from affedge.sdk.recognizer import Recognizer

    make_face_video(tmp_path / "v.mp4", seconds=1.2, fps=FPS)
    make_speech_wav(tmp_path / "s.wav", total=1.6)
    mux(tmp_path / "v.mp4", tmp_path / "s.wav", tmp_path / "av.mp4")
    with Recognizer(bundle_dir, backend="onnxruntime") as rec:
        preds = list(rec.run(str(tmp_path / "av.mp4"), audio="video", max_frames=20))
        assert rec.stats()["audio_seconds"] > 0.8
    assert len(preds) == 20 and all(p.audio_present for p in preds)
    with Recognizer(bundle_dir, backend="onnxruntime") as rec:
        silent = list(rec.run(str(tmp_path / "av.mp4"), audio=None, max_frames=5))
    assert not any(p.audio_present or p.speech_present for p in silent)


def test_live_stream_never_drops_predictions(bundle_dir):  # noqa: F811
    """An MJPEG-over-HTTP 'IP camera' at 60 fps: frames the engine had no time for are skipped
    and still get a stale Prediction carrying the previous values (how many is timing
    dependent, so the test checks the bookkeeping, not a count)."""
    from media import MjpegServer

    from affedge.sdk.recognizer import Recognizer

    frames, _ = face_frames(30, FPS)
    with MjpegServer(frames, fps=60.0) as server:
        with Recognizer(bundle_dir, backend="onnxruntime") as rec:
            preds = list(rec.run(server.url, max_frames=12))
            stats = rec.stats()
    idx = [p.frame for p in preds]
    assert idx == list(range(idx[0], idx[0] + len(idx)))  # contiguous: nothing dropped
    assert sum(not p.stale for p in preds) == 12
    assert sum(p.stale for p in preds) == stats["skipped_frames"]
    ts = [p.timestamp for p in preds]
    assert all(b > a for a, b in zip(ts, ts[1:]))
    for prev, p in zip(preds, preds[1:]):
        if p.stale:
            assert (p.valence, p.arousal) == (prev.valence, prev.arousal)


def test_backend_instance_and_backend_options(bundle_dir):  # noqa: F811
    """A ready Backend is used as is (and left open by close()); backend_options reach
    select_backend; the results equal those of a Recognizer that built its own backend."""
    from media import face_frames

    from affedge.bundle import load_bundle
    from affedge.sdk.backends import select_backend
    from affedge.sdk.recognizer import Recognizer

    frames, _ = face_frames(8, FPS)
    bundle = load_bundle(bundle_dir)
    be = select_backend(bundle, "onnxruntime", intra_op_threads=1)
    with Recognizer(bundle, backend=be) as rec:
        assert rec.backend is be and rec.engine.backend is be
        got = [rec.push_frame(f, t=i / FPS) for i, f in enumerate(frames)]
    # not closed by the Recognizer: still runs
    with Recognizer(bundle, backend=be) as rec2:
        again = [rec2.push_frame(f, t=i / FPS) for i, f in enumerate(frames)]
    be.close()
    assert [(p.valence, p.arousal) for p in got] == [(p.valence, p.arousal) for p in again]

    int8 = bundle.find("encoder", "onnx-int8") is not None
    opts = {"intra_op_threads": 1, "precision": "int8" if int8 else "fp32"}
    with Recognizer(bundle, backend="onnxruntime", backend_options=opts) as rec:
        sess = rec.backend._sessions["encoder"]
        assert sess.get_session_options().intra_op_num_threads == 1
        if int8:
            assert rec.backend._specs["encoder"]["format"] == "onnx-int8"
        else:
            ref = [rec.push_frame(f, t=i / FPS) for i, f in enumerate(frames)]
            assert [(p.valence, p.arousal) for p in ref] == \
                [(p.valence, p.arousal) for p in got]
        be2 = rec.backend
    assert be2._sessions == {}  # a backend the Recognizer built is closed with it

    with pytest.raises(TypeError, match="backend must be"):
        Recognizer(bundle, backend=42)
    with pytest.raises(TypeError, match="backend_options"):
        Recognizer(bundle, backend_options=[("intra_op_threads", 1)])
    be3 = select_backend(bundle, "onnxruntime")
    with pytest.raises(ValueError, match="backend_options"):
        Recognizer(bundle, backend=be3, backend_options={"intra_op_threads": 1})
    with pytest.raises(ValueError, match="detect_every"):
        Recognizer(bundle, backend=be3, detect_every=0)
    be3.close()


def test_detect_every_option(bundle_dir):  # noqa: F811
    from media import face_frames

    from affedge.sdk.recognizer import Recognizer

    frames, _ = face_frames(10, FPS)
    for k, full in ((1, 10), (3, 4), (5, 2)):
        for asynchronous in (False, True):
            with Recognizer(bundle_dir, backend="onnxruntime", detect_every=k,
                            async_detect=asynchronous) as rec:
                preds = [rec.push_frame(f, t=i / FPS) for i, f in enumerate(frames)]
                s = rec.stats()
            assert s["detect_every"] == k and s["full_detections"] == full
            assert s["async_detect"] == (asynchronous and k > 1)  # (k=1: nothing to move)
            # one tracked face; async: every frame after the first (nothing tracked yet: its
            # pass runs at once) is region-searched, the full pass runs beside it
            regions = 9 if asynchronous and k > 1 else 10 - full
            assert s["region_searches"] == regions
            assert all(p.face_present for p in preds) and len({p.track_id for p in preds}) == 1


def test_run_checks_its_arguments_when_called(bundle_dir, tmp_path):  # noqa: F811
    """run() is lazy (a generator) but refuses a missing file or a bad max_frames when it is
    called, not at the first next() somewhere else; a run not yet started still notices a
    close()."""
    from affedge.sdk.recognizer import Recognizer
    from affedge.sdk.sources import SourceError

    with Recognizer(bundle_dir) as rec:
        with pytest.raises(SourceError, match="video file not found: .*missing.mp4"):
            rec.run(str(tmp_path / "missing.mp4"))
        with pytest.raises(ValueError, match="max_frames must be a positive integer"):
            rec.run(0, max_frames=0)
    rec2 = Recognizer(bundle_dir)
    from media import make_face_video

    make_face_video(tmp_path / "v.mp4", seconds=0.2, fps=FPS)
    it = rec2.run(str(tmp_path / "v.mp4"))
    rec2.close()
    with pytest.raises(RuntimeError, match="closed"):
        next(it)


def test_one_run_at_a_time(bundle_dir, tmp_path):  # noqa: F811
    """A second run() while the first one's iterator is open is refused (it used to end the
    first silently); once the first is closed, a new run starts from a fresh stream."""
    from media import make_face_video

    from affedge.sdk.recognizer import Recognizer

    make_face_video(tmp_path / "v.mp4", seconds=0.5, fps=FPS)
    clip = str(tmp_path / "v.mp4")
    with Recognizer(bundle_dir) as rec:
        first = rec.run(clip)
        p0 = next(first)
        second = rec.run(clip)
        with pytest.raises(RuntimeError, match="still open"):
            next(second)
        assert next(first).frame == p0.frame + 1  # the first run goes on untouched
        # push_frame while the run is open is refused too: it took the run's next frame
        # index, and the run then died on "timestamps must increase"
        frame = np.zeros((120, 160, 3), np.uint8)
        with pytest.raises(RuntimeError, match="a run\\(\\) of .* is open"):
            rec.push_frame(frame, 100.0)
        assert next(first).frame == p0.frame + 2
        first.close()
        again = list(rec.run(clip))
        assert [p.frame for p in again] == list(range(len(again))) and len(again) > 5
        assert (again[0].valence, again[0].arousal) == (p0.valence, p0.arousal)


@pytest.mark.parametrize("t", ["0.1", True, [0.1], None])
def test_push_timestamps_must_be_numbers(bundle_dir, t):  # noqa: F811
    """A timestamp that is not a real number is a TypeError (a string used to be accepted by
    push_frame and a bool taken as 0/1); None means "now"."""
    from affedge.sdk.recognizer import Recognizer

    frame = np.zeros((120, 160, 3), np.uint8)
    with Recognizer(bundle_dir) as rec:
        if t is None:
            rec.push_audio(np.zeros(160, np.float32), t)
            assert rec.push_frame(frame, t).frame == 0
            return
        with pytest.raises(TypeError, match="push_frame: t must be a number"):
            rec.push_frame(frame, t)
        with pytest.raises(TypeError, match="push_audio: t must be a number"):
            rec.push_audio(np.zeros(160, np.float32), t)
        assert rec.push_frame(frame, np.float32(0.5)).frame == 0  # numpy scalars are numbers


def test_push_frame_errors_name_push_frame(bundle_dir):  # noqa: F811
    """Errors of the push API name the call the app made (they said process_frame, an engine
    method the app never called)."""
    from affedge.sdk.recognizer import Recognizer

    with Recognizer(bundle_dir) as rec:
        rec.push_frame(np.zeros((120, 160, 3), np.uint8), 1.0)
        with pytest.raises(ValueError, match=r"^push_frame: timestamps must increase"):
            rec.push_frame(np.zeros((120, 160, 3), np.uint8), 0.5)
        with pytest.raises(ValueError, match=r"^push_frame: frame must be a BGR uint8"):
            rec.push_frame(np.zeros((120, 160), np.uint8), 2.0)


def test_predictions_subscribes_when_called_and_publish_tags_duck_typed_sinks(bundle_dir):  # noqa: F811
    """Found by a new-user trial: predictions() subscribed only at the first next() (frames
    pushed before a consumer thread started were lost), publish() did not tag a sink whose
    write() takes ``source`` unless it set accepts_source (the hub did), and publish(42) /
    push_audio(None) failed inside the library."""
    from affedge.sdk.recognizer import Recognizer

    class Mine:
        def __init__(self):
            self.got = []

        def write(self, p, source=None):
            self.got.append((source, p.frame))

    frame = np.zeros((120, 160, 3), np.uint8)
    with Recognizer(bundle_dir) as rec:
        it = rec.predictions(timeout=0.5)
        mine = rec.publish(Mine(), source="kiosk")
        for k in range(3):
            rec.push_frame(frame, 0.1 * (k + 1))
        assert [p.frame for p in it] == [0, 1, 2]
        assert mine.got == [("kiosk", 0), ("kiosk", 1), ("kiosk", 2)]
        with pytest.raises(TypeError, match=r"Recognizer.publish needs a Sink"):
            rec.publish(42)
        with pytest.raises(TypeError, match=r"push_audio: pcm must be a 1-D array"):
            rec.push_audio(None)
        unused = rec.predictions()
        unused.close()  # ends its subscription: nothing more is queued for it
        assert unused._q not in rec._subscribers


def test_a_camera_that_changes_resolution_keeps_its_face_and_track():
    """Found by a new-user trial: frames switching from 320x240 to 1280x960 mid-stream lost the
    face for 4 frames (the region search looked around the old grid's box) and then gave it a
    new track. Now the track moves to the new grid and that frame gets a full pass."""
    import cv2

    from affedge.sdk.recognizer import DEMO_CLIP, Recognizer

    cap = cv2.VideoCapture(str(DEMO_CLIP))
    frames = [cap.read()[1] for _ in range(30)]
    cap.release()
    with Recognizer.demo() as rec:
        ps = [rec.push_frame(f if k < 20 else cv2.resize(f, (1280, 960)), k / 30.0)
              for k, f in enumerate(frames)]
    assert all(p.face_present for p in ps[5:]), [int(p.face_present) for p in ps]
    ids = {p.faces[0].track_id for p in ps[5:]}
    assert len(ids) == 1, ids
    big = ps[20].faces[0].box  # in the new grid: about 4x the old box
    assert big[2] > 3 * ps[19].faces[0].box[2]


def test_closing_a_predictions_iterator_wakes_a_thread_waiting_on_it(bundle_dir):  # noqa: F811
    """Found by a new-user trial (an asyncio wrapper calling ``next(it)`` in an executor): the
    iterator's close() left a ``next()`` already waiting on another thread blocked forever,
    and ``Recognizer.close()`` did not free it either (the app hung at exit)."""
    from affedge.sdk.recognizer import Recognizer

    frames, _ = face_frames(2, FPS)
    with Recognizer(bundle_dir, backend="onnxruntime") as rec:
        it = rec.predictions()
        got, done = [], threading.Event()

        def pump():
            for p in it:
                got.append(p)
            done.set()

        th = threading.Thread(target=pump, daemon=True)
        th.start()
        rec.push_frame(frames[0], t=0.0)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # the pump waits in next() again
        it.close()
        assert done.wait(5), "a next() waiting on the closed iterator never returned"
        rec.push_frame(frames[1], t=1 / FPS)  # the closed iterator gets nothing more
    assert [p.frame for p in got] == [0]


def test_each_prediction_says_when_it_was_made_in_wall_clock_time(tmp_path):
    """``timestamp`` is the source's clock; an unattended serve's day of rows could not say
    when each was. ``wall_time`` (Unix seconds) is the moment the Prediction was made: in the
    JSON and last in the CSV, renewed for a stale repeat, and not part of ``==`` (two runs of
    a file stay equal)."""
    import csv
    import time

    import numpy as np

    from affedge.sdk.prediction import Prediction
    from affedge.sdk.recognizer import Recognizer
    from affedge.sdk.sinks import open_sink

    frame = np.zeros((240, 320, 3), np.uint8)
    with Recognizer.demo() as rec:
        before = time.time()
        p = rec.push_frame(frame, 0.0)
        after = time.time()
        time.sleep(0.01)
        stale = rec.engine.stale_prediction(1, 1 / 30, p)
    assert before <= p.wall_time <= after < stale.wall_time
    assert stale == Prediction(**{**p.__dict__, "frame": 1, "timestamp": 1 / 30,
                                  "latency_ms": 0.0, "stale": True})  # wall_time aside
    assert Prediction.CSV_FIELDS[-1] == "wall_time" and p.to_dict()["wall_time"] == p.wall_time
    # latency_ms is timing too (push_frame and run() Predictions never compared equal: trial)
    assert dataclasses.replace(p, latency_ms=p.latency_ms + 5.0) == p
    with open_sink(tmp_path / "p.csv") as s:
        s.write(p)
    with open(tmp_path / "p.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert float(row["wall_time"]) == p.wall_time
