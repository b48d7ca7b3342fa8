"""sample_at: previous / nearest / linear lookup of timestamped rows."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affedge.features.align import sample_at, sample_indices

T = np.array([0.025, 0.035, 0.045, 0.055])
F = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0], [3.0, 13.0]], dtype=np.float32)


def test_previous_mode():
    q = [0.0, 0.025, 0.03, 0.0349, 0.035, 0.05, 0.055, 1.0]
    got = sample_at(T, F, q, "previous")
    assert got.dtype == np.float32 and got.shape == (8, 2)
    np.testing.assert_array_equal(got[:, 0], [0, 0, 0, 0, 1, 2, 3, 3])


def test_nearest_mode_ties_go_earlier():
    t = np.array([1.0, 2.0, 3.0, 4.0])  # exactly representable, so 1.5 is an exact tie
    q = [0.0, 1.4, 1.5, 1.6, 3.5, 3.5001, 9.0]
    got = sample_at(t, F, q, "nearest")
    np.testing.assert_array_equal(got[:, 0], [0, 0, 0, 1, 2, 3, 3])


def test_linear_mode_interpolates_and_clamps():
    t = np.array([0.0, 1.0, 3.0])
    f = np.array([[0.0], [10.0], [30.0]])
    got = sample_at(t, f, [-5.0, 0.0, 0.5, 1.0, 2.0, 3.0, 7.0], "linear")
    np.testing.assert_allclose(got[:, 0], [0, 0, 5, 10, 20, 30, 30], atol=1e-6)


def test_single_row_stream():
    for mode in ("previous", "nearest", "linear"):
        got = sample_at([1.0], [[4.0, 5.0]], [0.0, 1.0, 2.0], mode)
        np.testing.assert_array_equal(got, [[4, 5]] * 3)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0.001, 1.0), min_size=1, max_size=20),
    st.lists(st.floats(-1.0, 12.0), min_size=1, max_size=20),
)
def test_matches_brute_force(gaps, queries):
    t = np.cumsum(gaps)
    f = np.arange(t.size * 2, dtype=np.float64).reshape(-1, 2) ** 1.5
    q = np.array(queries)
    prev = [max([i for i in range(t.size) if t[i] <= x], default=0) for x in q]
    near = [min(range(t.size), key=lambda i: (abs(t[i] - x), i)) for x in q]
    np.testing.assert_array_equal(sample_indices(t, q, "previous"), prev)
    np.testing.assert_array_equal(sample_indices(t, q, "nearest"), near)
    lin = sample_at(t, f, q, "linear")
    for d in range(2):
        np.testing.assert_allclose(lin[:, d], np.interp(q, t, f[:, d]), rtol=1e-6, atol=1e-4)


def test_validation_errors():
    with pytest.raises(ValueError, match="strictly increasing"):
        sample_at([0.0, 0.2, 0.1], np.zeros((3, 1)), [0.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        sample_at([0.0, 0.1, 0.1], np.zeros((3, 1)), [0.0])
    with pytest.raises(ValueError, match=r"feats must be \[len\(times\)=3, D\]"):
        sample_at([0.0, 0.1, 0.2], np.zeros((2, 1)), [0.0])
    with pytest.raises(ValueError, match="empty"):
        sample_at([], np.zeros((0, 1)), [0.0])
    with pytest.raises(ValueError, match="mode"):
        sample_at(T, F, [0.0], "cubic")
    with pytest.raises(ValueError, match="NaN"):
        sample_at(T, F, [np.nan])
    with pytest.raises(ValueError, match="query_times must be 1-D"):
        sample_at(T, F, [[0.0]])
