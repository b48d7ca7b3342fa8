"""The hand-off of a live source's frames: a burst is kept whole; a reader that fell behind skips
to the newest frame.

Network cameras deliver frames in bursts: an FFmpeg MPEG-TS stream over HTTP on 127.0.0.1 gave
gaps of 0.3 ms (median) and 181 ms (p90) between frames (a new-user trial, 2026-12-02). Keeping
only the newest frame skipped most of every burst although inference kept up on average
(``affedge run URL``: 395 of 845 frames skipped at a 15 ms p50 latency), and the temporal model,
which steps once per frame, lost those frames. So frames queue while the reader keeps up; once
the oldest one has waited :data:`MAX_WAIT_S` (or :data:`MAX_FRAMES` are queued) the reader is
behind, and everything but the newest frame is skipped, as before: a live stream's latency
never grows past that wait. Not thread-safe: its owner holds its own lock around every call.
"""
from __future__ import annotations

import time
from collections import deque

#: a frame that waited this long in the queue (s) means the reader is behind (3 frames at 30 fps:
#: a burst read at the model's pace, ~5 ms a frame, clears in well under this)
MAX_WAIT_S = 0.1
#: at most this many frames wait (a stream faster than MAX_WAIT_S can hold, e.g. 120 fps)
MAX_FRAMES = 8


class LiveQueue:
    """``put(frame)``, ``pop() -> frame or None``; ``dropped`` counts the frames skipped."""

    def __init__(self, max_wait_s: float = MAX_WAIT_S, max_frames: int = MAX_FRAMES,
                 clock=time.monotonic):
        self.max_wait_s = float(max_wait_s)
        self.max_frames = int(max_frames)
        self._clock = clock
        self._q: deque = deque()  # (frame, time it was put)
        self.dropped = 0

    def put(self, frame) -> None:
        self._q.append((frame, self._clock()))
        self._skip_if_behind()

    def pop(self):
        """The oldest frame still worth processing, or None when none waits."""
        self._skip_if_behind()
        return self._q.popleft()[0] if self._q else None

    def _skip_if_behind(self) -> None:
        q = self._q
        if len(q) > self.max_frames or (len(q) > 1 and self._clock() - q[0][1] > self.max_wait_s):
            self.dropped += len(q) - 1
            newest = q[-1]
            q.clear()
            q.append(newest)

    def __len__(self) -> int:
        return len(self._q)


#: the frame interval assumed for skipped frames before any frame had a Prediction (s)
FALLBACK_FRAME_S = 1.0 / 30.0


def skipped_times(prev_index: int | None, prev_t: float | None, index: int, t: float,
                  skipped) -> list[float]:
    """Times for the frames ``skipped`` between the last frame that got a Prediction
    (``prev_index`` at ``prev_t``) and frame ``index`` at ``t``: spread by index over that
    interval, so they keep the stream's spacing and increase. With no earlier frame they step
    back from ``t`` by :data:`FALLBACK_FRAME_S` per frame."""
    if prev_index is None or prev_t is None or index <= prev_index:
        return [t - (index - i) * FALLBACK_FRAME_S for i in skipped]
    step = (t - prev_t) / (index - prev_index)
    return [prev_t + (i - prev_index) * step for i in skipped]
