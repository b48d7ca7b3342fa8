"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers.

Provider choice (EDGE.md): ``"tensorrt"`` -> ``TensorrtExecutionProvider`` with FP16 and an
engine cache (``trt_fp16_enable``, ``trt_engine_cache_enable``, ``trt_engine_cache_path``), then
CUDA, then CPU as fallbacks inside the session; ``"cuda"`` -> CUDA then CPU; ``"cpu"`` -> CPU.
``providers`` reports what ``session.get_providers()`` says was actually used.
``precision="int8"`` runs the ``onnx-int8`` encoder (CPU QDQ model) with the fp32 step/window.
Threads and spinning follow the runtime's one thread policy (:mod:`affedge.sdk.backends.threads`):
``intra_op_threads`` (else ``$AFFEDGE_THREADS``, else the measured default) and ``spinning``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from affedge.bundle import Bundle
from affedge.sdk.backends.base import Backend, BackendUnavailable
from affedge.sdk.backends.threads import apply_to_ort, thread_policy

#: ONNX Runtime 1.20-1.24.2 fuse the step graph's layer norm into SkipLayerNormalization and
#: then refuse its 2-D gamma at run time ("gamma is expected to have 1 dimension, got 2");
#: 1.24.3 fixed it. Below that, that one fusion is switched off (checked on 1.23.2, the newest
#: wheel for Python 3.10 / JetPack 6: the demo pipeline's outputs match 1.24.3's, see
#: tests/test_manifest_schema.py).
SKIP_LAYER_NORM_FIXED = (1, 24, 3)


def version_tuple(version: str) -> tuple[int, ...]:
    """``"1.24.3+cu126"`` -> ``(1, 24, 3)`` (major, minor, patch; a local suffix ignored)."""
    import re

    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def session_kwargs(version: str) -> dict:
    """Extra ``InferenceSession`` keywords for ONNX Runtime ``version`` (see above)."""
    broken = version_tuple(version) < SKIP_LAYER_NORM_FIXED
    return {"disabled_optimizers": ["SkipLayerNormFusion"]} if broken else {}


PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def provider_list(kind: str, fp16: bool = False, cache_dir: str | os.PathLike | None = None,
                  device_id: int = 0) -> list:
    """The providers (with options) to ask ORT for, best first, for ``kind`` cpu/cuda/tensorrt."""
    if kind not in PROVIDER_NAMES:
        raise ValueError(f"unknown ONNX Runtime provider kind {kind!r}; use cpu, cuda or tensorrt")
    chain = []
    if kind == "tensorrt":
        opts = {"device_id": device_id, "trt_fp16_enable": bool(fp16),
                "trt_engine_cache_enable": True}
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            opts["trt_engine_cache_path"] = str(cache_dir)
            opts["trt_timing_cache_enable"] = True
            opts["trt_timing_cache_path"] = str(cache_dir)
        chain.append(("TensorrtExecutionProvider", opts))
    if kind in ("tensorrt", "cuda"):
        chain.append(("CUDAExecutionProvider", {"device_id": device_id}))
    chain.append("CPUExecutionProvider")
    return chain


def onnx_record(bundle: Bundle, model: str, precision: str | None) -> dict | None:
    """The ONNX artifact that serves ``model``: the int8 QDQ encoder when ``precision`` is int8
    and the bundle has one, else the fp32 graph (any ONNX graph of that name as a last resort).
    Every backend that runs the bundle's ONNX picks its graphs this way."""
    if precision == "int8" and model == "encoder":
        rec = bundle.find(model, "onnx-int8")
        if rec is not None:
            return rec
    return bundle.find(model, "onnx", "fp32") or bundle.find(model, "onnx")


class OnnxRuntimeBackend(Backend):
    """Runs the bundle's ONNX artifacts in ONNX Runtime sessions (one per model)."""

    name = "onnxruntime"
    format = "onnx"

    def __init__(self, bundle: Bundle, provider: str = "cpu", precision: str = "fp32",
                 fp16: bool = False, cache_dir: str | os.PathLike | None = None,
                 intra_op_threads: int | None = None, models: tuple[str, ...] | None = None,
                 spinning: bool | None = None, max_faces: int = 16):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a runtime dependency
            raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from None
        self.precision_pref = precision
        super().__init__(bundle, models)
        want = PROVIDER_NAMES.get(provider)
        if want is None:
            raise ValueError(f"unknown provider {provider!r}; use cpu, cuda or tensorrt")
        have = ort.get_available_providers()
        if want not in have:
            hint = {"CUDAExecutionProvider": "; the CUDA EP comes with onnxruntime-gpu (pip "
                                             "uninstall onnxruntime && pip install "
                                             "onnxruntime-gpu) on an NVIDIA GPU",
                    "TensorrtExecutionProvider": "; the TensorRT EP comes with onnxruntime-gpu "
                                                 "and TensorRT (docs/JETSON.md)"}.get(want, "")
            raise BackendUnavailable(f"onnxruntime: {want} not in this build's providers "
                                     f"{have}{hint}")
        self.kind = provider
        self.name = f"onnxruntime-{provider}"
        chain = provider_list(provider, fp16=fp16, cache_dir=cache_dir)
        trt_opts = {}
        if provider == "tensorrt":  # per-model profile shapes + a cache dir (not the cwd)
            from affedge.sdk.backends.tensorrt_backend import ort_tensorrt_options

            trt_opts = ort_tensorrt_options(bundle, max_faces, cache_dir, fp16=fp16)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.threads = thread_policy(intra_op_threads, spinning)
        apply_to_ort(so, self.threads)
        self._sessions = {}
        for model, rec in self._specs.items():
            path = self.bundle.root / rec["file"]
            try:
                providers = [("TensorrtExecutionProvider", trt_opts[model]), *chain[1:]] \
                    if model in trt_opts else chain
                sess = ort.InferenceSession(str(path), sess_options=so, providers=providers,
                                            **session_kwargs(ort.__version__))
            except Exception as exc:
                raise BackendUnavailable(f"onnxruntime could not load {rec['file']}: {exc}") from None
            names = [i.name for i in sess.get_inputs()]
            if names != [s["name"] for s in rec["inputs"]]:
                raise BackendUnavailable(f"{rec['file']}: graph inputs {names} differ from the "
                                         "manifest")
            self._sessions[model] = sess
        first = next(iter(self._sessions.values()))
        self._providers = list(first.get_providers())
        if provider != "cpu" and self._providers[0] != want:
            raise BackendUnavailable(f"onnxruntime: asked for {want}, the session fell back to "
                                     f"{self._providers}")

    def _record(self, model: str) -> dict | None:
        return onnx_record(self.bundle, model, self.precision_pref)

    @property
    def providers(self) -> list[str]:
        return list(self._providers)

    def run(self, model_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._sessions:
            raise RuntimeError(f"{self.name}: backend closed (its sessions were released by "
                               "close()); create a new backend")
        feeds = self.check_inputs(model_name, inputs)
        sess = self._sessions[model_name]
        names = self.output_names(model_name)
        outs = sess.run(names, feeds)
        return dict(zip(names, outs))

    def close(self) -> None:
        self._sessions = {}
