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

OPSET = 18  # default ONNX opset of every graph (supported by ORT >= 1.14 and TensorRT 10)
# torch's dynamo ONNX exporter builds graphs from torchlib, which implements opset 18 and newer
# only; a lower target goes through onnxscript's down-converter, which fails on these graphs
# (ReduceMean's axes input) and then silently keeps opset 18. Lower opsets are therefore written
# by the legacy TorchScript-based exporter (affedge.export.onnx_export), which honours them.
DYNAMO_MIN_OPSET = 18
MIN_OPSET = 11  # opset <= 10 cannot express the step/window graphs (dynamic Slice, ...)


@dataclass(frozen=True)
class ExportContext:
    opset: int = OPSET
    onnx_exporter: str = "auto"


def torch_available() -> tuple[bool, str]:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False, "torch is not installed (pip install 'affedge[train]')"
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
