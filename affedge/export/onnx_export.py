"""ONNX export of one module (encoder, streaming step or window form).

Tries the torch.export-based exporter first (``torch.onnx.export(..., dynamo=True)``, the default
since torch 2.9, needs onnxscript) and falls back to the legacy TorchScript-based exporter when it
fails for a module, or when it cannot write the requested opset (it writes opset >= 18 only:
:data:`~affedge.export.exporters.DYNAMO_MIN_OPSET`); the record says which one produced the file,
and the file's opset is always the requested one. The graph is checked with
``onnx.checker`` (full check, with shape inference) and must open in ONNX Runtime (CPU).
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from affedge.export.exporters import DYNAMO_MIN_OPSET, MIN_OPSET, OPSET

log = logging.getLogger(__name__)


def max_opset() -> int:
    """The newest opset both the legacy exporter and the installed ``onnx`` know."""
    import onnx

    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
    except ImportError:  # pragma: no cover - private torch constant moved
        ONNX_MAX_OPSET = DYNAMO_MIN_OPSET
    return int(min(ONNX_MAX_OPSET, onnx.defs.onnx_opset_version()))


def check_opset(opset: int, exporter: str = "auto") -> None:
    """Refuse (``ValueError``) an opset the export cannot write, before anything is exported."""
    hi = max_opset()
    if not MIN_OPSET <= int(opset) <= hi:
        raise ValueError(f"opset {opset}: the ONNX export writes opsets {MIN_OPSET}..{hi} (older "
                         "ones lack ops these graphs need; newer ones are unknown to the "
                         "installed torch/onnx)")
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise ValueError(f"opset {opset}: torch's dynamo ONNX exporter writes opset >= "
                         f"{DYNAMO_MIN_OPSET} only (its down-conversion fails on these graphs); "
                         "use the legacy exporter (onnx_exporter='auto' or 'legacy')")


def _file_opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")),
                None)


def _dynamic_shapes(args: Sequence[torch.Tensor], input_names: Sequence[str],
                    dynamic_axes: dict[str, dict[int, str]], module: torch.nn.Module | None = None):
    """torch.export ``dynamic_shapes`` for positional args: one ``Dim`` per symbol name,
    structured like ``module.forward``'s signature (``*args`` become one nested tuple)."""
    dims: dict[str, Any] = {}
    spec = []
    for name, a in zip(input_names, args):
        axes = dynamic_axes.get(name, {})
        d = {}
        for ax, sym in axes.items():
            if sym not in dims:
                dims[sym] = torch.export.Dim(sym, min=1, max=4096)
            d[ax] = dims[sym]
        spec.append(d or None)
    if module is not None:
        import inspect

        params = list(inspect.signature(module.forward).parameters.values())
        out, i = [], 0
        for p in params:
            if p.kind == p.VAR_POSITIONAL:
                if i < len(spec):  # (none left, e.g. a visual-only window: no entry at all)
                    out.append(tuple(spec[i:]))
                i = len(spec)
                break
            if i < len(spec):
                out.append(spec[i])
                i += 1
        return tuple(out)
    return tuple(spec)


def _reraise_interrupt(exc: BaseException) -> None:
    """Raise KeyboardInterrupt if ``exc`` wraps one: torch.export reports a Ctrl-C that lands
    inside it as a TorchExportError, which would otherwise read as an exporter limitation and
    send the export on to the legacy exporter with the user's interrupt lost."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


def export_onnx(module: torch.nn.Module, args: Sequence[torch.Tensor], path: str | Path,
                input_names: Sequence[str], output_names: Sequence[str],
                dynamic_axes: dict[str, dict[int, str]] | None = None, opset: int = OPSET,
                exporter: str = "auto") -> dict[str, Any]:
    """Export ``module(*args)`` to ``path``; returns ``{"exporter", "opset", "notes"}``.

    ``dynamic_axes``: ``{input_or_output_name: {axis: symbol}}`` (e.g. ``{"frames": {0: "N"}}``).
    ``exporter``: "auto" (dynamo, then legacy; legacy directly for ``opset`` below
    :data:`DYNAMO_MIN_OPSET`), "dynamo" or "legacy". The file is written at exactly ``opset``
    or this raises (``ValueError`` for an opset the exporter cannot write, ``RuntimeError``
    when the written file has another opset).
    """
    import onnx

    check_opset(opset, exporter)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = dynamic_axes or {}
    module = module.eval()
    args = tuple(args)
    notes: list[str] = []
    used = None
    if exporter == "auto" and opset < DYNAMO_MIN_OPSET:
        notes.append(f"legacy exporter: opset {opset} < {DYNAMO_MIN_OPSET}, the lowest the "
                     "dynamo exporter writes")
        exporter = "legacy"
    if exporter in ("auto", "dynamo"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, args, str(path), dynamo=True, input_names=list(input_names),
                    output_names=list(output_names), opset_version=opset,
                    dynamic_shapes=_dynamic_shapes(args, input_names, dynamic_axes, module),
                    external_data=False, optimize=True, verbose=False)
            got = _file_opset(path)
            if got != opset:  # the exporter's version conversion did not take: never keep it
                raise RuntimeError(f"dynamo exporter wrote opset {got}, not the requested "
                                   f"{opset}")
            used = "dynamo"
        except Exception as exc:  # exporter limitation for this module: fall back
            _reraise_interrupt(exc)
            if exporter == "dynamo":
                raise
            msg = f"dynamo exporter failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            log.warning("%s; falling back to the legacy exporter", msg)
            notes.append(msg)
    if used is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, str(path), dynamo=False, input_names=list(input_names),
                output_names=list(output_names), opset_version=opset,
                dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
                do_constant_folding=True)
        used = "legacy"
    model = onnx.load(str(path))
    if strip_build_details(model):
        onnx.save(model, str(path))
    onnx.checker.check_model(model, full_check=True)
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != list(input_names) or got_out != list(output_names):
        raise RuntimeError(f"{path.name}: exported names {got_in} -> {got_out} differ from "
                           f"{list(input_names)} -> {list(output_names)}")
    opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                      opset)
    if int(opset_used) != int(opset):
        raise RuntimeError(f"{path.name}: the {used} exporter wrote opset {opset_used}, not the "
                           f"requested {opset}")
    return {"exporter": used, "opset": int(opset_used), "notes": notes}


def strip_build_details(model) -> bool:
    """Drop what the exporter records about the machine that built the file: each node's
    ``metadata_props`` (the dynamo exporter's ``pkg.torch.onnx.stack_trace`` holds the build
    machine's source paths, 373 in a demo encoder, as a privacy trial found) and doc strings,
    in the graph, its subgraphs and local functions. The computation is untouched. Returns
    whether anything was dropped."""
    changed = False

    def graph(g) -> None:
        nonlocal changed
        for node in g.node:
            if len(node.metadata_props) or node.doc_string:
                del node.metadata_props[:]
                node.doc_string = ""
                changed = True
            for attr in node.attribute:
                if attr.HasField("g"):
                    graph(attr.g)
                for sub in attr.graphs:
                    graph(sub)
        if g.doc_string:
            g.doc_string = ""
            changed = True

    graph(model.graph)
    for fn in model.functions:  # (a FunctionProto has node and doc_string as a graph has)
        graph(fn)
    return changed


def onnx_io_specs(path: str | Path) -> tuple[list[dict], list[dict]]:
    """Input/output tensor specs (name, shape with symbols, dtype) read from an ONNX file."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)

    def spec(v):
        tt = v.type.tensor_type
        shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in tt.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        return {"name": v.name, "shape": shape, "dtype": dtype}

    return [spec(v) for v in model.graph.input], [spec(v) for v in model.graph.output]
