"""Short soak (~30 s): a simulated stream of several repeated clip periods through the push API
from two threads, with the checks of ``benchmarks/soak.py`` (the full 2-hour version):
predictions equal an uninterrupted offline run, steady memory, no leaked threads, no overruns."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from test_engine import bundle_dir  # noqa: F401  (shared session fixture)

ROOT = Path(__file__).resolve().parents[1]


def _soak_module():
    spec = importlib.util.spec_from_file_location("affedge_bench_soak", ROOT / "benchmarks" / "soak.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_short_soak(bundle_dir, tmp_path):  # noqa: F811
    soak = _soak_module()
    period = 125  # 5 s clips (> the 121-frame receptive field)
    res = soak.run_soak(bundle_dir, n_frames=4 * period, period=period, workdir=tmp_path)
    assert res["frames"] == 4 * period
    assert res["face_present_frac"] > 0.99
    assert res["audio_present_after_first_frame"]
    # periods 2-4 of the stream equal period 2 of the uninterrupted offline run
    assert res["frames_checked"] == 3 * period
    assert res["predictions_match"], f"max |diff| {res['max_abs_diff']:.2e}"
    assert res["audio_overruns"] == 0 and res["audio_gaps_filled"] == 0
    assert res["threads_after"] == res["threads_before"]
    assert res["rss_growth"] < 0.05, res["rss_samples"]

    # the timeline behind the soak plot: one row per sample point, all finite and positive
    tl = np.asarray(res["timeline"])
    assert tl.shape[0] >= 2 and tl.shape[1] == 7
    assert np.all(np.isfinite(tl)) and np.all(tl[:, 2:6] > 0)
    assert np.all(np.diff(tl[:, 0]) > 0) and np.all(tl[:, 5] >= tl[:, 4])  # p99 >= p50
    png = tmp_path / "soak.png"
    img = soak.plot_timeline(res, png)
    back = cv2.imread(str(png))
    assert back is not None and back.shape == img.shape == (900, 900, 3)
    assert (img < 200).any(axis=2).mean() > 0.01  # curves, axes and text were drawn


def test_short_soak_tracking_assisted_steady_state(bundle_dir, tmp_path):  # noqa: F811
    """The default cadence (full pass every 4 frames, region search in between): once the
    tracker has settled and the receptive field (121 frames) lies in the settled part, every
    prediction repeats exactly one lag (lcm(period, 4) frames) later; memory, threads and
    overruns as above."""
    soak = _soak_module()
    period = 100  # 4 s clips; lag = lcm(100, 4) = 100 frames
    res = soak.run_soak(bundle_dir, n_frames=6 * period, period=period, workdir=tmp_path,
                        detect_every=4)
    assert res["detect_every"] == 4 and res["reference"].endswith("100 frames earlier")
    assert res["frames_checked"] == 6 * period - (2 * period + 121)
    assert res["face_present_frac"] > 0.99
    assert res["max_abs_diff"] <= 1e-6, f"max |diff| {res['max_abs_diff']:.2e}"  # repeats exactly
    assert res["audio_overruns"] == 0 and res["audio_gaps_filled"] == 0
    assert res["threads_after"] == res["threads_before"]
    assert res["rss_growth"] < 0.05, res["rss_samples"]
