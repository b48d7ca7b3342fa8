"""Per-branch exporters with one signature, named by the format table (:mod:`affedge.formats`).

``exporter(branch, path, ctx) -> (record, io) | None``: write ``branch`` (an
:class:`affedge.export.api.Branch`: module, example inputs, names, dynamic axes) to ``path`` and
return the manifest record fields plus the I/O specs read back from the file (``io`` None: the
specs of the example tensors are used), or None when this format does not apply to the branch.
``ctx``: :class:`ExportContext` (options of the export run).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportContext:
    opset: int = 18
    onnx_exporter: str = "auto"


def torch_available() -> tuple[bool, str]:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False, "torch is not installed (pip install affedge[train])"
    return True, ""


def export_onnx_branch(b, path: Path, ctx: ExportContext):
    from affedge.export.onnx_export import export_onnx, onnx_io_specs

    rec = export_onnx(b.module, b.args, path, b.input_names, b.output_names, b.dynamic,
                      opset=ctx.opset, exporter=ctx.onnx_exporter)
    return rec, onnx_io_specs(path)


def export_torchscript_branch(b, path: Path, ctx: ExportContext):
    from affedge.export.torchscript_export import export_torchscript

    return export_torchscript(b.module, b.args, path, b.check_args if b.dynamic else None), None


def export_torch_program_branch(b, path: Path, ctx: ExportContext):
    from affedge.export.torch_export import export_torch_program

    return export_torch_program(b.module, b.args, path, b.input_names, b.dynamic), None


def export_aoti_branch(b, path: Path, ctx: ExportContext):
    from affedge.export.torch_export import export_aoti

    if b.name == "window":  # the runtime path is encoder + step; compiling is slow
        return None
    return export_aoti(b.module, b.args, path, b.input_names, b.dynamic), None
