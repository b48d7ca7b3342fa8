"""ONNX -> TensorRT engine, one builder for TensorRT 10.x and 11.x.

Precision comes from the graph, never from builder flags (EDGE.md: TensorRT 11 removed
``BuilderFlag.FP16``/``INT8``, the calibrator API and ``set_calibration_profile``):

* ``fp32``: the bundle's fp32 ONNX; ``BuilderFlag.TF32`` is cleared (it is on by default and
  would miss fp32 parity at 1e-4 on Ampere and later, Orin included);
* ``fp16``: the fp16 ONNX written by :func:`affedge.export.fp16.convert_to_fp16` (fp32 I/O, L2
  normalisation / softmax / layer norm kept fp32);
* ``int8``: a symmetric per-channel Q/DQ ONNX (:func:`affedge.export.quantize.quantize_encoder`
  with ``symmetric=True``), calibrated in ONNX Runtime on all crops of every batch (TensorRT 10's
  implicit calibration used only the profile's opt shape, one crop of eight).

The network is created with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` on both versions
(opt-in on 10.x, always on and accepted-but-ignored on 11.x), so both build the same numerics
from the same graph. The only version branch left is the legacy ``typing="weak"`` mode, which
on TensorRT 10 builds the fp32 graph with ``BuilderFlag.FP16`` (TensorRT picks fp16 per layer);
on TensorRT 11 it is refused with the reason. :func:`api_generation` is the one place that
tells the two API surfaces apart (``hasattr(trt.BuilderFlag, "FP16")``).

Also: optimization profiles whose max batch covers ``max_faces`` (checked before anything is
parsed, :func:`check_profiles`), one process-wide logger (:func:`shared_logger`), a timing
cache that is read before and written after the build, the graph checked against TensorRT's
ONNX op list first (:mod:`affedge.export.trt_ops`). The engine record names the GPU, compute
capability and TensorRT version; the runtime refuses an engine built for anything else.

torch-tensorrt is not used: its Dynamo path would give a second TensorRT engine of the same
graphs that only the torch backend could load, pinned to one torch minor version (a problem on
Jetson, where torch comes from NVIDIA's wheel), for no speed the ONNX path lacks here.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

NOT_AVAILABLE = "TensorRT/NVIDIA GPU not available"
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MAX_FACES = 16
DEFAULT_WINDOW_MAX = 512

Profiles = Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]]

_LOGGER: tuple[Any, Any] | None = None  # (tensorrt module, its Logger)


def shared_logger(trt):
    """One ``trt.Logger`` per process (TensorRT keeps the first logger it sees globally)."""
    global _LOGGER
    if _LOGGER is None or _LOGGER[0] is not trt:
        _LOGGER = (trt, trt.Logger(trt.Logger.WARNING))
    return _LOGGER[1]


def api_generation(trt) -> int:
    """10 for the TensorRT 10.x API surface (precision builder flags present), 11 without."""
    return 10 if hasattr(trt.BuilderFlag, "FP16") else 11


def tensorrt_available() -> tuple[bool, str]:
    """(True, "TensorRT x on GPU") when ``tensorrt`` imports and a CUDA GPU is visible."""
    try:
        import tensorrt as trt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return False, f"{NOT_AVAILABLE}: cannot import tensorrt ({exc}; pip install 'affedge[tensorrt]' on an NVIDIA GPU, or JetPack's python3-libnvinfer on a Jetson: docs/JETSON.md)"
    try:
        gpu = engine_target()
    except Exception as exc:  # noqa: BLE001 - reported as the reason
        return False, f"{NOT_AVAILABLE}: no CUDA GPU ({exc})"
    return True, f"TensorRT {gpu['tensorrt_version']} on {gpu['gpu_name']}"


def engine_target(gpu: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{"gpu_name", "compute_capability", "tensorrt_version"}`` of this machine (``gpu``
    overrides the CUDA query: a fake device in tests)."""
    import tensorrt as trt

    if gpu is None:
        from affedge.sdk.doctor import cuda_devices

        devs = cuda_devices()
        if not devs.get("devices"):
            raise RuntimeError(devs.get("note", "no CUDA device"))
        gpu = devs["devices"][0]
    return {"gpu_name": str(gpu["gpu_name"]), "compute_capability": str(gpu["compute_capability"]),
            "tensorrt_version": str(trt.__version__)}


def step_batch(max_faces: int) -> int:
    """Largest step batch the engine sends: one stream per track plus the background stream."""
    return int(max_faces) + 1


def profiles_from_specs(inputs: Sequence[Mapping[str, Any]], max_batch: int,
                        window: int = 64, window_max: int = DEFAULT_WINDOW_MAX) -> dict:
    """min/opt/max shapes from a manifest's input specs: ``N`` -> (1, 1, max_batch), ``W`` ->
    (1, window, max(window, window_max)); inputs without symbols get no profile."""
    prof = {}
    for s in inputs:
        shape = list(s["shape"])
        if all(isinstance(d, int) for d in shape):
            continue
        lo, opt, hi = [], [], []
        for d in shape:
            if d == "N":
                lo.append(1), opt.append(1), hi.append(int(max_batch))
            elif d == "W":
                lo.append(1), opt.append(int(window)), hi.append(max(int(window), window_max))
            elif isinstance(d, str):
                raise ValueError(f"input {s['name']!r}: no profile rule for dimension {d!r}")
            else:
                lo.append(d), opt.append(d), hi.append(d)
        prof[s["name"]] = (lo, opt, hi)
    return prof


def check_profiles(profiles: Profiles, max_batch: int | None, where: str = "engine") -> None:
    """Refuse inconsistent profiles, and a batch axis (0) whose max is below ``max_batch``."""
    for name, (lo, opt, hi) in profiles.items():
        if not (len(lo) == len(opt) == len(hi)):
            raise ValueError(f"{where}: profile of {name!r} has shapes of different ranks")
        if any(not (a <= b <= c) for a, b, c in zip(lo, opt, hi)) or min(lo, default=1) < 0:
            raise ValueError(f"{where}: profile of {name!r} needs min <= opt <= max, got "
                             f"{list(lo)} / {list(opt)} / {list(hi)}")
        if max_batch is not None and hi and hi[0] < max_batch:
            raise ValueError(f"{where}: the profile of {name!r} allows at most {hi[0]} faces per "
                             f"call, fewer than max_faces needs ({max_batch}); build with "
                             f"--max-faces {max_batch} or lower max_faces")


def source_precision(onnx_path: str | Path) -> str:
    """"int8" (Q/DQ nodes), "fp16" (fp16 initializers) or "fp32": what a graph will build to."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer):
        return "fp16"
    return "fp32"


def prepare_source(fp32_onnx: str | Path, precision: str, workdir: str | Path,
                   calib=None) -> Path:
    """The graph to build for ``precision``: the fp32 ONNX itself, its fp16 conversion, or a
    symmetric Q/DQ quantisation calibrated on ``calib`` crops (encoder only)."""
    fp32_onnx, workdir = Path(fp32_onnx), Path(workdir)
    if precision == "fp32":
        return fp32_onnx
    out = workdir / f"{fp32_onnx.stem}.{precision}.onnx"
    if precision == "fp16":
        from affedge.export.fp16 import convert_to_fp16

        convert_to_fp16(fp32_onnx, out)
        return out
    if precision == "int8":
        if calib is None or len(calib) == 0:
            raise ValueError("int8 engines need calibration crops (--calib DIR)")
        from affedge.export.quantize import quantize_encoder

        quantize_encoder(fp32_onnx, out, calib, "static", per_channel=True, symmetric=True)
        return out
    raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def build_engine(onnx_path: str | Path, engine_path: str | Path, profiles: Profiles,
                 precision: str | None = None, max_batch: int | None = None,
                 workspace_bytes: int = 1 << 30, timing_cache: str | Path | None = None,
                 dla_core: int | None = None, typing: str = "strong",
                 gpu: Mapping[str, str] | None = None, fp16: bool = False, int8: bool = False,
                 calib_batches: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Build and serialize an engine from ``onnx_path``; returns the artifact's extra fields.

    ``precision``: what the graph must build to (checked against the graph; default: the
    graph's own, see :func:`source_precision`). ``profiles``: ``{input: (min, opt, max)}``,
    one optimization profile; ``max_batch`` (e.g. :func:`step_batch` of max_faces) is checked
    against every profile's batch axis first. ``typing="weak"`` (TensorRT 10 only): the fp32
    graph with ``BuilderFlag.FP16`` set. ``fp16``/``int8``/``calib_batches`` (the export
    API's arguments): an fp32 graph is converted first (:func:`prepare_source`; int8 calibrates
    on every crop of ``calib_batches``' arrays).
    """
    import tensorrt as trt

    from affedge.export.trt_ops import require_buildable

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if (fp16 or int8) and source_precision(onnx_path) == "fp32":
        want = "int8" if int8 else "fp16"
        crops = None
        if int8:
            import numpy as np

            arrays = [a for b in (calib_batches or []) for a in b.values()]
            crops = np.concatenate(arrays) if arrays else None
        with tempfile.TemporaryDirectory(prefix="affedge-trt-") as tmp:
            src = prepare_source(onnx_path, want, tmp, crops)
            return build_engine(src, engine_path, profiles, want, max_batch, workspace_bytes,
                                timing_cache, dla_core, typing, gpu)
    check_profiles(profiles, max_batch, onnx_path.name)
    have = source_precision(onnx_path)
    gen = api_generation(trt)
    if typing not in ("strong", "weak"):
        raise ValueError(f"typing must be 'strong' or 'weak', got {typing!r}")
    if typing == "weak":
        if gen >= 11:
            raise ValueError(f"TensorRT {trt.__version__} removed BuilderFlag.FP16 (weak typing); "
                             "build the fp16 ONNX with typing='strong'")
        if have != "fp32" or precision not in (None, "fp16"):
            raise ValueError("typing='weak' builds the fp32 ONNX with BuilderFlag.FP16 only")
        precision = "fp16"
    elif precision is not None and precision != have:
        raise ValueError(f"{onnx_path.name} is an {have} graph, not {precision}: convert it first "
                         "(affedge.export.tensorrt_build.prepare_source)")
    precision = precision or have
    require_buildable(onnx_path)

    logger = shared_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    strong = typing == "strong" and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    if strong:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif typing == "strong" and precision != "fp32":
        raise ValueError(f"TensorRT {trt.__version__} has no strongly typed networks; "
                         "use TensorRT >= 10")
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errs}")
    inputs = {network.get_input(i).name: tuple(network.get_input(i).shape)
              for i in range(network.num_inputs)}
    dynamic = [n for n, s in inputs.items() if any(d < 0 for d in s)]
    missing = [n for n in dynamic if n not in profiles]
    if missing:
        raise ValueError(f"{onnx_path.name}: dynamic inputs {missing} have no profile")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32 (fp32 parts of fp16 too)
    if typing == "weak":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        if name not in inputs:
            raise ValueError(f"{onnx_path.name}: profile for unknown input {name!r} "
                             f"(inputs {list(inputs)})")
        profile.set_shape(name, tuple(lo), tuple(opt), tuple(hi))
    config.add_optimization_profile(profile)
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
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path.name} (see the "
                           "TensorRT log above)")
    _write_atomic(engine_path, bytes(serialized))
    if timing_cache is not None:
        _write_atomic(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    rec = engine_target(gpu)
    rec.update({"exporter": f"tensorrt {trt.__version__} OnnxParser", "graph": onnx_path.name,
                "strongly_typed": bool(strong), "tf32": False, "api": gen,
                "profiles": {k: [list(map(int, s)) for s in v] for k, v in profiles.items()}})
    if max_batch is not None:
        rec["max_batch"] = int(max_batch)
    if dla_core is not None:
        rec["dla_core"] = int(dla_core)
    return rec
