"""TorchScript backend: the bundle's ``.torchscript`` archives via ``torch.jit.load`` (CPU or
CUDA). torch is imported lazily; without it the backend reports itself unavailable."""
from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from affedge.bundle import Bundle
from affedge.sdk.backends.base import Backend, BackendUnavailable


def import_torch():
    try:
        import torch
    except ImportError:
        raise BackendUnavailable("torch is not installed (pip install 'affedge[train]' or "
                                 "NVIDIA's Jetson torch wheel)") from None
    return torch


class _TorchModuleBackend(Backend):
    """Shared run(): numpy -> torch tensors -> module(*inputs) -> named numpy outputs."""

    def __init__(self, bundle: Bundle, device: str = "cpu", models=None):
        self.torch = import_torch()
        if device.startswith("cuda") and not self.torch.cuda.is_available():
            raise BackendUnavailable(f"{self.name}: CUDA is not available to torch")
        self.device = device
        super().__init__(bundle, models)
        self._modules = {m: self._load(m, rec) for m, rec in self._specs.items()}

    def _load(self, model: str, rec: dict):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def providers(self) -> list[str]:
        return [f"{self.name}:{self.device}"]

    def run(self, model_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        if not self._modules:
            raise RuntimeError(f"{self.name}: backend closed "
                               "(its modules were released by close())")
        feeds = self.check_inputs(model_name, inputs)
        args = [torch.from_numpy(feeds[n]).to(self.device) for n in self.input_names(model_name)]
        with torch.inference_mode():
            out = self._modules[model_name](*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        names = self.output_names(model_name)
        if len(out) != len(names):
            raise RuntimeError(f"{self.name}/{model_name}: {len(out)} outputs, manifest names "
                               f"{names}")
        return {n: t.detach().float().cpu().numpy() for n, t in zip(names, out)}

    def close(self) -> None:
        self._modules = {}


class TorchScriptBackend(_TorchModuleBackend):
    name = "torchscript"
    format = "torchscript"

    def _load(self, model: str, rec: dict):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.torch.jit.load(str(self.bundle.root / rec["file"]),
                                       map_location=self.device).eval()
