"""The capture loop's front end: reads frames and begins their ticks, one frame ahead of the model.

``Recognizer.run`` splits each frame's tick in two (see
:meth:`affedge.sdk.engine.StreamingEngine.begin_tick`):

* the **front end** (read and decode the frame, feed the file audio up to its time, audio
  features, face detection, tracking, crops) depends only on earlier front ends;
* the **model** (encoder, step, Prediction) depends on this frame's front end and the earlier
  models.

:class:`FramePipeline` runs the front end of frame n+1 on a worker thread while the caller runs
frame n's model calls, so on two or more cores a frame costs about the longer of the two halves
instead of their sum (ONNX Runtime, OpenVINO, OpenCV and the decoder release the GIL). The
order of operations on every piece of state is the serial one, so the Predictions are the same
as without the worker (``tests/test_frame_pipeline.py`` compares them field by field). Each
frame's tick keeps a copy of its tracks, so the next frame's tracker update does not change
what this frame reports.

Anything else that changes the stream (``Recognizer.reset()`` or ``push_frame()`` from an
``on_prediction`` callback or another thread) bumps the Recognizer's *epoch*. A begun frame
whose epoch is out of date is begun again, and the rest of the run continues without the
worker. Frames the worker had read but not handed over are kept and begun in order.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: how many begun frames the worker may hold ready for the model (1: one frame ahead; more
#: only adds latency, since both halves run once per frame)
AHEAD = 1


@dataclass
class Begun:
    """A frame with its front end done: ``tick`` for the engine's model stage, the ``epoch`` it
    was begun in, or the ``error`` that stopped reading or beginning it."""

    frame: Any
    tick: Any = None
    epoch: int = 0
    error: BaseException | None = None


_END = object()


class FramePipeline:
    """Yields :class:`Begun` frames in order: ``read()`` gives the next frame (None at the end),
    ``begin(frame)`` runs its front end and returns the tick, ``epoch()`` the stream's current
    epoch. ``lock`` is held around each ``begin`` (and by whoever changes the stream).
    ``threaded=False`` does everything on the caller's thread (the same results; for one core).
    """

    def __init__(self, read: Callable[[], Any], begin: Callable[[Any], Any],
                 epoch: Callable[[], int], lock, *, threaded: bool = True,
                 ahead: int = AHEAD):
        self._read, self._begin, self._epoch, self._lock = read, begin, epoch, lock
        self._pending: list = []  # frames read but not begun (after the worker stopped)
        self._halt = threading.Event()
        self._q: queue.Queue = queue.Queue(maxsize=max(1, int(ahead)))
        self._leftover: list = []
        self._thread: threading.Thread | None = None
        self._ended = False
        self._epoch0 = epoch()  # the worker begins frames only while this is current
        if threaded:
            self._thread = threading.Thread(target=self._work, name="affedge-frontend",
                                            daemon=True)
            self._thread.start()

    @property
    def threaded(self) -> bool:
        """True while the worker thread runs the front end."""
        return self._thread is not None

    # ------------------------------------------------------------------ worker
    def _begin_now(self, frame, worker: bool = False) -> Begun | None:
        with self._lock:
            epoch = self._epoch()
            if worker and epoch != self._epoch0:
                return None  # the stream changed: the caller's thread takes over
            return Begun(frame, self._begin(frame), epoch)

    def _work(self) -> None:
        while not self._halt.is_set():
            try:
                frame = self._read()
            except BaseException as exc:  # noqa: BLE001  (handed to the caller's thread)
                self._put(Begun(None, error=exc))
                return
            if frame is None:
                self._put(_END)
                return
            if self._halt.is_set():
                self._leftover.append(frame)
                return
            try:
                item = self._begin_now(frame, worker=True)
            except BaseException as exc:  # noqa: BLE001
                item = Begun(frame, error=exc)
            if item is None:
                self._leftover.append(frame)
                return
            if not self._put(item) or item.error is not None:
                return

    def _put(self, item) -> bool:
        while not self._halt.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        if item is not _END:  # begun in the current epoch: handed over as it is
            self._leftover.append(item)
        else:
            self._ended = True
        return False

    def _stop_worker(self, timeout: float | None = None) -> bool:
        """Stop the worker; the frames it read but did not hand over go to ``_pending`` in
        order. False if it did not stop within ``timeout`` (blocked in a live read)."""
        if self._thread is None:
            return True
        self._halt.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self._thread = None
        queued = []
        while True:
            try:
                queued.append(self._q.get_nowait())
            except queue.Empty:
                break
        for item in queued + self._leftover:
            if item is _END:
                self._ended = True
            else:  # a Begun (kept as it is), or a frame read but not begun
                self._pending.append(item)
        self._leftover = []
        return True

    # ------------------------------------------------------------------ caller side
    def __iter__(self):
        return self

    def __next__(self) -> Begun:
        if self._thread is not None:
            while True:
                try:
                    item = self._q.get(timeout=0.05)
                    break
                except queue.Empty:
                    if not self._thread.is_alive():  # it stopped by itself: the stream
                        self._stop_worker()          # changed before it began a frame
                        return self.__next__()
            if item is _END:
                self._thread.join()
                self._thread = None
                raise StopIteration
            return item
        if self._pending:
            frame = self._pending.pop(0)
            if isinstance(frame, Begun):  # begun by the worker, or its read error
                return frame
        elif self._ended:
            raise StopIteration
        else:
            try:
                frame = self._read()
            except BaseException as exc:  # noqa: BLE001
                return Begun(None, error=exc)
            if frame is None:
                self._ended = True
                raise StopIteration
        try:
            return self._begin_now(frame)
        except BaseException as exc:  # noqa: BLE001
            return Begun(frame, error=exc)

    def current(self, item: Begun) -> Begun:
        """``item`` if its front end ran in the stream's current epoch; else the worker is
        stopped (the run goes on without it) and the frame is begun again now."""
        if item.error is not None or item.epoch == self._epoch():
            return item
        self._stop_worker()
        try:
            return self._begin_now(item.frame)
        except BaseException as exc:  # noqa: BLE001
            return Begun(item.frame, error=exc)

    def close(self, unblock: Callable[[], None] | None = None) -> None:
        """Stop the worker. ``unblock`` (e.g. closing a live source) is called when it does not
        stop at once, which happens only while it waits in ``read()``."""
        if not self._stop_worker(timeout=0.5):
            if unblock is not None:
                unblock()
            self._stop_worker(timeout=10.0)
