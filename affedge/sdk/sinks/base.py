"""The ``Sink`` interface, the registry of sink kinds and the one record schema they share.

A sink receives every :class:`~affedge.sdk.prediction.Prediction` of a stream, in order:
``write(p)`` once per frame (the row is flushed before it returns, so a reader or a kill sees
every frame already reported), ``flush()``, ``close()`` (flushes, fsyncs files, idempotent).

Sinks are chosen by a URL-like *target* (:func:`open_sink`): a path ending in a registered
suffix (``.csv``, ``.jsonl``), ``-`` (JSONL on stdout) or ``SCHEME://...`` for sinks that other
modules register with :func:`register_sink` (one file per sink kind, e.g. ``zmq``, ``ws``).

Record schema (:data:`SCHEMA` = 1), shared by every sink: ``{"schema": 1}`` followed by the fields
of :meth:`Prediction.to_dict` with their names unchanged (``faces``: one object per tracked face).
Non-finite numbers become ``null`` everywhere, nested lists included, and JSON text is strict
(``allow_nan=False``). CSV sinks write the flat fields (:attr:`Prediction.CSV_FIELDS`) with the
same null rule (an empty cell) and floats at full precision (``repr``: the shortest text that
reads back to the same double, so epoch or multi-day monotonic timestamps stay distinct).
"""
from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Callable
from typing import Any

SCHEMA = 1

_REGISTRY: dict[str, Callable[[str], Sink]] = {}


class Sink:
    """Receives Predictions; subclasses implement ``_write_record`` or override ``write``."""

    target: str = ""

    def __init__(self) -> None:
        self.rows = 0
        self.closed = False

    def write(self, prediction) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Push everything written so far to the destination."""

    def close(self) -> None:
        """Flush and release the destination (idempotent)."""
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def register_sink(key: str):
    """Class decorator: make ``open_sink`` build this sink for ``key``.

    ``key`` is a URL scheme (``"zmq"`` matches ``zmq://host:port``), a file suffix with its dot
    (``".csv"``) or ``"-"`` (stdout). The class is called with the target string."""
    k = key.lower()

    def deco(cls):
        if k in _REGISTRY and _REGISTRY[k] is not cls:
            raise ValueError(f"register_sink: {key!r} is registered already ({_REGISTRY[k]})")
        _REGISTRY[k] = cls
        return cls

    return deco


def as_sink(sink, where: str):
    """``sink`` itself when it can take Predictions (has ``write``), a target string or path
    opened with :func:`open_sink` (a file at its first row); TypeError naming ``where``
    otherwise."""
    if isinstance(sink, (str, os.PathLike)):
        target = os.fspath(sink)
        if target == "-" or "://" in target or not known_target(target):
            return open_sink(target)  # (an unknown kind: its refusal)
        parent = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"{where}: {target}: no folder {parent}")
        from affedge.sdk.sinks.combine import DeferredSink

        # created at its first row, as affedge run's --out: a run whose source never opened
        # leaves an earlier file at that path whole (it was truncated at once)
        return DeferredSink(target, create_if_empty=False)
    if not callable(getattr(sink, "write", None)):
        raise TypeError(f"{where} needs a Sink (an object with write(prediction)) or a "
                        f"target such as 'out.jsonl' or 'zmq://127.0.0.1:5556', got "
                        f"{type(sink).__name__}")
    return sink


def takes_source(sink) -> bool:
    """Whether ``sink.write`` takes the source name (``accepts_source``, or a ``source``
    parameter in its signature)."""
    import inspect

    if getattr(sink, "accepts_source", False):
        return True
    try:
        return "source" in inspect.signature(sink.write).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


#: the longest source name: it tags every record (a 100,000-character name made 60 MB of JSONL
#: for one 600-frame clip) and a ZeroMQ subscription to it must fit the PUB socket's
#: ``MAXMSGSIZE`` (affedge.sdk.sinks.zmq.MAX_SUBSCRIPTION)
MAX_SOURCE_NAME = 64


def check_source_name(name: str) -> str:
    """``name`` when it can tag records (a ZeroMQ topic, a dashboard panel, a ROS name after
    the bridge's clean-up): 1-:data:`MAX_SOURCE_NAME` letters, digits, '-', '_' or '.', not
    starting with '_' (topics starting with '_' are the hub's own, e.g. ``_status``);
    ValueError otherwise."""
    if not isinstance(name, str) or not name or \
            not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or \
            name.startswith("_"):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 80 else \
            repr(name[:40]) + "..."
        raise ValueError(f"source name {shown}: use letters, digits, '-', '_' or '.' "
                         f"(not starting with '_')")
    if len(name) > MAX_SOURCE_NAME:
        raise ValueError(f"source name {name[:40]!r}... is {len(name)} characters long; at "
                         f"most {MAX_SOURCE_NAME}")
    return name


def same_file(a, b) -> bool:
    """Whether the targets ``a`` and ``b`` name one file: the same file when both exist
    (symlinks and hard links too), else the same real path (a file not made yet)."""
    if not all(isinstance(x, (str, os.PathLike)) and is_file_target(x) for x in (a, b)):
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_same_file(target, sinks) -> None:
    """ValueError when ``target`` names the file of one of ``sinks`` (a Hub trial's two
    outputs to one file through a symlink lost a row)."""
    for x in sinks:
        other = getattr(x, "target", None)
        if same_file(target, other):
            raise ValueError(f"Hub.add_sink: {os.fspath(target)} is the file of another "
                             f"output ({os.fspath(other)})")


def is_file_target(target) -> bool:
    """``target`` names a file (not ``-``, not a ``scheme://`` address)."""
    t = os.fspath(target)
    return t != "-" and "://" not in t


def sink_key(target: str) -> str:
    """The registry key of ``target``: ``-``, the URL scheme, or the lowercased file suffix."""
    t = os.fspath(target)
    if t == "-":
        return "-"
    if "://" in t:
        return t.split("://", 1)[0].lower()
    return os.path.splitext(t)[1].lower()


def known_target(target) -> bool:
    """A sink is registered for ``target``'s kind (nothing is opened)."""
    return sink_key(os.fspath(target)) in _REGISTRY


def supported_targets() -> str:
    keys = sorted(_REGISTRY)
    files = [k for k in keys if k.startswith(".")]
    schemes = [f"{k}://..." for k in keys if k not in files and k != "-"]
    return ", ".join(["a path ending in " + " or ".join(files)]
                     + (["'-' (JSONL on stdout)"] if "-" in _REGISTRY else []) + schemes)


#: schemes people reach for, and what to write instead
_SCHEME_HINTS = {"tcp": "ZeroMQ outputs are zmq://HOST:PORT (subscribers connect to "
                        "tcp://HOST:PORT)",
                 "wss": "the ws:// output has no TLS; put a TLS proxy in front of it",
                 "http": "the dashboard is served by a ws://HOST:PORT output"}


def unknown_kind(target) -> str:
    """The reason ``target`` has no sink: ``unknown output kind; use ...`` and a hint for a
    scheme people reach for (tcp:// for ZeroMQ)."""
    hint = _SCHEME_HINTS.get(sink_key(os.fspath(target)))
    return f"unknown output kind; use {supported_targets()}" + (f"; {hint}" if hint else "")


def open_sink(target) -> Sink:
    """A sink for ``target`` (see the module docstring); ValueError for an unknown kind."""
    t = os.fspath(target)
    cls = _REGISTRY.get(sink_key(t))
    if cls is None:
        raise ValueError(f"{t!r}: {unknown_kind(t)}")
    return cls(t)


def _clean(v: Any) -> Any:
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item"):  # numpy scalar of another kind
        return _clean(v.item())
    raise TypeError(f"prediction record: cannot serialise {type(v).__name__}")


def prediction_record(p, include_faces: bool = True, **extra) -> dict[str, Any]:
    """The schema-1 record of Prediction ``p`` (non-finite -> None, nested too); ``extra``
    fields (e.g. ``source``) follow ``schema``."""
    rec: dict[str, Any] = {"schema": SCHEMA}
    rec.update(extra)
    rec.update(p.to_dict(include_faces=include_faces))
    return _clean(rec)


def record_json(p, **extra) -> str:
    """One line of strict JSON for Prediction ``p`` (no newline)."""
    return json.dumps(prediction_record(p, **extra), allow_nan=False, separators=(",", ":"))


def csv_value(v: Any) -> str:
    """A CSV cell: '' for None/non-finite, 1/0 for booleans, ``repr`` for floats."""
    v = _clean(v)
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def csv_row(p) -> list[str]:
    """The cells of ``Prediction.CSV_FIELDS`` for ``p``."""
    d = p.to_dict(include_faces=False)
    return [csv_value(d[k]) for k in p.CSV_FIELDS]
