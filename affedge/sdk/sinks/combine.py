"""Sinks made of sinks: a file opened only at its first row, and several targets at once.

``DeferredSink(target)`` creates (truncates) its file when the first Prediction arrives, or at
a clean :meth:`close` with none (``create_if_empty=False``: not even then, as ``affedge
serve``, whose every stop is clean, uses it); :meth:`DeferredSink.abandon` (a run that failed
before its first frame: a source that does not open, a missing microphone) leaves an earlier
file at the same path whole. ``SinkGroup([...])`` writes every Prediction to each member, in
order; an ``OSError`` is raised with ``target`` naming the member that failed.
"""
from __future__ import annotations

import os

from affedge.sdk.sinks.base import _REGISTRY, Sink, open_sink, sink_key, takes_source


class DeferredSink(Sink):
    """``open_sink(target)`` at the first write (see the module docstring)."""

    def __init__(self, target: str, opener=open_sink, create_if_empty: bool = True) -> None:
        super().__init__()
        self.target = target
        self._opener = opener
        self._sink: Sink | None = None
        self.create_if_empty = bool(create_if_empty)
        # the hub tags records with their source when the sink class this target opens does
        cls = _REGISTRY.get(sink_key(os.fspath(target)))
        self.accepts_source = bool(cls is not None and takes_source(cls))

    @property
    def opened(self) -> bool:
        """Whether the file was created (truncated)."""
        return self._sink is not None

    def _open(self) -> Sink:
        if self._sink is None:
            self._sink = self._opener(self.target)
        return self._sink

    def write(self, prediction, **kw) -> None:
        sink = self._open()
        sink.write(prediction, **kw)
        self.rows = sink.rows

    def flush(self) -> None:
        if self._sink is not None:
            self._sink.flush()

    def close(self) -> None:
        """A clean end: the file exists even with no row (a header-only CSV, an empty JSONL),
        unless ``create_if_empty`` is False (then an earlier file there stays whole)."""
        if not self.closed and (self._sink is not None or self.create_if_empty):
            self._open().close()
        self.closed = True

    def abandon(self) -> None:
        """A failed run: close what was opened; a file never opened is left as it was."""
        if self._sink is not None and not self.closed:
            self._sink.close()
        self.closed = True


class SinkGroup(Sink):
    """Every Prediction to each member sink, in order."""

    def __init__(self, sinks: list[Sink]) -> None:
        super().__init__()
        if not sinks:
            raise ValueError("SinkGroup needs at least one sink")
        self.sinks = list(sinks)
        self.target = ", ".join(s.target for s in self.sinks)

    def _each(self, fn) -> None:
        for s in self.sinks:
            try:
                fn(s)
            except OSError:
                self.target = s.target  # the error message names the member that failed
                raise

    def write(self, prediction, **kw) -> None:
        self._each(lambda s: s.write(prediction, **kw))
        self.rows = min(s.rows for s in self.sinks)

    def flush(self) -> None:
        self._each(lambda s: s.flush())

    def close(self) -> None:
        """Close every member (all of them, even when one fails; the first error is raised)."""
        if self.closed:
            return
        self.closed = True
        first = None
        for s in self.sinks:
            try:
                s.close()
            except OSError as exc:
                if first is None:
                    first, self.target = exc, s.target
        if first is not None:
            raise first

    def abandon(self) -> None:
        self.closed = True
        for s in self.sinks:
            try:
                abandon(s)
            except OSError:
                pass


def abandon(sink) -> None:
    """End ``sink`` after a failed run: its ``abandon()`` where it has one (a file not yet
    written stays as it was), else ``close()``."""
    getattr(sink, "abandon", sink.close)()


__all__ = ["DeferredSink", "SinkGroup", "abandon"]
