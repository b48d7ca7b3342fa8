"""A fake ``tensorrt`` module with the TensorRT 10.x or 11.x Python API surface, and a fake
CUDA device, for testing affedge's TensorRT code where neither can exist (no GPU here).

``make_tensorrt("10.3.0")`` / ``make_tensorrt("11.1.0")`` return a module object; ``install``
puts one into ``sys.modules["tensorrt"]`` for a test (pytest ``monkeypatch``). What is modelled:

* API surface: ``Logger``, ``Builder`` (``create_network``, ``create_builder_config``,
  ``create_optimization_profile``, ``build_serialized_network``), ``OnnxParser``,
  ``IBuilderConfig`` (memory pools, flags with TF32 on by default, one profile, timing cache,
  DLA fields), ``Runtime.deserialize_cuda_engine``, ``ICudaEngine`` (named I/O tensors,
  ``get_tensor_profile_shape``), ``IExecutionContext`` (``set_input_shape`` returning False
  outside the profile, ``get_tensor_shape``, ``set_tensor_address``, ``execute_async_v3``),
  ``DataType``/``nptype``, ``TensorIOMode``, ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``.
* TensorRT 11 removals (NVIDIA's "Removed Python APIs in 11.x" list): ``BuilderFlag.FP16``,
  ``INT8``, ``BF16``, ``FP8``, ``INT4``, ``FP4``, ``OBEY_/PREFER_PRECISION_CONSTRAINTS``,
  ``DIRECT_IO``; ``IBuilderConfig.int8_calibrator``, ``set/get_calibration_profile``, the
  quantization flags; ``IInt8EntropyCalibrator2`` and friends; ``Builder.platform_has_fast_fp16
  /int8``; ``ICudaEngine.device_memory_size``. They raise ``AttributeError`` like the real
  bindings, so a test passing on the 11 fake proves the code never touches them.
* TensorRT 10 rules: strongly typed networks refuse precision flags at build time; an engine
  deserialises only in the TensorRT version that built it.
* Execution: the "engine" runs the parsed ONNX graph with ONNX Runtime CPU, reading inputs from
  and writing outputs to the raw addresses given to ``set_tensor_address`` - the fake device
  (:class:`HostDevice`) hands out host memory, so address and shape bugs show up as wrong
  numbers exactly as they would on a GPU.
"""
from __future__ import annotations

import ctypes
import enum
import json
import sys
import types
from collections.abc import Sequence

import numpy as np

FAKE_GPU = {"gpu_name": "Fake GPU (tests)", "compute_capability": "8.7"}
_MAGIC = b"FAKETRT\x00"


class _Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8


_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
       DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8,
       DataType.INT64: np.int64}
_FROM_ONNX = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32,
              9: DataType.BOOL, 2: DataType.UINT8, 7: DataType.INT64}


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4


class DeviceType(enum.IntEnum):
    GPU = 0
    DLA = 1


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0  # deprecated and ignored since 10.0
    STRONGLY_TYPED = 1


_FLAGS_10 = ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32",
             "SPARSE_WEIGHTS", "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS",
             "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO", "REJECT_EMPTY_ALGORITHMS",
             "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "FP8", "ERROR_ON_TIMING_CACHE_MISS",
             "BF16", "DISABLE_COMPILATION_CACHE", "WEIGHTLESS", "STRIP_PLAN", "REFIT_IDENTICAL",
             "WEIGHT_STREAMING", "INT4", "REFIT_INDIVIDUAL", "STRICT_NANS", "MONITOR_MEMORY",
             "FP4"]
_REMOVED_IN_11 = {"FP16", "INT8", "BF16", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                  "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"}
_PRECISION_FLAGS = {"FP16", "INT8", "BF16", "FP8", "INT4", "FP4"}


def nptype(dt) -> type:
    return _NP[DataType(dt)]


class HostDevice:
    """The fake CUDA device for :class:`affedge.sdk.backends.tensorrt_backend` (same methods
    as its ``TorchCudaDevice``): "device" buffers are host numpy arrays, so the fake engine can
    read and write them through raw addresses. Counts copies and allocations for the tests."""

    def __init__(self, gpu: dict | None = None):
        self.gpu = dict(gpu or FAKE_GPU)
        self.stream_handle = 0x5EED
        self.allocations = 0
        self.copies = {"h2d": 0, "d2h": 0, "d2d": 0}
        self.synchronized = 0

    def info(self) -> dict:
        return dict(self.gpu)

    def empty(self, shape: Sequence[int], dtype) -> np.ndarray:
        self.allocations += 1
        return np.full(tuple(shape), np.nan, dtype) if np.dtype(dtype).kind == "f" else \
            np.zeros(tuple(shape), dtype)

    def zeros(self, shape: Sequence[int], dtype) -> np.ndarray:
        self.allocations += 1
        return np.zeros(tuple(shape), dtype)

    def pinned(self, shape: Sequence[int], dtype) -> np.ndarray:
        self.allocations += 1
        return np.zeros(tuple(shape), dtype)

    def ptr(self, buf: np.ndarray) -> int:
        return int(buf.ctypes.data)

    def upload(self, dst: np.ndarray, src: np.ndarray) -> None:
        self.copies["h2d"] += 1
        dst.reshape(-1)[: src.size] = src.reshape(-1)

    def download(self, dst: np.ndarray, src: np.ndarray) -> None:
        self.copies["d2h"] += 1
        dst.reshape(-1)[: dst.size] = src.reshape(-1)[: dst.size]

    def copy_rows(self, dst: np.ndarray, dst_rows: Sequence[int], src: np.ndarray,
                  src_rows: Sequence[int]) -> None:
        self.copies["d2d"] += 1
        dst[list(dst_rows)] = src[list(src_rows)]

    def zero_rows(self, buf: np.ndarray, rows: Sequence[int]) -> None:
        buf[list(rows)] = 0

    def finite_rows(self, bufs: Sequence[np.ndarray], n: int) -> np.ndarray:
        ok = np.ones(n, bool)
        for b in bufs:
            ok &= np.isfinite(b[:n].reshape(n, -1)).all(axis=1)
        return ok

    def synchronize(self) -> None:
        self.synchronized += 1


def _read(ptr: int, shape, dtype) -> np.ndarray:
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = (ctypes.c_byte * n).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


def make_tensorrt(version: str = "10.3.0") -> types.ModuleType:
    """A fresh fake ``tensorrt`` module with the API surface of ``version`` (10.x or 11.x)."""
    major = int(version.split(".")[0])
    if major not in (10, 11):
        raise ValueError(f"the fake models TensorRT 10.x and 11.x, not {version}")
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.__file__ = __file__
    trt.FAKE = True
    log: list[tuple[int, str]] = []
    trt.fake_log = log
    BuilderFlag = enum.IntEnum("BuilderFlag", [
        (n, i) for i, n in enumerate(_FLAGS_10) if major == 10 or n not in _REMOVED_IN_11])

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (
            _Severity.INTERNAL_ERROR, _Severity.ERROR, _Severity.WARNING, _Severity.INFO,
            _Severity.VERBOSE)
        instances = 0

        def __init__(self, min_severity=_Severity.WARNING):
            self.min_severity = min_severity
            Logger.instances += 1

        def log(self, severity, msg):
            log.append((int(severity), msg))

    class ITensor:
        def __init__(self, name, dtype, shape):
            self.name, self.dtype, self.shape = name, dtype, tuple(shape)

    class INetworkDefinition:
        def __init__(self, flags):
            self.flags = flags
            self._inputs: list[ITensor] = []
            self._outputs: list[ITensor] = []
            self.onnx = None

        @property
        def num_inputs(self):
            return len(self._inputs)

        @property
        def num_outputs(self):
            return len(self._outputs)

        def get_input(self, i):
            return self._inputs[i]

        def get_output(self, i):
            return self._outputs[i]

        def get_flag(self, flag):
            return bool(self.flags & (1 << int(flag)))

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.logger, self._errors = network, logger, []

        def parse(self, model: bytes, path=None) -> bool:
            import onnx

            try:
                m = onnx.load_from_string(bytes(model))
            except Exception as exc:  # noqa: BLE001
                self._errors.append(f"ModelImporter: failed to parse the model ({exc})")
                return False
            from affedge.export.trt_ops import TRT_ONNX_OPS

            bad = sorted({n.op_type for n in m.graph.node if n.op_type not in TRT_ONNX_OPS})
            if bad:
                self._errors.append(f"No importer registered for op: {bad[0]}")
                return False
            inits = {t.name for t in m.graph.initializer}

            def tensors(vals):
                out = []
                for v in vals:
                    if v.name in inits:
                        continue
                    tt = v.type.tensor_type
                    shape = [d.dim_value if d.HasField("dim_value") else -1
                             for d in tt.shape.dim]
                    out.append(ITensor(v.name, _FROM_ONNX[tt.elem_type], shape))
                return out

            self.network._inputs = tensors(m.graph.input)
            self.network._outputs = tensors(m.graph.output)
            self.network.onnx = bytes(model)
            return True

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, i):
            return self._errors[i]

    class IOptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, min, opt, max):
            self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

        def get_shape(self, name):
            return self.shapes.get(name, [])

    class ITimingCache:
        def __init__(self, blob: bytes):
            self.entries = json.loads(blob.decode()) if blob else {"builds": 0}

        def serialize(self):
            return json.dumps(self.entries).encode()

    class IBuilderConfig:
        def __init__(self):
            self._flags = {BuilderFlag.TF32}  # on by default, as in TensorRT
            self.profiles = []
            self.pools = {}
            self.default_device_type = DeviceType.GPU
            self.DLA_core = -1
            self._cache = None
            if major == 10:
                self._int8_calibrator = None

        def set_memory_pool_limit(self, pool, size):
            self.pools[MemoryPoolType(pool)] = int(size)

        def set_flag(self, flag):
            self._flags.add(BuilderFlag(flag))

        def clear_flag(self, flag):
            self._flags.discard(BuilderFlag(flag))

        def get_flag(self, flag):
            return BuilderFlag(flag) in self._flags

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, blob):
            return ITimingCache(bytes(blob))

        def set_timing_cache(self, cache, ignore_mismatch):
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

    if major == 10:  # removed in 11 (AttributeError there)
        def _get_cal(self):
            return self._int8_calibrator

        def _set_cal(self, c):
            self._int8_calibrator = c

        IBuilderConfig.int8_calibrator = property(_get_cal, _set_cal)
        IBuilderConfig.set_calibration_profile = lambda self, p: setattr(self, "_calib_p", p)
        IBuilderConfig.get_calibration_profile = lambda self: getattr(self, "_calib_p", None)
        IBuilderConfig.set_quantization_flag = lambda self, f: None
        IBuilderConfig.quantization_flags = 0

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            return INetworkDefinition(int(flags))

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            strong = network.get_flag(NetworkDefinitionCreationFlag.STRONGLY_TYPED) or major >= 11
            prec = sorted(f.name for f in config._flags if f.name in _PRECISION_FLAGS)
            if strong and prec and major == 10:
                self.logger.log(_Severity.ERROR, f"Error Code 2: precision builder flags {prec} "
                                "cannot be used with a strongly typed network")
                return None
            if len(config.profiles) != 1:
                self.logger.log(_Severity.ERROR, "expected exactly one optimization profile")
                return None
            prof = config.profiles[0].shapes
            for t in network._inputs:
                dyn = any(d < 0 for d in t.shape)
                if dyn and t.name not in prof:
                    self.logger.log(_Severity.ERROR, f"Error Code 4: network input {t.name} has "
                                    "dynamic dimensions but no optimization profile")
                    return None
                if t.name in prof:
                    lo, opt, hi = prof[t.name]
                    if len(lo) != len(t.shape) or any(
                            d >= 0 and not (a == b == c == d)
                            for d, a, b, c in zip(t.shape, lo, opt, hi)):
                        self.logger.log(_Severity.ERROR, f"Error Code 4: profile for {t.name} "
                                        f"does not match its shape {t.shape}")
                        return None
            if config._cache is not None:
                config._cache.entries["builds"] = config._cache.entries.get("builds", 0) + 1
            header = {"version": version, "strongly_typed": bool(strong),
                      "flags": sorted(f.name for f in config._flags),
                      "profile": {k: [list(s) for s in v] for k, v in prof.items()},
                      "inputs": [[t.name, int(t.dtype), list(t.shape)] for t in network._inputs],
                      "outputs": [[t.name, int(t.dtype), list(t.shape)]
                                  for t in network._outputs],
                      "device_type": int(config.default_device_type), "dla": config.DLA_core}
            h = json.dumps(header).encode()
            return memoryview(_MAGIC + len(h).to_bytes(4, "little") + h + network.onnx)

    if major == 10:
        Builder.platform_has_fast_fp16 = property(lambda self: True)
        Builder.platform_has_fast_int8 = property(lambda self: True)

    class ICudaEngine:
        def __init__(self, header, onnx_bytes):
            self.header, self.onnx = header, onnx_bytes
            self._io = {n: (TensorIOMode.INPUT, DataType(dt), tuple(s))
                        for n, dt, s in header["inputs"]}
            self._io.update({n: (TensorIOMode.OUTPUT, DataType(dt), tuple(s))
                             for n, dt, s in header["outputs"]})
            self._names = list(self._io)
            self._session = None

        @property
        def num_io_tensors(self):
            return len(self._names)

        @property
        def num_optimization_profiles(self):
            return 1

        def get_tensor_name(self, i):
            return self._names[i]

        def get_tensor_mode(self, name):
            return self._io[name][0] if name in self._io else TensorIOMode.NONE

        def get_tensor_dtype(self, name):
            return self._io[name][1]

        def get_tensor_shape(self, name):
            return self._io[name][2]

        def get_tensor_profile_shape(self, name, profile_index):
            lo, opt, hi = self.header["profile"][name]
            return [tuple(lo), tuple(opt), tuple(hi)]

        def create_execution_context(self):
            return IExecutionContext(self)

        def session(self):
            if self._session is None:
                import onnxruntime as ort

                so = ort.SessionOptions()
                so.log_severity_level = 3
                self._session = ort.InferenceSession(self.onnx, so,
                                                     providers=["CPUExecutionProvider"])
                self._dims = {}
                for v in self._session.get_outputs():
                    self._dims[v.name] = v.shape
                self._in_dims = {v.name: v.shape for v in self._session.get_inputs()}
            return self._session

    if major == 10:
        ICudaEngine.device_memory_size = property(lambda self: 1 << 20)

    class IExecutionContext:
        def __init__(self, engine):
            self.engine = engine
            self._shapes, self._addr = {}, {}
            self.executions = 0

        def set_input_shape(self, name, shape):
            mode, _, eshape = self.engine._io.get(name, (None, None, None))
            if mode != TensorIOMode.INPUT:
                log.append((1, f"{name} is not an input tensor"))
                return False
            lo, _, hi = self.engine.header["profile"].get(name, (eshape, eshape, eshape))
            shape = tuple(int(d) for d in shape)
            if len(shape) != len(eshape) or any(
                    not (a <= d <= b) for d, a, b in zip(shape, lo, hi)):
                log.append((1, (f"IExecutionContext::setInputShape: Error Code 3: API Usage "
                                f"Error (shape {shape} for {name} is outside the profile "
                                f"[{tuple(lo)}, {tuple(hi)}])")))
                return False
            self._shapes[name] = shape
            return True

        def get_tensor_shape(self, name):
            mode, _, eshape = self.engine._io[name]
            if mode == TensorIOMode.INPUT:
                return self._shapes.get(name, eshape)
            self.engine.session()
            sym = {}
            for n, dims in self.engine._in_dims.items():
                for d, v in zip(dims, self._shapes.get(n, ())):
                    if isinstance(d, str):
                        sym[d] = v
            return tuple(sym.get(d, -1) if isinstance(d, str) else int(d)
                         for d in self.engine._dims[name])

        def set_tensor_address(self, name, ptr):
            if name not in self.engine._io:
                log.append((1, f"unknown tensor {name}"))
                return False
            self._addr[name] = int(ptr)
            return True

        def get_tensor_address(self, name):
            return self._addr.get(name, 0)

        def execute_async_v3(self, stream_handle):
            e = self.engine
            ins = [n for n in e._names if e._io[n][0] == TensorIOMode.INPUT]
            outs = [n for n in e._names if e._io[n][0] == TensorIOMode.OUTPUT]
            missing = [n for n in ins if n not in self._shapes] + [
                n for n in e._names if not self._addr.get(n)]
            if missing:
                log.append((1, (f"enqueueV3: Error Code 3: tensors {missing} have no shape "
                                "or address")))
                return False
            feeds = {n: _read(self._addr[n], self._shapes[n], nptype(e._io[n][1])).copy()
                     for n in ins}
            results = e.session().run(outs, feeds)
            for n, y in zip(outs, results):
                want = self.get_tensor_shape(n)
                if tuple(y.shape) != tuple(want):
                    log.append((1, f"output {n} shape {y.shape} != {want}"))
                    return False
                y = np.ascontiguousarray(y.astype(nptype(e._io[n][1])))
                ctypes.memmove(self._addr[n], y.ctypes.data, y.nbytes)
            self.executions += 1
            return True

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, blob):
            blob = bytes(blob)
            if not blob.startswith(_MAGIC):
                self.logger.log(_Severity.ERROR, "Error Code 1: Serialization (magic tag "
                                "does not match)")
                return None
            n = int.from_bytes(blob[8:12], "little")
            header = json.loads(blob[12:12 + n])
            if header["version"] != version:
                self.logger.log(_Severity.ERROR, "Error Code 6: The engine plan file is not "
                                f"compatible with this version of TensorRT, expecting "
                                f"{version}, got {header['version']}")
                return None
            return ICudaEngine(header, blob[12 + n:])

    if major == 10:
        class IInt8Calibrator:
            pass

        class IInt8EntropyCalibrator2(IInt8Calibrator):
            def __init__(self):
                pass

        trt.IInt8Calibrator = IInt8Calibrator
        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
        trt.IInt8MinMaxCalibrator = type("IInt8MinMaxCalibrator", (IInt8Calibrator,), {})

    for name, obj in {
        "Logger": Logger, "ILogger": Logger, "Builder": Builder, "OnnxParser": OnnxParser,
        "Runtime": Runtime, "BuilderFlag": BuilderFlag, "DataType": DataType,
        "TensorIOMode": TensorIOMode, "MemoryPoolType": MemoryPoolType,
        "DeviceType": DeviceType, "NetworkDefinitionCreationFlag": NetworkDefinitionCreationFlag,
        "IBuilderConfig": IBuilderConfig, "ICudaEngine": ICudaEngine,
        "IExecutionContext": IExecutionContext, "nptype": nptype,
    }.items():
        setattr(trt, name, obj)
    return trt


def install(monkeypatch, version: str = "10.3.0") -> types.ModuleType:
    """Make ``import tensorrt`` return a fresh fake of ``version`` for the current test."""
    trt = make_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    import affedge.export.tensorrt_build as tb

    monkeypatch.setattr(tb, "_LOGGER", None)
    return trt
