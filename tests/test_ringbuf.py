"""Tests of the C++ ring buffer ``affedge._ringbuf`` (single-threaded behaviour).

A plain-Python model of the same ring and a NumPy reference of the ``sample_at`` rules are
defined here; hypothesis drives random operation sequences through both.
"""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affedge.sdk.ringbuffer import AlignedStreams, RingBuffer, TimestampError, aligned

MODES = ("previous", "nearest", "linear")


# ---------------------------------------------------------------- references


def ref_sample(times: np.ndarray, feats: np.ndarray, t: float, mode: str) -> np.ndarray:
    """Plain reference of the alignment rules (written from the spec, loops not searchsorted)."""
    n = len(times)
    cnt = sum(1 for x in times if x <= t)  # items with time <= t
    if cnt == 0:
        return feats[0].astype(np.float32)
    if cnt == n:
        return feats[-1].astype(np.float32)
    i = cnt - 1
    ta, tb = times[i], times[i + 1]
    if mode == "previous":
        return feats[i].astype(np.float32)
    if mode == "nearest":
        return feats[i + 1 if (tb - t) < (t - ta) else i].astype(np.float32)
    w = (t - ta) / (tb - ta)
    return ((1.0 - w) * feats[i].astype(np.float64) + w * feats[i + 1]).astype(np.float32)


class ModelRing:
    """What the ring should contain: newest <= capacity items, read cursor, overrun count."""

    def __init__(self, dim: int, capacity: int):
        self.dim, self.cap = dim, capacity
        self.ts: list[float] = []
        self.vals: list[np.ndarray] = []
        self.total = 0
        self.cursor = 0
        self.dropped = 0

    def push(self, t, v):
        assert not self.ts or t > self.ts[-1]
        self.ts.append(float(t))
        self.vals.append(np.array(v, np.float32))
        self.total += 1
        if len(self.ts) > self.cap:
            self.ts.pop(0)
            self.vals.pop(0)

    @property
    def oldest(self):
        return self.total - len(self.ts)

    @property
    def overruns(self):
        return self.dropped + max(0, self.total - self.cap - self.cursor)

    def take(self, max_n):
        lo = max(self.cursor, self.oldest)
        self.dropped += lo - self.cursor
        k = min(self.total - lo, max_n)
        self.cursor = lo + k
        i = lo - self.oldest
        return np.array(self.ts[i : i + k]), np.array(self.vals[i : i + k], np.float32).reshape(
            k, self.dim
        )


def filled(dim=3, cap=8, n=5, t0=0.0, dt=0.1):
    r = RingBuffer(dim, cap)
    ts = t0 + dt * np.arange(n)
    vals = np.arange(n * dim, dtype=np.float32).reshape(n, dim)
    r.push_many(ts, vals)
    return r, ts, vals


# ---------------------------------------------------------------- basics


def test_properties_and_push():
    r = RingBuffer(4, 3)
    assert (r.dim, r.capacity, r.size, r.total_pushed, r.overruns) == (4, 3, 0, 0, 0)
    assert r.latest_time is None and r.oldest_time is None and len(r) == 0
    assert r.reject_nonfinite is False
    for i in range(5):
        r.push(float(i), np.full(4, i, np.float32))
    assert (r.size, r.total_pushed, r.latest_time, r.oldest_time) == (3, 5, 4.0, 2.0)
    assert r.overruns == 2 and r.unread == 3  # items 0 and 1 were overwritten unread
    assert "capacity=3" in repr(r)


def test_window_is_readonly_zero_copy_view():
    r, ts, vals = filled(dim=3, cap=8, n=6)
    wts, wv = r.window(4)
    np.testing.assert_array_equal(wts, ts[-4:])
    np.testing.assert_array_equal(wv, vals[-4:])
    assert wv.dtype == np.float32 and wts.dtype == np.float64
    assert wv.flags.c_contiguous and not wv.flags.owndata and not wv.flags.writeable
    with pytest.raises(ValueError):
        wv[0, 0] = 1.0
    with pytest.raises(ValueError):
        wts[0] = 1.0
    # no copy: two windows share the ring's memory
    assert np.shares_memory(wv, r.window(2)[1])


def test_window_wraps_contiguously_and_seq():
    r = RingBuffer(2, 5)
    for i in range(13):  # wraps the ring twice; windows must still be contiguous
        r.push(float(i), np.array([i, -i], np.float32))
        n = min(i + 1, 5)
        ts, v, start = r.window(n, return_seq=True)
        assert start == i + 1 - n
        np.testing.assert_array_equal(ts, np.arange(i + 1 - n, i + 1, dtype=np.float64))
        np.testing.assert_array_equal(v[:, 0], ts.astype(np.float32))
        assert v.flags.c_contiguous
    empty_ts, empty_v = r.window(0)
    assert empty_ts.shape == (0,) and empty_v.shape == (0, 2)


def test_window_validity_contract():
    """A window of n stays valid for capacity - n further pushes (documented contract)."""
    cap, n = 10, 4
    r = RingBuffer(1, cap)
    for i in range(cap):
        r.push(float(i), np.array([i], np.float32))
    _ts, v, start = r.window(n, return_seq=True)
    snapshot = v.copy()
    for k in range(cap - n):
        r.push(float(cap + k), np.array([cap + k], np.float32))
        np.testing.assert_array_equal(v, snapshot)
    assert r.intact(start)  # exactly capacity - n pushes later: still valid ...
    r.push(100.0, np.array([100], np.float32))
    assert not r.intact(start)  # ... one more overwrites its first row
    assert v[0, 0] == 100.0


def test_view_keeps_ring_alive():
    r, ts, vals = filled(dim=5, cap=16, n=10)
    wts, wv = r.window(7)
    del r
    gc.collect()
    np.testing.assert_array_equal(wv, vals[-7:])  # storage still alive through the view's base
    np.testing.assert_array_equal(wts, ts[-7:])


# ---------------------------------------------------------------- errors


def test_dtype_and_shape_errors():
    r = RingBuffer(3, 4)
    with pytest.raises(TypeError, match="float64"):
        r.push(0.0, np.zeros(3))
    with pytest.raises(TypeError, match="int32"):
        r.push_many([0.0], np.zeros((1, 3), np.int32))
    with pytest.raises(TypeError, match="list"):
        r.push(0.0, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"\(3,\)"):
        r.push(0.0, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        r.push(0.0, np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="n, 3"):
        r.push_many([0.0, 1.0], np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="ts must have shape"):
        r.push_many([0.0], np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError):
        r.push_many(["a", "b"], np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError):
        RingBuffer(0, 4)
    with pytest.raises(ValueError):
        RingBuffer(3, -1)
    assert r.total_pushed == 0


def test_noncontiguous_float32_is_accepted():
    r = RingBuffer(3, 4)
    big = np.arange(12, dtype=np.float32).reshape(3, 4)
    r.push(0.0, big[:, 1])  # strided column
    r.push_many([1.0, 2.0], big.T[:2, :3])  # Fortran-ordered slice
    np.testing.assert_array_equal(r.window(3)[1], np.stack([big[:, 1], big.T[0, :3], big.T[1, :3]]))


def test_timestamp_errors_leave_ring_unchanged():
    r, _ts, vals = filled(dim=2, cap=8, n=3)
    last = r.latest_time
    with pytest.raises(TimestampError, match="strictly increasing"):
        r.push(last, np.zeros(2, np.float32))  # duplicate
    with pytest.raises(ValueError):  # TimestampError is a ValueError
        r.push(last - 1.0, np.zeros(2, np.float32))
    with pytest.raises(TimestampError, match="not finite"):
        r.push(math.nan, np.zeros(2, np.float32))
    with pytest.raises(TimestampError, match="item 2"):  # bad in the middle: all or nothing
        r.push_many([last + 1, last + 2, last + 1.5], np.zeros((3, 2), np.float32))
    with pytest.raises(TimestampError):
        r.push_many([last + 1, math.inf], np.zeros((2, 2), np.float32))
    assert r.total_pushed == 3 and r.latest_time == last
    np.testing.assert_array_equal(r.window(3)[1], vals)


def test_nonfinite_values():
    strict = RingBuffer(2, 4, reject_nonfinite=True)
    with pytest.raises(ValueError, match="non-finite.*column 1"):
        strict.push(0.0, np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="item 1"):
        strict.push_many([0.0, 1.0], np.array([[0, 0], [np.inf, 0]], np.float32))
    assert strict.total_pushed == 0
    lenient = RingBuffer(2, 4)
    lenient.push(0.0, np.array([0.0, np.nan], np.float32))
    assert np.isnan(lenient.window(1)[1][0, 1])


def test_window_and_query_errors():
    r = RingBuffer(2, 4)
    with pytest.raises(ValueError, match="empty"):
        r.at(0.0)
    with pytest.raises(ValueError, match="empty"):
        r.at_many([0.0, 1.0], "linear")
    with pytest.raises(ValueError, match="only 0 are stored"):
        r.window(1)
    r.push(0.0, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="exceeds the capacity 4"):
        r.window(5)
    with pytest.raises(ValueError, match="only 1 are stored"):
        r.window(2)
    with pytest.raises(ValueError, match=">= 0"):
        r.window(-1)
    with pytest.raises(ValueError, match="unknown mode 'cubic'"):
        r.at(0.0, "cubic")
    with pytest.raises(ValueError, match="not finite"):
        r.at(math.nan)
    with pytest.raises(ValueError, match="1-D"):
        r.at_many(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="RingBuffer"):
        aligned([r, "x"], [0.0])
    with pytest.raises(ValueError, match="empty"):
        aligned([], [0.0])


# ---------------------------------------------------------------- timeline queries


@pytest.mark.parametrize("mode", MODES)
def test_at_matches_reference(mode):
    rng = np.random.default_rng(0)
    r = RingBuffer(3, 50)
    ts = np.cumsum(rng.uniform(0.005, 0.02, 80))
    vals = rng.normal(size=(80, 3)).astype(np.float32)
    r.push_many(ts, vals)
    stored_t, stored_v = ts[-50:], vals[-50:]
    mids = 0.5 * (stored_t[:-1] + stored_t[1:])
    queries = np.concatenate([stored_t, mids, rng.uniform(ts[0], ts[-1] + 0.1, 100), [ts[0] - 1]])
    for q in queries:
        np.testing.assert_array_equal(
            r.at(q, mode), ref_sample(stored_t, stored_v, q, mode), err_msg=f"t={q}"
        )
    batch = r.at_many(queries, mode)
    assert batch.shape == (len(queries), 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(
        batch, np.stack([ref_sample(stored_t, stored_v, q, mode) for q in queries])
    )


def test_mode_details():
    r = RingBuffer(1, 8)
    r.push_many([1.0, 2.0, 4.0], np.array([[10], [20], [40]], np.float32))
    assert r.at(0.0, "previous")[0] == 10  # before all: clamped to the first item
    assert r.at(3.99, "previous")[0] == 20  # causal: never the future item
    assert r.at(4.0, "previous")[0] == 40
    assert r.at(3.0, "nearest")[0] == 20  # exact tie -> the earlier item
    assert r.at(3.01, "nearest")[0] == 40
    assert r.at(3.0, "linear")[0] == 30
    assert r.at(9.0, "linear")[0] == 40 and r.at(-9.0, "linear")[0] == 10  # clamped ends
    assert r.at(1.5)[0] == 10  # default mode is "previous"


def test_matches_features_align_sample_at():
    """Same results as the training-side alignment (affedge.features.align.sample_at)."""
    align = pytest.importorskip("affedge.features.align")
    rng = np.random.default_rng(1)
    ts = np.arange(300) * 0.01 + rng.uniform(0, 0.002, 300)  # ~100 Hz audio features
    feats = rng.normal(size=(300, 5)).astype(np.float32)
    frames = np.cumsum(rng.uniform(1 / 31, 1 / 24, 80)) - 0.05  # variable 24-31 fps video
    r = RingBuffer(5, 400)
    r.push_many(ts, feats)
    for mode in MODES:
        np.testing.assert_array_equal(
            r.at_many(frames, mode), align.sample_at(ts, feats, frames, mode)
        )


def test_aligned_multi_stream():
    rng = np.random.default_rng(2)
    audio_t = np.arange(500) * 0.01
    a = RingBuffer(4, 512)
    b = RingBuffer(2, 512)
    fa = rng.normal(size=(500, 4)).astype(np.float32)
    fb = rng.normal(size=(250, 2)).astype(np.float32)
    a.push_many(audio_t, fa)
    b.push_many(audio_t[::2] + 0.003, fb)
    frames = np.cumsum(rng.uniform(1 / 30, 1 / 25, 100))
    for mode in MODES:
        oa, ob = aligned([a, b], frames, mode)
        assert oa.shape == (100, 4) and ob.shape == (100, 2)
        np.testing.assert_array_equal(oa, a.at_many(frames, mode))
        np.testing.assert_array_equal(
            ob, np.stack([ref_sample(audio_t[::2] + 0.003, fb, q, mode) for q in frames])
        )


def test_aligned_streams_helper():
    s = AlignedStreams({"egemaps": 4, "vggish": 2}, capacity={"egemaps": 100, "vggish": 10})
    assert s.names == ["egemaps", "vggish"] and s["vggish"].capacity == 10
    with pytest.raises(ValueError, match="'egemaps' is empty"):
        s.at([0.0])
    s["egemaps"].push_many(np.arange(5) * 0.01, np.ones((5, 4), np.float32))
    s["vggish"].push(0.02, np.full(2, 7, np.float32))
    assert s.ready(0.02) and not s.ready(0.045)
    out = s.at([0.0, 0.03])
    assert out["egemaps"].shape == (2, 4) and out["vggish"][1, 0] == 7
    with pytest.raises(KeyError, match="unknown stream"):
        s["nope"]


# ---------------------------------------------------------------- cursor and overruns


def test_read_new_consume_and_overruns():
    r = RingBuffer(2, 4)
    r.push_many(np.arange(3.0), np.arange(6, dtype=np.float32).reshape(3, 2))
    ts, v = r.read_new(2)
    np.testing.assert_array_equal(ts, [0.0, 1.0])
    assert v.flags.writeable and not np.shares_memory(v, r.window(r.size)[1])  # consumer's copy
    assert (r.unread, r.read_cursor, r.overruns) == (1, 2, 0)
    r.push_many(np.arange(3.0, 9.0), np.zeros((6, 2), np.float32))  # 9 pushed, items 2..4 lost
    assert r.overruns == 3 and r.unread == 4
    ts, _ = r.read_new()
    np.testing.assert_array_equal(ts, [5.0, 6.0, 7.0, 8.0])
    assert r.overruns == 3 and r.unread == 0
    ts, v = r.read_new()
    assert ts.shape == (0,) and v.shape == (0, 2)
    r.push_many(np.arange(9.0, 15.0), np.zeros((6, 2), np.float32))
    assert r.consume(1) == 1 and r.overruns == 5  # items 9, 10 lost, 11 consumed
    assert r.consume() == 3 and r.unread == 0 and r.overruns == 5
    with pytest.raises(ValueError):
        r.read_new(-1)


def test_clear():
    r, _ts, _vals = filled(dim=2, cap=4, n=6)
    _, _, start = r.window(2, return_seq=True)
    assert r.overruns == 2
    r.clear()
    assert (r.size, r.unread, r.total_pushed, r.overruns) == (0, 0, 6, 2)
    assert not r.intact(start)  # windows from before clear() are stale
    r.push(-100.0, np.ones(2, np.float32))  # a new timeline may start anywhere
    assert r.latest_time == -100.0 and r.size == 1
    np.testing.assert_array_equal(r.read_new()[0], [-100.0])


# ---------------------------------------------------------------- property test vs the model

_op = st.one_of(
    st.tuples(st.just("push"), st.floats(1e-3, 1.0)),
    st.tuples(st.just("push_many"), st.lists(st.floats(1e-3, 1.0), max_size=12)),
    st.tuples(st.just("window"), st.integers(0, 12)),
    st.tuples(st.just("at"), st.floats(-0.5, 1.5), st.sampled_from(MODES)),
    st.tuples(st.just("read_new"), st.one_of(st.none(), st.integers(0, 10))),
    st.tuples(st.just("consume"), st.one_of(st.none(), st.integers(0, 10))),
    st.tuples(
        st.just("bad_push"),
    ),
    st.tuples(
        st.just("clear"),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dim=st.integers(1, 4),
    cap=st.integers(1, 9),
    ops=st.lists(_op, max_size=40),
    seed=st.integers(0, 2**16),
)
def test_random_operations_match_model(dim, cap, ops, seed):
    rng = np.random.default_rng(seed)
    r = RingBuffer(dim, cap)
    m = ModelRing(dim, cap)
    t = 0.0
    for op in ops:
        name = op[0]
        if name == "push":
            t += op[1]
            v = rng.normal(size=dim).astype(np.float32)
            r.push(t, v)
            m.push(t, v)
        elif name == "push_many":
            ts = t + np.cumsum(op[1]) if op[1] else np.zeros(0)
            if len(ts):
                t = float(ts[-1])
            vals = rng.normal(size=(len(ts), dim)).astype(np.float32)
            r.push_many(ts, vals)
            for ti, vi in zip(ts, vals):
                m.push(ti, vi)
        elif name == "window":
            n = op[1]
            if n > cap or n > len(m.ts):
                with pytest.raises(ValueError):
                    r.window(n)
            else:
                wts, wv, start = r.window(n, return_seq=True)
                assert start == m.total - n
                np.testing.assert_array_equal(wts, np.array(m.ts[len(m.ts) - n :], np.float64))
                np.testing.assert_array_equal(
                    wv, np.array(m.vals[len(m.vals) - n :], np.float32).reshape(n, dim)
                )
        elif name == "at":
            q = t * op[1]
            if not m.ts:
                with pytest.raises(ValueError):
                    r.at(q, op[2])
            else:
                np.testing.assert_array_equal(
                    r.at(q, op[2]), ref_sample(np.array(m.ts), np.array(m.vals), q, op[2])
                )
        elif name in ("read_new", "consume"):
            lim = op[1]
            want_ts, want_v = m.take(10**9 if lim is None else lim)
            if name == "read_new":
                got_ts, got_v = r.read_new(lim)
                np.testing.assert_array_equal(got_ts, want_ts)
                np.testing.assert_array_equal(got_v, want_v)
            else:
                assert r.consume(lim) == len(want_ts)
        elif name == "clear":
            r.clear()
            m.dropped += max(m.cursor, m.oldest) - m.cursor  # lost before clear() stay counted
            m.ts.clear()
            m.vals.clear()
            m.cursor = m.total
            t = -5.0  # a new timeline may start earlier
        else:  # a rejected push changes nothing
            with pytest.raises(ValueError):
                r.push(t, np.zeros(dim, np.float32)) if m.ts else r.push(
                    math.inf, np.zeros(dim, np.float32)
                )
        assert (r.size, r.total_pushed, r.overruns, r.read_cursor) == (
            len(m.ts),
            m.total,
            m.overruns,
            m.cursor,
        )
        assert r.unread == m.total - max(m.cursor, m.oldest)
        assert r.latest_time == (m.ts[-1] if m.ts else None)
