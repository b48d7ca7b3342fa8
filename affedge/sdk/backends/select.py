"""``select_backend``: the fastest backend that works here, and why the others were skipped.

Order (ARCHITECTURE.md §6): TensorRT engine built for this GPU > ONNX Runtime with the TensorRT
EP > ONNX Runtime with the CUDA EP > ONNX Runtime CPU > TorchScript > eager torch. Each candidate
is actually constructed (sessions created, engine target checked); the first that succeeds wins.
The returned backend carries ``selection``: ``[(candidate, "selected" | "skipped", reason)]``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from affedge.bundle import Bundle, load_bundle
from affedge.sdk.backends.base import Backend, BackendUnavailable

log = logging.getLogger(__name__)

ORDER = ("tensorrt", "ort-tensorrt", "ort-cuda", "ort-cpu", "torchscript", "torch")
ALIASES = {"onnxruntime": ("ort-tensorrt", "ort-cuda", "ort-cpu"), "ort": ("ort-cpu",),
           "cpu": ("ort-cpu",), "auto": ORDER}


def _factory(name: str, opts: dict[str, Any]) -> Callable[[Bundle], Backend]:
    if name == "tensorrt":
        from affedge.sdk.backends.tensorrt_backend import TensorRTBackend

        return lambda b: TensorRTBackend(b)
    if name.startswith("ort-"):
        from affedge.sdk.backends.onnxruntime_backend import OnnxRuntimeBackend

        kw = {k: v for k, v in opts.items()
              if k in ("precision", "fp16", "cache_dir", "intra_op_threads")}
        return lambda b: OnnxRuntimeBackend(b, provider=name[4:], **kw)
    if name == "torchscript":
        from affedge.sdk.backends.torchscript_backend import TorchScriptBackend

        return lambda b: TorchScriptBackend(b, device=opts.get("device", "cpu"))
    if name == "torch":
        from affedge.sdk.backends.torch_backend import TorchBackend

        return lambda b: TorchBackend(b, device=opts.get("device", "cpu"))
    if name == "torch-export":
        from affedge.sdk.backends.torch_backend import TorchExportBackend

        return lambda b: TorchExportBackend(b, device=opts.get("device", "cpu"))
    raise ValueError(f"unknown backend {name!r}; choose auto, onnxruntime, "
                     f"{', '.join(ORDER)} or torch-export")


def select_backend(bundle: Bundle | str | os.PathLike, backend: str = "auto",
                   **options: Any) -> Backend:
    """Construct the best working backend for ``bundle`` (a Bundle or a path to one).

    ``backend``: "auto", a candidate name from ``ORDER``, "onnxruntime" (best ORT provider),
    "cpu", or "torch-export". ``options``: precision ("fp32" | "int8" encoder), fp16 (ORT TensorRT
    EP), cache_dir (TensorRT EP engine cache), intra_op_threads, device (torch backends).
    Raises RuntimeError listing every candidate's reason if none works.
    """
    if isinstance(bundle, str) and isinstance(backend, Bundle):  # select_backend("auto", bundle)
        bundle, backend = backend, bundle
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(Path(bundle))
    candidates = ALIASES.get(backend, (backend,))
    report: list[tuple[str, str, str]] = []
    for name in candidates:
        try:
            be = _factory(name, options)(bundle)
        except (BackendUnavailable, ImportError) as exc:
            report.append((name, "skipped", str(exc)))
            log.info("backend %s skipped: %s", name, exc)
            continue
        report.append((name, "selected", f"providers {be.providers}"))
        be.selection = report
        log.info("backend %s selected (%s)", name, be.providers)
        return be
    lines = "\n".join(f"  {n}: {why}" for n, _, why in report)
    raise RuntimeError(f"no backend can run bundle {bundle.source} here:\n{lines}")


def describe_selection(backend: Backend) -> str:
    """Human-readable lines: which backend was picked and why the better ones were skipped."""
    rows = getattr(backend, "selection", [])
    return "\n".join(f"{status:8s} {name}: {why}" for name, status, why in rows)
