"""The sinks a Recognizer publishes to: one delivery callback each, let go once the sink closes."""
from __future__ import annotations


def delivery(sink, source: str | None, let_go):
    """``callback(prediction)`` writing to ``sink`` (tagged with ``source`` where the sink takes
    one); once the app has closed the sink (``sink.closed``), it writes nothing and calls
    ``let_go(sink)`` instead: a closed file is no reason to fail every later frame."""
    from affedge.sdk.sinks.base import takes_source

    tagged = takes_source(sink)

    def deliver(p) -> None:
        if getattr(sink, "closed", False):
            let_go(sink)
        elif tagged:
            sink.write(p, source=source)
        else:
            sink.write(p)

    deliver.sink = sink
    return deliver


def drop_sink(callbacks: list, sinks: list, sink) -> None:
    """Remove ``sink``'s delivery callback and the sink itself from the two lists, in place."""
    callbacks[:] = [cb for cb in callbacks if getattr(cb, "sink", None) is not sink]
    sinks[:] = [s for s in sinks if s is not sink]
