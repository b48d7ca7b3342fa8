"""``-``: schema-1 JSONL records on standard output, one flushed line per frame."""
from __future__ import annotations

import os
import sys

from affedge.sdk.sinks.base import Sink, record_json, register_sink


def silence_stdout() -> None:
    """Point this process's standard output at /dev/null: its reader left (``| head``), and
    the interpreter's last flush would otherwise report the broken pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


@register_sink("-")
class StdoutSink(Sink):
    """Writes to ``sys.stdout`` (never closes it); a closed pipe raises BrokenPipeError. With
    ``source`` (``affedge serve``), each record carries it, as the network sinks' do."""

    accepts_source = True

    def __init__(self, target: str = "-", stream=None):
        super().__init__()
        self.target = target
        self._stream = stream

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stdout

    def write(self, prediction, source: str | None = None) -> None:
        extra = {} if source is None else {"source": source}
        try:
            self.stream.write(record_json(prediction, **extra) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            if self._stream is None:
                silence_stdout()
            self.closed = True
            raise
        self.rows += 1

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.flush()
