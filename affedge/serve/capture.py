"""One capture thread per source: frames into a slot the hub's inference loop takes from.

File sources hand over every frame (a queue of :data:`FILE_QUEUE` frames; the reader waits for
the inference loop, so nothing is skipped), paced to their media clock when asked (``pace``,
``affedge serve --realtime``; :class:`affedge.sdk.run_feeds.MediaPacer`, as
``Recognizer.run(realtime=True)``: a loop that falls behind delays the file instead of
skipping frames). Live sources queue a burst of frames and skip to the newest once the loop
falls behind (:mod:`affedge.sdk.sources.live_queue`): frames the loop had no time for are
counted and get stale Predictions, as in ``Recognizer.run``. A
live source that fails (camera unplugged, stream gone) is reported in :attr:`SourceWorker.error`
and reopened after a growing pause (:data:`BACKOFF_S`), while the other sources go on.
"""
from __future__ import annotations

import threading
import time
from collections import deque

from affedge.sdk.run_feeds import MediaPacer, short_file_note
from affedge.sdk.sources.live_queue import LiveQueue

#: frames a file source reads ahead of the inference loop
FILE_QUEUE = 8
#: a file's reader, once the queue was full, resumes when the loop has taken it down to this:
#: one wake-up per FILE_QUEUE - FILE_RESUME frames instead of one per frame (a wake-up costs
#: the GIL holder its core on a 2-core machine; benchmarks/bench_serve.py's hub spent ~4 % of
#: its GIL time in the per-frame notify)
FILE_RESUME = 4
#: pauses before reopening a failed live source (s); the last one repeats
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)


class SourceWorker:
    """Reads one source on its own thread. ``opener()`` returns an open video source (an object
    with ``read() -> VideoFrame | None``, ``is_live``, ``close()``); it is called again after a
    live source failed. ``notify()`` tells the hub a frame is ready (or the source ended).
    ``pace``: a file's frames are handed over no earlier than their media time after the first
    (ignored for live sources, which come at their own pace)."""

    def __init__(self, name: str, opener, notify, *, first=None, live: bool | None = None,
                 pace: bool = False):
        self.name = name
        self.pace = bool(pace)
        self._opener = opener
        self._notify = notify
        self._src = first
        self.live = bool(first.is_live) if first is not None else bool(live)
        self._frames: deque = deque()  # a file's frames
        self._live = LiveQueue()  # a live source's (affedge.sdk.sources.live_queue)
        self._lock = threading.Condition()
        self._reader_waits = False  # a file's reader waits for FILE_RESUME (see take())
        self._stop = threading.Event()
        self.ended = False
        self.error: str | None = None
        #: why a file source ended early (see ``short_file_note``), or None
        self.note: str | None = None
        self.state = "starting"
        self.reconnects = 0
        self.captured = 0
        self.captured_at = 0.0  # time.monotonic() of the newest frame read
        self.skipped = 0
        self._last_index: int | None = None
        self._thread = threading.Thread(target=self._run, name=f"affedge-capture-{name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    # ------------------------------------------------------------------ consumer side
    def ready(self) -> bool:
        with self._lock:
            return bool(self._frames) or bool(self._live)

    def take(self):
        """-> (frame, indices of the live frames skipped before it) or None."""
        with self._lock:
            frame = self._frames.popleft() if self._frames else self._live.pop()
            if frame is None:
                return None
            if self._reader_waits and len(self._frames) <= FILE_RESUME:
                self._reader_waits = False
                self._lock.notify_all()
        prev = self._last_index
        skipped = list(range(prev + 1, frame.index)) if prev is not None and self.live else []
        self.skipped += len(skipped)
        self._last_index = frame.index
        return frame, skipped

    def source(self):
        return self._src

    # ------------------------------------------------------------------ capture thread
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if self._src is None:
                try:
                    self._src = self._opener()
                    self.live = bool(getattr(self._src, "is_live", self.live))
                    if failures:
                        self.reconnects += 1
                        # said under -q too, as its failure was (a -q log looked broken)
                        report(f"affedge serve: source {self.name} is back")
                    self.error = None
                except Exception as exc:  # noqa: BLE001  (reported, retried)
                    if not self._retry(exc, failures):
                        break
                    failures += 1
                    continue
            self.state = "running"
            delivered = self.captured
            try:
                self._pump()
            except Exception as exc:  # noqa: BLE001
                self._close_source()
                if self._stop.is_set():  # stop() closed the source under a read(): not a
                    break                # failure of the source
                if self.captured > delivered:
                    failures = 0  # it ran again: a new outage starts at the first pause
                if not self._retry(exc, failures):
                    break
                failures += 1
                continue
            break  # end of a file
        self._close_source()
        with self._lock:
            self.ended = True
            if self.state != "failed":
                self.state = "stopped" if self._stop.is_set() else "ended"
        self._notify()

    def _retry(self, exc: BaseException, failures: int) -> bool:
        """Report the failure; sleep the backoff; False when the source is not retried."""
        self.error = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        if not self.live or self._stop.is_set():
            self.state = "failed"
            report(f"affedge serve: source {self.name}: {self.error}")
            return False
        pause = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
        self.state = "retrying"
        report(f"affedge serve: source {self.name}: {self.error}; retrying in {pause:g} s")
        self._notify()
        return not self._stop.wait(pause)

    def _pump(self) -> None:
        src = self._src
        pacer = MediaPacer()
        while not self._stop.is_set():
            frame = src.read()
            if frame is None:
                if self.live and not self._stop.is_set():
                    raise RuntimeError(f"{self.name} stopped delivering frames")
                # a file that ended well before the frames its container declares: said, as
                # affedge run says it (a truncated copy, a damaged recording)
                self.note = short_file_note(src, self.captured, None, self._stop.is_set())
                if self.note:
                    report(f"affedge serve: source {self.name}: {self.note}")
                return
            self.captured += 1
            self.captured_at = time.monotonic()
            if self.pace and not self.live:
                delay = pacer.delay(frame.t)
                if delay > 0 and self._stop.wait(delay):
                    return
            with self._lock:
                if self.live:  # a burst kept whole, the newest frame once the loop is behind
                    self._live.put(frame)
                else:
                    if len(self._frames) >= FILE_QUEUE:
                        self._reader_waits = True
                        while self._reader_waits and not self._stop.is_set():
                            self._lock.wait(0.1)
                    self._frames.append(frame)
            self._notify()

    def _close_source(self) -> None:
        src, self._src = self._src, None
        if src is not None:
            try:
                src.close()
            except Exception:  # noqa: BLE001, S110
                pass

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading and release the source (camera, stream, file)."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        src = self._src
        if src is not None:
            try:
                src.close()  # unblocks a read() waiting on a live source
            except Exception:  # noqa: BLE001, S110
                pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._close_source()


def report(msg: str) -> None:
    """A line on stderr that -q does not hide (failures and recoveries of sources; a URL's
    password hidden): :func:`affedge.log.warning`."""
    from affedge import log

    log.warning(msg)
