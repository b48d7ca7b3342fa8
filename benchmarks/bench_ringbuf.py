"""Benchmarks of the C++ ring buffer against NumPy/deque baselines (pytest-benchmark).

Run: .venv/bin/python -m pytest benchmarks/bench_ringbuf.py --benchmark-only
Targets (issue "streaming core"): push of a 512-d vector < 1 us median; window(300) of 512-d
at least 50x faster than collections.deque + np.stack.
"""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np
import pytest

from affedge.sdk.ringbuffer import RingBuffer, aligned

DIM = 512  # frame-embedding width (INTERFACES.md: encoder -> [N, 512])
CAP = 1024
WIN = 300


@pytest.fixture(scope="module")
def vec():
    return np.random.default_rng(0).normal(size=DIM).astype(np.float32)


def full_ring(dim=DIM, cap=CAP, rate=30.0):
    r = RingBuffer(dim, cap)
    r.push_many(
        np.arange(cap) / rate, np.random.default_rng(1).normal(size=(cap, dim)).astype(np.float32)
    )
    return r


# ---------------------------------------------------------------- push of one 512-d vector


@pytest.mark.benchmark(group="push-512")
def test_push_ringbuf(benchmark, vec):
    r = full_ring()
    clock = itertools.count(1e6, 0.01)
    benchmark(lambda: r.push(next(clock), vec))


@pytest.mark.benchmark(group="push-512")
def test_push_deque_copy(benchmark, vec):
    dq = deque(maxlen=CAP)
    clock = itertools.count(1e6, 0.01)
    benchmark(lambda: dq.append((next(clock), vec.copy())))


@pytest.mark.benchmark(group="push-512")
def test_push_nproll(benchmark, vec):
    state = {"buf": np.zeros((CAP, DIM), np.float32), "ts": np.zeros(CAP)}
    clock = itertools.count(1e6, 0.01)

    def push():
        state["buf"] = np.roll(state["buf"], -1, axis=0)
        state["ts"] = np.roll(state["ts"], -1)
        state["buf"][-1] = vec
        state["ts"][-1] = next(clock)

    benchmark(push)


# ---------------------------------------------------------------- window(300) of 512-d


@pytest.mark.benchmark(group="window-300x512")
def test_window_ringbuf(benchmark):
    r = full_ring()
    _ts, vals = benchmark(r.window, WIN)
    assert vals.shape == (WIN, DIM)


@pytest.mark.benchmark(group="window-300x512")
def test_window_deque_stack(benchmark):
    rng = np.random.default_rng(1)
    dq = deque(
        ((i / 30.0, rng.normal(size=DIM).astype(np.float32)) for i in range(CAP)), maxlen=WIN
    )

    def window():
        return np.array([t for t, _ in dq]), np.stack([v for _, v in dq])

    _ts, vals = benchmark(window)
    assert vals.shape == (WIN, DIM)


@pytest.mark.benchmark(group="window-300x512")
def test_window_nproll_slice(benchmark):
    buf = np.random.default_rng(1).normal(size=(CAP, DIM)).astype(np.float32)
    ts = np.arange(CAP) / 30.0
    out = benchmark(lambda: (ts[-WIN:], buf[-WIN:]))  # a view: reading is free, pushing is not
    assert out[1].shape == (WIN, DIM)


# ---------------------------------------------------------------- aligned query


def _streams():
    """Two 100 Hz audio feature streams (e.g. eGeMAPS-like 88-d and VGGish-like 128-d) and
    30 variable-rate video frame times inside them (PAPER.md: audio rows meet video frames)."""
    rng = np.random.default_rng(2)
    t = np.arange(2048) * 0.01
    a = rng.normal(size=(2048, 88)).astype(np.float32)
    b = rng.normal(size=(2048, 128)).astype(np.float32)
    frames = 19.0 + np.cumsum(rng.uniform(1 / 31, 1 / 24, 30))
    return t, a, b, frames


@pytest.mark.benchmark(group="aligned-2streams-30frames")
@pytest.mark.parametrize("mode", ["previous", "linear"])
def test_aligned_ringbuf(benchmark, mode):
    t, a, b, frames = _streams()
    ra, rb = RingBuffer(88, 2048), RingBuffer(128, 2048)
    ra.push_many(t, a)
    rb.push_many(t, b)
    out = benchmark(aligned, [ra, rb], frames, mode)
    assert out[0].shape == (30, 88)


@pytest.mark.benchmark(group="aligned-2streams-30frames")
@pytest.mark.parametrize("mode", ["previous", "linear"])
def test_aligned_numpy_sample_at(benchmark, mode):
    align = pytest.importorskip("affedge.features.align")
    t, a, b, frames = _streams()
    out = benchmark(
        lambda: [align.sample_at(t, a, frames, mode), align.sample_at(t, b, frames, mode)]
    )
    assert out[0].shape == (30, 88)
