"""The streaming engine against an offline computation with the same backend.

Real pieces only: a randomly initialised ``mobile``-encoder model exported with
``affedge.export.api.export_bundle`` (ONNX, run by ONNX Runtime CPU), real videos of a real face
photo written with OpenCV, real speech WAVs (espeak-ng), OpenCV's Haar detector.

Offline reference = what training/evaluation computes for a whole sequence: face crops of every
frame (the black filler where there is no face) through the encoder, audio features of the whole
WAV (``features.audio.extract``) put on the frame times with ``features.align.sample_at``,
normalised with the bundle statistics, then the *window* form over the whole sequence (zero
history). The engine must reproduce it frame by frame with the *step* form to 1e-4.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import face_frames, face_photo_bgr, make_face_video, make_speech_wav

TOL = 1e-4
FPS = 25.0


# ----------------------------------------------------------------------------- fixtures
def _build_bundle(root: Path) -> Path:
    out = root / "affedge_runtime_bundle"
    if (out / "manifest.json").is_file():
        return out
    torch = pytest.importorskip("torch")
    from affedge.config import FeatureConfig, ModelConfig
    from affedge.export.api import export_bundle
    from affedge.training.model import AffectModel, save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = ModelConfig(encoder="mobile")
    model = AffectModel(cfg).eval()
    # non-trivial normalisation statistics so that the runtime's normalisation is exercised
    norm = {"mfcc": {"mean": np.linspace(-2, 2, 39).tolist(),
                     "std": np.linspace(1, 4, 39).tolist()},
            "logmel": {"mean": -3.0, "std": 2.5}}
    ckpt = root / "affedge_runtime_ckpt"
    save_checkpoint(ckpt, model, cfg, FeatureConfig(), norm_stats=norm)
    # torch's legacy ONNX exporter: ~5 s here against ~25 s for the default dynamo one; the
    # runtime under test does not depend on which wrote the graphs (test_export.py covers
    # the default exporter, and the demo bundle's graphs are dynamo's)
    export_bundle(ckpt, out, formats=("onnx",), parity_frames=32, onnx_exporter="legacy")
    return out


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory) -> Path:
    """A real exported bundle (shared by every runtime test module through the session tmp)."""
    return _build_bundle(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.getbasetemp() / "affedge_runtime_media"
    if not (d / "speech.wav").is_file():
        d.mkdir(exist_ok=True)
        make_face_video(d / "face.mp4", seconds=1.6, fps=FPS)
        make_speech_wav(d / "speech.wav", total=2.0)
    return d


# ----------------------------------------------------------------------------- helpers
def read_frames(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def offline_va(bundle, backend, crops: list[np.ndarray | None], times, pcm=None) -> np.ndarray:
    """Window-form V/A [T, 2] for a whole sequence (None crop = no face -> filler)."""
    from affedge.features.align import sample_at
    from affedge.features.audio import extract
    from affedge.features.faces import FILLER_CROP, to_model_input

    fcfg = bundle.feature_config()
    mcfg = bundle.model_config()
    batch = np.stack([FILLER_CROP if c is None else c for c in crops])
    emb = backend.run("encoder", {"frames": to_model_input(batch, fcfg)})["embedding"]
    inputs = {"embedding": emb[None].astype(np.float32)}
    norm = bundle.audio_norm
    feats = extract(pcm, fcfg) if pcm is not None else None
    for name, dim in mcfg.audio_streams:
        if feats is None:
            a = np.zeros((len(crops), dim), np.float32)
        else:
            t, f = feats[name]
            a = sample_at(t, f, np.asarray(times, np.float64), "previous")
            mean, std = norm[name]
            a = (a - mean) / std
        inputs[f"audio_{name}"] = a[None].astype(np.float32)
    va = backend.run("window", inputs)["va"][0]
    return np.clip(va, -1.0, 1.0)


def two_face_frames(n: int, size=(480, 240)) -> list[np.ndarray]:
    """Two different faces (the photo and its mirror image, scaled differently) drifting."""
    w, h = size
    face = face_photo_bgr()
    a = cv2.resize(face, (130, 135), interpolation=cv2.INTER_AREA)
    b = cv2.resize(face[:, ::-1], (110, 114), interpolation=cv2.INTER_AREA)
    b = cv2.convertScaleAbs(b, alpha=0.8, beta=20)
    frames = []
    for i in range(n):
        img = np.full((h, w, 3), (90, 110, 120), np.uint8)
        xa, ya = 20 + i, 40
        xb, yb = 330 - i, 70
        img[ya:ya + a.shape[0], xa:xa + a.shape[1]] = a
        img[yb:yb + b.shape[0], xb:xb + b.shape[1]] = b
        frames.append(img)
    return frames


# ----------------------------------------------------------------------------- tests
def test_file_stream_equals_offline_window(bundle_dir, media_dir):
    from affedge.bundle import load_bundle
    from affedge.features.audio_io import read_wav
    from affedge.features.faces import FaceDetector, align_crop
    from affedge.sdk.backends import select_backend
    from affedge.sdk.recognizer import Recognizer

    # detect_every=1: the full-frame detector on every frame, as the offline pass below
    with Recognizer(bundle_dir, backend="onnxruntime", detect_every=1) as rec:
        preds = list(rec.run(str(media_dir / "face.mp4"), audio=str(media_dir / "speech.wav")))
        stats = rec.stats()
    assert stats["full_detections"] == len(preds) and stats["region_searches"] == 0
    frames = read_frames(media_dir / "face.mp4")
    assert len(preds) == len(frames) == 40
    assert [p.frame for p in preds] == list(range(len(frames)))
    times = np.arange(len(frames)) / FPS
    np.testing.assert_allclose([p.timestamp for p in preds], times, atol=1e-6)
    assert stats["skipped_frames"] == 0 and stats["audio_overruns"] == 0

    # independent offline pass: detect -> crop -> encoder; whole-WAV features -> window form
    det = FaceDetector("haar")
    crops = []
    for f in frames:
        boxes = det.detect(f)
        crops.append(align_crop(f, max(boxes, key=lambda b: b.area)) if boxes else None)
    assert sum(c is not None for c in crops) >= len(frames) - 2  # the face is visible
    pcm, sr = read_wav(media_dir / "speech.wav")
    assert sr == 16000
    bundle = load_bundle(bundle_dir)
    backend = select_backend(bundle, "onnxruntime")
    ref = offline_va(bundle, backend, crops, times, pcm)

    got = np.array([(p.valence, p.arousal) for p in preds])
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)
    for p, c in zip(preds, crops):
        assert p.face_present == (c is not None)
        assert p.audio_present and p.backend == rec.backend_name
        assert -1 <= p.valence <= 1 and -1 <= p.arousal <= 1 and 0 <= p.confidence <= 1
    # the model's input really depends on the audio: without it the values change
    ref_silent = offline_va(bundle, backend, crops, times, None)
    assert np.abs(ref_silent - ref).max() > 1e-3
    # speech in the WAV starts after 0.8 s of silence: the VAD flag follows
    assert not any(p.speech_present for p in preds if p.timestamp < 0.7)
    assert any(p.speech_present for p in preds if p.timestamp > 1.0)


@pytest.mark.parametrize("async_detect", [False, True])
def test_tracking_assisted_detection_stream_equals_offline(bundle_dir, media_dir, async_detect):
    """The default schedule (full frame every K frames, region searches in between; the full
    pass synchronous or on the worker thread): the engine's boxes are framed like full-frame
    detections, and its outputs equal the offline window form over the crops of the boxes it
    reports."""
    from affedge.bundle import load_bundle
    from affedge.features.audio_io import read_wav
    from affedge.features.faces import FaceBox, FaceDetector, align_crop
    from affedge.sdk.backends import select_backend
    from affedge.sdk.engine import DEFAULT_DETECT_EVERY
    from affedge.sdk.recognizer import Recognizer

    K = DEFAULT_DETECT_EVERY
    assert K > 1
    with Recognizer(bundle_dir, backend="onnxruntime", async_detect=async_detect) as rec:
        preds = list(rec.run(str(media_dir / "face.mp4"), audio=str(media_dir / "speech.wav")))
        stats = rec.stats()
    assert not _face_detect_threads()  # close() stopped the worker
    frames = read_frames(media_dir / "face.mp4")
    n = len(frames)
    assert stats["detect_every"] == K and stats["async_detect"] == async_detect
    assert stats["full_detections"] == -(-n // K)  # frames 0, K, 2K, ...
    assert stats["region_searches"] >= n - stats["full_detections"] - 2
    det = FaceDetector("haar")
    ious = []
    for f, p in zip(frames, preds):
        full = det.detect(f)
        if p.face_present and full:
            ious.append(FaceBox(*p.face_box).iou(max(full, key=lambda b: b.area)))
    assert len(ious) >= n - 3 and min(ious) >= 0.8, ious
    crops = [align_crop(f, FaceBox(*p.face_box)) if p.face_present else None
             for f, p in zip(frames, preds)]
    bundle = load_bundle(bundle_dir)
    pcm, _ = read_wav(media_dir / "speech.wav")
    ref = offline_va(bundle, select_backend(bundle, "onnxruntime"), crops, np.arange(n) / FPS,
                     pcm)
    np.testing.assert_allclose([(p.valence, p.arousal) for p in preds], ref, atol=TOL, rtol=0)


def test_several_tracks_keep_separate_states(bundle_dir):
    from affedge.bundle import load_bundle
    from affedge.features.faces import FaceBox, align_crop
    from affedge.sdk.backends import select_backend
    from affedge.sdk.recognizer import Recognizer

    frames = two_face_frames(24)
    with Recognizer(bundle_dir, backend="onnxruntime", max_faces=4) as rec:
        preds = [rec.push_frame(f, t=i / FPS) for i, f in enumerate(frames)]
    assert all(len(p.faces) == 2 for p in preds)
    ids = {f.track_id for p in preds for f in p.faces}
    assert len(ids) == 2, f"track ids must stay stable, got {ids}"
    # the larger face (photo a, left) is the primary one and is reported at the top level
    assert len({p.track_id for p in preds}) == 1
    assert all(p.faces[0].track_id == p.track_id for p in preds)
    assert all(p.face_box[2] > p.faces[1].box[2] for p in preds)

    bundle = load_bundle(bundle_dir)
    backend = select_backend(bundle, "onnxruntime")
    times = np.arange(len(frames)) / FPS
    outs = {}
    for tid in ids:
        crops, got = [], []
        for f, p in zip(frames, preds):
            fr = next(x for x in p.faces if x.track_id == tid)
            assert fr.detected
            crops.append(align_crop(f, FaceBox(*fr.box)))
            got.append((fr.valence, fr.arousal))
        ref = offline_va(bundle, backend, crops, times, None)
        np.testing.assert_allclose(np.array(got), ref, atol=TOL, rtol=0)
        outs[tid] = np.array(got)
    a, b = outs.values()
    assert np.abs(a - b).max() > 1e-3  # two different faces, two different streams


def test_no_face_gives_filler_and_face_present_false(bundle_dir):
    from affedge.bundle import load_bundle
    from affedge.features.faces import FaceBox, align_crop
    from affedge.sdk.backends import select_backend
    from affedge.sdk.recognizer import Recognizer

    bundle = load_bundle(bundle_dir)
    backend = select_backend(bundle, "onnxruntime")
    face, _ = face_frames(30, FPS)
    blank = np.full_like(face[0], 100)
    # face for 10 frames, occluded for 6 (< max_age), face again for 8 frames
    frames = face[:10] + [blank] * 6 + face[16:24]
    with Recognizer(bundle_dir, backend="onnxruntime", max_age=10) as rec:
        preds = [rec.push_frame(f, t=i / FPS) for i, f in enumerate(frames)]
    present = [p.face_present for p in preds]
    assert present == [True] * 10 + [False] * 6 + [True] * 8
    assert len({p.track_id for p in preds}) == 1  # the same track through the gap
    for p in preds[10:16]:
        assert p.confidence == 0.0 and not p.success and p.face_score == 0.0
    # offline: the same single sequence with the filler in the gap
    crops = [None if not p.face_present else align_crop(f, FaceBox(*p.face_box))
             for f, p in zip(frames, preds)]
    ref = offline_va(bundle, backend, crops, np.arange(len(frames)) / FPS, None)
    np.testing.assert_allclose([(p.valence, p.arousal) for p in preds], ref, atol=TOL, rtol=0)

    # nobody there at all: the background stream (filler + zero audio), face_present False
    with Recognizer(bundle_dir, backend="onnxruntime") as rec:
        empty = [rec.push_frame(blank, t=i / FPS) for i in range(12)]
    assert all(not p.face_present and p.track_id is None and p.face_box is None
               and p.confidence == 0.0 and p.faces == () for p in empty)
    ref = offline_va(bundle, backend, [None] * 12, np.arange(12) / FPS, None)
    np.testing.assert_allclose([(p.valence, p.arousal) for p in empty], ref, atol=TOL, rtol=0)


def test_push_api_from_two_threads_matches_file_run(bundle_dir, media_dir, tmp_path):
    from media import write_wav
    from scipy.signal import resample_poly  # independent tooling to make 48 kHz test audio

    from affedge.features.audio_io import read_wav, resample, to_float_mono
    from affedge.sdk.recognizer import Recognizer

    frames = read_frames(media_dir / "face.mp4")
    pcm, _ = read_wav(media_dir / "speech.wav")
    pcm48 = resample_poly(pcm.astype(np.float64), 3, 1)
    pcm_i16 = np.round(np.clip(pcm48, -1, 1) * 32767).astype(np.int16)  # apps have int16
    # reference: the same 48 kHz int16 audio resampled in one batch, as a float WAV, run as a file
    back = resample(to_float_mono(pcm_i16), 48000, 16000)
    write_wav(tmp_path / "back.wav", back, 16000, "f32")
    # synchronous full passes on both sides (the default, asynchronous, is compared in
    # test_push_api_16k_float_equals_file_run_exactly and tests/test_async_lag.py)
    with Recognizer(bundle_dir, backend="onnxruntime", async_detect=False) as rec:
        ref = list(rec.run(str(media_dir / "face.mp4"), audio=str(tmp_path / "back.wav")))

    with Recognizer(bundle_dir, backend="onnxruntime", async_detect=False) as rec:
        collected: list = []
        started = threading.Event()

        def consumer():
            it = rec.predictions(timeout=60)
            started.set()
            for p in it:
                collected.append(p)
                if len(collected) == len(frames):
                    return

        audio_done = threading.Event()

        def audio_thread():
            chunk = 48000 // 50  # 20 ms at 48 kHz: exercises the streaming resampler
            try:
                for k in range(0, len(pcm_i16), chunk):
                    rec.push_audio(pcm_i16[k:k + chunk], t=k / 48000, sample_rate=48000)
            finally:
                audio_done.set()

        def video_thread():
            deadline = time.monotonic() + 60  # time guard: a dead producer fails, not hangs
            for i, f in enumerate(frames):
                t = i / FPS
                # wait for the audio producer (or its end: the last frames need no more audio)
                while (rec.engine.audio.time or -1) < t + 0.1 and not audio_done.is_set():
                    assert time.monotonic() < deadline, "audio producer stalled"
                    time.sleep(0.001)
                rec.push_frame(f, t=t)

        cons = threading.Thread(target=consumer)
        cons.start()
        started.wait(10)
        ta, tv = threading.Thread(target=audio_thread), threading.Thread(target=video_thread)
        ta.start(), tv.start()
        ta.join(60), tv.join(120), cons.join(60)
        assert not (ta.is_alive() or tv.is_alive() or cons.is_alive()), "a thread hung"
        assert rec.latest() is collected[-1]
        assert rec.stats()["audio_overruns"] == 0
    assert [p.frame for p in collected] == list(range(len(frames)))
    assert all(p.audio_present for p in collected)
    got = np.array([(p.valence, p.arousal) for p in collected])
    want = np.array([(p.valence, p.arousal) for p in ref])
    # the streaming resampler equals the batch one, so the two paths agree
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert [p.face_present for p in collected] == [p.face_present for p in ref]


def test_push_api_16k_float_equals_file_run_exactly(bundle_dir, media_dir):
    from affedge.features.audio_io import read_wav
    from affedge.sdk.recognizer import Recognizer

    frames = read_frames(media_dir / "face.mp4")
    pcm, _ = read_wav(media_dir / "speech.wav")
    # asynchronous full passes on both sides: run()'s pipeline runs them inline, push_frame
    # on the worker thread; the schedule, and so every value, is the same
    with Recognizer(bundle_dir, backend="onnxruntime", async_detect=True) as rec:
        ref = list(rec.run(str(media_dir / "face.mp4"), audio=str(media_dir / "speech.wav")))
    with Recognizer(bundle_dir, backend="onnxruntime", async_detect=True) as rec:
        done = threading.Event()

        def audio_thread():
            for k in range(0, len(pcm), 333):  # odd chunk size: re-blocking in the ring path
                rec.push_audio(pcm[k:k + 333], t=k / 16000)
            done.set()

        th = threading.Thread(target=audio_thread)
        th.start()
        got = []
        deadline = time.monotonic() + 60  # time guard on the wait for the audio thread
        for i, f in enumerate(frames):
            while (rec.engine.audio.time or -1) < i / FPS + 0.1 and not done.is_set():
                assert time.monotonic() < deadline, "audio thread stalled"
                time.sleep(0.001)
            got.append(rec.push_frame(f, t=i / FPS))
        th.join(30)
        assert not th.is_alive()
    np.testing.assert_allclose([(p.valence, p.arousal) for p in got],
                               [(p.valence, p.arousal) for p in ref], atol=1e-6, rtol=0)
    assert [p.speech_present for p in got] == [p.speech_present for p in ref]


def test_engine_rejects_bad_input(bundle_dir):
    from affedge.sdk.recognizer import Recognizer

    with Recognizer(bundle_dir, backend="onnxruntime") as rec:
        img = np.zeros((64, 64, 3), np.uint8)
        rec.push_frame(img, t=1.0)
        with pytest.raises(ValueError, match="timestamps must increase"):
            rec.push_frame(img, t=1.0)
        with pytest.raises(ValueError, match="BGR uint8"):
            rec.push_frame(img.astype(np.float32), t=2.0)
        with pytest.raises(ValueError, match="1-D mono"):
            rec.push_audio(np.zeros((10, 2), np.float32), t=0.0)
        with pytest.raises(ValueError, match="NaN"):
            rec.push_audio(np.full(10, np.nan, np.float32), t=0.0)
    with pytest.raises(RuntimeError, match="closed"):
        rec.push_frame(img, t=3.0)


# ----------------------------------------------------------------------------- async detection
def _face_detect_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("affedge-face-detect")]


def test_async_detect_is_deterministic_and_restartable(bundle_dir):
    """async_detect: two runs over the same frames give identical predictions, also when the
    backend fails inside the tick that submitted a full pass and the tick after it (the one
    that merges it) and the same frame is re-run on another backend (detection is done once
    per tick); reset() and close() stop the worker thread."""
    from affedge.bundle import load_bundle
    from affedge.features.faces import FaceDetector
    from affedge.sdk.backends import select_backend
    from affedge.sdk.backends.fallback import FallbackBackend
    from affedge.sdk.engine import StreamingEngine

    bundle = load_bundle(bundle_dir)
    frames = two_face_frames(14)

    class DiesAt:  # a real backend released (as a lost device) at given frames' encoder call
        def __init__(self, frames_to_fail):
            self.inner = select_backend(bundle, "onnxruntime")
            self.name, self.fail, self.frame = self.inner.name, set(frames_to_fail), -1

        def run(self, model_name, inputs):
            if model_name == "encoder" and self.frame in self.fail:
                self.fail.discard(self.frame)
                self.inner.close()
                self.inner = select_backend(bundle, "onnxruntime")  # the next one, for a retry
                raise RuntimeError(f"device lost at frame {self.frame}")
            return self.inner.run(model_name, inputs)

    def run(backend):
        e = StreamingEngine(bundle, backend, FaceDetector("haar"), detect_every=4,
                            async_detect=True)
        out = []
        for i, f in enumerate(frames):
            if isinstance(backend, FallbackBackend):
                backend.current.frame = i
            out.append(e.process_frame(f, i / FPS))  # a failed call re-runs inside the tick
        return e, out

    def key(preds):
        return [(p.valence, p.arousal, p.face_box, p.track_id, p.face_present,
                 tuple((x.track_id, x.box, x.valence, x.arousal) for x in p.faces))
                for p in preds]

    e1, a = run(select_backend(bundle, "onnxruntime"))
    e2, b = run(select_backend(bundle, "onnxruntime"))
    flaky = DiesAt({4, 5, 9})
    fb = FallbackBackend(bundle, [flaky] * 4)  # a device that comes back after each loss
    e3, c = run(fb)
    assert not flaky.fail  # the failures really happened
    assert [err for _, err in fb.failures] == [repr(RuntimeError(f"device lost at frame {i}"))
                                               for i in (4, 5, 9)]
    assert key(a) == key(b) == key(c)
    assert e1.stats()["full_detections"] == e3.stats()["full_detections"] == 4  # 0, 4, 8, 12
    assert all(len(p.faces) == 2 for p in a)  # both faces from frame 0 (pass run at once)
    assert len(_face_detect_threads()) >= 1
    e1.reset()
    e2.close()
    e3.close()
    assert not _face_detect_threads()
    # the engine is usable after reset(): the same predictions as a fresh one
    d = [e1.process_frame(f, i / FPS) for i, f in enumerate(frames)]
    e1.close()
    assert key(d) == key(a) and not _face_detect_threads()


def test_step_is_fed_the_encoder_output_of_each_detected_crop(bundle_dir, media_dir):
    """The embedding the step model gets for a detected face equals the encoder applied to
    the same aligned crop (a recording wrapper around a real ONNX Runtime backend)."""
    from affedge.bundle import load_bundle
    from affedge.features.faces import FaceDetector, align_crop, to_model_input
    from affedge.sdk.backends import select_backend
    from affedge.sdk.recognizer import Recognizer

    bundle = load_bundle(bundle_dir)

    class Recording:
        def __init__(self):
            self.inner = select_backend(bundle, "onnxruntime")
            self.name, self.models, self.fed = self.inner.name, self.inner.models, []

        def run(self, model_name, inputs):
            if model_name == "step":
                self.fed.append(np.array(inputs["embedding"][0]))
            return self.inner.run(model_name, inputs)

    frames = read_frames(media_dir / "face.mp4")
    rec_be = Recording()
    with Recognizer(bundle_dir, backend=rec_be, detect_every=1) as rec:
        preds = [rec.push_frame(f, i / FPS) for i, f in enumerate(frames)]
        assert preds[-1].track_id is not None
    fed = rec_be.fed[-len(frames):]  # one step call per frame (one face)
    det = FaceDetector("haar")
    backend = select_backend(bundle, "onnxruntime")
    fcfg = bundle.feature_config()
    for k in (-1, len(frames) // 2):
        f = frames[k]
        boxes = det.detect(f)
        assert boxes and preds[k].face_present
        crop = align_crop(f, max(boxes, key=lambda b: b.area))
        ref = backend.run("encoder", {"frames": to_model_input(crop[None], fcfg)})["embedding"][0]
        np.testing.assert_allclose(fed[k], ref, atol=1e-5)
