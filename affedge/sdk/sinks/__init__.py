"""Where predictions go: one ``Sink`` interface, one module per kind, chosen by target.

``open_sink("out.csv")``, ``open_sink("out.jsonl")``, ``open_sink("-")`` (JSONL on stdout); new
kinds (``zmq://``, ``ws://``) are one module each that decorates its class with
``@register_sink("zmq")`` and is imported here. Every sink writes the same versioned record
(:func:`prediction_record`, ``"schema": 1``); see :mod:`affedge.sdk.sinks.base`.
"""
from affedge.sdk.sinks import files as _files  # noqa: F401  (registers .csv, .jsonl)
from affedge.sdk.sinks import stdout as _stdout  # noqa: F401  (registers -)
from affedge.sdk.sinks import ws as _ws  # noqa: F401  (registers ws://)
from affedge.sdk.sinks import zmq as _zmq  # noqa: F401  (registers zmq://)
from affedge.sdk.sinks.base import (
    SCHEMA,
    Sink,
    csv_row,
    csv_value,
    open_sink,
    prediction_record,
    record_json,
    register_sink,
    sink_key,
    supported_targets,
)

__all__ = ["SCHEMA", "Sink", "csv_row", "csv_value", "open_sink", "prediction_record",
           "record_json", "register_sink", "sink_key", "supported_targets"]
