"""Voice activity on real (synthesised) speech in silence and noise; batch == incremental."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from affedge.config import FeatureConfig
from affedge.features.audio import frame_times
from affedge.features.audio_io import read_wav, resample
from affedge.features.vad import VoiceActivity, detect_voice

CFG = FeatureConfig()
SR, HOP, WIN = CFG.sample_rate, CFG.hop_length, CFG.win_length


def _frame_energy_db(x):
    n = 1 + (x.size - WIN) // HOP
    idx = np.arange(n)[:, None] * HOP + np.arange(WIN)[None, :]
    return 10 * np.log10(np.mean(x[idx] ** 2, axis=1) + 1e-12)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """espeak-ng speech at 16 kHz with 1 s of silence before and after.

    Returns (clean, active): ``active[i]`` marks hops whose clean energy is within 35 dB of the
    loudest hop (the reference "speech" frames).
    """
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (needed to synthesise real speech)")
    path = tmp_path_factory.mktemp("vad") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path),
                    "The quick brown fox jumps over the lazy dog. How are you feeling today?"],
                   check=True, capture_output=True)
    pcm, sr = read_wav(path)
    pcm = resample(pcm, sr, SR)
    clean = np.concatenate([np.zeros(SR), pcm, np.zeros(SR)]).astype(np.float64)
    e = _frame_energy_db(clean)
    return clean, e > e.max() - 35


def _noisy(clean, active, snr_db, seed=0):
    speech_power = np.mean(10 ** (_frame_energy_db(clean)[active] / 10))  # active-speech power
    noise = np.random.default_rng(seed).standard_normal(clean.size)
    return (clean + noise * np.sqrt(speech_power / 10 ** (snr_db / 10))).astype(np.float32)


@pytest.mark.parametrize("snr_db", [20, 10])
def test_detects_speech_not_noise(speech, snr_db):
    clean, active = speech
    x = _noisy(clean, active, snr_db)
    _times, flags = detect_voice(x, CFG)
    assert flags.shape == active.shape and flags.dtype == bool
    far = np.ones_like(active)  # hops more than 50 ms before / 350 ms after any speech hop
    for i in np.flatnonzero(active):
        far[max(0, i - 5): i + 35] = False
    assert far.sum() > 150 and active.sum() > 250
    assert flags[active].mean() >= 0.9  # measured 0.93-0.95
    assert flags[far].mean() <= 0.1  # measured 0.0


def test_noise_only_and_silence(speech):
    rng = np.random.default_rng(3)
    noise = 0.05 * rng.standard_normal(3 * SR)
    noise[SR + SR // 2:] *= 4.0  # a 12 dB step in the background level
    _, flags = detect_voice(noise.astype(np.float32), CFG)
    assert flags.mean() <= 0.1  # the step is broadband: rejected by the speech-band cue
    _, flags = detect_voice(np.zeros(SR, dtype=np.float32), CFG)
    assert not flags.any()


def test_incremental_equals_batch(speech):
    clean, active = speech
    x = _noisy(clean, active, 10, seed=1)[: 2 * SR]
    ref_t, ref_f = detect_voice(x, CFG)
    np.testing.assert_allclose(ref_t, frame_times(ref_f.size, CFG), atol=1e-12)
    rng = np.random.default_rng(0)
    for sizes in ([HOP], [1, 999, 37], list(rng.integers(1, 2000, 20))):
        vad = VoiceActivity(CFG)
        ts, fs, i, k = [], [], 0, 0
        while i < x.size:
            n = int(sizes[k % len(sizes)])
            t, f = vad.push(x[i: i + n])
            ts.append(t), fs.append(f)
            i, k = i + n, k + 1
        np.testing.assert_array_equal(np.concatenate(ts), ref_t)
        np.testing.assert_array_equal(np.concatenate(fs), ref_f)


def test_causal_flags_do_not_change_with_future(speech):
    clean, active = speech
    x = _noisy(clean, active, 10, seed=2)
    cut = SR + SR // 2
    y = x.copy()
    y[cut:] = 0.0
    t, fx = detect_voice(x, CFG)
    _, fy = detect_voice(y, CFG)
    done = t * SR <= cut
    np.testing.assert_array_equal(fx[done], fy[done])


def test_bad_arguments():
    with pytest.raises(ValueError, match="speech_band"):
        VoiceActivity(CFG, speech_band=(3000.0, 300.0))
    with pytest.raises(TypeError, match="float"):
        VoiceActivity(CFG).push(np.zeros(10, dtype=np.int16))
