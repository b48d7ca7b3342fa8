"""Streaming vs window recompute through ONNX Runtime, and the whole pipeline per frame.

Groups (``--benchmark-group-by=group``):

* ``ort-temporal``: one streaming step (N=1) after W frames of history vs re-running the window
  form over the last W frames, W = 300 and 3000 (the step's state is fixed-size, so its cost
  must not grow with W; the window's grows linearly);
* ``ort-frame``: a whole model frame = encoder on the new crop + step, vs the reference
  approach: re-encode all 300 crops of the window and re-run the window form (what a stateless
  sliding window costs per frame);
* ``pipeline``: the Recognizer push API per frame on the clip (``push_audio`` of one frame of
  PCM + ``push_frame``: detection, tracking, crop, encoder, audio features, step, Prediction),
  and the face detector alone (its default and a larger minimum face size).

Bundle and clip: the demo ones when present, else a random-weights mobile bundle and a 4 s
synthetic clip (see conftest.py). The torch-eager versions of the first two groups are in
bench_streaming.py.

Run:  .venv/bin/python -m pytest benchmarks/bench_pipeline.py --benchmark-only -q \\
          --benchmark-group-by=group --benchmark-columns=median,iqr,ops
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import THREADS

from affedge.benchmarking.pipeline import initial_step_inputs, make_recognizer


@pytest.fixture(scope="module")
def backend(bundle):
    from affedge.sdk.backends import select_backend

    be = select_backend(bundle, "ort-cpu", intra_op_threads=THREADS)
    yield be
    be.close()


def _state_loop(backend, n_frames: int) -> dict:
    """Step inputs after ``n_frames`` of history (the state carried through every step)."""
    feed = initial_step_inputs(backend, np.random.default_rng(0))
    outs = {n: "state_out_" + n[len("state_"):] for n in feed if n.startswith("state_")}
    for _ in range(n_frames):
        out = backend.run("step", feed)
        for i, o in outs.items():
            feed[i] = out[o]
    return feed


@pytest.fixture(scope="module")
def history(backend):
    """Step inputs after 300 frames (the 3000-frame state is the same size; we run 300 more
    steps in the W=3000 case only to show the state does not grow)."""
    return {300: _state_loop(backend, 300)}


def _window_feed(backend, w: int) -> dict:
    rng = np.random.default_rng(1)
    feed = {}
    for s in backend.input_specs("window"):
        feed[s["name"]] = rng.standard_normal((1, w, int(s["shape"][-1]))).astype(np.float32)
    return feed


@pytest.mark.benchmark(group="ort-temporal")
@pytest.mark.parametrize("w", [300, 3000])
def test_ort_step_after_history(benchmark, backend, history, w):
    feed = history[300] if w == 300 else _state_loop(backend, w)
    benchmark.extra_info["history"] = w
    out = benchmark.pedantic(backend.run, args=("step", feed), rounds=300, warmup_rounds=20)
    assert out["va"].shape == (1, len(backend.bundle.outputs))


@pytest.mark.benchmark(group="ort-temporal")
@pytest.mark.parametrize("w", [300, 3000])
def test_ort_window_recompute(benchmark, backend, w):
    feed = _window_feed(backend, w)
    benchmark.extra_info["window"] = w
    out = benchmark.pedantic(backend.run, args=("window", feed),
                             rounds=30 if w == 300 else 5, warmup_rounds=1)
    assert out["va"].shape[:2] == (1, w)


def _crops(n: int, crop: int = 40) -> np.ndarray:
    return np.random.default_rng(2).uniform(-1, 1, (n, 3, crop, crop)).astype(np.float32)


@pytest.mark.benchmark(group="ort-frame")
def test_ort_frame_streaming(benchmark, backend, history):
    feed = dict(history[300])
    x = _crops(1)
    outs = {n: "state_out_" + n[len("state_"):] for n in feed if n.startswith("state_")}

    def frame():
        feed["embedding"] = backend.run("encoder", {"frames": x})["embedding"]
        out = backend.run("step", feed)
        for i, o in outs.items():
            feed[i] = out[o]
        return out

    benchmark.pedantic(frame, rounds=200, warmup_rounds=10)


@pytest.mark.benchmark(group="ort-frame")
def test_ort_frame_reencode_window300(benchmark, backend):
    crops = _crops(300)
    feed = _window_feed(backend, 300)

    def frame():
        feed["embedding"] = backend.run("encoder", {"frames": crops})["embedding"][None]
        return backend.run("window", feed)

    out = benchmark.pedantic(frame, rounds=5, warmup_rounds=1)
    assert out["va"].shape[:2] == (1, 300)


# ------------------------------------------------------------------------------ pipeline
@pytest.mark.benchmark(group="pipeline")
@pytest.mark.parametrize("min_face", [None, 60])
def test_face_detect(benchmark, clip, min_face):
    from affedge.features.faces import FaceDetector

    det = FaceDetector("haar") if min_face is None else FaceDetector("haar", min_size=min_face)
    state = {"i": 0}

    def detect():
        state["i"] += 1
        return det.detect(clip.frames[state["i"] % len(clip.frames)])

    benchmark.extra_info["min_face"] = min_face or det.min_size
    benchmark.pedantic(detect, rounds=60, warmup_rounds=5)


@pytest.mark.benchmark(group="pipeline")
@pytest.mark.parametrize("min_face", [None, 60])
def test_pipeline_push_frame(benchmark, bundle, backend, clip, min_face):
    from affedge.features.faces import FaceDetector

    det = FaceDetector("haar") if min_face is None else FaceDetector("haar", min_size=min_face)
    rec = make_recognizer(bundle, backend, det)
    per_frame = round(clip.sample_rate / clip.fps)
    n_audio = max(1, clip.pcm.size // per_frame)
    state = {"k": 0}

    def frame():
        k = state["k"]
        state["k"] += 1
        t = k / clip.fps
        a = (k % n_audio) * per_frame
        rec.push_audio(clip.pcm[a:a + per_frame], t=t, sample_rate=clip.sample_rate)
        return rec.push_frame(clip.frames[k % len(clip.frames)], t=t)

    benchmark.extra_info["min_face"] = min_face or det.min_size
    p = benchmark.pedantic(frame, rounds=60, warmup_rounds=10)
    assert -1.0 <= p.valence <= 1.0 and p.backend.startswith("onnxruntime")
    rec.engine = None  # the module's backend is closed by its fixture
    rec.backend = None
    rec.close()
