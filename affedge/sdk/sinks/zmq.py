"""``zmq://HOST:PORT``: schema-1 records on a ZeroMQ PUB socket, one topic per source.

Each message has two frames: the topic (the source's name, UTF-8; ``"default"`` for a single
unnamed stream) and one strict-JSON schema-1 record (:func:`~affedge.sdk.sinks.base.record_json`
with ``source`` added). A subscriber picks sources by topic prefix (``SUBSCRIBE b"cam0"``) or
takes all (``b""``). Hub status lines go to the topic ``_status``.

The socket binds (the subscribers connect): ``zmq://127.0.0.1:5556``; port 0 (or ``*``) lets
the system pick one, read back from :attr:`ZmqSink.endpoint`. ZeroMQ PUB never blocks the
writer: a subscriber slower than the stream loses messages beyond ``SNDHWM`` (ZeroMQ's own
policy for PUB sockets); a subscriber that sends a message over :data:`MAX_SUBSCRIPTION` bytes
is disconnected. PUB/SUB has no authentication, so only loopback addresses are bound
unless ``allow_remote=True`` (the serve command refuses remote ZeroMQ binds; use an SSH tunnel
or the token-checked WebSocket sink).

Needs ``pyzmq`` (``pip install 'affedge[serve]'``), imported when a sink is opened.
"""
from __future__ import annotations

import ipaddress
import json

from affedge.sdk.sinks.base import Sink, _clean, record_json, register_sink

#: messages queued per subscriber before ZeroMQ drops new ones for it (about 30 s at 30 fps
#: for each of 4 sources)
SEND_HWM = 4096
#: how long close() waits to hand queued messages to connected subscribers (ms)
CLOSE_LINGER_MS = 1000
STATUS_TOPIC = "_status"
#: the largest message a subscriber may send (its subscriptions: a topic prefix each): the
#: socket's ``MAXMSGSIZE``, over which ZeroMQ drops the peer. Without it, a local process
#: sending 20 subscriptions of 10 MiB each grew serve's memory from 388 MiB to 10.9 GB and
#: stalled its loop (a security trial); topics are at most MAX_SOURCE_NAME characters
MAX_SUBSCRIPTION = 1024
DEFAULT_TOPIC = "default"


def parse_host_port(target: str, scheme: str) -> tuple[str, int]:
    """``scheme://HOST:PORT[/...]`` -> (host, port); ValueError with the target otherwise.
    ``*`` as the port means 0 (any free port)."""
    from urllib.parse import urlsplit

    u = urlsplit(target)
    if u.scheme.lower() != scheme or not u.hostname:
        raise ValueError(f"{target!r}: expected {scheme}://HOST:PORT")
    netloc = u.netloc.rsplit("@", 1)[-1]
    if netloc.endswith(":*"):
        return u.hostname, 0
    try:
        port = u.port
    except ValueError:
        raise ValueError(f"{target!r}: the port must be a number in 0-65535") from None
    if port is None:
        raise ValueError(f"{target!r}: give a port ({scheme}://{u.hostname}:PORT)")
    return u.hostname, int(port)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@register_sink("zmq")
class ZmqSink(Sink):
    """ZeroMQ PUB sink (see the module docstring). Written from one thread at a time."""

    accepts_source = True

    def __init__(self, target: str, *, allow_remote: bool = False, context=None):
        super().__init__()
        try:
            import zmq
        except ImportError as exc:
            raise ImportError("zmq:// outputs need pyzmq: pip install 'affedge[serve]'") from exc
        self.target = target
        host, port = parse_host_port(target, "zmq")
        if not allow_remote and not is_loopback(host):
            raise ValueError(f"{target!r}: ZeroMQ PUB has no authentication, so only loopback "
                             f"addresses are bound (use an SSH tunnel, or ws:// with --token)")
        self._zmq = zmq
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        self._sock.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION)
        addr = f"[{host}]" if ":" in host else host
        try:
            if ":" in host:
                self._sock.setsockopt(zmq.IPV6, 1)
            self._sock.bind(f"tcp://{addr}:{port or '*'}")
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise OSError(f"{target}: cannot bind ({exc})") from None
        #: the bound endpoint, e.g. ``tcp://127.0.0.1:5556`` (the real port when 0 was asked)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.port = int(self.endpoint.rsplit(":", 1)[1])
        self.url = f"zmq://{addr}:{self.port}"

    def write(self, prediction, source: str | None = None) -> None:
        topic = source or DEFAULT_TOPIC
        text = record_json(prediction, source=topic)
        self._send(topic, text)
        self.rows += 1

    def publish_status(self, status: dict) -> None:
        """Send a hub status object on the ``_status`` topic."""
        self._send(STATUS_TOPIC, json.dumps(_clean(status), allow_nan=False, separators=(",", ":")))

    def _send(self, topic: str, text: str) -> None:
        if self.closed:
            raise ValueError(f"{self.target}: the sink is closed")
        self._sock.send_multipart([topic.encode(), text.encode()], copy=False)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._sock.close(CLOSE_LINGER_MS)  # hands queued messages over, then releases the port
