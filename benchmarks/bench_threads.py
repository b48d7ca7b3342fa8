"""Thread-policy benchmark: ONNX Runtime intra-op threads x spinning, idle vs a CPU hog.

Times the shipped :class:`OnnxRuntimeBackend` (so what is measured is what runs) on the encoder
(batch 1) and the streaming step (batch 1) of random-weights IR-50 and mobile bundles, for

* 1 intra-op thread (no pool: spinning does not apply),
* 2 threads with spinning (ONNX Runtime's default on a 2-core machine),
* 2 threads without spinning,

each on an otherwise idle machine and next to a CPU hog (a real busy subprocess pinned to the
last CPU: what the ``async_detect`` worker, audio capture or another process does to a kiosk).
Variants and load states are interleaved round by round, so drifts in the shared machine's
load hit all of them alike. Prints medians and p99 per cell, the hog/idle ratio and the ratio
to 1 thread, with the CPU model and load average. About 2-3 minutes (``--seconds``).

    python benchmarks/bench_threads.py [--bundles DIR] [--seconds 120] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from affedge.sdk.backends.cpu_features import cpu_model

VARIANTS = (("1 thread", 1, False), ("2 threads, spinning", 2, True),
            ("2 threads, no spinning", 2, False))
ENCODERS = ("ir50", "mobile")
LOADS = ("idle", "hog")


def bundle_for(encoder: str, root: Path) -> Path:
    """A random-weights bundle of ``encoder`` under ``root`` (exported once, then reused)."""
    out = root / f"bundle_{encoder}"
    if not (out / "manifest.json").exists():
        from affedge.benchmarking.pipeline import fresh_bundle

        fresh_bundle(out, encoder, int8=True)
    return out


class Hog:
    """A busy-looping subprocess pinned to the last CPU (started/stopped per round)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.cpu = (os.cpu_count() or 1) - 1

    def start(self) -> None:
        if self.proc is None:
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            os.sched_setaffinity(self.proc.pid, {self.cpu})
            time.sleep(0.2)  # let it reach the loop

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def model_inputs(backend, model: str, rng) -> dict[str, np.ndarray]:
    """Batch-1 inputs from the manifest specs (random crops / embeddings, zero state)."""
    feeds = {}
    for s in backend.input_specs(model):
        shape = [1 if isinstance(d, str) else d for d in s["shape"]]
        if s["name"].startswith("state"):
            feeds[s["name"]] = np.zeros(shape, np.float32)
        else:
            feeds[s["name"]] = rng.uniform(-1, 1, shape).astype(np.float32)
    return feeds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", type=Path,
                    default=Path(tempfile.gettempdir()) / "affedge-bench-bundles")
    ap.add_argument("--seconds", type=float, default=120.0,
                    help="measuring time after warm-up (rounds run until it is spent)")
    ap.add_argument("--cell-seconds", type=float, default=0.25,
                    help="time per cell per round (calls = this / warm-up latency, 2..40): "
                         "short cells, many rounds, so external load drifts hit every variant")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from affedge.bundle import load_bundle
    from affedge.sdk.backends.onnxruntime_backend import OnnxRuntimeBackend

    rng = np.random.default_rng(0)
    backends, feeds = {}, {}
    for enc in ENCODERS:
        b = load_bundle(bundle_for(enc, args.bundles))
        for label, n, spin in VARIANTS:
            be = OnnxRuntimeBackend(b, "cpu", intra_op_threads=n, spinning=spin,
                                    models=("encoder", "step"))
            backends[(enc, label)] = be
        for model in ("encoder", "step"):
            feeds[(enc, model)] = model_inputs(be, model, rng)
    cells = [(enc, model, label) for enc in ENCODERS for model in ("encoder", "step")
             for label, _, _ in VARIANTS]
    times: dict[tuple, list[float]] = {(c, ld): [] for c in cells for ld in LOADS}
    calls = {}
    for c in cells:  # warm-up (first calls allocate), then size each cell's calls per round
        enc, model, label = c
        for _ in range(3):
            t0 = time.perf_counter()
            backends[(enc, label)].run(model, feeds[(enc, model)])
            dt = time.perf_counter() - t0
        calls[c] = int(min(40, max(2, args.cell_seconds / max(dt, 1e-6))))

    hog = Hog()
    load_before = os.getloadavg()
    loads_seen = []
    t_end = time.monotonic() + args.seconds
    rounds = 0
    order = random.Random(0)
    try:
        while rounds < 3 or time.monotonic() < t_end:
            loads = list(LOADS) if rounds % 2 == 0 else list(reversed(LOADS))
            for ld in loads:
                hog.start() if ld == "hog" else hog.stop()
                round_cells = cells[:]
                order.shuffle(round_cells)
                for c in round_cells:
                    enc, model, label = c
                    be, x = backends[(enc, label)], feeds[(enc, model)]
                    be.run(model, x)  # one untimed call after switching variant
                    ts = times[(c, ld)]
                    for _ in range(calls[c]):
                        t0 = time.perf_counter()
                        be.run(model, x)
                        ts.append(time.perf_counter() - t0)
            rounds += 1
            loads_seen.append(os.getloadavg()[0])
    finally:
        hog.stop()
    load_after = os.getloadavg()

    rows = []
    for c in cells:
        enc, model, label = c
        r = {"encoder": enc, "model": model, "variant": label}
        for ld in LOADS:
            a = np.asarray(times[(c, ld)]) * 1e3
            r[f"{ld}_p50_ms"] = float(np.median(a))
            r[f"{ld}_p99_ms"] = float(np.percentile(a, 99))
            r[f"{ld}_n"] = int(a.size)
        r["hog_over_idle_p50"] = r["hog_p50_ms"] / r["idle_p50_ms"]
        rows.append(r)
    for r in rows:  # ratio to 1 thread in the same load state
        ref = next(q for q in rows if q["encoder"] == r["encoder"] and q["model"] == r["model"]
                   and q["variant"] == VARIANTS[0][0])
        for ld in LOADS:
            r[f"{ld}_vs_1thread_p50"] = r[f"{ld}_p50_ms"] / ref[f"{ld}_p50_ms"]

    import onnxruntime as ort

    info = {"cpu": cpu_model(), "cpus": os.cpu_count(), "onnxruntime": ort.__version__,
            "loadavg_before": load_before, "loadavg_after": load_after, "rounds": rounds,
            "loadavg_1min_per_round": loads_seen, "hog_cpu": hog.cpu,
            "calls_per_cell_round": {" ".join(c): n for c, n in calls.items()}}
    print(f"CPU {info['cpu']} x{info['cpus']}, onnxruntime {ort.__version__}, "
          f"{rounds} interleaved rounds, loadavg before {load_before[0]:.2f} after "
          f"{load_after[0]:.2f} (1-min, per round {min(loads_seen):.1f}..{max(loads_seen):.1f}); "
          f"hog pinned to CPU {hog.cpu}")
    print(f"{'model':16s} {'variant':24s} {'idle p50':>9s} {'idle p99':>9s} {'hog p50':>9s} "
          f"{'hog p99':>9s} {'hog/idle':>8s} {'vs 1t idle':>10s} {'vs 1t hog':>9s}")
    for r in rows:
        print(f"{r['encoder'] + ' ' + r['model']:16s} {r['variant']:24s} "
              f"{r['idle_p50_ms']:9.3f} {r['idle_p99_ms']:9.3f} {r['hog_p50_ms']:9.3f} "
              f"{r['hog_p99_ms']:9.3f} {r['hog_over_idle_p50']:8.2f} "
              f"{r['idle_vs_1thread_p50']:10.2f} {r['hog_vs_1thread_p50']:9.2f}")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    for be in backends.values():
        be.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
