"""``-``: schema-1 JSONL records on standard output, one flushed line per frame."""
from __future__ import annotations

import sys

from affedge.sdk.sinks.base import Sink, record_json, register_sink


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
        self.stream.write(record_json(prediction, **extra) + "\n")
        self.stream.flush()
        self.rows += 1

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.flush()
