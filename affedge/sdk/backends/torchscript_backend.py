"""TorchScript backend: the bundle's ``.torchscript`` archives via ``torch.jit.load`` (CPU or
CUDA). torch is imported lazily; without it the backend reports itself unavailable.

Shared by every torch backend (:class:`_TorchModuleBackend`):

* ``precision="bf16"`` runs the encoder with its weights cast to bfloat16 and in channels_last
  layout (the layout oneDNN's bf16 convolutions are fastest in); its input is cast to bfloat16
  and its output back to float32. A module that cannot be cast (a frozen TorchScript trace,
  whose weights are graph constants; a graph with fp32 casts baked in) is refused at
  construction with the reason (a probe call runs once). No autocast: autocast re-casts the fp32 weights on every call,
  which made it slower than fp32 (issue 18). The step and window stay fp32 (small, and they
  produce the predictions), as in the ONNX Runtime and OpenVINO backends.
* threads follow :mod:`affedge.sdk.backends.threads` (``intra_op_threads``, else
  ``$AFFEDGE_THREADS``, else the measured default), applied with ``torch.set_num_threads``,
  which is process-wide.
"""
from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping

import numpy as np

from affedge.bundle import Bundle
from affedge.sdk.backends.base import Backend, BackendUnavailable
from affedge.sdk.backends.cpu_features import cpu_has_bf16
from affedge.sdk.backends.threads import apply_to_torch, thread_policy

#: precisions the torch backends run (bf16 applies to the encoder)
TORCH_PRECISIONS = ("fp32", "bf16")


def import_torch():
    """torch, imported with OpenMP's threads waiting passively (``OMP_WAIT_POLICY=PASSIVE``,
    unless the environment says otherwise): the thread policy's "spinning off"
    (:mod:`affedge.sdk.backends.threads`). It only takes effect when torch is not imported
    yet; OpenMP reads it when torch loads."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        raise BackendUnavailable("torch is not installed (pip install 'affedge[train]' or "
                                 "NVIDIA's Jetson torch wheel)") from None
    return torch


class _TorchModuleBackend(Backend):
    """Shared run(): numpy -> torch tensors -> module(*inputs) -> named numpy outputs."""

    #: bf16 on a CPU without bf16 instructions is refused (torch would emulate it); the
    #: bf16 accuracy tests set this to measure the emulated path on such CPUs
    allow_emulated_bf16 = False

    def __init__(self, bundle: Bundle, device: str = "cpu", models=None,
                 precision: str = "fp32", intra_op_threads: int | None = None):
        if precision not in TORCH_PRECISIONS:
            raise ValueError(f"{self.name}: precision must be one of {TORCH_PRECISIONS}, got "
                             f"{precision!r}")
        if precision == "bf16" and device == "cpu" and cpu_has_bf16() is False and \
                not self.allow_emulated_bf16:
            # emulated bf16: the encoder took 40-55 ms against 3.7-4 ms in fp32 (affedge bench,
            # 2-core AMD EPYC, AVX2 only), and "auto" picked it after OpenVINO refused
            raise BackendUnavailable(f"{self.name}: this CPU has no bf16 instructions "
                                     f"(AVX-512 BF16, AMX or Arm BF16); torch would emulate "
                                     f"bf16, ~10x slower than fp32 (use precision='fp32')")
        self.torch = import_torch()
        if device.startswith("cuda") and not self.torch.cuda.is_available():
            raise BackendUnavailable(f"{self.name}: CUDA is not available to torch")
        self.device = device
        self.precision_pref = precision
        self.threads = thread_policy(intra_op_threads)
        apply_to_torch(self.torch, self.threads)
        super().__init__(bundle, models)
        self._bf16: set[str] = set()
        self._modules = {m: self._prepare(m, self._load(m, rec)) for m, rec in self._specs.items()}

    def _prepare(self, model: str, module):
        """bf16: cast the encoder's weights to bfloat16 and its layout to channels_last."""
        if self.precision_pref != "bf16" or model != "encoder":
            return module
        torch = self.torch
        try:
            module = module.to(dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        except (AttributeError, RuntimeError, TypeError) as exc:
            raise BackendUnavailable(f"{self.name}: cannot cast the encoder to bfloat16 "
                                     f"({exc})") from None
        self._bf16.add(model)
        # probe once: a graph with fp32 casts baked in (e.g. some torch.export programs)
        # fails here, at construction, instead of on the first frame
        probe = [np.zeros([1 if isinstance(d, str) else d for d in s["shape"]],
                          np.dtype(s["dtype"])) for s in self._spec(model)["inputs"]]
        try:
            with torch.inference_mode():
                module(*[self._to_torch(model, a) for a in probe])
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
            first = lines[-1] if lines else repr(exc)  # TorchScript puts the cause last
            raise BackendUnavailable(f"{self.name}: the encoder does not run in bfloat16 "
                                     f"({first})") from None
        return module

    def precision(self, model: str) -> str:
        return "bf16" if model in self._bf16 else super().precision(model)

    def _to_torch(self, model: str, a: np.ndarray):
        t = self.torch.from_numpy(a).to(self.device)
        if model in self._bf16 and t.is_floating_point():
            t = t.to(self.torch.bfloat16)
            if t.ndim == 4:
                t = t.contiguous(memory_format=self.torch.channels_last)
        return t

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
        args = [self._to_torch(model_name, feeds[n]) for n in self.input_names(model_name)]
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

    def _prepare(self, model: str, module):
        if self.precision_pref == "bf16" and model == "encoder" and \
                not any(p.is_floating_point() for p in module.parameters()):
            # affedge exports frozen traces (torch.jit.freeze): the weights are fp32 constants
            # inside the graph, which no cast reaches
            raise BackendUnavailable("torchscript: the encoder is a frozen trace (weights inlined "
                                     "as fp32 constants), so it cannot run in bf16; use the "
                                     "torch backend (bundle weights) for bf16")
        return super()._prepare(model, module)

    def _load(self, model: str, rec: dict):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.torch.jit.load(str(self.bundle.root / rec["file"]),
                                       map_location=self.device).eval()
