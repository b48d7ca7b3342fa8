"""The one table of artifact formats and of the backends that run them.

Each :class:`Format` row says what a bundle artifact of that format is (file suffixes,
precisions, whether running it needs torch), how it is exported (``exporter``: a per-branch
function with one signature, see :mod:`affedge.export.exporters`; None for artifacts built from
another format, like int8 encoders and TensorRT engines) and which :class:`Runner` s execute it
(``select_backend`` candidates). The bundle reader/writer, the exporter, backend selection
(``auto`` order), ``affedge bench`` and the CLI help texts all read this module.

Adding a format = one row here + its exporter function + its backend class (one file).
Entries name their implementation as ``"module:attribute"`` strings, imported only when used,
so reading the table imports neither torch nor TensorRT.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Runner:
    """One way the runtime runs a format: a ``select_backend`` candidate."""

    name: str                            # candidate name, e.g. "ort-cpu"
    backend: str                         # "module:Class" of the Backend
    options: tuple[tuple[str, Any], ...] = ()  # fixed keyword arguments for the class
    accepts: tuple[str, ...] = ()        # select_backend options passed through
    auto: float | None = None            # position in "auto" (lower first); None: by name only
    description: str = ""                # the label in tables ("ONNX Runtime CPU")
    precisions: tuple[str, ...] = ("fp32",)  # what a `precision=` option may ask of it
    cpu_precisions: tuple[str, ...] = ()  # what `affedge bench` measures on a CPU (): not a CPU one

    def make(self, bundle, **options):
        """Construct the backend for ``bundle`` (raises BackendUnavailable/ImportError when it
        cannot run here, e.g. a precision it does not have)."""
        from affedge.sdk.backends.base import BackendUnavailable

        prec = options.get("precision")
        if prec is not None and prec not in self.precisions:
            raise BackendUnavailable(f"{self.name}: no {prec} path (has "
                                     f"{', '.join(self.precisions)})")
        kw = dict(self.options)
        kw.update({k: v for k, v in options.items() if k in self.accepts})
        return load(self.backend)(bundle, **kw)


@dataclass(frozen=True)
class Format:
    """An artifact format of a bundle."""

    name: str                      # the manifest's "format" value
    title: str                     # human name for tables
    suffixes: tuple[str, ...]      # allowed file suffixes in a bundle
    file_suffix: str               # what the exporter names a branch's file: <branch><file_suffix>
    precisions: tuple[str, ...]    # precisions an artifact of this format may have
    needs_torch: bool              # running it needs torch
    runners: tuple[Runner, ...] = ()
    exporter: str | None = None    # "module:function" per branch; None: built from another format
    probe: str | None = None       # "module:function" -> (ok, why): can it be exported here?
    requestable: bool = True       # accepted by `affedge export --format`
    default_export: bool = False   # in the default --format list
    cpu_runner: str | None = None  # the runner bench and export parity use on a CPU

    def available(self) -> tuple[bool, str]:
        """Whether this format can be exported on this machine, and why not."""
        if self.probe is None:
            return True, ""
        try:
            return load(self.probe)()
        except ImportError as exc:
            return False, str(exc)


def load(ref: str):
    """Import ``"module:attribute"``."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


_ORT = "affedge.sdk.backends.onnxruntime_backend:OnnxRuntimeBackend"
_ORT_OPTS = ("precision", "fp16", "cache_dir", "intra_op_threads", "spinning")
_DEVICE = ("device",)
_TORCH = ("device", "precision", "intra_op_threads")

FORMATS: tuple[Format, ...] = (
    Format("onnx", "ONNX", (".onnx",), ".onnx", ("fp32", "fp16"), False,
           runners=(
               Runner("ort-tensorrt", _ORT, (("provider", "tensorrt"),), _ORT_OPTS, auto=1,
                      precisions=("fp32", "int8"),
                      description="ONNX Runtime TensorRT EP"),
               Runner("ort-cuda", _ORT, (("provider", "cuda"),), _ORT_OPTS, auto=2,
                      precisions=("fp32", "int8"),
                      description="ONNX Runtime CUDA"),
               # ahead of ONNX Runtime CPU: fp32 mobile encoder 0.26x ORT's time, IR-50 a tie,
               # same outputs to 1e-6 (benchmarks/bench_openvino.py, benchmarks/README.md)
               Runner("openvino", "affedge.sdk.backends.openvino_backend:OpenVinoBackend",
                      (("precision", "fp32"),), ("precision", "intra_op_threads", "learn_batches"),
                      auto=2.5,
                      precisions=("fp32", "bf16", "int8"), cpu_precisions=("fp32", "bf16", "int8"),
                      description="OpenVINO CPU"),
               Runner("ort-cpu", _ORT, (("provider", "cpu"),), _ORT_OPTS, auto=3,
                      precisions=("fp32", "int8"), cpu_precisions=("fp32", "int8"),
                      description="ONNX Runtime CPU"),
           ),
           exporter="affedge.export.exporters:export_onnx_branch", default_export=True,
           cpu_runner="ort-cpu"),
    Format("onnx-int8", "ONNX int8", (".onnx",), ".int8.onnx", ("int8",), False,
           requestable=False, cpu_runner="ort-cpu"),  # made by `export --int8`, run by ORT
    Format("torchscript", "TorchScript", (".torchscript",), ".torchscript",
           ("fp32",), True,
           runners=(Runner("torchscript",
                           "affedge.sdk.backends.torchscript_backend:TorchScriptBackend",
                           accepts=_TORCH, auto=4, description="TorchScript",
                           precisions=("fp32", "bf16"), cpu_precisions=("fp32",)),),
           exporter="affedge.export.exporters:export_torchscript_branch",
           probe="affedge.export.exporters:torch_available", default_export=True,
           cpu_runner="torchscript"),
    Format("torch-export", "torch.export", (".pt2",), ".pt2", ("fp32",), True,
           runners=(Runner("torch-export", "affedge.sdk.backends.torch_backend:TorchExportBackend",
                           accepts=_TORCH, description="torch.export",
                           precisions=("fp32", "bf16"), cpu_precisions=("fp32",)),),
           exporter="affedge.export.exporters:export_torch_program_branch",
           probe="affedge.export.exporters:torch_available", default_export=True,
           cpu_runner="torch-export"),
    Format("aoti", "AOTInductor", (".pt2",), ".aoti.pt2", ("fp32",), True,
           runners=(Runner("aoti", "affedge.sdk.backends.aoti_backend:AotiBackend",
                           accepts=_DEVICE, auto=6, description="AOTInductor",
                           cpu_precisions=("fp32",)),),
           exporter="affedge.export.exporters:export_aoti_branch",
           probe="affedge.export.torch_export:aoti_available", cpu_runner="aoti"),
    Format("tensorrt", "TensorRT engine", (".engine", ".plan"), ".engine", ("fp32", "fp16", "int8"),
           False,
           runners=(Runner("tensorrt", "affedge.sdk.backends.tensorrt_backend:TensorRTBackend",
                           accepts=("precision",), auto=0, precisions=("fp32", "fp16", "int8"), description="TensorRT"),),
           probe="affedge.export.tensorrt_build:tensorrt_available"),  # built from the ONNX
    Format("safetensors", "PyTorch eager", (".safetensors",), ".safetensors", ("fp32", "bf16"),
           True,
           runners=(Runner("torch", "affedge.sdk.backends.torch_backend:TorchBackend",
                           accepts=_TORCH, auto=5, description="PyTorch eager",
                           precisions=("fp32", "bf16"), cpu_precisions=("fp32", "bf16")),),
           requestable=False, cpu_runner="torch"),  # the weights travel in every bundle
)

BY_NAME: dict[str, Format] = {f.name: f for f in FORMATS}
RUNNERS: dict[str, Runner] = {r.name: r for f in FORMATS for r in f.runners}

#: the order select_backend(bundle, "auto") tries
AUTO_ORDER: tuple[str, ...] = tuple(
    r.name for r in sorted((r for r in RUNNERS.values() if r.auto is not None),
                           key=lambda r: r.auto))

#: backend names that stand for several candidates
ALIASES: dict[str, tuple[str, ...]] = {
    "auto": AUTO_ORDER,
    "onnxruntime": ("ort-tensorrt", "ort-cuda", "ort-cpu"),
    "ort": ("ort-cpu",),
    "cpu": ("ort-cpu",),
}

#: every name select_backend accepts
BACKEND_NAMES: tuple[str, ...] = tuple(ALIASES) + tuple(RUNNERS)

#: formats `affedge export --format` accepts, and its default list
EXPORT_FORMATS: tuple[str, ...] = tuple(f.name for f in FORMATS if f.requestable)
DEFAULT_EXPORT_FORMATS: tuple[str, ...] = tuple(f.name for f in FORMATS if f.default_export)

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")


def format_of_runner(name: str) -> Format:
    """The format a runner executes."""
    for f in FORMATS:
        if any(r.name == name for r in f.runners):
            return f
    raise KeyError(name)


def backend_help() -> str:
    """One line for CLI help texts: the backend names and the auto order."""
    return (f"auto (tries {' > '.join(AUTO_ORDER)}), "
            + ", ".join(n for n in BACKEND_NAMES if n != "auto"))


def export_help() -> str:
    """One line for `affedge export --format`."""
    return ("comma-separated, from: " + ", ".join(EXPORT_FORMATS)
            + f" (default {','.join(DEFAULT_EXPORT_FORMATS)})")
