"""``torch.export`` programs (``.pt2``) and optional AOTInductor packages.

* :func:`export_program` — ``torch.export.export`` with dynamic dimensions, saved with
  ``torch.export.save``; reload with ``torch.export.load(path).module()``.
* :func:`export_aoti` — ``torch._inductor.aoti_compile_and_package``: compiles the program to a
  shared library (needs a C++ compiler; g++ here) packaged in a ``.pt2`` that
  ``torch._inductor.aoti_load_package`` runs from Python, or libtorch's ``AOTIModelPackageLoader``
  from C++ without Python. Slow (a full C++ compile per module: tens of seconds to minutes on
  this 2-core machine), hence opt-in (``affedge export --aoti``).
"""
from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from affedge.export.onnx_export import _dynamic_shapes


def export_program(module: torch.nn.Module, args: Sequence[torch.Tensor],
                   input_names: Sequence[str],
                   dynamic_axes: dict[str, dict[int, str]] | None = None):
    """``torch.export.export`` of ``module(*args)`` with the given dynamic axes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(
            module.eval(), tuple(args),
            dynamic_shapes=_dynamic_shapes(args, input_names, dynamic_axes or {}, module),
            strict=False)


def export_torch_program(module: torch.nn.Module, args: Sequence[torch.Tensor], path: str | Path,
                         input_names: Sequence[str],
                         dynamic_axes: dict[str, dict[int, str]] | None = None) -> dict[str, Any]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ep = export_program(module, args, input_names, dynamic_axes)
    torch.export.save(ep, str(path))
    return {"exporter": "torch.export", "notes": []}




def aoti_available() -> tuple[bool, str]:
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        return False, "no C++ compiler (g++/clang++) on PATH"
    if not hasattr(torch._inductor, "aoti_compile_and_package"):
        return False, f"torch {torch.__version__} has no torch._inductor.aoti_compile_and_package"
    return True, cxx


def export_aoti(module: torch.nn.Module, args: Sequence[torch.Tensor], path: str | Path,
                input_names: Sequence[str],
                dynamic_axes: dict[str, dict[int, str]] | None = None) -> dict[str, Any]:
    """Compile with AOTInductor into a ``.pt2`` package (see module doc for the cost)."""
    import time

    ok, why = aoti_available()
    if not ok:
        raise RuntimeError(f"AOTInductor packaging unavailable: {why}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ep = export_program(module, args, input_names, dynamic_axes)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch._inductor.aoti_compile_and_package(ep, package_path=str(path))
    secs = time.perf_counter() - t0
    return {"exporter": "torch._inductor.aoti_compile_and_package",
            "notes": [f"compile time {secs:.1f} s"], "compile_seconds": round(secs, 2)}

