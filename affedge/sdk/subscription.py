"""The iterator of ``Recognizer.predictions()``: a queue subscribed when the iterator is made."""
from __future__ import annotations

import queue

#: put on a subscriber's queue by ``Recognizer.close()``: the iteration ends
END = object()


class Subscription:
    """The iterator of :meth:`Recognizer.predictions`: subscribed when made."""

    def __init__(self, rec, timeout: float | None) -> None:
        self._rec = rec
        self._timeout = timeout
        self._q: queue.Queue = queue.Queue()
        self._open = True
        with rec._sub_lock:
            rec._subscribers.append(self._q)

    def __iter__(self):
        return self

    def __next__(self):
        if not self._open:
            raise StopIteration
        try:
            item = self._q.get(timeout=self._timeout)
        except queue.Empty:
            item = END
        if item is END:
            self.close()
            raise StopIteration
        return item

    def close(self) -> None:
        """End the subscription; a ``next()`` waiting on another thread returns at once (it
        waited forever: the queue left the subscribers, so not even ``Recognizer.close()``'s
        end marker reached it; found by a new-user trial's asyncio wrapper)."""
        if self._open:
            self._open = False
            with self._rec._sub_lock:
                if self._q in self._rec._subscribers:
                    self._rec._subscribers.remove(self._q)
            self._q.put(END)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110  (interpreter shutdown)
            pass
