"""Synchronous against asynchronous full face-detection passes: push_frame latency per frame phase, run() fps.

One process, one backend, two Recognizers on the demo bundle and clip, measured in
interleaved rounds (the order reversed every other round, so both see the same load):

* ``default``: the runtime's default (``async_detect=None``: the full pass runs on a worker
  thread beside the frame's model calls and joins the frame ``lag`` later; inline in
  ``run()``'s pipeline);
* ``sync``: ``async_detect=False`` (every ``detect_every``-th frame carries the full pass).

Per variant: ``push_audio`` + ``push_frame`` latency (p50 / p90 / p99 and p99 / p50, the
``affedge bench`` whole-frame loop) and its p50 / p99 per frame phase (frame index modulo
``detect_every``: the sync variant's phase 0 carries the pass), and ``Recognizer.run`` over
the clip file, pipelined and serial (Predictions per second).

Run (about 20 s per round on a 2-core machine):

    .venv/bin/python benchmarks/bench_async_detect.py [--rounds 4] [--frames 300]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np


WARMUP = 10


def main(argv=None) -> int:
    from affedge.benchmarking.pipeline import (
        _end_to_end,
        load_clip,
        make_backend,
        push_times,
        resolve_bundle,
    )
    from affedge.benchmarking.harness import cpu_model
    from affedge.sdk.engine import DEFAULT_DETECT_EVERY
    from affedge.sdk.recognizer import Recognizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    ap.add_argument("--frames", type=int, default=300, help="timed push frames per round")
    ap.add_argument("--backend", default="auto", help="model backend (default auto)")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.frames < 20:
        ap.error("--rounds must be >= 1 and --frames >= 20")

    wd = tempfile.TemporaryDirectory()
    bundle, what = resolve_bundle(None, wd.name, say=lambda s: None)
    clip = load_clip(None, wd.name)
    be = make_backend(bundle, args.backend, "fp32", 1)
    from affedge.sdk.backends.threads import usable_cpus

    print(f"machine: {cpu_model()}, {usable_cpus()} usable cores, load "
          f"{os.getloadavg()[0]:.2f} at start; bundle: {what}; backend {be.name}; clip "
          f"{clip.frames[0].shape[1]}x{clip.frames[0].shape[0]}, detect_every "
          f"{DEFAULT_DETECT_EVERY}")
    recs = {"default": Recognizer(bundle, backend=be),
            "sync": Recognizer(bundle, backend=be, async_detect=False)}
    lat: dict[str, list[np.ndarray]] = {k: [] for k in recs}
    fps: dict[str, dict[str, list[float]]] = {k: {"pipelined": [], "serial": []}
                                              for k in recs}
    order = list(recs)
    try:
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                rec = recs[name]
                ms = np.asarray(push_times(rec, clip, args.frames, WARMUP))
                lat[name].append(ms)
                line = (f"round {r} {name:8s} push p50 {np.percentile(ms, 50):.2f} p99 "
                        f"{np.percentile(ms, 99):.2f} ms")
                e2e = _end_to_end(rec, clip, 150, 5, 60.0)
                fps[name]["pipelined"].append(1000.0 / e2e["end_to_end"].mean_ms)
                fps[name]["serial"].append(1000.0 / e2e["end_to_end_serial"].mean_ms)
                line += (f"; run() {fps[name]['pipelined'][-1]:.1f} fps pipelined, "
                         f"{fps[name]['serial'][-1]:.1f} serial")
                print(line, flush=True)
    finally:
        for rec in recs.values():
            rec.close()
    print(f"load {os.getloadavg()[0]:.2f} at end\n")
    k = DEFAULT_DETECT_EVERY
    print("| variant | push p50 / p90 / p99 ms (median of rounds) | p99 / p50 | per phase "
          "p50 / p99 (frame % " + str(k) + " = 0, 1, ...) | run() fps pipelined / serial |")
    print("|---|---|---|---|---|")
    for name in recs:
        rounds = lat[name]
        q = np.median([np.percentile(ms, [50, 90, 99]) for ms in rounds], axis=0)
        ratio = float(np.median([np.percentile(ms, 99) / np.percentile(ms, 50)
                                 for ms in rounds]))
        allms = np.concatenate(rounds)
        phase = np.concatenate([(np.arange(len(ms)) + WARMUP) % k for ms in rounds])
        phases = ", ".join(f"{np.percentile(allms[phase == p], 50):.1f}/"
                           f"{np.percentile(allms[phase == p], 99):.1f}" for p in range(k))
        run = f"{np.median(fps[name]['pipelined']):.1f} / {np.median(fps[name]['serial']):.1f}"
        print(f"| {name} | {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} | {ratio:.2f} | {phases} | "
              f"{run} |")
    wd.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
