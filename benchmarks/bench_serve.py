"""``affedge serve`` numbers: cross-stream batching, publish latency, many WebSocket clients.

Three parts (``--part``, default all), the demo (mobile) bundle, the backend ``auto`` picks:

* ``throughput``: 4 file sources cut from the demo clip (``--clip-seconds`` each, different
  offsets), unpaced. Variant ``hub``: one :class:`affedge.serve.Hub` (one backend, one encoder
  call and one step call per tick over every source with a new frame). Variant
  ``independent``: four Recognizers in this process, each with its own backend, each running
  ``run()`` over its file on its own thread. Every frame of every source must get a
  prediction (checked). Variants are interleaved ``--repeats`` times; the ratio of each pair is
  reported (hub frames/s over independent frames/s) with the median, and beside it each
  variant's CPU time per frame (every thread of the process) and the cores it kept busy: the
  work each design does per frame, which other tenants' load moves less than frames/s.
* ``latency``: ``Recognizer.push_frame`` at 30 fps with ``publish()`` to a ZeroMQ and a
  WebSocket sink; a subscriber process per transport records when each message arrives
  (CLOCK_MONOTONIC, shared by processes). Reported: end-to-end minus the prediction's own
  ``latency_ms`` (what publishing adds), p50/p99 per transport.
* ``clients``: the same push loop with a WebSocket sink; phases without and with
  ``--clients`` WebSocket clients (another process, reading everything) alternate
  (``--client-seconds`` in all for each condition, in 4 interleaved phases); reported: the
  pipeline's p99 tick latency in each condition and the relative change.

Run:  .venv/bin/python benchmarks/bench_serve.py [--part throughput] [--clients 50
      --client-seconds 60] [--json out.json]
The machine is shared: the script prints the CPU model and the load average before and after.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
N_SOURCES = 4


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def pct(x, q) -> float:
    return float(np.percentile(np.asarray(x, np.float64), q)) if len(x) else float("nan")


# --------------------------------------------------------------------------- throughput
def cut_clips(workdir: Path, seconds: float) -> list[Path]:
    from affedge.sdk.recognizer import DEMO_CLIP

    out = []
    for i in range(N_SOURCES):
        p = workdir / f"clip{i}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(i * 4.0), "-i", str(DEMO_CLIP),
                        "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
                        "-c:a", "aac", str(p)], check=True)
        out.append(p)
    return out


def frame_count(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def run_hub(clips, expected, **options) -> float:
    from affedge.serve import Hub

    got: dict = {}

    class Count:
        accepts_source = True

        def write(self, p, source=None):
            got.setdefault(source, []).append(p.frame)

        def flush(self):
            pass

        def close(self):
            pass

    with Hub(**options) as hub:
        for i, c in enumerate(clips):
            hub.add_source(str(c), audio="video", name=f"s{i}")
        hub.add_sink(Count())
        t0, c0 = time.perf_counter(), time.process_time()
        hub.start()
        hub.wait()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        mean_batch = hub.status()["mean_batch"]
    for i, n in enumerate(expected):
        assert got[f"s{i}"] == list(range(n)), f"hub: source s{i} missed frames"
    return sum(expected) / dt, mean_batch, _cpu(cpu, dt, sum(expected))


def run_independent(clips, expected, **options) -> float:
    from affedge.sdk.recognizer import Recognizer

    recs = [Recognizer.demo(**options) for _ in clips]
    counts = [0] * len(clips)
    errors = []

    def go(k):
        try:
            counts[k] = sum(1 for _ in recs[k].run(str(clips[k]), audio="video"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    ths = [threading.Thread(target=go, args=(k,)) for k in range(len(clips))]
    t0, c0 = time.perf_counter(), time.process_time()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    for r in recs:
        r.close()
    if errors:
        raise errors[0]
    assert counts == list(expected), f"independent: {counts} != {expected}"
    return sum(expected) / dt, _cpu(cpu, dt, sum(expected))


def _cpu(cpu_s: float, wall_s: float, frames: int) -> dict:
    """CPU time of the whole process (every thread, ``time.process_time``) over a variant's
    timed run: per frame (ms) and the cores it kept busy on average. Less sensitive to other
    tenants' load than frames/s, which also counts the time this process waited for a core."""
    return {"ms_per_frame": 1e3 * cpu_s / frames, "cores_busy": cpu_s / wall_s}


def _options(args) -> dict:
    """Recognizer options both variants get (``--async-detect off``: synchronous passes)."""
    return {} if getattr(args, "async_detect", "default") == "default" else \
        {"async_detect": False}


def part_throughput(args) -> dict:
    with tempfile.TemporaryDirectory() as d:
        clips = cut_clips(Path(d), args.clip_seconds)
        expected = [frame_count(c) for c in clips]
        hub_fps, ind_fps, ratios, batches, cpus = [], [], [], [], {"hub": [], "independent": []}
        for r in range(args.repeats):
            order = ("hub", "independent") if r % 2 == 0 else ("independent", "hub")
            res = {}
            for v in order:
                if v == "hub":
                    res[v], mb, cpu = run_hub(clips, expected, **_options(args))
                    batches.append(mb)
                else:
                    res[v], cpu = run_independent(clips, expected, **_options(args))
                cpus[v].append(cpu)
            hub_fps.append(res["hub"])
            ind_fps.append(res["independent"])
            ratios.append(res["hub"] / res["independent"])
            print(f"  repeat {r + 1}: hub {res['hub']:.1f} frames/s (mean batch {mb:.2f}), "
                  f"independent {res['independent']:.1f} frames/s, ratio "
                  f"{ratios[-1]:.2f}; CPU per frame hub {cpus['hub'][-1]['ms_per_frame']:.2f} ms "
                  f"({cpus['hub'][-1]['cores_busy']:.2f} cores busy), independent "
                  f"{cpus['independent'][-1]['ms_per_frame']:.2f} ms "
                  f"({cpus['independent'][-1]['cores_busy']:.2f})", flush=True)
    cpu_ratios = [i["ms_per_frame"] / h["ms_per_frame"]
                  for h, i in zip(cpus["hub"], cpus["independent"])]
    print(f"  median ratio {np.median(ratios):.2f} (frames/s); CPU per frame, independent over "
          f"hub: median {np.median(cpu_ratios):.2f}", flush=True)
    return {"async_detect": getattr(args, "async_detect", "default"),
            "frames": expected, "hub_fps": hub_fps, "independent_fps": ind_fps,
            "ratios": ratios, "ratio_median": float(np.median(ratios)),
            "hub_mean_batch": batches, "cpu": cpus, "cpu_ratios": cpu_ratios,
            "cpu_ratio_median": float(np.median(cpu_ratios))}


# --------------------------------------------------------------------------- push loop
def demo_frames(n: int):
    import cv2

    from affedge.sdk.recognizer import DEMO_CLIP

    cap = cv2.VideoCapture(str(DEMO_CLIP))
    frames = []
    while len(frames) < n:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def push_loop(rec, frames, seconds: float, fps: float = 30.0, on_frame=None):
    """Push frames at ``fps`` for ``seconds`` -> list of (t_push0, prediction, t_returned)."""
    out = []
    period = 1.0 / fps
    t_next = time.perf_counter()
    end = t_next + seconds
    k = 0
    while time.perf_counter() < end:
        now = time.perf_counter()
        if now < t_next:
            time.sleep(t_next - now)
        t0 = time.perf_counter()
        p = rec.push_frame(frames[k % len(frames)], t=t0)
        out.append((t0, p, time.perf_counter()))
        k += 1
        t_next += period
        if time.perf_counter() > t_next + period:  # fell behind: do not queue up
            t_next = time.perf_counter()
    return out


#: a subscriber stops after this long without a message (once messages came)
IDLE_STOP_S = 1.5


def subscriber_main(kind: str, url: str, out: str, seconds: float) -> None:
    """Child process: record (frame, perf_counter at arrival) of every prediction, until
    ``seconds`` passed or the stream went quiet for IDLE_STOP_S."""
    got = []
    end = time.perf_counter() + seconds

    def quiet():
        return bool(got) and time.perf_counter() - got[-1][0] > IDLE_STOP_S
    if kind == "zmq":
        import zmq

        s = zmq.Context.instance().socket(zmq.SUB)
        s.setsockopt(zmq.SUBSCRIBE, b"bench")
        s.connect(url)
        Path(out + ".ready").write_text("1")
        while time.perf_counter() < end and not quiet():
            if s.poll(100):
                _, m = s.recv_multipart()
                got.append((time.perf_counter(), json.loads(m)["frame"]))
    else:
        from websockets.sync.client import connect

        with connect(url) as c:
            Path(out + ".ready").write_text("1")
            while time.perf_counter() < end and not quiet():
                try:
                    m = json.loads(c.recv(0.2))
                except TimeoutError:
                    continue
                if "frame" in m:
                    got.append((time.perf_counter(), m["frame"]))
    Path(out).write_text(json.dumps(got))


def spawn(args_list, ready_path: str | None = None):
    p = subprocess.Popen([sys.executable, __file__, *args_list],
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if ready_path:
        end = time.monotonic() + 60
        while not os.path.exists(ready_path) and time.monotonic() < end:
            time.sleep(0.05)
    return p


def part_latency(args) -> dict:
    from affedge.sdk.recognizer import Recognizer
    from affedge.sdk.sinks.ws import WebSocketSink
    from affedge.sdk.sinks.zmq import ZmqSink

    frames = demo_frames(300)
    res = {}
    with tempfile.TemporaryDirectory() as d, Recognizer.demo() as rec:
        z = rec.publish(ZmqSink("zmq://127.0.0.1:0"), source="bench")
        w = rec.publish(WebSocketSink("ws://127.0.0.1:0"), source="bench")
        subs = {}
        for kind, url in (("zmq", z.endpoint), ("ws", w.url)):
            out = os.path.join(d, kind + ".json")
            subs[kind] = (spawn(["--subscriber", kind, url, out,
                                 str(args.latency_seconds + 15)], out + ".ready"), out)
        time.sleep(0.5)
        pushed = push_loop(rec, frames, args.latency_seconds)
        # in this process: push_frame's return minus the prediction's latency = the tick's
        # bookkeeping + serialising and handing the record to both sinks
        inproc = [(t1 - t0) * 1000.0 - p.latency_ms for t0, p, t1 in pushed]
        res["in_process_ms_p50"], res["in_process_ms_p99"] = pct(inproc, 50), pct(inproc, 99)
        print(f"  in process (both sinks' write): p50 {res['in_process_ms_p50']:.2f} ms, p99 "
              f"{res['in_process_ms_p99']:.2f} ms", flush=True)
        for kind, (proc, out) in subs.items():
            proc.wait(args.latency_seconds + 30)
            arrived = {f: t for t, f in json.loads(Path(out).read_text())}
            extra = [(arrived[p.frame] - t0) * 1000.0 - p.latency_ms
                     for t0, p, _ in pushed if p.frame in arrived]
            res[kind] = {"messages": len(extra), "pushed": len(pushed),
                         "extra_ms_p50": pct(extra, 50), "extra_ms_p99": pct(extra, 99),
                         "prediction_latency_ms_p50": pct([p.latency_ms for _, p, _ in pushed],
                                                          50)}
            print(f"  {kind}: {len(extra)}/{len(pushed)} received; publish adds p50 "
                  f"{res[kind]['extra_ms_p50']:.2f} ms, p99 {res[kind]['extra_ms_p99']:.2f} ms "
                  f"(prediction itself p50 {res[kind]['prediction_latency_ms_p50']:.1f} ms)",
                  flush=True)
    return res


async def _clients_async(url: str, n: int, seconds: float, out: str):
    from websockets.asyncio.client import connect

    counts = [0] * n

    async def one(k):
        async with connect(url) as c:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    await asyncio.wait_for(c.recv(), 0.5)
                    counts[k] += 1
                except asyncio.TimeoutError:
                    pass

    await asyncio.gather(*(one(k) for k in range(n)))
    Path(out).write_text(json.dumps(counts))


def clients_main(url: str, n: int, seconds: float, out: str) -> None:
    asyncio.run(_clients_async(url, n, seconds, out))


def part_clients(args) -> dict:
    from affedge.sdk.recognizer import Recognizer
    from affedge.sdk.sinks.ws import WebSocketSink

    frames = demo_frames(300)
    lat = {"none": [], "clients": []}
    received = []
    phase_s = args.client_seconds / 2.0
    with tempfile.TemporaryDirectory() as d, Recognizer.demo() as rec:
        w = rec.publish(WebSocketSink("ws://127.0.0.1:0"), source="bench")
        push_loop(rec, frames, 2.0)  # warm-up
        for k, cond in enumerate(("none", "clients", "clients", "none")):
            proc = None
            if cond == "clients":
                out = os.path.join(d, f"c{k}.json")
                proc = spawn(["--clients-child", w.url, str(args.clients), str(phase_s), out])
                end = time.monotonic() + 30
                while w.clients < args.clients and time.monotonic() < end:
                    time.sleep(0.05)
            pushed = push_loop(rec, frames, phase_s)
            lat[cond] += [p.latency_ms for _, p, _ in pushed]
            if proc is not None:
                proc.wait(60)
                received.append(json.loads(Path(out).read_text()))
        dropped = w.counters["dropped"]
    res = {"clients": args.clients, "seconds_per_condition": args.client_seconds,
           "p99_none_ms": pct(lat["none"], 99), "p99_clients_ms": pct(lat["clients"], 99),
           "p50_none_ms": pct(lat["none"], 50), "p50_clients_ms": pct(lat["clients"], 50),
           "frames_none": len(lat["none"]), "frames_clients": len(lat["clients"]),
           "min_messages_per_client": min(min(r) for r in received) if received else 0,
           "dropped": dropped}
    res["p99_change"] = res["p99_clients_ms"] / res["p99_none_ms"] - 1.0
    print(f"  pipeline p99 without clients {res['p99_none_ms']:.1f} ms, with {args.clients} "
          f"clients {res['p99_clients_ms']:.1f} ms ({100 * res['p99_change']:+.1f} %); p50 "
          f"{res['p50_none_ms']:.1f} / {res['p50_clients_ms']:.1f} ms; every client got >= "
          f"{res['min_messages_per_client']} messages; dropped {dropped}", flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("all", "throughput", "latency", "clients"),
                    default="all")
    ap.add_argument("--clip-seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--client-seconds", type=float, default=60.0,
                    help="seconds of pushing per condition (with / without clients)")
    ap.add_argument("--async-detect", choices=("default", "off"), default="default",
                    help="throughput: the Recognizer default (asynchronous full face passes, "
                         "inline in the hub and in run()'s pipeline) or async_detect=False")
    ap.add_argument("--cv-threads", type=int, default=None,
                    help="cv2.setNumThreads for both variants (default: OpenCV's own)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--subscriber", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--clients-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.subscriber:
        kind, url, out, secs = args.subscriber
        subscriber_main(kind, url, out, float(secs))
        return 0
    if args.clients_child:
        url, n, secs, out = args.clients_child
        clients_main(url, int(n), float(secs), out)
        return 0
    if args.cv_threads is not None:
        import cv2

        cv2.setNumThreads(args.cv_threads)
    res = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": load(),
           "cv_threads": args.cv_threads}
    print(f"CPU {res['cpu']} ({res['cores']} cores), load average {res['load_before']}",
          flush=True)
    parts = ("throughput", "latency", "clients") if args.part == "all" else (args.part,)
    for part in parts:
        print(f"{part}:", flush=True)
        res[part] = globals()[f"part_{part}"](args)
    res["load_after"] = load()
    print(f"load average after: {res['load_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
