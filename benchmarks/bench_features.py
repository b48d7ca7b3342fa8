"""Speed of the audio front end (pytest-benchmark).

Run: .venv/bin/python -m pytest benchmarks/bench_features.py --benchmark-only -q
(--benchmark-columns=median,iqr,ops to keep the table short).
"""
from __future__ import annotations

import numpy as np
import pytest

from affedge.config import FeatureConfig
from affedge.features.audio import IncrementalAudioFeatures, extract
from affedge.features.audio_io import StreamResampler, resample
from affedge.features.vad import VoiceActivity

CFG = FeatureConfig()
HOP = CFG.hop_length


@pytest.fixture(scope="module")
def pcm10s():
    rng = np.random.default_rng(0)
    t = np.arange(10 * CFG.sample_rate) / CFG.sample_rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def _hop_feeder(pcm):
    """Returns a callable pushing the next 160-sample hop (wrapping around)."""
    state = {"i": 0}

    def chunk():
        i = state["i"]
        state["i"] = (i + HOP) % (pcm.size - HOP)
        return pcm[i: i + HOP]

    return chunk


def test_incremental_features_per_hop(benchmark, pcm10s):
    inc = IncrementalAudioFeatures(CFG)
    inc.push(pcm10s[:CFG.win_length])  # warm: every later 160-sample push yields one row
    nxt = _hop_feeder(pcm10s)
    out = benchmark(lambda: inc.push(nxt()))
    assert out["mfcc"][1].shape == (1, 39) and out["logmel"][1].shape == (1, 64)


def test_batch_features_10s(benchmark, pcm10s):
    out = benchmark(extract, pcm10s, CFG)
    assert out["mfcc"][1].shape[0] == 998


def test_vad_per_hop(benchmark, pcm10s):
    vad = VoiceActivity(CFG)
    vad.push(pcm10s[:CFG.win_length])
    nxt = _hop_feeder(pcm10s)
    _t, f = benchmark(lambda: vad.push(nxt()))
    assert f.shape == (1,)


def test_stream_resample_48k_per_10ms(benchmark):
    x = np.random.default_rng(1).standard_normal(48000).astype(np.float32)
    rs = StreamResampler(48000, 16000)
    state = {"i": 0}

    def step():
        i = state["i"]
        state["i"] = (i + 480) % (x.size - 480)
        return rs.push(x[i: i + 480])

    y = benchmark(step)
    assert y.size in (159, 160, 161) or y.size > 0


def test_batch_resample_10s_48k(benchmark):
    x = np.random.default_rng(2).standard_normal(480000).astype(np.float32)
    y = benchmark.pedantic(resample, args=(x, 48000, 16000), rounds=3, iterations=1)
    assert y.size == 160000
