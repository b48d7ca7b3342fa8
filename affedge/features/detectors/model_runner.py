"""Runs a face detector's ONNX model on ONNX Runtime (default) or OpenVINO (CPU).

A detector model is called with a few input sizes (the region-search size and one per pyramid
level of a frame size), so OpenVINO compiles one static-shape model per size on first use.
Measured on the 2-core AMD EPYC (AVX2), BlazeFace-short, one thread each, outputs equal to
7e-5:

* alone, OpenVINO took 0.80x (128x128), 0.90x (288x384) and 0.77x (480x640) of ONNX Runtime's
  time; benchmarks/bench_detectors.py's full pass at 640x480 cost 0.48x Haar with OpenVINO
  and 0.53x with ONNX Runtime (interleaved in each run);
* inside the pipelines it was not faster: ``affedge serve`` with 4 file sources (detection of
  4 sources on 2 pool threads, the model on a third) ran at 91-118 frames/s with OpenVINO
  detectors and 119-147 with ONNX Runtime ones (3 interleaved pairs), and the pipelined
  ``Recognizer.run`` was even (125-147 vs 129-155 fps).

So the default runtime is ONNX Runtime (:data:`DEFAULT_RUNTIME`); ``runtime="openvino"`` is
there for single-stream use on large frames. Thread-safe: OpenVINO requests are per thread
(an asynchronous full pass and a region search may run at once); ONNX Runtime sessions are
thread-safe.
"""
from __future__ import annotations

import threading

import numpy as np

RUNTIMES = ("auto", "openvino", "onnxruntime")
#: what ``runtime="auto"`` means (see the module docstring for the measurements)
DEFAULT_RUNTIME = "onnxruntime"


def openvino_available() -> bool:
    from affedge.sdk.backends.base import BackendUnavailable
    from affedge.sdk.backends.openvino_backend import import_openvino

    try:
        import_openvino()  # (without openvino's usage telemetry)
    except BackendUnavailable:
        return False
    return True


class DetectorModel:
    """``run(x) -> [outputs]`` (float32 arrays, in the ONNX graph's output order) for NCHW
    float32 input ``x``. ``runtime``: "auto" (:data:`DEFAULT_RUNTIME`), "openvino" (CPU
    only: no ``providers``) or "onnxruntime" (with ``providers``, e.g. the CUDA EP)."""

    def __init__(self, path: str, providers=None, threads: int = 1, runtime: str = "auto"):
        if runtime not in RUNTIMES:
            raise ValueError(f"detector runtime must be one of {', '.join(RUNTIMES)}, got "
                             f"{runtime!r}")
        cpu_only = not providers or list(providers) == ["CPUExecutionProvider"]
        if runtime == "auto":
            runtime = DEFAULT_RUNTIME if cpu_only else "onnxruntime"
        if runtime == "openvino" and not cpu_only:
            raise ValueError(f"detector runtime 'openvino' runs on the CPU; providers "
                             f"{list(providers)} need runtime 'onnxruntime'")
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
            from affedge.sdk.backends.openvino_backend import import_openvino, shared_core

            ov = import_openvino()

            self._ov = ov
            self._core = shared_core()  # never a Core of its own (see shared_core)
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
                    from affedge.sdk.backends.openvino_backend import compile_model

                    net = self._net.clone()
                    net.reshape({self.input_name: list(shape)})
                    compiled = compile_model(
                        net, "CPU", {"INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": 1,
                                     "PERFORMANCE_HINT": "LATENCY",
                                     "ENABLE_CPU_PINNING": False,
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
