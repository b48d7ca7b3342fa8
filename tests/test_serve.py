"""``affedge serve`` as a real subprocess: real video files, ZeroMQ and WebSocket clients on
127.0.0.1, signals, a dead source next to a live one, a network stream with its own audio."""
from __future__ import annotations

import itertools
import json
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")
pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.test_serve_helpers import Serve, cut_clip, free_port

FRAMES_3S = 90  # the demo clip is 30 fps


@pytest.fixture(scope="module")
def clip3(tmp_path_factory):
    return cut_clip(tmp_path_factory.mktemp("clips") / "clip3.mp4", 3.0)


@pytest.fixture(scope="module")
def clip2b(tmp_path_factory):
    return cut_clip(tmp_path_factory.mktemp("clips") / "clip2b.mp4", 2.0, start=5.0)


class ZmqCollector:
    """A SUB socket on its own thread collecting (topic, record) until stopped."""

    def __init__(self, endpoint: str, topic: bytes = b""):
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, topic)
        self.sock.connect(endpoint)
        self.got: list = []
        self.stop = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self.stop.is_set():
            if self.sock.poll(100):
                t, m = self.sock.recv_multipart()
                self.got.append((t.decode(), json.loads(m), time.monotonic()))

    def close(self):
        self.stop.set()
        self.th.join(5)
        self.sock.close(0)

    def records(self, topic):
        return [r for t, r, _ in self.got if t == topic]


class WsCollector:
    def __init__(self, url: str):
        self.got: list = []
        self.close_code = None
        self.th = threading.Thread(target=self._run, args=(url,), daemon=True)
        self.th.start()

    def _run(self, url):
        try:
            with connect(url) as c:
                while True:
                    self.got.append(json.loads(c.recv(60)))
        except ConnectionClosed as e:
            self.close_code = e.rcvd.code if e.rcvd else None
        except Exception as e:  # noqa: BLE001
            self.close_code = repr(e)

    def predictions(self, source):
        return [m for m in self.got if m.get("source") == source and "type" not in m]


def test_every_frame_of_every_file_to_zmq_ws_and_stdout(tmp_path, clip3, clip2b):
    cfg = tmp_path / "serve.toml"
    cfg.write_text(f'[[source]]\nname = "a"\nvideo = "{clip3}"\naudio = "video"\n'
                   f'[options]\nsmoothing = 0.6\nasync_detect = false\n')
    srv = Serve(tmp_path, "--config", str(cfg), "--source", str(clip2b), "--audio", "none", "--name", "b",
                "--publish", "zmq://127.0.0.1:0", "--publish", "ws://127.0.0.1:0",
                "--out", "-", "--out", "b_and_a.jsonl", "--start-delay", "3")
    try:
        ports = srv.ports()
        zc = ZmqCollector(ports["zmq"][0].replace("zmq://", "tcp://"))
        only_b = ZmqCollector(ports["zmq"][0].replace("zmq://", "tcp://"), b"b")
        wc = WsCollector(ports["ws"][0] + "/ws")
        assert srv.wait(180) == 0, srv.stderr()
    finally:
        srv.kill()
    zc.close()
    only_b.close()
    wc.th.join(10)
    # stdout: one strict JSON line per frame of every source
    lines = srv.stdout_lines()
    recs = [json.loads(x) for x in lines]
    assert len(recs) == FRAMES_3S + 60 and all(r["schema"] == 1 for r in recs)
    assert sorted(r["frame"] for r in recs) == sorted(list(range(FRAMES_3S)) + list(range(60)))
    assert len((tmp_path / "b_and_a.jsonl").read_text().splitlines()) == FRAMES_3S + 60
    # the closing lines: rates per source, and what was written where (stdout is not a file)
    assert f"wrote b_and_a.jsonl ({FRAMES_3S + 60} rows)" in srv.stderr()
    assert "frames/s in all" in srv.stderr() and "latency p50" in srv.stderr()
    # ZeroMQ: every frame, in order, on the source's topic; the b subscriber sees b only
    for name, n in (("a", FRAMES_3S), ("b", 60)):
        z = zc.records(name)
        assert [r["frame"] for r in z] == list(range(n)), name
        assert all(r["source"] == name for r in z)
        w = wc.predictions(name)
        assert [r["frame"] for r in w] == list(range(n)), name
        assert w == z  # one schema, the same bytes' meaning on both transports
    assert {t for t, _, _ in only_b.got} == {"b"} and len(only_b.got) == 60
    assert any(r["audio_present"] for r in zc.records("a"))  # the file's own track
    assert not any(r["audio_present"] for r in zc.records("b"))  # --audio none for b
    st = [m for m in wc.got if m.get("type") == "status"]
    assert st and st[-1]["sources"]["a"]["frames"] == FRAMES_3S
    assert st[-1]["sources"]["a"]["faces"] == 1  # the demo clip's one face, tracked
    assert wc.close_code == 1001  # the server said goodbye
    err = srv.stderr()
    assert "every source ended" in err and "mean batch" in err
    # batched across streams == each file alone through Recognizer.run (same backend kind,
    # the config's options: synchronous full passes, which frame clip3 otherwise than the
    # default schedule)
    from affedge.sdk.recognizer import Recognizer

    with Recognizer.demo(smoothing=0.6, async_detect=False) as rec:
        alone = [p for p in rec.run(str(clip3), audio="video")]
    a = zc.records("a")
    for key in ("valence", "arousal", "valence_smoothed", "arousal_smoothed"):
        np.testing.assert_allclose([r[key] for r in a], [getattr(p, key) for p in alone],
                                   atol=1e-4, err_msg=key)
    assert [r["face_present"] for r in a] == [p.face_present for p in alone]


def http_json(ws_url: str, path: str):
    """(HTTP status, JSON body) of a GET on the dashboard port of ``ws_url``."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(ws_url.replace("ws://", "http://") + path, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _clients_that_stop_reading(url: str, n: int) -> list:
    """``n`` WebSocket clients (raw sockets, tiny receive buffers) that read the handshake
    reply and then nothing more, like a frozen browser tab."""
    import base64
    import os
    import socket

    host, port = url.replace("ws://", "").split("/")[0].rsplit(":", 1)
    out = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
        assert s.recv(12) == b"HTTP/1.1 101"
        out.append(s)
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_stops_flushes_closes_and_exits_0(tmp_path, sig):
    from affedge.sdk.recognizer import DEMO_CLIP

    srv = Serve(tmp_path, "--source", str(DEMO_CLIP), "--name", "cam", "--realtime",
                "--publish", "zmq://127.0.0.1:0", "--publish", "ws://127.0.0.1:0",
                "--out", "out.jsonl", "--out", "out.csv")
    try:
        ports = srv.ports()
        zc = ZmqCollector(ports["zmq"][0].replace("zmq://", "tcp://"))
        wc = WsCollector(ports["ws"][0])
        end = time.monotonic() + 90
        # (zc.got also holds the hub's `_status` messages: count the predictions)
        while len(zc.records("cam")) < 15 and time.monotonic() < end:
            time.sleep(0.1)
        assert len(zc.records("cam")) >= 15, srv.stderr()
        # the health probe of the dashboard's port: a running source is healthy
        assert http_json(ports["ws"][0], "/health") == (200, {"ok": True, "reason": "ok"})
        stuck = _clients_that_stop_reading(ports["ws"][0], 2)
        time.sleep(1.0)  # predictions pile up for them
        srv.signal(sig)
        assert srv.wait(60) == 0, srv.stderr()
    finally:
        srv.kill()
    time.sleep(0.5)
    zc.close()
    wc.th.join(10)
    for c in stuck:
        c.close()
    # clients that stopped reading are dropped at close, not left to the event loop's end
    # (which printed "Task was destroyed but it is pending!" and a traceback per client)
    assert "Task was destroyed" not in srv.stderr() and "Traceback" not in srv.stderr(), \
        srv.stderr()
    jl = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    csv_rows = (tmp_path / "out.csv").read_text().splitlines()
    assert len(jl) >= 15 and len(csv_rows) == len(jl) + 1  # header + one row per frame
    # serve's rows name their source, in the files as on the network
    assert {r["source"] for r in jl} == {"cam"}
    assert csv_rows[0].startswith("source,frame,") and all(r.startswith("cam,") for r in csv_rows[1:])
    assert len(jl) < 600  # stopped early (the clip has 600 frames at 30 fps)
    # every prediction made reached every sink: the last file row is the last one published
    assert jl[-1]["frame"] == zc.records("cam")[-1]["frame"]
    assert wc.close_code == 1001
    assert f"stopped by {signal.Signals(sig).name}" in srv.stderr()
    # a stop is not a failure of the source (stop() closes it under the capture thread's read)
    assert "source cam:" not in srv.stderr(), srv.stderr()
    # sockets released: both ports can be listened on again (SO_REUSEADDR as servers do:
    # connections the server closed first linger in TIME_WAIT, listeners do not)
    import socket
    for url in ports["ws"] + ports["zmq"]:
        port = int(url.rsplit(":", 1)[1])
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()


def test_dead_source_is_reported_and_never_stalls_the_others(tmp_path, clip3):
    # nothing listens there; its URL carries a camera's credentials (a new-user trial saw
    # the password in every status message, on the dashboard and in the journal)
    dead = f"http://admin:SuperSecret1@127.0.0.1:{free_port()}/live.ts"
    srv = Serve(tmp_path, "--source", dead, "--name", "gone", "--source", str(clip3),
                "--name", "file", "--publish", "zmq://127.0.0.1:0", "--publish",
                "ws://127.0.0.1:0", "--start-delay", "2")
    try:
        ports = srv.ports()
        zc = ZmqCollector(ports["zmq"][0].replace("zmq://", "tcp://"))
        end = time.monotonic() + 120
        while len(zc.records("file")) < FRAMES_3S and time.monotonic() < end:
            time.sleep(0.2)
        time.sleep(1.5)  # a status message after the file ended
        # the health probe says which source is down (the ended file is not a fault)
        assert http_json(ports["ws"][0], "/health") == (
            503, {"ok": False, "reason": "gone retrying"})
        srv.signal(signal.SIGTERM)
        assert srv.wait(60) == 0, srv.stderr()
    finally:
        srv.kill()
    zc.close()
    assert [r["frame"] for r in zc.records("file")] == list(range(FRAMES_3S))
    assert zc.records("gone") == []
    status = [r for t, r, _ in zc.got if t == "_status"]
    gone = [st["sources"]["gone"] for st in status[:-1]]  # before SIGTERM
    assert gone and all(g["state"] in ("retrying", "starting") for g in gone)
    assert gone[-1]["error"] and gone[-1]["frames"] == 0
    assert status[-2]["sources"]["file"]["state"] == "ended"
    assert status[-1]["sources"]["gone"]["state"] == "stopped"
    assert "source gone" in srv.stderr() and "retrying" in srv.stderr()
    assert "SuperSecret1" not in srv.stderr() + json.dumps(status)
    assert gone[-1]["video"].startswith("http://admin:***@127.0.0.1:")
    assert "admin:***@" in gone[-1]["error"], gone[-1]["error"]


def test_network_stream_with_its_own_audio_and_reconnect(tmp_path, clip3):
    """ffmpeg serves MPEG-TS over HTTP (one client per run); serve reads video + audio with one
    demuxer, and reconnects when ffmpeg is started again after the stream ended."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/live.ts"

    def ffmpeg():
        return subprocess.Popen(["ffmpeg", "-v", "error", "-re", "-i", str(clip3), "-c", "copy",
                                 "-f", "mpegts", "-listen", "1", url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    ff = ffmpeg()
    srv = None
    try:
        time.sleep(0.5)
        srv = Serve(tmp_path, "--source", url, "--audio", "video", "--name", "ipcam",
                    "--publish", "zmq://127.0.0.1:0")
        ports = srv.ports()
        zc = ZmqCollector(ports["zmq"][0].replace("zmq://", "tcp://"))
        ff.wait(60)  # the 3 s stream was sent
        ff = ffmpeg()  # the camera comes back
        end = time.monotonic() + 60

        def newest():  # frame indices count every decoded frame, across connections
            return max([r["frame"] for r in zc.records("ipcam") if not r["stale"]],
                       default=-1)
        while newest() < FRAMES_3S + 30 and time.monotonic() < end:
            time.sleep(0.2)
        time.sleep(1.2)
        srv.signal(signal.SIGTERM)
        assert srv.wait(60) == 0, srv.stderr()
    finally:
        ff.kill()
        if srv is not None:
            srv.kill()
    zc.close()
    allrecs = zc.records("ipcam")
    recs = [r for r in allrecs if not r["stale"]]
    assert recs[-1]["frame"] >= FRAMES_3S + 30, srv.stderr()  # frames of the 2nd connection
    assert [r["frame"] for r in allrecs] == list(range(allrecs[0]["frame"],
                                                        allrecs[-1]["frame"] + 1))
    ts = [r["timestamp"] for r in recs]
    assert all(b > a for a, b in itertools.pairwise(ts))  # one clock across the reconnect
    assert sum(r["audio_present"] for r in recs) >= 0.5 * len(recs)  # the stream's own audio
    status = [r for t, r, _ in zc.got if t == "_status"]
    assert status[-1]["sources"]["ipcam"]["reconnects"] >= 1
    assert "is back" in srv.stderr()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_linger_waits_idle_after_the_sources_end(tmp_path, clip3):
    """``--linger`` keeps serving after every source ended without spinning (it used a whole
    core: the wait returned at once in a loop), and its closing rate counts the work only."""
    srv = Serve(tmp_path, "--source", str(clip3), "--name", "c", "--out", "o.jsonl",
                "--linger")
    try:
        srv.ports()
        out = tmp_path / "o.jsonl"
        end = time.monotonic() + 90
        while time.monotonic() < end and not (
                out.exists() and len(out.read_text().splitlines()) >= FRAMES_3S):
            time.sleep(0.2)
        assert len(out.read_text().splitlines()) == FRAMES_3S, srv.stderr()
        time.sleep(1.0)  # the source has ended and the hub has settled
        c0 = _cpu_seconds(srv.proc.pid)
        time.sleep(3.0)
        idle_cpu = _cpu_seconds(srv.proc.pid) - c0
        assert srv.proc.poll() is None  # still serving
        srv.signal(signal.SIGTERM)
        assert srv.wait(60) == 0, srv.stderr()
    finally:
        srv.kill()
    assert idle_cpu < 0.6, f"{idle_cpu:.2f} s of CPU in 3 s of lingering"
    line = next(x for x in srv.stderr().splitlines() if "frames/s in all" in x)
    import re

    secs = float(re.search(r" in ([0-9.]+) s \(\d+ frames/s in all\)", line).group(1))
    assert secs < 30  # the prediction work, not the 4+ s of idle lingering on top


def test_quiet_prints_nothing_and_still_writes_every_row(tmp_path, clip2b):
    """``serve -q`` (like every subcommand's -q): no status lines ("N source(s)", "ZeroMQ PUB
    on ...", "wrote ..."), the outputs complete (the status lines used to be printed anyway)."""
    s = Serve(tmp_path, "--source", str(clip2b), "--out", "p.jsonl",
              "--publish", f"zmq://127.0.0.1:{free_port()}", "-q")
    assert s.wait() == 0, s.stderr()
    assert s.stderr() == "" and s.stdout_lines() == []
    rows = (tmp_path / "p.jsonl").read_text().splitlines()
    assert [json.loads(r)["frame"] for r in rows] == list(range(60))  # 2 s at 30 fps


def test_the_start_line_says_each_sources_audio(tmp_path, clip2b):
    """A file without an audio track runs without audio (confidence lower): the start line
    says so per source instead of leaving the user to find ``audio_present: false`` later."""
    silent = tmp_path / "silent.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip2b), "-an", "-c:v", "copy",
                    str(silent)], check=True, timeout=60)
    s = Serve(tmp_path, "--source", str(silent), "--name", "quiet", "--source", str(clip2b),
              "--name", "talk", "--out", "p.jsonl")
    assert s.wait() == 0, s.stderr()
    line = next(x for x in s.stderr().splitlines() if "source(s)" in x)
    assert "quiet [audio: none]" in line and "talk [audio: video]" in line, line


def test_a_stop_before_any_prediction_leaves_an_earlier_output_file_whole(tmp_path):
    """Found by a new-user trial: serve opened its --out files at the start, so a stop before
    the first Prediction (here: the only source never connects) emptied an earlier file at that
    path. Files are now created at the first Prediction, as affedge run does."""
    dead = f"http://127.0.0.1:{free_port()}/live.ts"  # nothing listens there
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_text('{"frame": 0}\n{"frame": 1}\n')
    fresh = tmp_path / "fresh.csv"
    srv = Serve(tmp_path, "--source", dead, "--name", "gone", "--out", str(earlier),
                "--out", str(fresh), "--publish", "zmq://127.0.0.1:0")
    try:
        srv.ports()
        end = time.monotonic() + 60
        while "retrying" not in srv.stderr() and time.monotonic() < end:
            time.sleep(0.2)
        srv.signal(signal.SIGTERM)
        assert srv.wait(60) == 0, srv.stderr()
    finally:
        srv.kill()
    assert earlier.read_text() == '{"frame": 0}\n{"frame": 1}\n'
    assert not fresh.exists()
    assert "no prediction came, nothing written to" in srv.stderr()
    assert "wrote " not in srv.stderr()


def test_verbose_serve_never_logs_the_token_or_a_camera_password(tmp_path, clip2b):
    """-v turned on websockets' DEBUG: a dump of every handshake, the client's token in its
    query string and Authorization header included (a new-user trial found it in the log)."""
    from websockets.sync.client import connect

    token = "tok-" + "x7Q" * 8
    srv = Serve(tmp_path, "--source", str(clip2b), "--audio", "none", "--name", "b",
                "--publish", "ws://127.0.0.1:0", "--token", token, "--start-delay", "2",
                "-v")
    try:
        url = srv.ports()["ws"][0]
        with connect(url + f"/?token={token}") as c:
            assert json.loads(c.recv(10))["type"] == "hello"
        with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as c:
            assert json.loads(c.recv(10))["type"] == "hello"
        assert srv.wait(120) == 0, srv.stderr()
    finally:
        srv.kill()
    err = srv.stderr()
    assert "DEBUG" in err  # -v is on
    assert token not in err, [x for x in err.splitlines() if token in x][:3]
