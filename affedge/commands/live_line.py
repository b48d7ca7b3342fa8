"""The status line of ``affedge run`` and ``demo``: fps, latency and V/A once a second, and a
line when the source stalls."""
from __future__ import annotations

import sys
import threading
import time


#: a run whose source has given no frame for this long says so once every this many seconds
#: (a stalled camera or stream: a URL's reconnect waits out its 10 s read timeout, silently)
STALL_NOTE_S = 2.0


class LiveLine:
    """Prints ``fps, latency p50/p99, V/A`` about once per second (to stderr by default), and,
    from :meth:`watch` to :meth:`close`, a line when the source stalls (STALL_NOTE_S)."""

    def __init__(self, rec, stream=None, every_s: float = 1.0, enabled: bool = True,
                 total: int | None = None):
        self.rec = rec
        #: frames the source should give (a file's count): the line then shows its progress
        self.total = total if total and total > 0 else None
        self.stream = stream or sys.stderr
        self.every = every_s
        self.enabled = enabled
        self.t0 = self.t_last = self.t_frame = time.monotonic()
        self.n_last = 0
        self.n = 0
        self.fps = 0.0
        self._done = threading.Event()
        self._t_note = 0.0  # the last stall line

    def update(self, p) -> None:
        self.n += 1
        now = self.t_frame = time.monotonic()
        if now - self.t_last < self.every:
            return
        self.fps = (self.n - self.n_last) / (now - self.t_last)
        self.t_last, self.n_last = now, self.n
        if self.enabled:
            s = self.rec.stats()
            print(f"[{now - self.t0:6.1f}s] frame {p.frame:6d}{self._progress()}  "
                  f"{self.fps:5.1f} fps  latency "
                  f"p50 {s['latency_ms_p50']:.1f} ms p99 {s['latency_ms_p99']:.1f} ms  "
                  f"V {p.valence_smoothed:+.2f} A {p.arousal_smoothed:+.2f}  conf "
                  f"{p.confidence:.2f}  face {'Y' if p.face_present else 'N'}"
                  f"{f' (#{p.track_id} of {len(p.faces)})' if len(p.faces) > 1 else ''} speech "
                  f"{'Y' if p.speech_present else 'N'}", file=self.stream, flush=True)

    def _progress(self) -> str:
        """' of 600 (50 %, ~2 s left)' for a source of known length, else ''."""
        if self.total is None:
            return ""
        left = max(self.total - self.n, 0)
        eta = f", ~{left / self.fps:.0f} s left" if self.fps > 0 else ""
        return f" of {self.total} ({min(100.0, 100.0 * self.n / self.total):3.0f} %{eta})"

    def watch(self) -> LiveLine:
        """Start the stall watch (a daemon thread; enabled lines only)."""
        if self.enabled:
            threading.Thread(target=self._watch, name="affedge-live-line", daemon=True).start()
        return self

    def _watch(self) -> None:
        while not self._done.wait(STALL_NOTE_S / 4):
            now = time.monotonic()
            idle = now - self.t_frame
            if self.n and idle >= STALL_NOTE_S and now - self._t_note >= STALL_NOTE_S:
                self._t_note = now
                print(f"[{now - self.t0:6.1f}s] no frame for {idle:.0f} s: the source "
                      f"stalled; waiting for it", file=self.stream, flush=True)

    def close(self) -> None:
        self._done.set()
