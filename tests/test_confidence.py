"""Confidence: exact values for constructed cases (face / no face, audio / no audio, warm-up,
presence), from the four factors documented in ``affedge/sdk/prediction.py``.

Real pieces: the exported test bundle (``bundle_dir``) run by ONNX Runtime CPU, a real speech WAV
(espeak-ng) for the audio, real face crops. The face boxes and their scores are given to
``StreamingEngine.process_frame(detections=...)`` (its public way to replace the detector's
output), so the detector factor is known exactly.
"""
from __future__ import annotations

import numpy as np
import pytest
from media import face_photo_bgr
from test_engine import FPS, bundle_dir, media_dir  # noqa: F401  (shared session fixtures)

SCORE = 0.8
T0 = 0.5  # first frame time: audio rows exist from here on
BOX = (30.0, 15.0, 90.0, 100.0)


@pytest.fixture(scope="module")
def frame():
    import cv2

    img = np.full((140, 160, 3), (90, 110, 120), np.uint8)
    img[15:115, 30:120] = cv2.resize(face_photo_bgr(), (90, 100), interpolation=cv2.INTER_AREA)
    return img


def _engine(bundle_dir, presence_window=30):  # noqa: F811
    from affedge.bundle import load_bundle
    from affedge.features.detectors import make_detector
    from affedge.sdk.backends import select_backend
    from affedge.sdk.engine import StreamingEngine

    b = load_bundle(bundle_dir)
    return StreamingEngine(b, select_backend(b, "onnxruntime"), make_detector("haar"),
                           detect_every=1, presence_window=presence_window)


def _push_speech(engine, media_dir):  # noqa: F811
    from affedge.features.audio_io import read_wav

    pcm, sr = read_wav(media_dir / "speech.wav")
    engine.audio.push(pcm, 0.0, sr)


def _run(engine, frame, pattern, score=SCORE):
    """One frame per entry of ``pattern`` (True: the face box with ``score``; False: none)."""
    from affedge.features.faces import FaceBox

    out = []
    for k, present in enumerate(pattern):
        dets = [FaceBox(*BOX, score=score)] if present else []
        out.append(engine.process_frame(frame, T0 + k / FPS, detections=dets))
    return out


def _warm(steps: int, rf: int) -> float:
    return 0.5 + 0.5 * min(1.0, steps / rf)


def test_face_and_audio_warm_up(bundle_dir, media_dir, frame):  # noqa: F811
    e = _engine(bundle_dir)
    rf = e.receptive_field
    assert rf == 121  # the paper's TCN (the warm-up below spans it)
    _push_speech(e, media_dir)
    n = 36  # the speech WAV lasts 2 s: audio is present on every frame up to T0 + 1.4 s
    preds = _run(e, frame, [True] * n)
    assert all(p.audio_present and p.face_present for p in preds)
    got = np.array([p.confidence for p in preds])
    want = np.array([SCORE * 1.0 * 1.0 * _warm(k + 1, rf) for k in range(n)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # hand-computed spot values: frame 0 = 0.8 * (0.5 + 0.5/121); frame 35 = 0.8 * (0.5 + 18/121)
    assert got[0] == pytest.approx(0.8 * (0.5 + 0.5 / 121), abs=1e-12)
    assert got[35] == pytest.approx(0.8 * (0.5 + 18 / 121), abs=1e-12)
    assert all(p.faces[0].confidence == p.confidence for p in preds)


def test_no_audio_halves_and_warm_up_saturates(bundle_dir, frame):  # noqa: F811
    e = _engine(bundle_dir)
    rf = e.receptive_field
    n = rf + 9
    preds = _run(e, frame, [True] * n)
    assert not any(p.audio_present for p in preds)
    got = np.array([p.confidence for p in preds])
    want = np.array([SCORE * 0.5 * _warm(k + 1, rf) for k in range(n)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # after the receptive field the warm-up factor is 1: 0.8 * 0.5 exactly
    np.testing.assert_allclose(got[rf - 1:], 0.4, rtol=0, atol=1e-12)
    assert got[rf - 2] < 0.4


def test_no_face_is_zero(bundle_dir, media_dir, frame):  # noqa: F811
    e = _engine(bundle_dir)
    _push_speech(e, media_dir)
    preds = _run(e, frame, [False] * 10)
    assert all(p.audio_present for p in preds)  # audio alone does not make a confident face
    assert [p.confidence for p in preds] == [0.0] * 10
    assert not any(p.face_present for p in preds) and all(p.track_id is None for p in preds)
    assert all(np.isfinite(p.valence) for p in preds)  # the background stream still predicts


def test_presence_fraction_over_the_window(bundle_dir, frame):  # noqa: F811
    """Detected 10 frames, missed 3 (the track is kept: confidence 0), detected again: the
    presence factor is the detected fraction of the track's frames, over the last 5 frames
    once the window is full."""
    rf = 121
    e = _engine(bundle_dir)
    pattern = [True] * 10 + [False] * 3 + [True] * 2
    preds = _run(e, frame, pattern)
    got = [p.confidence for p in preds]
    assert len({p.track_id for p in preds}) == 1  # one track throughout
    assert got[10:13] == [0.0, 0.0, 0.0]
    assert [p.face_present for p in preds] == pattern
    # frame 13: 11 of 14 frames detected, 14 steps; frame 14: 12 of 15
    assert got[13] == pytest.approx(SCORE * (11 / 14) * 0.5 * _warm(14, rf), abs=1e-12)
    assert got[14] == pytest.approx(SCORE * (12 / 15) * 0.5 * _warm(15, rf), abs=1e-12)
    assert got[9] == pytest.approx(SCORE * 1.0 * 0.5 * _warm(10, rf), abs=1e-12)

    # a 5-frame window: after 2 misses then 3 hits the fraction is 3/5 (older frames dropped)
    e = _engine(bundle_dir, presence_window=5)
    preds = _run(e, frame, [True] * 8 + [False] * 2 + [True] * 3)
    assert preds[-1].confidence == pytest.approx(SCORE * (3 / 5) * 0.5 * _warm(13, rf),
                                                 abs=1e-12)


@pytest.mark.parametrize("score", [0.3, 1.0])
def test_face_score_is_a_factor(bundle_dir, frame, score):  # noqa: F811
    e = _engine(bundle_dir)
    preds = _run(e, frame, [True] * 3, score=score)
    assert [p.face_score for p in preds] == [score] * 3
    np.testing.assert_allclose([p.confidence for p in preds],
                               [score * 0.5 * _warm(k + 1, 121) for k in range(3)],
                               rtol=0, atol=1e-12)
