"""Input checks with hints: a frame's layout, and a face detector's boxes."""
from __future__ import annotations

import numpy as np

#: a detection box may reach this many frame sides beyond the frame (a face partly outside
#: the image is normal; a box of 1e9 pixels is a broken detector)
MAX_BOX_SPAN = 4.0


def check_boxes(dets, shape) -> None:
    """ValueError when a box cannot be a face in a frame of ``shape`` (checked before the
    tracker or any crop sees it)."""
    h, w = shape[:2]
    lim = MAX_BOX_SPAN * max(h, w)
    for d in dets:
        x, y, bw, bh = (float(v) for v in (d.as_tuple() if hasattr(d, "as_tuple") else
                                           tuple(d)[:4]))
        if bw > lim or bh > lim or not (-lim < x < w + lim and -lim < y < h + lim):
            raise ValueError(f"returned a box that cannot be a face in a {w}x{h} frame: "
                             f"(x, y, w, h) = ({x:g}, {y:g}, {bw:g}, {bh:g})")


def conversion_hint(frame) -> str:
    """How to turn a common wrong frame layout into BGR uint8 (appended to the error)."""
    if not isinstance(frame, np.ndarray):
        return ""
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return " (grayscale: convert with cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))"
    if frame.ndim == 3 and frame.shape[2] == 4:
        return " (BGRA: convert with cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR))"
    if frame.ndim == 3 and frame.shape[0] in (1, 3, 4) and frame.shape[2] > 4:
        return (" (channels first, as a tensor: np.ascontiguousarray(frame.transpose(1, 2, 0)), "
                "then to BGR if it is RGB: cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))")
    if frame.dtype.kind == "f" and frame.ndim == 3 and frame.shape[2] == 3:
        return " (float image: scale to 0-255 and cast, e.g. (frame * 255).clip(0, 255)" \
               ".astype(np.uint8) for values in [0, 1])"
    if frame.dtype == np.uint16 and frame.ndim == 3 and frame.shape[2] == 3:
        return " (16-bit image: e.g. (frame >> 8).astype(np.uint8))"
    if frame.dtype == np.int8 and frame.ndim == 3 and frame.shape[2] == 3:
        return (" (signed bytes: frame.view(np.uint8) if they hold 0-255 pixel values, "
                "(frame.astype(np.int16) + 128).astype(np.uint8) if they are centred on 0)")
    return ""


#: a frame time given to push_frame within this many seconds of ``time.monotonic()`` is taken
#: to be on that clock (the one push_frame uses for a frame without ``t``); capture times are
#: at most a frame queue old, and a 5 s backlog is already a stalled pipeline
SAME_CLOCK_S = 5.0


def push_clock(prev, t: float | None, now: float):
    """The clock of a pushed frame's time -> ``(given, off_monotonic)`` (``given``: the caller
    gave ``t``; ``off_monotonic``: and it is more than SAME_CLOCK_S from ``now``, the
    monotonic clock). ValueError when the stream switches between a clock of the caller's own
    and ``time.monotonic()`` (``prev``: the previous frame's pair, None for a stream's first
    frame): the times would jump by the clocks' offset, and audio stamped on the first clock
    would fall far from the frames."""
    clock = (t is not None, t is not None and abs(t - now) > SAME_CLOCK_S)
    if prev is None or prev == clock or not (prev[1] or clock[1]):
        return clock
    if prev[1]:
        raise ValueError(f"push_frame: a frame without t takes time.monotonic() ({now:.3f} s), "
                         f"but this stream's frames carried times of another clock; give t for "
                         f"every frame, or reset() before switching clocks")
    raise ValueError(f"push_frame: t={t:g} is not on time.monotonic() ({now:.3f} s), which the "
                     f"frames before it used (they came without t); give t for every frame, or "
                     f"reset() before switching clocks")
