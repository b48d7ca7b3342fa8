"""The ``--show`` overlay: face boxes, valence/arousal bars and a circumplex dot (OpenCV only).

:func:`draw_overlay` draws on a copy of the frame (pure function, testable headless);
:func:`display_available` says whether ``cv2.imshow`` can open a window here (a GUI-enabled
OpenCV build, i.e. not ``opencv-python-headless``, and on Linux a ``DISPLAY``/``WAYLAND_DISPLAY``);
:class:`OverlayWindow` shows frames and reports a closed window / pressed ``q``.
"""
from __future__ import annotations

import os
import sys

import cv2
import numpy as np

_GREEN = (80, 200, 80)
_GREY = (150, 150, 150)
_WHITE = (255, 255, 255)
_BLUE = (220, 140, 40)
_ORANGE = (40, 140, 230)


def display_available() -> tuple[bool, str]:
    """(True, "") when an OpenCV window can be shown, else (False, the reason)."""
    info = cv2.getBuildInformation()
    gui = ""
    for line in info.splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip()
            break
    if gui.upper() in ("NONE", ""):
        return False, ("this OpenCV build has no GUI support (opencv-python-headless); "
                       "replace it with opencv-python to use --show (pip uninstall "
                       "opencv-python-headless && pip install 'opencv-python<5': both "
                       "installed conflict)")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display ($DISPLAY is not set)"
    return True, ""


def _bar(img, x, y, w, h, value, label, color):
    cv2.rectangle(img, (x, y), (x + w, y + h), _GREY, 1)
    mid = x + w // 2
    cv2.line(img, (mid, y), (mid, y + h), _GREY, 1)
    if np.isfinite(value):
        end = int(round(mid + np.clip(value, -1, 1) * (w // 2)))
        cv2.rectangle(img, (min(mid, end), y + 2), (max(mid, end), y + h - 2), color, -1)
    cv2.putText(img, f"{label} {value:+.2f}" if np.isfinite(value) else f"{label}  n/a",
                (x, y - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _WHITE, 1, cv2.LINE_AA)


def _circumplex(img, cx, cy, r, v, a, conf):
    cv2.circle(img, (cx, cy), r, _GREY, 1, cv2.LINE_AA)
    cv2.line(img, (cx - r, cy), (cx + r, cy), _GREY, 1)
    cv2.line(img, (cx, cy - r), (cx, cy + r), _GREY, 1)
    cv2.putText(img, "V", (cx + r - 10, cy - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, _GREY, 1)
    cv2.putText(img, "A", (cx + 4, cy - r + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, _GREY, 1)
    if np.isfinite(v) and np.isfinite(a):
        px = int(round(cx + np.clip(v, -1, 1) * r))
        py = int(round(cy - np.clip(a, -1, 1) * r))  # arousal up
        rad = 3 + int(round(5 * np.clip(conf, 0, 1)))
        cv2.circle(img, (px, py), rad, _ORANGE, -1, cv2.LINE_AA)


def draw_overlay(frame_bgr: np.ndarray, prediction, fps: float | None = None) -> np.ndarray:
    """A copy of ``frame_bgr`` with every tracked face box (primary thick, with its track id;
    a face not seen this frame grey, without values), the primary face's smoothed
    valence/arousal bars, a circumplex dot (x = valence, y = arousal, size = confidence) and
    status text (the primary's id first) in the corner the faces cover least."""
    if not isinstance(frame_bgr, np.ndarray) or frame_bgr.dtype != np.uint8 or frame_bgr.ndim != 3:
        raise ValueError(f"draw_overlay: frame must be BGR uint8 [H,W,3], got "
                         f"{getattr(frame_bgr, 'dtype', type(frame_bgr))}")
    img = frame_bgr.copy()
    h, w = img.shape[:2]
    p = prediction
    # the panel (bars + circumplex) goes in the corner the faces cover least (a kiosk trial's
    # top-left visitor was hidden under it), drawn before the boxes so that none is hidden
    pw, ph = min(230, w), min(120, h)
    boxes = [tuple(int(round(v)) for v in f.box) for f in p.faces]

    def covered(x0, y0):
        return sum(max(0, min(x0 + pw, x + bw) - max(x0, x)) *
                   max(0, min(y0 + ph, y + bh) - max(y0, y)) for x, y, bw, bh in boxes)
    x0, y0 = min(((0, 0), (w - pw, 0), (0, h - ph), (w - pw, h - ph)),
                 key=lambda c: covered(*c))  # (ties: top-left first)
    panel = img[y0:y0 + ph, x0:x0 + pw]
    panel[:] = (panel * 0.4).astype(np.uint8)
    _bar(img, x0 + 10, y0 + 26, 120, 14, p.valence_smoothed, "valence", _BLUE)
    _bar(img, x0 + 10, y0 + 66, 120, 14, p.arousal_smoothed, "arousal", _ORANGE)
    _circumplex(img, x0 + 180, y0 + 55, 40, p.valence_smoothed, p.arousal_smoothed,
                p.confidence)
    who = f"#{p.track_id}  " if p.track_id is not None else ""
    status = f"{who}conf {p.confidence:.2f}  face {'Y' if p.face_present else 'N'}  " \
             f"speech {'Y' if p.speech_present else 'N'}"
    if fps is not None:
        status += f"  {fps:.1f} fps"
    cv2.putText(img, status, (x0 + 10, y0 + 108), cv2.FONT_HERSHEY_SIMPLEX, 0.4, _WHITE, 1,
                cv2.LINE_AA)
    for i, (f, (x, y, bw, bh)) in enumerate(zip(p.faces, boxes)):
        color = _GREEN if f.detected else _GREY
        cv2.rectangle(img, (x, y), (x + bw, y + bh), color, 3 if i == 0 else 1)
        label = f"#{f.track_id} V{f.valence_smoothed:+.2f} A{f.arousal_smoothed:+.2f}" \
            if f.detected else f"#{f.track_id} (not seen)"
        cv2.putText(img, label, (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1,
                    cv2.LINE_AA)
    return img


# the window's initial longer side in pixels: small frames (320x240 clips) are scaled up so the
# overlay text stays legible, 4K frames down so the window fits a laptop screen
WINDOW_LONG_SIDE = (900, 1280)


def window_size(frame_w: int, frame_h: int, long_side=WINDOW_LONG_SIDE) -> tuple[int, int]:
    """Initial window (width, height) for a frame: aspect kept, longer side clamped into
    ``long_side`` (min, max)."""
    lo, hi = long_side
    m = max(frame_w, frame_h, 1)
    scale = lo / m if m < lo else hi / m if m > hi else 1.0
    return max(1, int(round(frame_w * scale))), max(1, int(round(frame_h * scale)))


class OverlayWindow:
    """An OpenCV window for the overlay; ``show()`` returns False once the user closed it or
    pressed ``q``/Esc.

    Create it *before* PyAV is imported: with a Qt OpenCV build, ``cv2.namedWindow`` hangs
    when PyAV's bundled FFmpeg/Qt libraries were loaded first (the CLI opens its window first).
    The window is resizable and starts at a readable size (:func:`window_size`)."""

    def __init__(self, title: str = "affedge"):
        ok, why = display_available()
        if not ok:
            raise RuntimeError(why)
        self.title = title
        self._sized = False
        cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)

    def show(self, image: np.ndarray) -> bool:
        if not self._sized:
            self._sized = True
            try:
                cv2.resizeWindow(self.title, *window_size(image.shape[1], image.shape[0]))
            except cv2.error:
                pass
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error:
            return False

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass
