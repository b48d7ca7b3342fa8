"""torch backends: eager PyTorch from the bundle's safetensors + model config, and
``torch.export`` programs (``.pt2``; also AOTInductor packages).

The eager backend rebuilds ``AffectModel`` from the manifest's model config, loads the
``weights`` safetensors artifact, and serves the same three models as the exported artifacts:
``encoder`` (folded encoder), ``step`` (:class:`affedge.export.streaming.StreamingStep`) and
``window``. ``precision="bf16"`` casts the encoder's weights (see
:mod:`affedge.sdk.backends.torchscript_backend`). It imports torch and the model code lazily,
only when constructed (the runtime never imports them otherwise; this is the one place the
runtime may reach into affedge.training).
"""
from __future__ import annotations

import warnings

from affedge.bundle import Bundle
from affedge.sdk.backends.base import BackendUnavailable
from affedge.sdk.backends.torchscript_backend import _TorchModuleBackend


class TorchBackend(_TorchModuleBackend):
    """Eager PyTorch; artifact specs come from the ONNX/TorchScript records of the same model."""

    name = "torch"
    format = "safetensors"

    def __init__(self, bundle: Bundle, device: str = "cpu", models=None,
                 precision: str = "fp32", intra_op_threads: int | None = None):
        self._model = None
        if bundle.find("weights", "safetensors") is not None and not any(
                bundle.find(m, fmt, "fp32") for m in ("encoder", "step", "window")
                for fmt in ("onnx", "torchscript", "torch-export")):
            raise BackendUnavailable(
                f"torch: bundle {bundle.source} has the safetensors weights, but eager torch "
                f"also needs an onnx, torchscript or torch-export artifact (its input and output "
                f"names and shapes); export one with them")
        super().__init__(bundle, device, models, precision, intra_op_threads)

    def _record(self, model: str) -> dict | None:
        if self.bundle.find("weights", "safetensors") is None:
            return None
        for fmt in ("onnx", "torchscript", "torch-export"):
            rec = self.bundle.find(model, fmt, "fp32")
            if rec is not None:
                return rec
        return None

    def _full_model(self):
        if self._model is None:
            try:
                from safetensors.torch import load_file

                from affedge.training.model import AffectModel
            except ImportError as exc:
                raise BackendUnavailable(f"torch backend needs safetensors and affedge's training "
                                         f"code ({exc})") from None
            cfg = self.bundle.model_config()
            model = AffectModel(cfg)
            path = self.bundle.artifact("weights", "safetensors")
            missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
            if missing or unexpected:
                raise BackendUnavailable(f"{path.name}: weights do not fit the manifest's model "
                                         f"config (missing {missing[:3]}, unexpected "
                                         f"{unexpected[:3]})")
            self._model = model.eval().to(self.device)
        return self._model

    def _load(self, model: str, rec: dict):
        from affedge.export.folding import fold_encoder
        from affedge.export.streaming import StreamingStep, WindowForm

        full = self._full_model()
        if model == "encoder":
            return fold_encoder(full.encoder).to(self.device)
        if model == "step":
            return StreamingStep(full.temporal).to(self.device)
        if model == "window":
            return WindowForm(full.temporal).to(self.device)
        raise BackendUnavailable(f"torch backend: unknown model {model!r}")


class TorchExportBackend(_TorchModuleBackend):
    """``torch.export`` programs (``format="torch-export"``) or AOTInductor packages
    (``format="aoti"``)."""

    name = "torch-export"
    format = "torch-export"

    def __init__(self, bundle: Bundle, device: str = "cpu", models=None, aoti: bool = False,
                 precision: str = "fp32", intra_op_threads: int | None = None):
        if aoti:
            self.name, self.format = "aoti", "aoti"
            if precision != "fp32":  # a compiled package's kernels are fixed at export
                raise BackendUnavailable("aoti: an AOTInductor package runs the precision it was "
                                         "compiled for (fp32); bf16 needs torch or torch-export")
        super().__init__(bundle, device, models, precision, intra_op_threads)

    def _load(self, model: str, rec: dict):
        path = str(self.bundle.root / rec["file"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.format == "aoti":
                return self.torch._inductor.aoti_load_package(path)
            return self.torch.export.load(path).module().to(self.device)
