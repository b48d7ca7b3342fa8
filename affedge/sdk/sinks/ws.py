"""``ws://HOST:PORT``: schema-1 records to WebSocket clients, and the dashboard page over HTTP.

One server (the ``websockets`` library on its own thread and asyncio loop) answers both on the
same port: a WebSocket handshake (any path) subscribes to every record; a plain HTTP GET
serves the static files of ``static_dir`` (default: the dashboard shipped in
``affedge/assets/dashboard``; ``/`` is ``index.html``; nothing outside that folder), and two
JSON answers for scripts and health probes (see :meth:`WebSocketSink.health`): ``/status``,
the newest hub status message (503 before the first), and ``/health``, 200 ``{"ok": true}``
or 503 ``{"ok": false, "reason": ...}``. Both need the token when one is set.

Messages to clients, one JSON text each: a prediction is the schema-1 record
(:func:`~affedge.sdk.sinks.base.record_json`, ``source`` added); ``{"type": "status", ...}``
carries hub status (per-source fps, latency, errors); ``{"type": "hello", "schema": 1}`` is the
first message. Clients may send ``{"type": "ping"}`` (answered ``{"type": "pong"}``); anything
else is ignored and counted (``malformed``), messages over :data:`MAX_CLIENT_MESSAGE` bytes are
ignored and counted (``oversized``); over :data:`MAX_FRAME` the connection is closed (1009).

Pressure: :meth:`WebSocketSink.write` only hands the text to the server's loop (the caller never
waits for a client). Each client has a queue of ``queue_size`` messages; when a slow client's
queue is full the oldest message is dropped for that client and counted (``dropped``).

Safety: binds loopback unless the target names another address, and then a ``token`` is
required. With a token, a WebSocket client must present it (``?token=...`` in the URL or
``Authorization: Bearer ...``), else the handshake is refused (401, counted); the dashboard
page itself carries no data. A handshake whose ``Origin`` header is not this server's own
page (``http://127.0.0.1:PORT``, ``http://localhost:PORT``, the bound address, or
``allowed_origins``) is refused (403, counted); clients that send no Origin (robots, scripts)
are accepted. Also refused, and counted: on a loopback bind a ``Host`` that is not a loopback
name (421, DNS rebinding), methods other than GET/HEAD (405), repeated Host/Origin/
Authorization headers (400), connections beyond :func:`connection_cap` (closed at once), and,
off loopback, an address's wrong tokens beyond :data:`MAX_TOKEN_FAILURES` a minute (429). A
non-loopback bind needs a token of :data:`MIN_REMOTE_TOKEN` characters or more. Answers carry
no ``Server`` header and forbid framing.

Needs ``websockets`` >= 13 (``pip install 'affedge[serve]'``), imported when a sink is opened.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import mimetypes
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from affedge.sdk.sinks.base import Sink, _clean, record_json, register_sink
from affedge.sdk.sinks.zmq import DEFAULT_TOPIC, is_loopback, parse_host_port

_log = logging.getLogger(__name__)
DASHBOARD_DIR = Path(__file__).resolve().parent.parent.parent / "assets" / "dashboard"
#: messages queued per client before the oldest is dropped (~2 s of 4 sources at 30 fps)
DEFAULT_QUEUE = 256
#: client messages larger than this are ignored (the protocol has nothing this long)
MAX_CLIENT_MESSAGE = 4096
#: a client frame larger than this closes the connection (websockets' max_size, code 1009)
MAX_FRAME = 1 << 20
#: how long close() lets clients receive what is queued for them (s)
CLOSE_DRAIN_S = 1.0
#: at close, how long the clients get to answer the closing handshake (and the connection
#: tasks to end) before the connections of clients that stopped reading are dropped
CLOSE_HANDSHAKE_S = 1.0


#: refusals said on the log per sink (one per origin, one for the token), then only counted
MAX_REFUSAL_NOTES = 8
#: /health is 503 when the newest hub status is older than this (s): the hub sends one a second
#: (affedge.serve.hub.STATUS_EVERY_S), so its loop has stopped publishing
STATUS_STALE_S = 5.0
#: source states that make /health 503 (affedge.serve.hub: a live source with no frame for
#: 1 s, one whose read gave up and is reopened with backoff, one that failed)
UNHEALTHY_STATES = ("stalled", "retrying", "failed")
#: /health is 503 while a source is still "starting" this long after the hub started (a
#: Hub trial: a URL that never answered read healthy for its whole 10 s open timeout)
STARTING_GRACE_S = 5.0
#: open TCP connections (clients, handshakes in progress, HTTP requests) beyond which a new one
#: is closed at once (counted ``rejected_busy``). A security trial held 400 half-sent requests
#: under ``ulimit -n 256``: the process ran out of file handles and the inference loop died.
#: 256 leaves room for the issue's 50 dashboard clients five times over; a process allowed
#: fewer than 512 open files gets half of its limit (:func:`connection_cap`).
MAX_CONNECTIONS = 256
#: wrong tokens per client address in TOKEN_WINDOW_S after which that address gets 429 without
#: a check until the window has passed (1500 guesses took 0.8 s before). Loopback clients are
#: exempt: they share one address, and a kiosk tab left with an old token would lock a robot
#: on the same machine out (a short token there gets a warning instead).
MAX_TOKEN_FAILURES = 10
TOKEN_WINDOW_S = 60.0
#: the shortest token accepted for a non-loopback bind (a shorter one is easy to guess)
MIN_REMOTE_TOKEN = 16


#: a client whose socket holds less than this unsent (bytes) and has nothing queued gets each
#: message written straight to its socket, encoded once for all such clients (no task switch)
DIRECT_WRITE_LIMIT = 1 << 16


class _Client:
    __slots__ = ("busy", "dropped", "queue", "wake", "ws")

    def __init__(self, ws, size: int):
        from collections import deque

        self.ws = ws
        self.queue: deque = deque(maxlen=size)
        self.dropped = 0
        self.wake = asyncio.Event()
        self.busy = False  # its sender task is writing from the queue


@register_sink("ws")
class WebSocketSink(Sink):
    """WebSocket server sink + dashboard (see the module docstring)."""

    accepts_source = True

    def __init__(self, target: str, *, token: str | None = None,
                 allowed_origins=(), static_dir=DASHBOARD_DIR,
                 queue_size: int = DEFAULT_QUEUE, start_timeout: float = 10.0):
        super().__init__()
        try:
            import websockets  # noqa: F401
            from websockets.asyncio.server import serve  # noqa: F401  (>= 13)
        except ImportError as exc:
            raise ImportError("ws:// outputs need websockets >= 13: "
                              "pip install 'affedge[serve]'") from exc
        self.target = target
        self.host, port = parse_host_port(target, "ws")
        if not is_loopback(self.host) and not token:
            raise ValueError(f"{target!r}: binding a non-loopback address needs a token "
                             "(affedge serve: --token or --token-file; Python: "
                             "affedge.sdk.sinks.ws.WebSocketSink(target, token=...))")
        if not is_loopback(self.host) and len(token) < MIN_REMOTE_TOKEN:
            raise ValueError(f"{target!r}: a token for a non-loopback bind needs at least "
                             f"{MIN_REMOTE_TOKEN} characters, this one has {len(token)} "
                             "(python -c 'import secrets; print(secrets.token_urlsafe(24))')")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.token = token or None
        self.queue_size = int(queue_size)
        self._extra_origins = {o.rstrip("/") for o in allowed_origins}
        self._files = {}
        if static_dir is not None and Path(static_dir).is_dir():
            self._files = {p.name: p for p in Path(static_dir).iterdir() if p.is_file()}
        self.counters = {"clients_total": 0, "dropped": 0, "malformed": 0, "oversized": 0,
                         "rejected_origin": 0, "rejected_token": 0, "rejected_host": 0,
                         "rejected_method": 0, "rejected_busy": 0, "throttled": 0,
                         "sent": 0, "http": 0}
        self._open = 0  # TCP connections open now (see MAX_CONNECTIONS)
        self._token_failures: dict[str, list[float]] = {}  # address -> times of wrong tokens
        self._clients: set[_Client] = set()
        self._status_text: str | None = None
        self._status: dict | None = None
        self._refusals_said: set[str] = set()
        self._status_at = 0.0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve_forever, args=(port,),
                                        name="affedge-ws", daemon=True)
        self._thread.start()
        if not self._started.wait(start_timeout) or self._error is not None:
            self._stop_loop()
            raise OSError(f"{target}: cannot serve ({self._error or 'no answer'})")
        addr = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"ws://{addr}:{self.port}"
        self.http_url = f"http://{addr}:{self.port}/"
        self._origins = {f"http://{h}:{self.port}" for h in ("127.0.0.1", "localhost",
                                                             "[::1]", addr)}

    # ------------------------------------------------------------------ pipeline side
    def write(self, prediction, source: str | None = None) -> None:
        self._post(record_json(prediction, source=source or DEFAULT_TOPIC))
        self.rows += 1

    def publish_status(self, status: dict) -> None:
        """Send a hub status object to every client (and to each new client first)."""
        # (with this output's own counters: clients, refused, dropped, malformed)
        text = json.dumps(_clean({"type": "status", **status, "ws": self.stats()}),
                          allow_nan=False, separators=(",", ":"))
        self._status_text, self._status = text, status
        self._status_at = time.monotonic()
        self._post(text)

    def health(self) -> tuple[bool, str]:
        """``(ok, reason)`` from the newest hub status: not ok before the first one, when it
        is older than :data:`STATUS_STALE_S`, when a source is in one of
        :data:`UNHEALTHY_STATES` or an output failed (a Recognizer that only publishes sends no
        status: never ok)."""
        st, age = self._status, time.monotonic() - self._status_at
        if st is None:
            return False, "no hub status yet"
        if age > STATUS_STALE_S:
            return False, f"the newest hub status is {age:.0f} s old"
        up = float(st.get("uptime_s") or 0.0)
        bad = [f"{name} {src.get('state')}" for name, src in (st.get("sources") or {}).items()
               if src.get("state") in UNHEALTHY_STATES]
        bad += [f"{name} still starting after {up:.0f} s" for name, src in
                (st.get("sources") or {}).items()
                if src.get("state") == "starting" and up > STARTING_GRACE_S]
        if st.get("failed_outputs"):
            bad.append("failed outputs: " + ", ".join(map(str, st["failed_outputs"])))
        return (not bad), "; ".join(bad) or "ok"

    def _post(self, text: str) -> None:
        if self.closed:
            raise ValueError(f"{self.target}: the sink is closed")
        self._loop.call_soon_threadsafe(self._fanout, text)

    @property
    def clients(self) -> int:
        return len(self._clients)

    def stats(self) -> dict:
        return {"clients": self.clients, **self.counters}

    # ------------------------------------------------------------------ server loop
    def _serve_forever(self, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start(port))
        except BaseException as exc:  # noqa: BLE001  (reported by __init__)
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()

    async def _start(self, port: int) -> None:
        from websockets.asyncio.server import serve

        self._server = await serve(self._handle, self.host, port, max_size=MAX_FRAME,
                                   process_request=self._process_request, compression=None,
                                   ping_interval=20, ping_timeout=20, server_header=None,
                                   create_connection=_capped_connection(self))
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])

    def _fanout(self, text: str) -> None:
        """Every client gets ``text``: written now to the clients that keep up (one encoding,
        websockets' ``broadcast``), queued for the others (the oldest dropped when full)."""
        from websockets.asyncio.connection import broadcast

        direct = []
        for c in self._clients:
            transport = c.ws.transport
            if not c.queue and not c.busy and transport is not None and \
                    transport.get_write_buffer_size() < DIRECT_WRITE_LIMIT:
                direct.append(c.ws)
                continue
            if len(c.queue) == c.queue.maxlen:
                c.dropped += 1
                self.counters["dropped"] += 1
            c.queue.append(text)  # a full deque drops its oldest item
            c.wake.set()
        if direct:
            broadcast(direct, text.encode(), text=True)
            self.counters["sent"] += len(direct)

    async def _handle(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        client = _Client(ws, self.queue_size)
        client.queue.append(json.dumps({"type": "hello", "schema": 1}))
        if self._status_text is not None:
            client.queue.append(self._status_text)
        client.wake.set()
        self._clients.add(client)
        self.counters["clients_total"] += 1
        sender = asyncio.create_task(self._send_loop(client))
        try:
            async for msg in ws:
                self._on_message(client, msg)
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == 1009:  # over MAX_FRAME
                self.counters["oversized"] += 1
        finally:
            self._clients.discard(client)
            sender.cancel()

    async def _send_loop(self, client: _Client) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                await client.wake.wait()
                client.wake.clear()
                client.busy = True
                while client.queue:
                    await client.ws.send(client.queue.popleft())
                    self.counters["sent"] += 1
                client.busy = False
        except ConnectionClosed:
            pass

    def _on_message(self, client: _Client, msg) -> None:
        if len(msg) > MAX_CLIENT_MESSAGE:
            self.counters["oversized"] += 1
            return
        try:
            kind = json.loads(msg).get("type")
        except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
            kind = None  # (RecursionError: 3 kB of "[[[...]]]" nests past Python's limit)
        if kind == "ping":
            client.queue.append('{"type":"pong"}')
            client.wake.set()
        else:
            self.counters["malformed"] += 1

    def _process_request(self, connection, request):
        headers = request.headers
        for name in ("Host", "Origin", "Authorization", "Upgrade"):
            if len(headers.get_all(name)) > 1:  # (which one would count?)
                self.counters["malformed"] += 1
                return connection.respond(400, f"more than one {name} header\n")
        if not self._host_ok(headers.get("Host")):
            # a loopback server answers only to its loopback names: a page on another site
            # whose name was made to resolve to 127.0.0.1 (DNS rebinding) sends its own name
            self.counters["rejected_host"] += 1
            return connection.respond(421, "this server answers to 127.0.0.1 or localhost\n")
        method = getattr(request, "method", "GET")  # (websockets < 17: GET only, no field)
        if method not in ("GET", "HEAD"):
            self.counters["rejected_method"] += 1
            resp = connection.respond(405, "only GET and HEAD\n")
            resp.headers["Allow"] = "GET, HEAD"
            return resp
        origin = headers.get("Origin")
        if origin is not None and not self._origin_ok(origin, headers.get("Host")):
            self.counters["rejected_origin"] += 1
            self._say_refused(f"origin {origin}", f"a page at {origin} is not this server's own "
                              f"page; to let it connect: --allow-origin {origin} (serve's "
                              f"allow_origin key; Python: allowed_origins=)")
            return connection.respond(403, "origin not allowed\n")
        if "websocket" not in headers.get("Upgrade", "").lower():
            self.counters["http"] += 1
            route = urlsplit(request.path).path
            if route in ("/status", "/health"):
                refused = self._check_token(connection, request)
                if refused is not None:
                    return refused
                return _head(request, self._json_answer(route))
            return _head(request, self._static(connection, request.path))
        return self._check_token(connection, request)

    def _check_token(self, connection, request):
        """None when no token is set or the request presents it; else the refusal: 401, or
        429 for an address that gave MAX_TOKEN_FAILURES wrong ones in TOKEN_WINDOW_S."""
        if self.token is None:
            return None
        peer = str((connection.remote_address or ("?",))[0])
        counted = not is_loopback(peer)  # (loopback clients are not throttled: see above)
        now = time.monotonic()
        times = [t for t in self._token_failures.get(peer, ()) if now - t < TOKEN_WINDOW_S]
        if len(times) >= MAX_TOKEN_FAILURES:
            self.counters["throttled"] += 1
            wait = int(TOKEN_WINDOW_S - (now - times[0])) + 1
            resp = connection.respond(429, f"too many wrong tokens; try again in {wait} s\n")
            resp.headers["Retry-After"] = str(wait)
            return resp
        if self._token_ok(request):
            return None
        self.counters["rejected_token"] += 1
        if counted:
            if len(self._token_failures) >= 4096:  # (bounded: the oldest addresses go)
                for key in list(self._token_failures)[:1024]:
                    del self._token_failures[key]
            self._token_failures[peer] = times + [now]
        self._say_refused("token", f"missing or wrong token from {peer} "
                          "(?token=... in the URL, #token=... for the dashboard page, or "
                          "Authorization: Bearer)")
        return connection.respond(401, "missing or wrong token\n")

    def _host_ok(self, host: str | None) -> bool:
        """A loopback bind: the Host header names a loopback address or ``localhost`` (or is
        absent: HTTP/1.0 scripts). Any Host for other binds (their names vary; the token
        guards them)."""
        if host is None or not is_loopback(self.host):
            return True
        name = host.strip().lower()
        if name.startswith("["):
            name = name[1:name.find("]")] if "]" in name else name
        else:
            name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
        return name.rstrip(".") == "localhost" or is_loopback(name)

    def _say_refused(self, key: str, why: str) -> None:
        """One warning per kind of refusal (per origin), so that a refused page is not silent
        and a client retrying every second does not flood the log; the counters keep count."""
        if key in self._refusals_said or len(self._refusals_said) >= MAX_REFUSAL_NOTES:
            return
        self._refusals_said.add(key)
        _log.warning("%s refused a WebSocket client: %s", self.target, why)

    def _origin_ok(self, origin: str, host: str | None) -> bool:
        o = origin.rstrip("/")
        if o in self._origins or o in self._extra_origins:
            return True
        # a non-loopback bind (token required) also serves its page under the LAN address
        return (not is_loopback(self.host) and host is not None and o == f"http://{host}")

    def _token_ok(self, request) -> bool:
        given = parse_qs(urlsplit(request.path).query).get("token", [""])[0]
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _json_answer(self, route: str):
        if route == "/status":
            body, code = self._status_text, 200
            if body is None:
                body, code = '{"type":"status","error":"no hub status yet"}', 503
        else:
            ok, reason = self.health()
            body = json.dumps({"ok": ok, "reason": reason}, separators=(",", ":"))
            code = 200 if ok else 503
        return _response(code, body.encode() + b"\n", "application/json")

    def _static(self, connection, path: str):
        name = urlsplit(path).path.lstrip("/") or "index.html"
        f = self._files.get(name)
        if f is None:
            return connection.respond(404, "not found\n")
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return _response(200, f.read_bytes(), ctype)

    # ------------------------------------------------------------------ shutdown
    def flush(self, timeout: float = CLOSE_DRAIN_S) -> None:
        """Wait (at most ``timeout`` s) until every client's queue was handed to its socket."""
        if self.closed or not self._thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self._drain(timeout), self._loop)
        try:
            fut.result(timeout + 1.0)
        except Exception:  # noqa: BLE001, S110
            pass

    async def _drain(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while any(c.queue for c in self._clients) and loop.time() < end:
            await asyncio.sleep(0.01)

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        self._stop_loop()

    async def _shutdown(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.close()  # closes client connections with 1001 (going away)
            try:
                await asyncio.wait_for(server.wait_closed(), CLOSE_HANDSHAKE_S)
            except asyncio.TimeoutError:
                # a client that does not read never completes the closing handshake, and its
                # connection task waited on it past the loop's end ("Task was destroyed but
                # it is pending", one traceback per client): drop those connections now
                for conn in list(getattr(server, "connections", ())) + \
                        [c.ws for c in self._clients]:
                    transport = getattr(conn, "transport", None)
                    if transport is not None:
                        transport.abort()
                try:
                    await asyncio.wait_for(server.wait_closed(), CLOSE_HANDSHAKE_S)
                except asyncio.TimeoutError:
                    pass
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:  # handshakes in progress, senders
            t.cancel()
        if rest:
            await asyncio.wait(rest, timeout=CLOSE_HANDSHAKE_S)

    def _stop_loop(self) -> None:
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5.0)
            except Exception:  # noqa: BLE001, S110
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
        if not self._loop.is_running():
            self._loop.close()


def _response(code: int, body: bytes, ctype: str):
    """An HTTP answer of the dashboard server (never cached, no content sniffing)."""
    from http import HTTPStatus

    from websockets.datastructures import Headers
    from websockets.http11 import Response

    if ctype.startswith("text/") or ctype.endswith(("javascript", "json")):
        ctype += "; charset=utf-8"
    return Response(code, HTTPStatus(code).phrase, Headers([
        ("Content-Type", ctype), ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
        ("Content-Security-Policy",
         "default-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'"),
        ("X-Frame-Options", "DENY")]), body)


def _head(request, response):
    """``response`` for a HEAD request: its headers (Content-Length included), no body."""
    if getattr(request, "method", "GET") == "HEAD" and response.body:
        from dataclasses import replace

        return replace(response, body=b"")
    return response


def connection_cap() -> int:
    """:data:`MAX_CONNECTIONS`, or half the file handles this process may open if that is
    less (the rest of the process -- cameras, files, the model -- keeps the other half)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, soft // 2))


def _capped_connection(sink):
    """A websockets ServerConnection class that counts the sink's open TCP connections and
    closes a new one at once beyond :data:`MAX_CONNECTIONS`."""
    from websockets.asyncio.server import ServerConnection

    class Capped(ServerConnection):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            sink._open += 1
            if sink._open > connection_cap():
                sink.counters["rejected_busy"] += 1
                transport.abort()

        def connection_lost(self, exc) -> None:
            sink._open -= 1
            super().connection_lost(exc)

    return Capped
