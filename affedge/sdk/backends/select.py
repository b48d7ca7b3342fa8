"""``select_backend``: the fastest backend that works here, and why the others were skipped.

Order (ARCHITECTURE.md §6; the ``auto`` positions of :mod:`affedge.formats`): TensorRT engine
built for this GPU > ONNX Runtime with the TensorRT EP > ONNX Runtime with the CUDA EP > ONNX
Runtime CPU > TorchScript > eager torch > AOTInductor. Each candidate
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
from affedge.formats import ALIASES, AUTO_ORDER, RUNNERS, backend_help
from affedge.sdk.backends.base import Backend, BackendUnavailable

log = logging.getLogger(__name__)

ORDER = AUTO_ORDER  # the "auto" order, from the format table
#: every option some backend takes: one that none takes is a mistake (a misspelt key would
#: otherwise be dropped silently); an option only some candidates take goes to those
KNOWN_OPTIONS = frozenset(k for r in RUNNERS.values() for k in r.accepts)


def _factory(name: str, opts: dict[str, Any]) -> Callable[[Bundle], Backend]:
    runner = RUNNERS.get(name)
    if runner is None:
        raise ValueError(f"unknown backend {name!r}; choose {backend_help()}")
    return lambda b: runner.make(b, **opts)


def select_backend(bundle: Bundle | str | os.PathLike, backend: str = "auto",
                   **options: Any) -> Backend:
    """Construct the best working backend for ``bundle`` (a Bundle or a path to one).

    ``backend``: "auto", a runner name of :data:`affedge.formats.RUNNERS` (e.g. "ort-cpu",
    "torch-export", "aoti") or an alias ("onnxruntime": best ORT provider, "ort", "cpu"). ``options``: precision ("fp32" | "int8" encoder), fp16 (ORT TensorRT
    EP), cache_dir (TensorRT EP engine cache), intra_op_threads, device (torch backends).
    Raises RuntimeError listing every candidate's reason if none works.
    """
    if isinstance(bundle, str) and isinstance(backend, Bundle):  # select_backend("auto", bundle)
        bundle, backend = backend, bundle
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(Path(bundle))
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise ValueError(f"unknown backend option{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}; the backends take "
                         f"{', '.join(sorted(KNOWN_OPTIONS))}")
    check_precision(bundle, options.get("precision"))
    candidates = ALIASES.get(backend, (backend,))
    report: list[tuple[str, str, str]] = []
    for name in candidates:
        try:
            be = _factory(name, options)(bundle)
        except (BackendUnavailable, ImportError) as exc:
            why = str(exc)  # reported after the name: a reason that starts with it drops it
            report.append((name, "skipped", why[len(name) + 2:] if why.startswith(f"{name}: ")
                           else why))
            log.info("backend %s skipped: %s", name, exc)
            continue
        report.append((name, "selected", f"providers {be.providers}"))
        be.selection = report
        log.info("backend %s selected (%s)", name, be.providers)
        return be
    lines = "\n".join(f"  {n}: {why}" for n, _, why in report)
    raise RuntimeError(f"no backend can run bundle {bundle.source} here:\n{lines}")


def check_precision(bundle: Bundle, precision: str | None) -> None:
    """ValueError for int8 on a bundle without an int8 encoder: the ONNX backends would run its
    fp32 graph instead, and ``bench --precision int8`` reported that run as int8."""
    if precision == "int8" and not bundle.has("encoder", precision="int8"):
        raise ValueError(f"precision int8: bundle {bundle.source} has no int8 encoder; export "
                         f"one with `affedge export CHECKPOINT --format onnx --int8 --calib "
                         f"DATA_DIR`")


def describe_selection(backend: Backend) -> str:
    """Human-readable lines: which backend was picked and why the better ones were skipped."""
    rows = getattr(backend, "selection", [])
    return "\n".join(f"{status:8s} {name}: {why}" for name, status, why in rows)
