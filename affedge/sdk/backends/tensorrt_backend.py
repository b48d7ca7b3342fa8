"""Native TensorRT engines (TensorRT 10 API: named tensors, ``execute_async_v3``).

An engine only runs on the GPU model (compute capability) and TensorRT version that built it, so
the backend compares the artifact's ``gpu_name``/``compute_capability``/``tensorrt_version`` with
this machine first and refuses a mismatch with a clear message (``select_backend`` then falls back
to ONNX Runtime). ``tensorrt`` and ``torch`` (used for CUDA buffers and the stream) are imported
lazily inside the constructor.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from affedge.bundle import Bundle
from affedge.sdk.backends.base import Backend, BackendUnavailable

NOT_AVAILABLE = "TensorRT/NVIDIA GPU not available"


def this_target() -> dict[str, str]:
    """GPU name, compute capability and TensorRT version here (BackendUnavailable if none)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"{NOT_AVAILABLE}: cannot import tensorrt ({exc})") from None
    try:
        import torch
    except ImportError:
        raise BackendUnavailable(f"{NOT_AVAILABLE}: the TensorRT backend uses torch for CUDA "
                                 "buffers and torch is not installed") from None
    if not torch.cuda.is_available():
        raise BackendUnavailable(f"{NOT_AVAILABLE}: no CUDA device visible to torch")
    return {"gpu_name": torch.cuda.get_device_name(0),
            "compute_capability": "%d.%d" % torch.cuda.get_device_capability(0),
            "tensorrt_version": trt.__version__}


def check_engine_target(rec: dict, here: dict[str, str]) -> None:
    """Refuse an engine built for another GPU or TensorRT version."""
    for key in ("compute_capability", "tensorrt_version", "gpu_name"):
        if str(rec.get(key)) != str(here[key]):
            raise BackendUnavailable(
                f"engine {rec['file']} was built for {rec.get('gpu_name')} (compute "
                f"{rec.get('compute_capability')}, TensorRT {rec.get('tensorrt_version')}); this "
                f"machine has {here['gpu_name']} (compute {here['compute_capability']}, TensorRT "
                f"{here['tensorrt_version']}): rebuild it with `affedge export --format tensorrt` "
                "here, or use the bundle's ONNX models")


class TensorRTBackend(Backend):
    name = "tensorrt"
    format = "tensorrt"

    def __init__(self, bundle: Bundle, precision: str | None = None, models=None):
        self.precision_pref = precision
        here = this_target()  # raises BackendUnavailable without TensorRT/GPU
        super().__init__(bundle, models)
        import tensorrt as trt
        import torch

        self.torch = torch
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engines, self._contexts = {}, {}
        for model, rec in self._specs.items():
            check_engine_target(rec, here)
            blob = (self.bundle.root / rec["file"]).read_bytes()
            engine = self._runtime.deserialize_cuda_engine(blob)
            if engine is None:
                raise BackendUnavailable(f"TensorRT could not deserialize {rec['file']}")
            self._engines[model] = engine
            self._contexts[model] = engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        self._target = here

    def _record(self, model: str) -> dict | None:
        if self.precision_pref:
            return self.bundle.find(model, "tensorrt", self.precision_pref)
        return self.bundle.find(model, "tensorrt")

    @property
    def providers(self) -> list[str]:
        return [f"TensorRT {self._target['tensorrt_version']} on {self._target['gpu_name']}"]

    def run(self, model_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, trt = self.torch, self._trt
        if not self._engines:
            raise RuntimeError(f"{self.name}: backend closed "
                               "(its engines were released by close())")
        feeds = self.check_inputs(model_name, inputs)
        engine, ctx = self._engines[model_name], self._contexts[model_name]
        with torch.cuda.stream(self._stream):  # copies and execution on one stream
            keep = []
            for name, arr in feeds.items():
                t = torch.from_numpy(arr).cuda()
                want = torch.from_numpy(np.zeros(0, trt.nptype(engine.get_tensor_dtype(name)))).dtype
                t = t.to(want).contiguous()
                keep.append(t)
                ctx.set_input_shape(name, tuple(arr.shape))
                ctx.set_tensor_address(name, int(t.data_ptr()))
            outs = {}
            for name in self.output_names(model_name):
                shape = tuple(ctx.get_tensor_shape(name))
                dtype = torch.from_numpy(np.zeros(0, trt.nptype(engine.get_tensor_dtype(name)))).dtype
                t = torch.empty(shape, dtype=dtype, device="cuda")
                outs[name] = t
                ctx.set_tensor_address(name, int(t.data_ptr()))
            if not ctx.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution of {model_name!r} failed")
        self._stream.synchronize()
        return {n: t.float().cpu().numpy() for n, t in outs.items()}

    def close(self) -> None:
        self._contexts, self._engines = {}, {}
