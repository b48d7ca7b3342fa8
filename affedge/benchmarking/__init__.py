"""Benchmark tooling behind ``affedge bench`` and the ``benchmarks/`` pytest-benchmark suites.

* :mod:`affedge.benchmarking.harness`  — warm-up + timed loop, latency percentiles
  (p50/p90/p99, MLPerf single-stream = p90 of one query), machine description, thread control;
* :mod:`affedge.benchmarking.roofline` — measured GEMM peak of this machine per precision and
  FLOPs per frame of each model part -> physical lower bound and achieved/limit;
* :mod:`affedge.benchmarking.pipeline` — per-stage timings of the runtime on a bundle and a
  clip (face detect, align+preprocess, encoder, audio features, step, whole frame, end to end),
  the encoder per format/precision, and the streaming-vs-window-recompute reference comparison;
* :mod:`affedge.benchmarking.report`   — the text tables and the JSON document.

Top-level imports are numpy/stdlib only (runtime-safe); torch is imported lazily, only to count
FLOPs or to time torch GEMMs and eager encoders when it is installed.
"""
from __future__ import annotations

from affedge.benchmarking.harness import LatencyStats, machine_info, measure

__all__ = ["LatencyStats", "machine_info", "measure"]
