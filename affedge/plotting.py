"""PNG plots drawn with OpenCV only (no matplotlib), so the runtime can draw them too.

* :func:`plot_va` - valence and arousal over time in two stacked panels (y fixed to [-1, 1]),
  several labelled series (e.g. prediction vs label), optional shaded spans (e.g. "no face",
  "no speech" masks).
* :func:`plot_curves` - training curves (e.g. CCC per epoch), one panel, auto y range.

Both return a :class:`Figure` (the BGR image and the panels' data-to-pixel mappings) and write
``path`` when it is not None. NaN values leave gaps in a line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["PALETTE", "Figure", "Panel", "nice_ticks", "plot_curves", "plot_va"]

# tab10 colours in BGR order
PALETTE = [
    (180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
    (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23),
]
SHADE_PALETTE = [(170, 170, 170), (120, 190, 255), (255, 200, 150), (180, 230, 180)]
_BG, _AXIS, _GRID = (255, 255, 255), (60, 60, 60), (228, 228, 228)
_ZERO, _TEXT = (170, 170, 170), (40, 40, 40)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SHIFT = 4  # fixed-point bits for sub-pixel line coordinates


@dataclass
class Panel:
    """A plotting area: pixel box ``(x0, y0)-(x1, y1)`` showing data ranges ``xlim``, ``ylim``."""

    x0: int
    y0: int
    x1: int
    y1: int
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    integer_x: bool = False  # x ticks only at whole numbers (epochs)

    def x_px(self, x):
        x = np.asarray(x, dtype=np.float64)
        a, b = self.xlim
        return self.x0 + (x - a) / (b - a) * (self.x1 - self.x0)

    def y_px(self, y):
        y = np.asarray(y, dtype=np.float64)
        a, b = self.ylim
        return self.y1 - (y - a) / (b - a) * (self.y1 - self.y0)


@dataclass
class Figure:
    image: np.ndarray  # uint8 [H, W, 3] BGR
    panels: list[Panel] = field(default_factory=list)


def nice_ticks(lo: float, hi: float, target: int = 6) -> np.ndarray:
    """Round tick positions (steps of 1, 2, 2.5 or 5 x 10^k) covering ``[lo, hi]``."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return np.array([lo])
    raw = (hi - lo) / max(1, target)
    mag = 10.0 ** np.floor(np.log10(raw))
    step = mag * min((m for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw), default=10.0)
    first = np.ceil(lo / step - 1e-9) * step
    ticks = np.arange(first, hi + step * 1e-6, step)
    return np.round(ticks, 10)


def _fmt(v: float) -> str:
    s = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _text(img, s, org, scale=0.5, color=_TEXT, thick=1, anchor="left"):
    (w, h), _ = cv2.getTextSize(s, _FONT, scale, thick)
    x, y = org
    if anchor == "center":
        x -= w // 2
    elif anchor == "right":
        x -= w
    cv2.putText(img, s, (int(x), int(y)), _FONT, scale, color, thick, cv2.LINE_AA)
    return w, h


def _axes(img, p: Panel, ylabel: str, xlabel: str | None, show_xticklabels: bool):
    cv2.rectangle(img, (p.x0, p.y0), (p.x1, p.y1), (252, 252, 252), -1)
    for ty in nice_ticks(*p.ylim, target=4 if p.y1 - p.y0 < 260 else 6):
        y = round(float(p.y_px(ty)))
        color = _ZERO if abs(ty) < 1e-12 and p.ylim[0] < 0 < p.ylim[1] else _GRID
        cv2.line(img, (p.x0, y), (p.x1, y), color, 1, cv2.LINE_AA)
        cv2.line(img, (p.x0 - 5, y), (p.x0, y), _AXIS, 1, cv2.LINE_AA)
        _text(img, _fmt(ty), (p.x0 - 9, y + 5), 0.45, anchor="right")
    for tx in _xticks(p):
        x = round(float(p.x_px(tx)))
        cv2.line(img, (x, p.y0), (x, p.y1), _GRID, 1, cv2.LINE_AA)
        cv2.line(img, (x, p.y1), (x, p.y1 + 5), _AXIS, 1, cv2.LINE_AA)
        if show_xticklabels:
            _text(img, _fmt(tx), (x, p.y1 + 22), 0.45, anchor="center")
    cv2.rectangle(img, (p.x0, p.y0), (p.x1, p.y1), _AXIS, 1, cv2.LINE_AA)
    _text(img, ylabel, (p.x0 + 8, p.y0 - 8), 0.55, thick=1)
    if xlabel:
        _text(img, xlabel, ((p.x0 + p.x1) // 2, p.y1 + 44), 0.5, anchor="center")


def _xticks(p: Panel) -> np.ndarray:
    ticks = nice_ticks(*p.xlim, target=max(3, (p.x1 - p.x0) // 110))
    if not p.integer_x:
        return ticks
    step = ticks[1] - ticks[0] if ticks.size > 1 else 1.0
    if step < 1:  # never a tick between two epochs
        ticks = np.arange(np.ceil(p.xlim[0] - 1e-9), np.floor(p.xlim[1] + 1e-9) + 1)
    return ticks[np.abs(ticks - np.round(ticks)) < 1e-9]


def _line(img, p: Panel, x, y, color, thick=2, markers=False):
    """Draw ``y(x)`` clipped to the panel, breaking at NaN."""
    x = np.asarray(x, dtype=np.float64)
    y = np.clip(np.asarray(y, dtype=np.float64), *p.ylim)
    ok = np.isfinite(x) & np.isfinite(y)
    px = np.stack([p.x_px(x), p.y_px(y)], axis=1)
    sub = img[p.y0: p.y1 + 1, p.x0: p.x1 + 1]  # a view: drawing here cannot spill outside
    off = np.array([p.x0, p.y0], dtype=np.float64)
    # split into runs of valid points
    edges = np.flatnonzero(np.diff(np.r_[0, ok.astype(np.int8), 0]))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        pts = np.round((px[a:b] - off) * (1 << _SHIFT)).astype(np.int32)
        if len(pts) == 1:
            cv2.circle(sub, tuple(pts[0]), thick << _SHIFT, color, -1, cv2.LINE_AA, _SHIFT)
        else:
            cv2.polylines(sub, [pts], False, color, thick, cv2.LINE_AA, _SHIFT)
        if markers:
            for q in pts:
                cv2.circle(sub, tuple(q), (thick + 2) << _SHIFT, color, -1, cv2.LINE_AA, _SHIFT)


def _shade(img, p: Panel, t, mask, color, alpha=0.35):
    """Tint the time spans where ``mask`` is true (frame i spans [t_i, t_{i+1}))."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return
    dt = np.diff(t)
    last = float(np.median(dt)) if dt.size else 1.0
    right = np.r_[t[1:], t[-1] + last]
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    overlay = img.copy()
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        xa = int(np.floor(float(np.clip(p.x_px(t[a]), p.x0, p.x1))))
        xb = int(np.ceil(float(np.clip(p.x_px(right[b - 1]), p.x0, p.x1))))
        cv2.rectangle(overlay, (xa, p.y0 + 1), (max(xa, xb), p.y1 - 1), color, -1)
    cv2.addWeighted(overlay, alpha, img, 1 - alpha, 0, dst=img)


def _legend(img, entries, x, y, max_x):
    """Horizontal legend: entries = [(label, color, kind)] with kind 'line' or 'box'."""
    cx = x
    for label, color, kind in entries:
        (w, _), _ = cv2.getTextSize(label, _FONT, 0.5, 1)
        if cx + 34 + w > max_x and cx > x:
            cx, y = x, y + 22
        if kind == "line":
            cv2.line(img, (cx, y - 5), (cx + 26, y - 5), color, 3, cv2.LINE_AA)
        else:
            cv2.rectangle(img, (cx, y - 12), (cx + 26, y + 2), color, -1)
            cv2.rectangle(img, (cx, y - 12), (cx + 26, y + 2), (150, 150, 150), 1)
        _text(img, label, (cx + 32, y))
        cx += 32 + w + 26
    return y


def _check_series(n: int, arr, what: str) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != 1 or a.size != n:
        raise ValueError(f"{what}: expected shape ({n},), got {a.shape}")
    return a


def _write(path, img):
    if path is None:
        return
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        raise FileNotFoundError(f"plot: output directory {parent!r} does not exist")
    if not cv2.imwrite(path, img):
        raise OSError(f"plot: OpenCV could not write {path!r} (use a .png name)")


def _xlim(x: np.ndarray) -> tuple[float, float]:
    fin = x[np.isfinite(x)]
    if fin.size == 0:
        raise ValueError("plot: no finite x values")
    lo, hi = float(fin.min()), float(fin.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def plot_va(
    path,
    t,
    series: dict,
    title: str = "",
    masks: dict | None = None,
    size: tuple[int, int] = (1200, 720),
    ylim: tuple[float, float] = (-1.0, 1.0),
) -> Figure:
    """Valence (top) and arousal (bottom) over time ``t`` (s).

    ``series``: ``{label: (valence[T], arousal[T])}`` (drawn in palette order, e.g. labels
    first, then predictions); ``masks``: ``{label: bool[T]}`` spans to shade (e.g.
    ``{"no face": ~face_present}``). ``size`` is ``(width, height)`` in pixels.
    """
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"plot_va: t must be a non-empty 1-D array, got shape {t.shape}")
    if not series:
        raise ValueError("plot_va: no series to plot")
    data = {}
    for label, pair in series.items():
        if len(pair) != 2:
            raise ValueError(f"plot_va: series {label!r} must be (valence, arousal)")
        data[label] = (_check_series(t.size, pair[0], f"plot_va: {label!r} valence"),
                       _check_series(t.size, pair[1], f"plot_va: {label!r} arousal"))
    masks = {k: np.asarray(v, dtype=bool) for k, v in (masks or {}).items()}
    for k, v in masks.items():
        if v.shape != t.shape:
            raise ValueError(f"plot_va: mask {k!r} shape {v.shape} != t shape {t.shape}")
    w, h = size
    if w < 300 or h < 250:
        raise ValueError(f"plot_va: size {size} too small (min 300 x 250)")
    img = np.full((h, w, 3), _BG, dtype=np.uint8)
    entries = [(str(k), PALETTE[i % len(PALETTE)], "line") for i, k in enumerate(data)]
    entries += [(str(k), SHADE_PALETTE[i % len(SHADE_PALETTE)], "box") for i, k in enumerate(masks)]
    y = 34
    if title:
        _text(img, title, (w // 2, y), 0.75, thick=2, anchor="center")
        y += 30
    left, right = 70, w - 25
    y = _legend(img, entries, left, y, right) + 34
    bottom = h - 58
    gap = 46
    ph = (bottom - y - gap) // 2
    xl = _xlim(t)
    panels = [Panel(left, y, right, y + ph, xl, ylim),
              Panel(left, y + ph + gap, right, bottom, xl, ylim)]
    for k, (p, name) in enumerate(zip(panels, ("Valence", "Arousal"), strict=True)):
        _axes(img, p, name, "time (s)" if k == 1 else None, show_xticklabels=True)
        for i, mv in enumerate(masks.values()):
            _shade(img, p, t, mv, SHADE_PALETTE[i % len(SHADE_PALETTE)])
        for i, (va, ar) in enumerate(data.values()):
            _line(img, p, t, va if k == 0 else ar, PALETTE[i % len(PALETTE)])
        cv2.rectangle(img, (p.x0, p.y0), (p.x1, p.y1), _AXIS, 1, cv2.LINE_AA)
    _write(path, img)
    return Figure(img, panels)


def plot_curves(
    path,
    x,
    series: dict,
    title: str = "",
    ylabel: str = "",
    xlabel: str = "epoch",
    size: tuple[int, int] = (900, 540),
    ylim: tuple[float, float] | None = None,
) -> Figure:
    """Curves ``{label: y[len(x)]}`` against ``x`` (e.g. CCC per epoch), markers at the points.

    When every x is a whole number (epochs), x ticks are whole numbers only and a single point
    sits in the middle of a one-unit axis."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"plot_curves: x must be a non-empty 1-D array, got shape {x.shape}")
    if not series:
        raise ValueError("plot_curves: no series to plot")
    data = {k: _check_series(x.size, v, f"plot_curves: {k!r}") for k, v in series.items()}
    w, h = size
    if w < 300 or h < 200:
        raise ValueError(f"plot_curves: size {size} too small (min 300 x 200)")
    if ylim is None:
        allv = np.concatenate(list(data.values()))
        allv = allv[np.isfinite(allv)]
        if allv.size == 0:
            raise ValueError("plot_curves: no finite values")
        lo, hi = float(allv.min()), float(allv.max())
        pad = 0.08 * (hi - lo) if hi > lo else max(0.05, abs(hi) * 0.1)
        ticks = nice_ticks(lo - pad, hi + pad)
        step = ticks[1] - ticks[0] if ticks.size > 1 else pad
        ylim = (min(lo - pad, float(np.floor(lo / step) * step)),
                max(hi + pad, float(np.ceil(hi / step) * step)))
    img = np.full((h, w, 3), _BG, dtype=np.uint8)
    y = 34
    if title:
        _text(img, title, (w // 2, y), 0.75, thick=2, anchor="center")
        y += 30
    left, right = 80, w - 25
    entries = [(str(k), PALETTE[i % len(PALETTE)], "line") for i, k in enumerate(data)]
    y = _legend(img, entries, left, y, right) + 34
    fin = x[np.isfinite(x)]
    integer_x = bool(fin.size) and bool(np.all(fin == np.round(fin)))
    p = Panel(left, y, right, h - 62, _xlim(x), ylim, integer_x=integer_x)
    _axes(img, p, ylabel, xlabel, show_xticklabels=True)
    for i, v in enumerate(data.values()):
        _line(img, p, x, v, PALETTE[i % len(PALETTE)], markers=x.size <= 60)
    cv2.rectangle(img, (p.x0, p.y0), (p.x1, p.y1), _AXIS, 1, cv2.LINE_AA)
    _write(path, img)
    return Figure(img, [p])
