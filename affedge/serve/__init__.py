"""``affedge serve``: several sources on one backend, predictions out over ZeroMQ/WebSocket.

:class:`Hub` is the Python API (add sources and sinks, start, stop); :mod:`.config` reads the
TOML file form of the command; :mod:`.batching` runs one inference tick over several sources;
:mod:`.capture` reads each source on its own thread. The sinks (``zmq://``, ``ws://`` with the
dashboard page) live with the other sinks in :mod:`affedge.sdk.sinks`.
"""
from affedge.serve.hub import Hub

__all__ = ["Hub"]
