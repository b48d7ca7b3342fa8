"""Inference backends behind one interface (see :mod:`affedge.sdk.backends.base`).

``select_backend(bundle, "auto")`` tries the runners of the format table
(:mod:`affedge.formats`) in their ``auto`` order: TensorRT engine > ORT TensorRT/CUDA EP >
OpenVINO > ORT CPU > TorchScript > torch > AOTInductor. Importing this package imports only numpy and onnxruntime; torch and
tensorrt load inside the backends that need them.
"""
from affedge.sdk.backends.base import Backend, BackendUnavailable
from affedge.sdk.backends.onnxruntime_backend import OnnxRuntimeBackend
from affedge.sdk.backends.select import ORDER, describe_selection, select_backend

__all__ = [
           "ORDER",
           "Backend",
           "BackendUnavailable",
           "OnnxRuntimeBackend",
           "describe_selection",
           "select_backend",
]
