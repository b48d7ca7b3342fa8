"""Timing harness: warm up, time many calls, report latency percentiles and throughput.

Conventions (EDGE.md "Benchmarks"): warm-up calls are never timed; every timed call is measured
with ``time.perf_counter_ns`` on its own; the summary is p50/p90/p99 (and mean/min/max) in
milliseconds plus throughput in calls per second (``1000 / mean``). MLPerf Inference's
single-stream scenario reports the 90th-percentile latency of one query: :attr:`LatencyStats.p90_ms`
of the whole-frame tick is our headline figure. Only numpy and the standard library here.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata as _md
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from affedge.sdk.backends.cpu_features import cpu_flags, cpu_model  # noqa: F401  (re-exported)

PERCENTILES = (50, 90, 99)


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Summary of one timed loop (all times in milliseconds)."""

    n: int
    mean_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def fps(self) -> float:
        """Throughput of back-to-back calls: 1000 / mean latency."""
        return 1000.0 / self.mean_ms if self.mean_ms > 0 else float("inf")

    @classmethod
    def from_samples(cls, samples_ms: Iterable[float]) -> LatencyStats:
        a = np.asarray(list(samples_ms), np.float64)
        if a.size == 0:
            raise ValueError("LatencyStats: no samples (ran zero timed iterations)")
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError("LatencyStats: samples must be finite and >= 0 ms")
        p50, p90, p99 = np.percentile(a, PERCENTILES)
        return cls(n=int(a.size), mean_ms=float(a.mean()), min_ms=float(a.min()),
                   p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99), max_ms=float(a.max()))

    def as_dict(self) -> dict[str, float]:
        d = dataclasses.asdict(self)
        d["fps"] = self.fps
        return d

    def scaled(self, factor: float) -> LatencyStats:
        """The same distribution with every time multiplied by ``factor`` (e.g. per item)."""
        return LatencyStats(self.n, self.mean_ms * factor, self.min_ms * factor,
                            self.p50_ms * factor, self.p90_ms * factor, self.p99_ms * factor,
                            self.max_ms * factor)


def measure(fn: Callable[[], Any], iters: int = 100, warmup: int = 10,
            max_seconds: float | None = None, min_iters: int = 5) -> LatencyStats:
    """Call ``fn()`` ``warmup`` times untimed, then ``iters`` times, timing each call.

    ``max_seconds`` bounds the timed loop (at least ``min_iters`` calls still run), so a slow
    stage on a loaded machine cannot stall a run. Returns :class:`LatencyStats`.
    """
    if iters < 1:
        raise ValueError(f"measure: iters must be >= 1, got {iters}")
    for _ in range(max(0, int(warmup))):
        fn()
    samples = []
    start = time.perf_counter()
    for i in range(int(iters)):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if max_seconds is not None and i + 1 >= min_iters and \
                time.perf_counter() - start > max_seconds:
            break
    return LatencyStats.from_samples(samples)


class StageTimes:
    """Collects per-call durations by stage name (``with st.time("encoder"): ...``)."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def add(self, stage: str, ms: float) -> None:
        self.samples.setdefault(stage, []).append(float(ms))

    def time(self, stage: str):
        return _Timed(self, stage)

    def stats(self) -> dict[str, LatencyStats]:
        return {k: LatencyStats.from_samples(v) for k, v in self.samples.items() if v}


class _Timed:
    def __init__(self, owner: StageTimes, stage: str) -> None:
        self.owner, self.stage = owner, stage

    def __enter__(self):
        self.t0 = time.perf_counter_ns()
        return self

    def __exit__(self, *exc) -> None:
        self.owner.add(self.stage, (time.perf_counter_ns() - self.t0) / 1e6)


# ------------------------------------------------------------------------------ machine info
def _version(dist: str) -> str | None:
    try:
        return _md.version(dist)
    except _md.PackageNotFoundError:
        return None


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, load average, library versions."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux/macOS
        load = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "threads": threads,
        "loadavg_1_5_15": load,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "torch": _version("torch"),
        "opencv": _version("opencv-python-headless") or _version("opencv-python"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def set_threads(n: int) -> None:
    """Use ``n`` threads in every library we time: OpenCV now, torch if it is imported or
    importable (ONNX Runtime sessions take ``intra_op_threads`` at construction)."""
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    try:
        import cv2

        cv2.setNumThreads(int(n))
    except ImportError:  # pragma: no cover - OpenCV is a runtime dependency
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(n))
