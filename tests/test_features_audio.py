"""MFCC-39 / log-mel-64 features: framing, causality, batch == incremental, parity with librosa."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affedge.config import FeatureConfig
from affedge.features.audio import (
    IncrementalAudioFeatures,
    causal_delta,
    extract,
    frame_times,
    mel_filterbank,
)

CFG = FeatureConfig()
SR, HOP, WIN = CFG.sample_rate, CFG.hop_length, CFG.win_length


def _signal(seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    """Tone + chirp + noise with an amplitude envelope: every feature dimension moves."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    env = 0.5 + 0.4 * np.sin(2 * np.pi * 3 * t)
    x = env * (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * (500 + 3000 * t) * t))
    x += 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)


def _push_chunks(x: np.ndarray, sizes, cfg=CFG):
    inc = IncrementalAudioFeatures(cfg)
    outs, i, k = [], 0, 0
    while i < x.size:
        n = sizes[k % len(sizes)]
        outs.append(inc.push(x[i: i + n]))
        i += n
        k += 1
    return {s: (np.concatenate([o[s][0] for o in outs]), np.concatenate([o[s][1] for o in outs]))
            for s in cfg.streams}


# ---------------------------------------------------------------------------- shapes and times
def test_shapes_dtypes_and_times():
    x = _signal(0.5)
    out = extract(x, CFG)
    assert list(out) == ["mfcc", "logmel"]
    m = 1 + (x.size - WIN) // HOP
    for name, dim in (("mfcc", 39), ("logmel", 64)):
        times, feats = out[name]
        assert feats.shape == (m, dim) and feats.dtype == np.float32
        assert times.dtype == np.float64
        np.testing.assert_allclose(times, (np.arange(m) * HOP + WIN) / SR, rtol=0, atol=1e-12)
        assert np.all(np.isfinite(feats))
    assert out["mfcc"][0][0] == pytest.approx(0.025)  # first row available after one 25 ms window


def test_too_short_signal_gives_no_rows():
    out = extract(np.zeros(WIN - 1, dtype=np.float32), CFG)
    assert out["mfcc"][1].shape == (0, 39) and out["logmel"][1].shape == (0, 64)
    assert out["mfcc"][0].shape == (0,)
    assert extract(np.zeros(WIN, dtype=np.float32), CFG)["mfcc"][1].shape == (1, 39)


def test_single_stream_config():
    cfg = FeatureConfig(streams=("logmel",))
    out = extract(_signal(0.1), cfg)
    assert list(out) == ["logmel"]


# ---------------------------------------------------------------------------- batch == incremental
@pytest.mark.parametrize("sizes", [[1], [7], [160], [400], [161, 3, 999], [10_000]])
def test_incremental_equals_batch_fixed_chunkings(sizes):
    x = _signal(0.3 if sizes == [1] else 0.5)
    ref = extract(x, CFG)
    got = _push_chunks(x, sizes)
    for s in CFG.streams:
        np.testing.assert_array_equal(got[s][0], ref[s][0])
        np.testing.assert_array_equal(got[s][1], ref[s][1])  # exact: rows computed independently


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=900), min_size=1, max_size=30))
def test_incremental_equals_batch_any_chunking(sizes):
    x = _signal(0.25, seed=3)
    ref = extract(x, CFG)
    got = _push_chunks(x, sizes)
    for s in CFG.streams:
        np.testing.assert_array_equal(got[s][0], ref[s][0])
        np.testing.assert_array_equal(got[s][1], ref[s][1])


def test_reset_restarts_the_stream():
    x = _signal(0.2)
    inc = IncrementalAudioFeatures(CFG)
    first = inc.push(x)
    inc.push(_signal(0.1, seed=9))
    inc.reset()
    again = inc.push(x)
    for s in CFG.streams:
        np.testing.assert_array_equal(first[s][0], again[s][0])
        np.testing.assert_array_equal(first[s][1], again[s][1])


# ---------------------------------------------------------------------------- causality
def test_rows_never_depend_on_future_samples():
    x = _signal(0.5)
    cut = 4321  # change everything from this sample on
    y = x.copy()
    y[cut:] = np.random.default_rng(1).standard_normal(x.size - cut).astype(np.float32)
    a, b = extract(x, CFG), extract(y, CFG)
    for s in CFG.streams:
        times = a[s][0]
        done = times * SR <= cut  # rows whose window ended before the change
        assert done.sum() == 1 + (cut - WIN) // HOP
        np.testing.assert_array_equal(a[s][1][done], b[s][1][done])
        assert not np.array_equal(a[s][1][~done][:1], b[s][1][~done][:1])


def test_causal_delta_is_shifted_centred_regression():
    rng = np.random.default_rng(0)
    c = rng.standard_normal((30, 3))
    d = causal_delta(c, None, 2)
    i = np.arange(4, 30)  # centred at i - 2, all taps inside
    centred = (1 * (c[i - 1] - c[i - 3]) + 2 * (c[i] - c[i - 4])) / 10.0
    np.testing.assert_allclose(d[4:], centred, atol=1e-12)
    # first rows: left edge padding with row 0
    pad = np.concatenate([np.repeat(c[:1], 4, axis=0), c])
    d0 = (1 * (pad[3] - pad[1]) + 2 * (pad[4] - pad[0])) / 10.0
    np.testing.assert_allclose(d[0], d0, atol=1e-12)
    np.testing.assert_allclose(d[0], 0.0, atol=1e-12)  # only row 0 is known


# ---------------------------------------------------------------------------- input validation
def test_bad_input_is_rejected():
    inc = IncrementalAudioFeatures(CFG)
    with pytest.raises(ValueError, match="1-D"):
        inc.push(np.zeros((10, 2), dtype=np.float32))
    with pytest.raises(TypeError, match="int16"):
        inc.push(np.zeros(10, dtype=np.int16))
    with pytest.raises(ValueError, match="NaN"):
        inc.push(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(ValueError, match="unknown audio stream"):
        IncrementalAudioFeatures(FeatureConfig(streams=("mfcc", "vggish")))


# ---------------------------------------------------------------------------- librosa parity
@pytest.fixture(scope="module")
def librosa():
    return pytest.importorskip("librosa")


def _librosa_power(librosa, x, window):
    # librosa centres a 400-sample window inside the 512-sample FFT frame (56 zeros each side),
    # so padding the signal by 56 makes its frame i cover exactly our samples [i*hop, i*hop+400).
    pad = (CFG.n_fft - WIN) // 2
    spec = librosa.stft(np.pad(x, pad), n_fft=CFG.n_fft, hop_length=HOP, win_length=WIN,
                        window=window, center=False)
    return np.abs(spec)


def test_mel_filterbank_matches_librosa_htk(librosa):
    for n_mels, fmin, fmax in ((26, 0.0, 8000.0), (64, 125.0, 7500.0)):
        ours = mel_filterbank(SR, CFG.n_fft, n_mels, fmin, fmax)
        ref = librosa.filters.mel(sr=SR, n_fft=CFG.n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                                  htk=True, norm=None, dtype=np.float64)
        np.testing.assert_allclose(ours, ref, atol=1e-9)  # same formula, float64


def test_mfcc_matches_librosa(librosa):
    """Cepstra: librosa STFT (symmetric Hamming) -> HTK mel -> ln -> DCT-II ortho, HTK lifter.

    Tolerance: atol 1e-4 (values up to ~50; our output is float32, i.e. ~4e-6 resolution).
    Deltas: librosa.feature.delta(width=5) == regression half-width 2; ours is the same
    delayed by 2 rows (dd: delta of delta, delayed by 4 rows), compared away from the edges.
    """
    x = _signal(1.0).astype(np.float64)
    ours = extract(x.astype(np.float32), CFG)["mfcc"][1].astype(np.float64)
    pre = np.concatenate([[x[0]], x[1:] - CFG.preemphasis * x[:-1]])  # x[-1] = 0
    power = _librosa_power(librosa, pre, np.hamming(WIN)) ** 2
    fb = librosa.filters.mel(sr=SR, n_fft=CFG.n_fft, n_mels=26, fmin=0, fmax=8000, htk=True,
                             norm=None, dtype=np.float64)
    logmel = np.log(np.maximum(fb @ power, 1e-5))
    ceps = librosa.feature.mfcc(S=logmel, n_mfcc=13, dct_type=2, norm="ortho", lifter=0)
    lifter = 1 + 11 * np.sin(np.pi * np.arange(13) / 22)  # HTK lifter, L = 22, c0 unchanged
    ceps = (ceps * lifter[:, None]).T
    assert ceps.shape == ours[:, :13].shape
    np.testing.assert_allclose(ours[:, :13], ceps, atol=1e-4)
    d = librosa.feature.delta(ceps.T, width=5, order=1, mode="nearest").T
    dd = librosa.feature.delta(d.T, width=5, order=1, mode="nearest").T
    m = len(ceps)
    np.testing.assert_allclose(ours[4:, 13:26], d[2: m - 2], atol=1e-5)  # 20 ms delay
    np.testing.assert_allclose(ours[8:, 26:39], dd[4: m - 4], atol=1e-5)  # 40 ms delay


def test_logmel_matches_librosa(librosa):
    """VGGish-style log-mel: periodic Hann, |STFT| magnitude, 64 HTK mels 125-7500 Hz, log(+0.01).

    Tolerance: atol 1e-5 (float32 output, values in about [-4.6, 5]).
    """
    x = _signal(1.0, seed=5).astype(np.float64)
    ours = extract(x.astype(np.float32), CFG)["logmel"][1]
    mag = _librosa_power(librosa, x, "hann")  # scipy "hann" with fftbins=True is periodic
    fb = librosa.filters.mel(sr=SR, n_fft=CFG.n_fft, n_mels=64, fmin=125, fmax=7500, htk=True,
                             norm=None, dtype=np.float64)
    ref = np.log(fb @ mag + 0.01).T
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_frame_times_helper():
    np.testing.assert_allclose(frame_times(3, CFG, first=2), [0.045, 0.055, 0.065])
