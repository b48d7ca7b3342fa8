"""Windows, overlap averaging, label delay, six-fold split and normalisation statistics."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affedge.training.data import normalization
from affedge.training.data.folds import fold_trials, six_fold_split
from affedge.training.data.windows import (
    apply_label_delay,
    make_windows,
    overlap_average,
    pad_window,
)


def test_windows_examples_paper():
    assert make_windows(100) == [(0, 100)]
    assert make_windows(300) == [(0, 300)]
    assert make_windows(301) == [(0, 300), (1, 301)]
    assert make_windows(500) == [(0, 300), (200, 500)]  # 200+300 == 500 is not < 500
    assert make_windows(1000) == [(0, 300), (200, 500), (400, 700), (600, 900), (700, 1000)]
    with pytest.raises(ValueError):
        make_windows(0)


@settings(max_examples=200, deadline=None)
@given(L=st.integers(1, 3000), window=st.integers(1, 400), hop=st.integers(1, 400))
def test_windows_properties(L, window, hop):
    w = make_windows(L, window, hop)
    assert w[-1][1] == L
    assert all(e - s == min(L, window) for s, e in w)
    starts = [s for s, _ in w]
    assert starts == sorted(starts) and starts[0] == 0
    if L > window:
        assert starts[:-1] == list(range(0, hop * (len(w) - 1), hop))
        assert starts[-2] + window < L
    if hop <= window:  # then every frame is covered
        cov = np.zeros(L, int)
        for s, e in w:
            cov[s:e] += 1
        assert cov.min() >= 1


def test_overlap_average_recovers_per_frame_values():
    L = 1000
    wins = make_windows(L)
    truth = np.stack([np.arange(L), -np.arange(L)], 1).astype(np.float32)
    preds = [pad_window(truth[s:e], 300) for s, e in wins]
    np.testing.assert_allclose(overlap_average(L, wins, preds), truth)
    # the trainer's argument order
    np.testing.assert_allclose(overlap_average(preds, wins, L), truth)
    # overlapping windows with different values are averaged
    out = overlap_average(4, [(0, 3), (1, 4)], [np.ones((3, 1)), 3 * np.ones((3, 1))])
    np.testing.assert_allclose(out[:, 0], [1, 2, 2, 3])
    with pytest.raises(ValueError, match="covered by no window"):
        overlap_average(5, [(0, 3)], [np.ones((3, 1))])


def test_pad_window_and_label_delay():
    x = np.ones((100, 2), np.float32)
    p = pad_window(x, 300)
    assert p.shape == (300, 2) and p[:100].all() and not p[100:].any()
    y = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(apply_label_delay(y, 2), [2, 3, 4, 5, 5, 5])
    np.testing.assert_array_equal(apply_label_delay(y, 0), y)
    np.testing.assert_array_equal(apply_label_delay(y, 50), [5] * 6)
    with pytest.raises(ValueError):
        apply_label_delay(y, -1)


def test_six_fold_split_paper_sizes():
    train = [f"t{i:03d}" for i in range(351)][::-1]  # given unsorted; sorted inside
    val = [f"v{i:02d}" for i in range(71)]
    folds = six_fold_split(train, val)
    assert len(folds) == 6
    assert folds[0][1] == val and folds[0][0] == sorted(train)
    s = sorted(train)
    chunks = [s[0:70], s[70:140], s[140:210], s[210:280], s[280:351]]
    for f in range(1, 6):
        assert folds[f][1] == chunks[5 - f]  # fold 1 -> P4, ..., fold 5 -> P0
    for tr, va in folds:
        assert not set(tr) & set(va)
        assert set(tr) | set(va) == set(train) | set(val)


@settings(max_examples=100, deadline=None)
@given(n_train=st.integers(5, 400), n_val=st.integers(1, 80))
def test_six_fold_split_partitions_everything(n_train, n_val):
    train = [f"t{i:04d}" for i in range(n_train)]
    val = [f"v{i:03d}" for i in range(n_val)]
    folds = six_fold_split(train, val)
    vals = [set(va) for _, va in folds]
    assert all(vals)
    # the validation chunks of the six folds tile train + val exactly once
    assert sum(len(v) for v in vals) == n_train + n_val
    assert set().union(*vals) == set(train) | set(val)
    sizes = [len(v) for v in vals[1:]]
    assert max(sizes) - min(sizes) <= 2  # the paper's near-equal chunks


def test_six_fold_split_errors():
    with pytest.raises(ValueError, match=">= 5"):
        six_fold_split(["a", "b"], ["c"])
    # named by the data set's folders, not the function (it said "six_fold_split: trials in
    # both partitions")
    with pytest.raises(ValueError, match=r"both Train_Set and Validation_Set .*\['a'\]") as e:
        six_fold_split(list("abcde"), ["a"])
    assert "six_fold_split" not in str(e.value)
    with pytest.raises(ValueError, match="appears twice"):
        six_fold_split(list("abcdea"), ["f"])
    with pytest.raises(ValueError, match="empty"):
        six_fold_split(list("abcde"), [])


def test_fold_trials_on_a_reader(synth_dataset):
    from affedge.training.data.affwild2 import AffWild2VA

    r = AffWild2VA(synth_dataset)
    _, va = fold_trials(r, 0)
    assert [t.name for t in va] == [t.name for t in r.trials("Validation_Set")]
    tr1, va1 = fold_trials(r, 1)
    assert len(va1) == 1 and len(tr1) == 5
    with pytest.raises(ValueError):
        fold_trials(r, 6)


def test_normalization_stats_from_training_trials():
    rng = np.random.default_rng(0)
    trials = [{"mfcc": rng.normal(3, 2, (50 + 10 * k, 4)).astype(np.float32),
               "logmel": rng.normal(-1, 5, (50 + 10 * k, 3)).astype(np.float32)} for k in range(3)]
    stats = normalization.compute_stats(trials)
    stats = json.loads(json.dumps(stats))  # JSON-serialisable
    normalization.validate_stats(stats)
    allm = np.concatenate([t["mfcc"] for t in trials]).astype(np.float64)
    np.testing.assert_allclose(stats["mfcc"]["mean"], allm.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats["mfcc"]["std"], allm.std(0), rtol=1e-6)
    z = normalization.apply({"mfcc": allm}, stats)["mfcc"]
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-5)
    only = normalization.compute_stats(trials, ["logmel"])
    assert list(only) == ["logmel"]
    const = normalization.compute_stats([{"x": np.ones((5, 2))}])
    assert min(const["x"]["std"]) > 0
    with pytest.raises(ValueError, match="dim"):
        normalization.apply({"mfcc": np.zeros((3, 5))}, stats)
    with pytest.raises(KeyError, match="vggish"):
        normalization.apply({"vggish": np.zeros((3, 5))}, stats)
    with pytest.raises(ValueError, match="NaN"):
        normalization.compute_stats([{"x": np.array([[np.nan]])}])
