"""OpenCV plots: files written, right size, lines and shading where the data says."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from affedge.plotting import PALETTE, SHADE_PALETTE, nice_ticks, plot_curves, plot_va


def _near(img, x, y, color, radius=2, tol=40):
    """Is a pixel within ``radius`` of (x, y) close to ``color`` (BGR)?"""
    x, y = round(float(x)), round(float(y))
    patch = img[y - radius: y + radius + 1, x - radius: x + radius + 1].astype(int)
    return bool((np.abs(patch - np.array(color)).max(axis=2) <= tol).any())


def test_plot_va_draws_series_and_masks(tmp_path):
    t = np.arange(300) / 30.0
    label = (np.full(300, 0.5), np.full(300, -0.5))
    pred = (np.linspace(-0.8, 0.8, 300), np.full(300, 0.25))
    pred[0][100:120] = np.nan  # a gap
    no_face = np.zeros(300, bool)
    no_face[200:260] = True
    path = tmp_path / "va.png"
    fig = plot_va(path, t, {"label": label, "prediction": pred}, title="test clip",
                  masks={"no face": no_face}, size=(1000, 600))
    img = cv2.imread(str(path))
    assert img.shape == (600, 1000, 3)
    np.testing.assert_array_equal(img, fig.image)
    top, bottom = fig.panels
    assert top.y1 < bottom.y0  # stacked
    for tt in (1.0, 5.0, 9.0):  # label at +0.5 (valence) and -0.5 (arousal), colour 0
        assert _near(img, top.x_px(tt), top.y_px(0.5), PALETTE[0])
        assert _near(img, bottom.x_px(tt), bottom.y_px(-0.5), PALETTE[0])
        assert not _near(img, top.x_px(tt), top.y_px(-0.5), PALETTE[0], radius=1)
    # prediction: valence ramp, arousal at 0.25, colour 1
    i = 50
    assert _near(img, top.x_px(t[i]), top.y_px(pred[0][i]), PALETTE[1])
    assert _near(img, bottom.x_px(t[i]), bottom.y_px(0.25), PALETTE[1])
    gap = 110
    ramp = np.linspace(-0.8, 0.8, 300)
    assert not _near(img, top.x_px(t[gap]), top.y_px(ramp[gap]), PALETTE[1], radius=1)
    # shading inside the mask span, not outside (sample away from lines and grid)
    shaded = img[int(top.y_px(-0.85)), int(top.x_px(7.7))].astype(int)
    clear = img[int(top.y_px(-0.85)), int(top.x_px(4.3))].astype(int)
    assert clear.min() >= 245  # panel background
    expect = 0.35 * np.array(SHADE_PALETTE[0]) + 0.65 * 252
    assert np.abs(shaded - expect).max() <= 3
    # title and legend text make the band above the panels non-blank
    assert (img[: top.y0 - 5] < 200).any()


def test_plot_curves(tmp_path):
    ep = np.arange(1, 11)
    val = 0.2 + 0.05 * ep
    train = 0.9 - 0.5 * np.exp(-ep / 3)
    fig = plot_curves(tmp_path / "c.png", ep, {"val CCC": val, "train CCC": train},
                      title="CCC per epoch", ylabel="CCC", size=(800, 500))
    img = cv2.imread(str(tmp_path / "c.png"))
    assert img.shape == (500, 800, 3)
    (p,) = fig.panels
    assert p.ylim[0] <= val.min() and p.ylim[1] >= train.max()
    for e in (1, 5, 10):
        assert _near(img, p.x_px(e), p.y_px(val[e - 1]), PALETTE[0])
        assert _near(img, p.x_px(e), p.y_px(train[e - 1]), PALETTE[1])


def test_nice_ticks():
    np.testing.assert_allclose(nice_ticks(-1, 1, 4), [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(nice_ticks(0, 30, 6), [0, 5, 10, 15, 20, 25, 30])


def test_plot_errors(tmp_path):
    t = np.arange(10.0)
    with pytest.raises(ValueError, match="valence"):
        plot_va(None, t, {"a": (np.zeros(9), np.zeros(10))})
    with pytest.raises(ValueError, match="mask"):
        plot_va(None, t, {"a": (np.zeros(10), np.zeros(10))}, masks={"m": np.zeros(3, bool)})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_va(tmp_path / "missing" / "x.png", t, {"a": (np.zeros(10), np.zeros(10))})
    with pytest.raises(ValueError, match="no series"):
        plot_curves(None, t, {})
