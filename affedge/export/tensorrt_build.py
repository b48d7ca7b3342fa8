"""ONNX -> TensorRT engine (TensorRT 10 Python API), and optional Torch-TensorRT.

Written against the TensorRT 10 API (name-based tensors, explicit batch only): ``trt.Builder`` ->
``create_network(0)`` -> ``trt.OnnxParser`` -> builder config with a workspace pool limit, FP16 /
INT8 flags, one optimization profile (min/opt/max for every input with a dynamic dimension), a
timing cache (reused across builds when ``timing_cache`` is given) and
``build_serialized_network``. INT8 uses an entropy calibrator fed from real crops/features
(``--calib``); note TensorRT 10.1+ deprecates implicit INT8 calibration in favour of explicit
Q/DQ graphs, which the ONNX int8 path (:mod:`affedge.export.quantize`) produces.

The engine is tied to the GPU model and the TensorRT version: :func:`engine_target` records
``gpu_name``, ``compute_capability`` ("8.7" for Orin) and ``tensorrt_version`` in the artifact;
the runtime backend refuses engines built for anything else and the bundle falls back to ONNX.

Everything here imports ``tensorrt`` (and torch for CUDA memory in the calibrator) lazily; on a
machine without them :func:`tensorrt_available` says why and the exporter skips the format.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

NOT_AVAILABLE = "TensorRT/NVIDIA GPU not available"


def tensorrt_available() -> tuple[bool, str]:
    """(True, version) when ``tensorrt`` imports and a CUDA GPU is visible, else (False, why)."""
    try:
        import tensorrt as trt  # noqa: F401
    except Exception as exc:
        return False, f"{NOT_AVAILABLE}: cannot import tensorrt ({exc})"
    try:
        gpu = engine_target()
    except Exception as exc:
        return False, f"{NOT_AVAILABLE}: no CUDA GPU ({exc})"
    return True, f"TensorRT {gpu['tensorrt_version']} on {gpu['gpu_name']}"


def engine_target() -> dict[str, str]:
    """``{"gpu_name", "compute_capability", "tensorrt_version"}`` of this machine."""
    import tensorrt as trt

    name, cc = None, None
    try:
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            cc = "%d.%d" % torch.cuda.get_device_capability(0)
    except ImportError:
        pass
    if name is None:
        try:  # cuda-python
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # type: ignore
        err, prop = cudart.cudaGetDeviceProperties(0)
        if int(err) != 0:
            raise RuntimeError(f"cudaGetDeviceProperties failed ({err})")
        name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
        cc = f"{prop.major}.{prop.minor}"
    if name is None:
        raise RuntimeError("no CUDA device")
    return {"gpu_name": name, "compute_capability": cc, "tensorrt_version": trt.__version__}


def _make_calibrator(trt, batches: list[dict[str, np.ndarray]], cache_path: Path | None):
    """An IInt8EntropyCalibrator2 feeding ``batches`` (dicts of input name -> array)."""
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._it = iter(batches)
            self._keep: list = []

        def get_batch_size(self):
            return int(next(iter(batches[0].values())).shape[0]) if batches else 1

        def get_batch(self, names):
            try:
                b = next(self._it)
            except StopIteration:
                return None
            self._keep = [torch.from_numpy(np.ascontiguousarray(b[n])).cuda() for n in names]
            return [int(t.data_ptr()) for t in self._keep]

        def read_calibration_cache(self):
            if cache_path is not None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            if cache_path is not None:
                cache_path.write_bytes(bytes(cache))

    return Calibrator()


def build_engine(onnx_path: str | Path, engine_path: str | Path,
                 profiles: dict[str, tuple[Sequence[int], Sequence[int], Sequence[int]]],
                 fp16: bool = False, int8: bool = False,
                 calib_batches: Iterable[dict[str, np.ndarray]] | None = None,
                 workspace_bytes: int = 1 << 30, timing_cache: str | Path | None = None,
                 dla_core: int | None = None) -> dict[str, Any]:
    """Build and serialize an engine; returns the artifact's extra fields (target, flags).

    ``profiles``: ``{input_name: (min_shape, opt_shape, max_shape)}`` for inputs with dynamic
    dimensions (one optimization profile covering all of them).
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, tuple(lo), tuple(opt), tuple(hi))
    config.add_optimization_profile(profile)
    if int8:
        batches = list(calib_batches or [])
        if not batches:
            raise ValueError("INT8 engines need calibration data (--calib DIR)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _make_calibrator(
            trt, batches, Path(engine_path).with_suffix(".calib"))
        config.set_calibration_profile(profile)
    if dla_core is not None:  # Orin DLA cores, GPU fallback for unsupported layers
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache_blob = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_blob = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_blob)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    Path(engine_path).write_bytes(bytes(serialized))
    if timing_cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    rec = engine_target()
    rec.update({"exporter": "tensorrt.OnnxParser", "fp16": bool(fp16), "int8": bool(int8),
                "profiles": {k: [list(map(int, s)) for s in v] for k, v in profiles.items()}})
    if dla_core is not None:
        rec["dla_core"] = int(dla_core)
    return rec


def compile_torch_tensorrt(module, example_args: Sequence, path: str | Path,
                           dynamic: dict[int, tuple[Sequence[int], Sequence[int], Sequence[int]]],
                           fp16: bool = False) -> dict[str, Any]:
    """Torch-TensorRT (dynamo IR) compile, saved as an exported program (optional path)."""
    import torch
    import torch_tensorrt

    inputs = []
    for i, a in enumerate(example_args):
        if i in dynamic:
            lo, opt, hi = dynamic[i]
            inputs.append(torch_tensorrt.Input(min_shape=lo, opt_shape=opt, max_shape=hi,
                                               dtype=a.dtype))
        else:
            inputs.append(torch_tensorrt.Input(shape=tuple(a.shape), dtype=a.dtype))
    precisions = {torch.float16, torch.float32} if fp16 else {torch.float32}
    trt_mod = torch_tensorrt.compile(module.eval().cuda(), ir="dynamo", inputs=inputs,
                                     enabled_precisions=precisions)
    torch_tensorrt.save(trt_mod, str(path), output_format="exported_program",
                        inputs=[a.cuda() for a in example_args])
    rec = engine_target()
    rec.update({"exporter": f"torch_tensorrt {torch_tensorrt.__version__}"})
    return rec
