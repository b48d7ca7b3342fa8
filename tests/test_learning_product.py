"""The product learning benchmark (benchmarks/learning_product.py) scores what it should."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import learning_product as lp  # noqa: E402


def test_unlabelled_frames_are_not_scored():
    """-5 rows (unlabelled) are left out: a perfect prediction of the labelled frames scores
    ~1.0 whatever is predicted on the unlabelled ones (counting them gave 0.47 for a model
    whose per-video CCC was 0.86-0.93)."""
    rng = np.random.default_rng(0)
    y1 = rng.uniform(-1, 1, (100, 2)).astype(np.float32)
    y2 = rng.uniform(-1, 1, (80, 2)).astype(np.float32)
    y1[10:30] = lp.UNLABELLED
    y2[:5] = lp.UNLABELLED
    p1, p2 = y1.copy(), y2.copy()
    p1[10:30] = 0.3
    p2[:5] = -0.2
    res, n = lp.heldout_ccc([y1, y2], [p1, p2])
    assert n == 155
    # (affedge.metrics.ccc keeps the reference code's mixed denominators: identical series
    # score (n - 1) / n)
    assert res["valence"] > 0.99 and res["arousal"] > 0.99
    # the scoring still sees real errors on labelled frames
    p1[40:] = 0.0
    worse, _ = lp.heldout_ccc([y1, y2], [p1, p2])
    assert worse["valence"] < 0.9 and worse["arousal"] < 0.9


def test_predictions_are_read_by_frame_index(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("frame,timestamp,valence,arousal\n2,0.1,0.5,-0.5\n0,0.0,,0.1\n7,0.3,1,1\n")
    pred, seen = lp.read_predictions(path, 4)
    assert seen == 1  # frame 0 has no valence, frame 7 is beyond the labels
    np.testing.assert_array_equal(pred, [[0, 0], [0, 0], [0.5, -0.5], [0, 0]])


def test_heldout_bias_separates_an_offset_from_the_shape():
    """benchmarks/heldout_bias.py: a prediction that tracks the labels exactly but sits 0.4
    too low has Pearson 1, slope 1 and bias -0.4 (and a CCC well below 1); one at half the
    range has slope 0.5; unlabelled rows are left out."""
    import heldout_bias as hb

    t = np.linspace(0, 6, 300)
    y = np.stack([np.sin(t), 0.5 * np.cos(t)], axis=1).astype(np.float32)
    y[:20] = lp.UNLABELLED
    p = y.copy()
    p[:, 1] -= 0.4
    p[:20] = 3.0  # whatever is predicted on unlabelled frames does not count
    s = hb.video_stats(y, p)
    assert s["labelled_frames"] == 280
    assert abs(s["valence"]["bias"]) < 1e-6 and s["valence"]["ccc"] > 0.99
    a = s["arousal"]
    assert abs(a["bias"] + 0.4) < 1e-5 and a["pearson"] > 0.999
    assert abs(a["label_mean"] - y[20:, 1].mean()) < 1e-6
    assert a["ccc"] < 0.75 and abs(a["slope"] - 1) < 1e-5
    half = hb.video_stats(y, np.where(y == lp.UNLABELLED, y, 0.5 * y))["valence"]
    assert abs(half["slope"] - 0.5) < 1e-5 and half["pearson"] > 0.999
