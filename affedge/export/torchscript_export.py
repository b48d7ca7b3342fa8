"""TorchScript export (``torch.jit.trace``), for libtorch C++ and older JetPack stacks.

torch 2.13 marks ``torch.jit.trace``/``script`` deprecated (DeprecationWarning) in favour of
``torch.export``; TorchScript is kept because libtorch and older Jetson stacks still load it.
Tracing is used (the modules have no data-dependent control flow); the trace is checked on a
second input with a different batch size so a baked-in batch dimension is caught here.
The file is a torch zip archive saved with the ``.torchscript`` suffix (the bundle refuses
``.pt``/``.pth`` pickles; see :func:`affedge.bundle.check_no_pickle`).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def export_torchscript(module: torch.nn.Module, args: Sequence[torch.Tensor], path: str | Path,
                       check_args: Sequence[torch.Tensor] | None = None) -> dict[str, Any]:
    """Trace ``module(*args)`` and save it to ``path``; returns ``{"exporter", "notes"}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the deprecation notice and TracerWarnings on checks
        traced = torch.jit.trace(module, tuple(args), check_trace=False)
        traced = torch.jit.freeze(traced.eval())
        if check_args is not None:
            ref = module(*check_args)
            got = traced(*check_args)
            ref = ref if isinstance(ref, (tuple, list)) else (ref,)
            got = got if isinstance(got, (tuple, list)) else (got,)
            for r, g in zip(ref, got):
                if r.shape != g.shape or not torch.allclose(r, g, atol=1e-4, rtol=1e-4):
                    raise RuntimeError(f"{path.name}: the TorchScript trace does not generalise "
                                       f"to inputs of another shape ({tuple(r.shape)})")
        torch.jit.save(traced, str(path))
    return {"exporter": "torch.jit.trace+freeze",
            "notes": ["torch.jit is deprecated in torch>=2.10; kept for libtorch/JetPack"]}

