"""Runs a face detector's ONNX model on the fastest runtime here: OpenVINO (CPU) or ONNX Runtime.

A detector model is called with a few input sizes (the region-search size and one per pyramid
level of a frame size), so OpenVINO compiles one static-shape model per size on first use: on
the 2-core AMD EPYC (AVX2) BlazeFace-short ran 0.80x (128x128), 0.90x (288x384) and 0.77x
(480x640) of ONNX Runtime's time, both on one thread, outputs equal to 7e-5 (measured
interleaved, /work/tmp/ovdet.py in the issue-12 note). ONNX Runtime runs the model where
OpenVINO is not installed (it is an optional extra) and whenever execution providers are named
(CUDA / TensorRT EP on a GPU). Thread-safe: OpenVINO requests are per thread (an asynchronous
full pass and a region search may run at once); ONNX Runtime sessions are thread-safe.
"""
from __future__ import annotations

import threading

import numpy as np

RUNTIMES = ("auto", "openvino", "onnxruntime")


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class DetectorModel:
    """``run(x) -> [outputs]`` (float32 arrays, in the ONNX graph's output order) for NCHW
    float32 input ``x``. ``runtime``: "auto" (OpenVINO on the CPU when installed and no
    ``providers`` are named, else ONNX Runtime), "openvino" or "onnxruntime"."""

    def __init__(self, path: str, providers=None, threads: int = 1, runtime: str = "auto"):
        if runtime not in RUNTIMES:
            raise ValueError(f"detector runtime must be one of {', '.join(RUNTIMES)}, got "
                             f"{runtime!r}")
        cpu_only = not providers or list(providers) == ["CPUExecutionProvider"]
        if runtime == "auto":
            runtime = "openvino" if cpu_only and openvino_available() else "onnxruntime"
        if runtime == "openvino" and not openvino_available():
            raise ImportError("detector runtime 'openvino': openvino is not installed "
                              "(pip install 'affedge[openvino]')")
        self.runtime = runtime
        self.path = str(path)
        self.threads = max(1, int(threads))
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        if runtime == "onnxruntime":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
            self._sess = ort.InferenceSession(self.path, so, providers=self.providers)
            self.input_name = self._sess.get_inputs()[0].name
            self.output_names = [o.name for o in self._sess.get_outputs()]
        else:
            import openvino as ov

            self._ov = ov
            self._core = ov.Core()
            self._net = self._core.read_model(self.path)
            self.input_name = self._net.inputs[0].get_any_name()
            self.output_names = [o.get_any_name() for o in self._net.outputs]
            self._compiled: dict[tuple, tuple] = {}
            self._compile_lock = threading.Lock()
            self._local = threading.local()

    def _request(self, shape: tuple):
        reqs = getattr(self._local, "requests", None)
        if reqs is None:
            reqs = self._local.requests = {}
        req = reqs.get(shape)
        if req is None:
            with self._compile_lock:
                entry = self._compiled.get(shape)
                if entry is None:
                    net = self._net.clone()
                    net.reshape({self.input_name: list(shape)})
                    compiled = self._core.compile_model(
                        net, "CPU", {"INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": 1,
                                     "PERFORMANCE_HINT": "LATENCY",
                                     "INFERENCE_PRECISION_HINT": "f32"})
                    index = []
                    for name in self.output_names:
                        index.append(next(i for i, o in enumerate(compiled.outputs)
                                          if name in o.names))
                    entry = self._compiled[shape] = (compiled, index)
            req = reqs[shape] = (entry[0].create_infer_request(), entry[1])
        return req

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, np.float32)
        if self.runtime == "onnxruntime":
            return self._sess.run(None, {self.input_name: x})
        req, index = self._request(tuple(x.shape))
        req.set_input_tensor(0, self._ov.Tensor(x, shared_memory=True))
        req.infer()
        return [np.array(req.get_output_tensor(i).data, np.float32, copy=True) for i in index]
