"""NaN/Inf inside the runtime: a backend whose outputs stop being finite (what an fp16 engine
that overflows produces) and audio features that are not finite must never reach a stream's
state; the affected prediction is flagged and counted, and the stream goes on as if that frame
had not been there.

Real pieces: the exported bundle on ONNX Runtime CPU, the Haar detector, real face frames. The
non-finite values are injected into the real backend's outputs by a wrapper (an overflowing
GPU engine cannot run on this machine); the audio case overflows the engine's float32
normalisation, the step where a bad statistic would turn finite features into Inf.
"""
from __future__ import annotations

import numpy as np
import pytest

from test_engine import FPS, bundle_dir  # noqa: F401  (shared session fixture)
from test_faults import frames  # noqa: F401  (16 frames of a real face moving)

SR = 16000
BAD = 5  # the frame whose model output is poisoned


class Poisoning:
    """Runs the real backend, then writes NaN/Inf into one output of chosen calls."""

    def __init__(self, inner, model: str, output: str | None, value: float = np.nan):
        self.inner, self.model, self.output, self.value = inner, model, output, value
        self.name = inner.name
        self.calls = {"encoder": 0, "step": 0}
        self.poison_calls: set[int] = set()

    def run(self, model_name, inputs):
        out = dict(self.inner.run(model_name, inputs))
        n = self.calls[model_name]
        self.calls[model_name] += 1
        if model_name == self.model and n in self.poison_calls:
            name = self.output or next(iter(out))
            bad = np.array(out[name], np.float32, copy=True)
            bad.reshape(-1)[bad.size // 2] = self.value
            out[name] = bad
        return out

    def close(self):
        self.inner.close()


def _engine(bundle, backend):
    from affedge.features.faces import FaceDetector
    from affedge.sdk.engine import StreamingEngine

    e = StreamingEngine(bundle, backend, FaceDetector("haar"), detect_every=1)
    tone = (np.sin(2 * np.pi * 220 * np.arange(SR) / SR) * 0.3).astype(np.float32)
    e.audio.push(tone, 0.0, SR)
    return e


def _va(p):
    return np.array([p.valence, p.arousal])


def _reference_without(bundle, frames, skip: int):  # noqa: F811
    """Predictions of an uninterrupted stream in which frame ``skip`` never happened."""
    from affedge.sdk.backends import select_backend

    e = _engine(bundle, select_backend(bundle, "onnxruntime"))
    return {i: e.process_frame(f, i / FPS) for i, f in enumerate(frames) if i != skip}


@pytest.mark.parametrize("output,value", [("va", np.nan), ("va", np.inf), ("state", np.nan)])
def test_non_finite_step_output_leaves_the_frame_out(bundle_dir, frames, output,  # noqa: F811
                                                     value):
    from affedge.bundle import load_bundle
    from affedge.sdk.backends import select_backend

    bundle = load_bundle(bundle_dir)
    real = select_backend(bundle, "onnxruntime")
    name = "va" if output == "va" else next(
        o["name"] for o in bundle.find("step")["outputs"] if o["name"].startswith("state_out_"))
    poison = Poisoning(real, "step", name, value)
    eng = _engine(bundle, poison)
    poison.poison_calls = {BAD}  # step call k is frame k (the filler is an encoder call)
    got = [eng.process_frame(f, i / FPS) for i, f in enumerate(frames)]
    ref = _reference_without(bundle, frames, BAD)

    bad = got[BAD]
    assert bad.stale and bad.confidence == 0.0 and bad.face_present
    np.testing.assert_array_equal(_va(bad), _va(got[BAD - 1]))  # the previous values
    assert all(not p.stale for i, p in enumerate(got) if i != BAD)
    assert all(np.isfinite(_va(p)).all() for p in got)
    # the stream's state never saw the frame: every later prediction equals the stream
    # without it (before the fix a NaN state would poison the next 120 frames)
    for i in range(len(frames)):
        if i != BAD:
            np.testing.assert_allclose(_va(got[i]), _va(ref[i]), atol=1e-6, rtol=0,
                                       err_msg=f"frame {i}")
    s = eng.stats()
    assert (s["nonfinite_outputs"], s["nonfinite_embeddings"], s["nonfinite_audio"]) == (1, 0, 0)
    from affedge.commands.run import _nonfinite_note  # the `affedge run` summary line says so

    assert _nonfinite_note(s) == ", non-finite values left out: 1 outputs"
    assert _nonfinite_note({**s, "nonfinite_outputs": 0}) == ""


def test_non_finite_first_output_gives_nan_flagged_prediction(bundle_dir, frames):  # noqa: F811
    """No previous values yet: NaN values, stale, confidence 0; the stream starts cleanly after."""
    from affedge.bundle import load_bundle
    from affedge.sdk.backends import select_backend

    bundle = load_bundle(bundle_dir)
    poison = Poisoning(select_backend(bundle, "onnxruntime"), "step", "va")
    eng = _engine(bundle, poison)
    poison.poison_calls = {0}
    got = [eng.process_frame(f, i / FPS) for i, f in enumerate(frames[:6])]
    assert got[0].stale and np.isnan(_va(got[0])).all() and got[0].confidence == 0.0
    ref = _reference_without(bundle, frames[:6], 0)
    for i in range(1, 6):
        np.testing.assert_allclose(_va(got[i]), _va(ref[i]), atol=1e-6, rtol=0)


def test_non_finite_embedding_is_fed_as_a_missing_face(bundle_dir, frames):  # noqa: F811
    """An encoder output with NaN: the model gets the filler (as for an undetected face), the
    frame's confidence is 0, and the values equal a stream where the face was not found there."""
    from affedge.bundle import load_bundle
    from affedge.sdk.backends import select_backend

    bundle = load_bundle(bundle_dir)
    poison = Poisoning(select_backend(bundle, "onnxruntime"), "encoder", None)
    eng = _engine(bundle, poison)
    poison.poison_calls = {poison.calls["encoder"] + BAD}  # one encoder call per frame from now
    got = [eng.process_frame(f, i / FPS) for i, f in enumerate(frames)]

    ref_eng = _engine(bundle, select_backend(bundle, "onnxruntime"))
    ref = [ref_eng.process_frame(f, i / FPS, detections=[] if i == BAD else None)
           for i, f in enumerate(frames)]
    assert got[BAD].confidence == 0.0 and not got[BAD].stale
    assert got[BAD].face_present  # the detector did find it; the model did not see it
    np.testing.assert_allclose([_va(p) for p in got], [_va(p) for p in ref], atol=1e-6, rtol=0)
    s = eng.stats()
    assert (s["nonfinite_embeddings"], s["nonfinite_outputs"]) == (1, 0)


def test_non_finite_audio_features_count_as_missing_audio(bundle_dir, frames):  # noqa: F811
    """Audio features that become Inf in the float32 normalisation are treated as missing
    audio (zeros, ``audio_present=False``) instead of reaching the model."""
    from affedge.bundle import load_bundle
    from affedge.sdk.backends import select_backend

    bundle = load_bundle(bundle_dir)
    eng = _engine(bundle, select_backend(bundle, "onnxruntime"))
    if not eng.audio_streams:
        pytest.skip("visual-only bundle")
    s = eng.audio_streams[0]
    from affedge.preprocess import normalise_audio

    mean, std = bundle.audio_norm[s]
    tiny = std.copy()
    tiny[0] = np.float32(1e-44)  # (v - mean) / 1e-44 overflows float32 if |v - mean| > 3.4e-6
    eng.audio._normalise[s] = lambda x: normalise_audio(x, mean, tiny)
    ok = _engine(bundle, select_backend(bundle, "onnxruntime"))
    assert ok.process_frame(frames[0], 0.5).audio_present  # drains the audio
    feats_ok, present_ok, _ = ok.audio.at(0.5)
    assert present_ok and abs(feats_ok[s][0] * std[0]) > 1e-4  # so it does overflow in `eng`
    p = eng.process_frame(frames[0], 0.5)
    assert not p.audio_present and np.isfinite(_va(p)).all()
    assert eng.stats()["nonfinite_audio"] == 1
    # a stream with no audio at all gives the same values (zeros = the training mean)
    from affedge.features.faces import FaceDetector
    from affedge.sdk.engine import StreamingEngine

    silent = StreamingEngine(bundle, select_backend(bundle, "onnxruntime"), FaceDetector("haar"),
                             detect_every=1)
    q = silent.process_frame(frames[0], 0.5)
    assert not q.audio_present
    np.testing.assert_allclose(_va(p), _va(q), atol=1e-6, rtol=0)
