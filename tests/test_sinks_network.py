"""zmq:// and ws:// sinks with real ZeroMQ and WebSocket clients on 127.0.0.1."""
from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

zmq = pytest.importorskip("zmq")
pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from affedge.sdk.prediction import FaceResult, Prediction
from affedge.sdk.sinks import SCHEMA, open_sink, prediction_record
from affedge.sdk.sinks.ws import MAX_CLIENT_MESSAGE, MAX_FRAME, WebSocketSink


def pred(i: int, v: float = 0.25) -> Prediction:
    face = FaceResult(track_id=3, box=(1.0, 2.0, 30.0, 40.0), detected=True, score=0.9,
                      valence=v, arousal=float("nan"), valence_smoothed=v,
                      arousal_smoothed=float("inf"), confidence=0.5)
    return Prediction(frame=i, timestamp=i / 30, valence=v, arousal=float("nan"),
                      valence_smoothed=v, arousal_smoothed=-0.5, confidence=0.5,
                      face_present=True, speech_present=False, face_box=face.box, track_id=3,
                      faces=(face,), wall_time=1.8e9 + i)


def wait_until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_zmq_one_topic_per_source_schema_1_nan_null():
    sink = open_sink("zmq://127.0.0.1:0")
    ctx = zmq.Context.instance()
    sub_all, sub_b = ctx.socket(zmq.SUB), ctx.socket(zmq.SUB)
    try:
        assert sink.port > 0 and sink.endpoint == f"tcp://127.0.0.1:{sink.port}"
        for s, topic in ((sub_all, b""), (sub_b, b"camB")):
            s.setsockopt(zmq.SUBSCRIBE, topic)
            s.setsockopt(zmq.RCVTIMEO, 5000)
            s.connect(sink.endpoint)
        # PUB/SUB drops until the subscription arrived: send until the first one is seen
        assert wait_until(lambda: (sink.write(pred(0), source="camA"),
                                   sub_all.poll(50))[1], 10)
        while sub_all.poll(100):
            sub_all.recv_multipart()
        while sub_b.poll(100):
            sub_b.recv_multipart()
        for i in range(1, 6):
            sink.write(pred(i), source="camA")
            sink.write(pred(i, v=-0.75), source="camB")
        got = [sub_all.recv_multipart() for _ in range(10)]
        topics = [t for t, _ in got]
        assert topics == [b"camA", b"camB"] * 5
        recs = [json.loads(m) for _, m in got]
        assert all(r["schema"] == SCHEMA and r["source"] == t.decode()
                   for r, (t, _) in zip(recs, got))
        assert [r["frame"] for r in recs[::2]] == [1, 2, 3, 4, 5]
        expect = prediction_record(pred(1), source="camA")
        assert recs[0] == expect
        assert recs[0]["arousal"] is None and recs[0]["faces"][0]["arousal_smoothed"] is None
        only_b = [sub_b.recv_multipart() for _ in range(5)]
        assert {t for t, _ in only_b} == {b"camB"}
        assert [json.loads(m)["valence"] for _, m in only_b] == [-0.75] * 5
        assert not sub_b.poll(200)  # camA never reached the camB subscriber
    finally:
        sub_all.close(0)
        sub_b.close(0)
        sink.close()
    # the port is released on close (ZeroMQ's I/O thread releases it a moment later)
    s = ctx.socket(zmq.PUB)

    def bind():
        try:
            s.bind(f"tcp://127.0.0.1:{sink.port}")
            return True
        except zmq.ZMQError:
            return False
    try:
        assert wait_until(bind, 5)
    finally:
        s.close(0)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_zmq_huge_subscriptions_drop_the_peer_not_the_memory():
    """A security trial: an XSUB peer sending 10 MiB subscriptions grew serve's memory by ~50x
    what it sent (ZeroMQ's subscription trie; 388 MiB -> 10.9 GB) and stalled the loop. The
    PUB socket now drops a peer whose message is over MAX_SUBSCRIPTION bytes; other
    subscribers go on receiving. (The peer runs in another process, as an attacker would:
    libzmq 4.3.5 may crash the sending side's process when it is dropped.)"""
    import subprocess
    import sys

    sink = open_sink("zmq://127.0.0.1:0")
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    peer = ("import os, time, zmq\n"
            "c = zmq.Context(); e = c.socket(zmq.XSUB); e.connect(%r); time.sleep(0.3)\n"
            "for i in range(3): e.send(b'\\x01' + bytes([65 + i]) * (2 << 20))\n"
            "time.sleep(1.5); os._exit(0)\n") % sink.endpoint
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(sink.endpoint)
        assert wait_until(lambda: (sink.write(pred(0), source="camA"), sub.poll(50))[1], 10)
        before = _rss_mib()
        p = subprocess.Popen([sys.executable, "-c", peer])
        end, i = time.monotonic() + 2.5, 1
        while time.monotonic() < end:  # (PUB takes subscriptions in when it sends)
            sink.write(pred(i), source="camA")
            i += 1
            time.sleep(0.05)
        p.wait(10)
        grew = _rss_mib() - before
        while sub.poll(100):
            last = sub.recv_multipart()
        assert json.loads(last[1])["frame"] == i - 1  # the subscriber got everything
        assert grew < 40, f"memory grew {grew:.0f} MiB for 6 MiB of subscriptions"
    finally:
        sub.close(0)
        sink.close()


def test_zmq_refuses_remote_and_bad_targets():
    with pytest.raises(ValueError, match="loopback"):
        open_sink("zmq://0.0.0.0:0")
    with pytest.raises(ValueError, match="PORT"):
        open_sink("zmq://127.0.0.1")
    with pytest.raises(ValueError, match="port"):
        open_sink("zmq://127.0.0.1:99999")


@pytest.fixture
def ws_sink():
    sink = WebSocketSink("ws://127.0.0.1:0", queue_size=8)
    yield sink
    sink.close()


def test_ws_delivers_records_and_answers_ping(ws_sink):
    with connect(ws_sink.url + "/ws") as c:
        assert json.loads(c.recv(5)) == {"type": "hello", "schema": 1}
        ws_sink.write(pred(7), source="front")
        rec = json.loads(c.recv(5))
        assert rec == prediction_record(pred(7), source="front")
        ws_sink.publish_status({"sources": {"front": {"fps": float("nan"), "frames": 1}}})
        st = json.loads(c.recv(5))
        assert st["type"] == "status" and st["sources"]["front"] == {"fps": None, "frames": 1}
        c.send(json.dumps({"type": "ping"}))
        assert json.loads(c.recv(5)) == {"type": "pong"}


def test_ws_malformed_and_oversized_messages_are_ignored_and_counted(ws_sink):
    with connect(ws_sink.url, max_size=None) as c:
        c.recv(5)
        c.send("not json")
        c.send(b"\xff\xfe binary")
        c.send(json.dumps({"type": "launch-missiles"}))
        c.send(json.dumps([1, 2]))
        c.send("x" * (MAX_CLIENT_MESSAGE + 1))
        c.send("[" * 1500 + "]" * 1500)  # under the size limit, past Python's nesting limit
        c.send(json.dumps({"type": "ping"}))
        assert json.loads(c.recv(5)) == {"type": "pong"}  # still served
        assert ws_sink.counters["malformed"] == 5
        assert ws_sink.counters["oversized"] == 1
    # beyond the frame limit the server closes the connection (1009) and counts it
    with connect(ws_sink.url, max_size=None) as c:
        c.recv(5)
        c.send(b"y" * (MAX_FRAME + 10))
        with pytest.raises(ConnectionClosed):
            for _ in range(10):
                c.recv(5)
    assert wait_until(lambda: ws_sink.counters["oversized"] == 2 and ws_sink.clients == 0)


def test_ws_slow_client_never_blocks_the_writer_oldest_dropped(ws_sink):
    fast_got: list = []
    with connect(ws_sink.url) as slow, connect(ws_sink.url) as fast:
        slow.recv(5)
        fast.recv(5)
        assert wait_until(lambda: ws_sink.clients == 2)

        def read_fast():
            try:
                while True:
                    fast_got.append(json.loads(fast.recv(10)))
            except Exception:  # noqa: BLE001, S110  (closed at the end)
                pass

        th = threading.Thread(target=read_fast, daemon=True)
        th.start()
        n = 20000
        t0 = time.perf_counter()
        for i in range(n):  # the slow client reads nothing meanwhile
            ws_sink.write(pred(i), source="s")
        wrote = time.perf_counter() - t0
        assert wait_until(lambda: fast_got and fast_got[-1].get("frame") == n - 1, 30)
        assert ws_sink.counters["dropped"] > 0
        # the slow client gets at most its queue (8) + what the socket buffers took, and the
        # newest message survives (oldest dropped)
        got_slow = []
        try:
            while True:
                got_slow.append(json.loads(slow.recv(1)))
        except TimeoutError:
            pass
        frames = [m["frame"] for m in got_slow if "frame" in m]
        assert frames[-1] == n - 1 and len(frames) < n
        assert frames == sorted(frames)
        print(f"{n} writes in {wrote:.3f} s; dropped {ws_sink.counters['dropped']}")


def test_ws_origin_checked_and_a_refusal_said_once_with_the_fix(ws_sink, caplog):
    """A refused page is said on the log once per origin, with the flag that allows it (a
    new-user trial's own page got 403s and nothing said why), and counted in the status."""
    for _ in range(3):
        with pytest.raises(InvalidStatus) as e:
            connect(ws_sink.url, origin="http://127.0.0.1:9000")
        assert e.value.response.status_code == 403
    assert ws_sink.counters["rejected_origin"] == 3
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(said) == 1 and "--allow-origin http://127.0.0.1:9000" in said[0], said
    with connect(ws_sink.url, origin=f"http://127.0.0.1:{ws_sink.port}") as c:
        assert json.loads(c.recv(5))["type"] == "hello"
        ws_sink.publish_status({"schema": 1, "sources": {}})
        st = json.loads(c.recv(5))
    assert st["type"] == "status" and st["ws"]["rejected_origin"] == 3
    assert st["ws"]["clients"] == 1


def test_ws_token_required_off_loopback_and_checked():
    with pytest.raises(ValueError, match="token"):
        WebSocketSink("ws://0.0.0.0:0")
    sink = WebSocketSink("ws://127.0.0.1:0", token="s3cret")
    try:
        for url, headers in ((sink.url, None), (sink.url + "/ws?token=wrong", None)):
            with pytest.raises(InvalidStatus) as e:
                connect(url, additional_headers=headers)
            assert e.value.response.status_code == 401
        with connect(sink.url + "/ws?token=s3cret") as c:
            assert json.loads(c.recv(5))["type"] == "hello"
        with connect(sink.url, additional_headers={"Authorization": "Bearer s3cret"}) as c:
            assert json.loads(c.recv(5))["type"] == "hello"
        assert sink.counters["rejected_token"] == 2
        # the page carries no data: it is served without the token
        with urllib.request.urlopen(sink.http_url, timeout=5) as r:
            assert r.status == 200 and b"dashboard.js" in r.read()
    finally:
        sink.close()


def _raw(port: int, request: str, host: str = "127.0.0.1") -> str:
    """Send one raw HTTP request, read the answer until the server closes (or 3 s)."""
    with socket.create_connection((host, port), timeout=3) as c:
        c.sendall(request.encode())
        out = b""
        try:
            while chunk := c.recv(65536):
                out += chunk
        except socket.timeout:
            pass
    return out.decode("latin-1")


def test_ws_answers_its_loopback_names_only_get_and_head_and_no_framing(ws_sink):
    """A security trial: a page on another site whose name resolves to 127.0.0.1 (DNS
    rebinding) read /status; POST/PUT/... got index.html; HEAD got a body; the Server header
    named the versions; the page could be framed."""
    p = ws_sink.port
    for host in (f"127.0.0.1:{p}", f"localhost:{p}", "LOCALHOST", f"[::1]:{p}"):
        assert _raw(p, f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").startswith(
            "HTTP/1.1 200"), host
    for host in (f"attacker.example:{p}", "127.0.0.1.nip.io", f"evil.localhost.example:{p}"):
        r = _raw(p, f"GET /status HTTP/1.1\r\nHost: {host}\r\n\r\n")
        assert r.startswith("HTTP/1.1 421") and "{" not in r, (host, r)
    upgrade = ("GET /ws HTTP/1.1\r\nHost: attacker.example\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n")
    assert _raw(p, upgrade).startswith("HTTP/1.1 421")  # a WebSocket handshake as well
    with pytest.raises(InvalidStatus) as e:  # two Host headers: which one would count?
        connect(ws_sink.url, additional_headers={"Host": "x"})
    assert e.value.response.status_code == 400
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "TRACE"):
        r = _raw(p, f"{method} / HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Length: 0\r\n\r\n")
        assert r.startswith("HTTP/1.1 405") and "Allow: GET, HEAD" in r and "<html" not in r
    get = _raw(p, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n")
    head = _raw(p, f"HEAD / HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n")
    assert "<html" in get and head.startswith("HTTP/1.1 200") and "<html" not in head
    length = [x for x in get.splitlines() if x.startswith("Content-Length")]
    assert length and length[0] in head.splitlines()
    assert "frame-ancestors 'none'" in get and "X-Frame-Options: DENY" in get
    assert "Server:" not in get and "websockets" not in get.split("\r\n\r\n")[0]
    assert ws_sink.counters["rejected_host"] == 4 and ws_sink.counters["rejected_method"] == 5


def test_ws_caps_open_connections_and_recovers(monkeypatch, ws_sink):
    """A security trial held 400 half-sent requests under ``ulimit -n 256``: serve ran out of
    file handles and its inference loop died. Connections beyond MAX_CONNECTIONS are now
    closed at once; when the holders go, the server answers again."""
    import affedge.sdk.sinks.ws as ws_mod

    monkeypatch.setattr(ws_mod, "MAX_CONNECTIONS", 3)
    held = []
    try:
        for _ in range(3):
            c = socket.create_connection(("127.0.0.1", ws_sink.port), timeout=3)
            c.sendall(b"GET / HTTP/1.1\r\n")  # and never the rest
            held.append(c)
        assert wait_until(lambda: ws_sink._open == 3, 5)
        with socket.create_connection(("127.0.0.1", ws_sink.port), timeout=3) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            try:
                answer = extra.recv(100)
            except ConnectionResetError:
                answer = b""
        assert answer == b"" and ws_sink.counters["rejected_busy"] == 1
    finally:
        for c in held:
            c.close()
    assert wait_until(lambda: ws_sink._open == 0, 5)
    assert _raw(ws_sink.port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").startswith(
        "HTTP/1.1 200")


def _lan_address() -> str | None:
    """A non-loopback address of this machine (None when it has no route anywhere)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # (TEST-NET-1: no packet is sent)
        except OSError:
            return None
        addr = s.getsockname()[0]
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def test_ws_wrong_tokens_from_one_address_are_throttled_off_loopback():
    """A security trial guessed 1500 tokens in 0.8 s. Off loopback, a tenth wrong token from one
    address within TOKEN_WINDOW_S makes it wait (429 with Retry-After, even for the right
    token), and a short token is refused for such binds."""
    from affedge.sdk.sinks.ws import MAX_TOKEN_FAILURES

    with pytest.raises(ValueError, match="at least 16 characters"):
        WebSocketSink("ws://0.0.0.0:0", token="short")
    lan = _lan_address()
    if lan is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    good = "g" * 24
    sink = WebSocketSink(f"ws://{lan}:0", token=good)
    try:
        sink.publish_status({"sources": {}})  # (/health: 200 once a status came)
        ask = "GET /health?token={} HTTP/1.1\r\nHost: " + f"{lan}:{sink.port}\r\n\r\n"
        assert _raw(sink.port, ask.format(good), lan).startswith("HTTP/1.1 200")
        codes = [_raw(sink.port, ask.format(f"guess{i}"), lan)[9:12]
                 for i in range(MAX_TOKEN_FAILURES)]
        assert codes == ["401"] * MAX_TOKEN_FAILURES
        r = _raw(sink.port, ask.format(good), lan)
        assert r.startswith("HTTP/1.1 429") and "Retry-After:" in r
        assert sink.counters["throttled"] == 1
    finally:
        sink.close()
    # loopback clients share one address: never throttled (a short token there is warned of)
    sink = WebSocketSink("ws://127.0.0.1:0", token="abc")
    try:
        sink.publish_status({"sources": {}})
        ask = "GET /health?token={} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        for i in range(MAX_TOKEN_FAILURES + 2):
            _raw(sink.port, ask.format(f"guess{i}"))
        assert _raw(sink.port, ask.format("abc")).startswith("HTTP/1.1 200")
    finally:
        sink.close()


def test_ws_serves_only_the_dashboard_files(ws_sink):
    with urllib.request.urlopen(ws_sink.http_url + "dashboard.js", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/javascript") or \
            "javascript" in r.headers["Content-Type"]
    for path in ("../sinks/ws.py", "%2e%2e/manifest.json", "nope.html", "/etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(ws_sink.http_url + path.lstrip("/"), timeout=5)
        assert e.value.code == 404


def _get(url, headers=None):
    """(HTTP status, parsed JSON body) of a GET, error statuses included."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null") if e.code != 401 else None


def test_ws_status_and_health_over_http_for_probes(monkeypatch):
    """GET /status is the newest hub status, GET /health 200/503 with the reason: not before
    the first status, not when a source is stalled, retrying or failed or an output failed,
    not when the status went stale (the hub's loop stopped); the token guards both."""
    import affedge.sdk.sinks.ws as ws

    sink = WebSocketSink("ws://127.0.0.1:0", token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    try:
        assert _get(sink.http_url + "health")[0] == 401
        assert _get(sink.http_url + "status?token=wrong")[0] == 401
        assert _get(sink.http_url + "health", auth) == (503, {"ok": False,
                                                              "reason": "no hub status yet"})
        assert _get(sink.http_url + "status?token=s3cret")[0] == 503
        ok = {"schema": 1, "sources": {"door": {"state": "running", "fps": 30.0},
                                       "desk": {"state": "ended", "fps": 0.0}},
              "failed_outputs": [], "mean_batch": float("nan")}
        sink.publish_status(ok)
        assert _get(sink.http_url + "health", auth) == (200, {"ok": True, "reason": "ok"})
        code, body = _get(sink.http_url + "status?token=s3cret")
        assert code == 200 and body["type"] == "status" and body["mean_batch"] is None
        assert body["sources"]["door"] == {"state": "running", "fps": 30.0}
        for state in ("stalled", "retrying", "failed"):
            sink.publish_status({**ok, "sources": {**ok["sources"], "door": {"state": state}}})
            assert _get(sink.http_url + "health", auth) == (
                503, {"ok": False, "reason": f"door {state}"})
        sink.publish_status({**ok, "failed_outputs": ["va.csv"]})
        assert _get(sink.http_url + "health", auth) == (
            503, {"ok": False, "reason": "failed outputs: va.csv"})
        # a source still opening: fine at first, not after STARTING_GRACE_S (a Hub trial's
        # URL that never answered read healthy through its whole 10 s open timeout)
        opening = {**ok, "sources": {**ok["sources"], "door": {"state": "starting"}}}
        sink.publish_status({**opening, "uptime_s": 1.0})
        assert _get(sink.http_url + "health", auth)[0] == 200
        sink.publish_status({**opening, "uptime_s": 7.2})
        assert _get(sink.http_url + "health", auth) == (
            503, {"ok": False, "reason": "door still starting after 7 s"})
        sink.publish_status(ok)
        monkeypatch.setattr(ws, "STATUS_STALE_S", 0.05)
        time.sleep(1.1)
        code, body = _get(sink.http_url + "health", auth)
        assert code == 503 and body["reason"] == "the newest hub status is 1 s old"
        assert sink.counters["rejected_token"] == 2
    finally:
        sink.close()


def test_ws_clients_leaving_mid_message_leave_nothing_behind(ws_sink):
    threads0 = threading.active_count()
    fds0 = len(os.listdir("/proc/self/fd"))
    for _ in range(20):  # raw sockets: the test side keeps no client threads
        with socket.create_connection(("127.0.0.1", ws_sink.port), timeout=5) as raw:
            raw.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        b"Sec-WebSocket-Version: 13\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += raw.recv(4096)
            assert head.startswith(b"HTTP/1.1 101")
            # a frame header announcing 1000 masked bytes, 10 sent, then the socket vanishes
            raw.sendall(b"\x81\xfe\x03\xe8" + b"\x01\x02\x03\x04" + b"x" * 10)
    assert wait_until(lambda: ws_sink.clients == 0, 15)
    ws_sink.write(pred(1), source="s")  # the fan-out skips the dead clients
    with connect(ws_sink.url) as c:
        c.recv(5)
        ws_sink.write(pred(2), source="s")
        assert json.loads(c.recv(5))["frame"] == 2
    assert wait_until(lambda: threading.active_count() <= threads0, 5)
    assert wait_until(lambda: len(os.listdir("/proc/self/fd")) <= fds0 + 2, 5)
    assert ws_sink.counters["clients_total"] == 21


def test_ws_close_releases_the_port_and_says_goodbye():
    sink = WebSocketSink("ws://127.0.0.1:0")
    with connect(sink.url) as c:
        c.recv(5)
        sink.write(pred(1), source="s")
        sink.close()
        assert json.loads(c.recv(5))["frame"] == 1  # flushed before closing
        with pytest.raises(ConnectionClosed) as e:
            c.recv(5)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1001
    with pytest.raises(ValueError, match="closed"):
        sink.write(pred(2))
    again = WebSocketSink(f"ws://127.0.0.1:{sink.port}")
    again.close()
    assert math.isfinite(sink.port)
