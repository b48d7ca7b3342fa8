"""End to end on real media: a real face photo moving about plus real synthesized speech, muxed
into one mp4, run through ``Recognizer.run`` with the bundled demo model.

The face is scikit-image's astronaut photo (tests/media.py), the speech is espeak-ng with known
silences; the file's own audio track is decoded (PyAV) and goes through the same ring buffers,
causal features and VAD as a microphone would.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from affedge.sdk.recognizer import DEMO_BUNDLE

pytest.importorskip("av", reason="PyAV decodes the mp4's audio track")
pytest.importorskip("skimage", reason="scikit-image provides the real face photo")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)", allow_module_level=True)
if not (DEMO_BUNDLE / "manifest.json").exists():
    pytest.skip("the demo bundle is missing (bash scripts/build_demo_assets.sh)",
                allow_module_level=True)

from media import make_face_video, make_speech_wav, mux  # noqa: E402  (tests/media.py)

FPS = 25.0
SECONDS = 6.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    meta = make_face_video(d / "face.mp4", seconds=SECONDS, fps=FPS)
    intervals = make_speech_wav(d / "speech.wav", total=SECONDS)
    out = mux(d / "face.mp4", d / "speech.wav", d / "clip.mp4")
    return out, meta, intervals


@pytest.fixture(scope="module")
def predictions(clip):
    from affedge import Recognizer

    path, _, _ = clip
    with Recognizer(DEMO_BUNDLE, backend="onnxruntime") as rec:
        return list(rec.run(video=str(path), audio="video"))


def test_one_prediction_per_frame_in_range(predictions, clip):
    _, meta, _ = clip
    assert len(predictions) == meta.n_frames
    assert [p.frame for p in predictions] == list(range(meta.n_frames))
    t = np.array([p.timestamp for p in predictions])
    assert np.all(np.diff(t) > 0)
    va = np.array([(p.valence, p.arousal) for p in predictions])
    assert np.isfinite(va).all() and np.abs(va).max() <= 1.0
    assert all(0.0 <= p.confidence <= 1.0 for p in predictions)


def test_real_face_found_in_at_least_95_percent_of_frames(predictions, clip):
    _, meta, _ = clip
    present = np.array([p.face_present for p in predictions])
    assert present.mean() >= 0.95, f"face found in only {present.mean():.1%} of frames"
    # and the reported box is where the photo was pasted
    ious = []
    for p, (x, y, w, h) in zip(predictions, meta.boxes):
        if p.face_box is None:
            continue
        bx, by, bw, bh = p.face_box
        ix = max(0.0, min(bx + bw, x + w) - max(bx, x))
        iy = max(0.0, min(by + bh, y + h) - max(by, y))
        inter = ix * iy
        ious.append(inter / (bw * bh + w * h - inter))
    assert np.median(ious) > 0.3


def test_speech_present_during_speech_and_not_in_silence(predictions, clip):
    _, _, intervals = clip
    t = np.array([p.timestamp for p in predictions])
    flags = np.array([p.speech_present for p in predictions])
    # margins: the VAD is causal (onset after a few 10 ms hops, hangover of 200 ms)
    in_speech = np.zeros_like(flags)
    in_silence = np.ones_like(flags)
    for s, e in intervals:
        in_speech |= (t >= s + 0.15) & (t <= e - 0.05)
        in_silence &= ~((t >= s - 0.1) & (t <= e + 0.45))
    assert in_speech.sum() > 10 and in_silence.sum() > 10
    assert flags[in_speech].mean() >= 0.9, f"speech detected in {flags[in_speech].mean():.0%}"
    assert flags[in_silence].mean() <= 0.1, f"speech in silence {flags[in_silence].mean():.0%}"
