"""Native TensorRT engines (TensorRT 10.x and 11.x: named tensors, ``execute_async_v3``).

An engine only runs on the GPU model (compute capability) and TensorRT version that built it, so
the backend compares the artifact's ``gpu_name``/``compute_capability``/``tensorrt_version`` with
this machine first and refuses a mismatch with the reason (``select_backend`` then falls back
to ONNX Runtime). ``tensorrt`` and ``torch`` are imported lazily inside the constructor.

Memory: every I/O tensor gets one device buffer and one pinned (page-locked) host buffer of its
profile's max shape, allocated once; a call copies inputs into the pinned buffers, uploads
them asynchronously, executes, downloads the outputs, and synchronises once - all on one CUDA
stream. ``set_input_shape`` is checked: a batch beyond the engine's profile (more faces than
the ``max_faces`` it was built for) is refused with that number before anything runs.

Streaming state stays on the device with :meth:`TensorRTBackend.resident_step` (see
:class:`affedge.sdk.backends.resident_state.ResidentStep`: double-buffered states, a commit is
an address swap). :func:`ort_tensorrt_options` gives ONNX Runtime's TensorRT execution provider
the same profiles and a cache directory under the user's affedge cache.

The device is an object (:class:`TorchCudaDevice` here: torch CUDA tensors, pinned memory and
one stream); tests pass a fake one together with a fake ``tensorrt`` module.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from affedge.bundle import Bundle
from affedge.sdk.backends.base import Backend, BackendUnavailable

NOT_AVAILABLE = "TensorRT/NVIDIA GPU not available"


class TorchCudaDevice:
    """CUDA memory and one stream through torch (the buffers the engine's addresses point to)."""

    def __init__(self, index: int = 0):
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailable(f"{NOT_AVAILABLE}: no CUDA device visible to torch")
        self.torch = torch
        self.device = torch.device("cuda", index)
        self.stream = torch.cuda.Stream(self.device)
        self.stream_handle = int(self.stream.cuda_stream)
        self._keep: list = []  # torch tensors behind the pinned numpy views

    def info(self) -> dict[str, str]:
        p = self.torch.cuda.get_device_properties(self.device)
        return {"gpu_name": p.name, "compute_capability": f"{p.major}.{p.minor}"}

    def _dtype(self, dtype):
        return self.torch.from_numpy(np.zeros(0, dtype)).dtype

    def empty(self, shape, dtype):
        return self.torch.empty(tuple(shape), dtype=self._dtype(dtype), device=self.device)

    def zeros(self, shape, dtype):
        return self.torch.zeros(tuple(shape), dtype=self._dtype(dtype), device=self.device)

    def pinned(self, shape, dtype) -> np.ndarray:
        t = self.torch.empty(tuple(shape), dtype=self._dtype(dtype), pin_memory=True)
        self._keep.append(t)
        return t.numpy()

    def ptr(self, buf) -> int:
        return int(buf.data_ptr())

    def upload(self, dst, src: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):
            dst.view(-1)[: src.size].copy_(self.torch.from_numpy(src).view(-1), non_blocking=True)

    def download(self, dst: np.ndarray, src) -> None:
        with self.torch.cuda.stream(self.stream):
            self.torch.from_numpy(dst).view(-1).copy_(src.view(-1)[: dst.size], non_blocking=True)

    def copy_rows(self, dst, dst_rows, src, src_rows) -> None:
        with self.torch.cuda.stream(self.stream):
            d = self.torch.as_tensor(list(dst_rows), device=self.device)
            s = self.torch.as_tensor(list(src_rows), device=self.device)
            dst.index_copy_(0, d, src.index_select(0, s))

    def zero_rows(self, buf, rows) -> None:
        with self.torch.cuda.stream(self.stream):
            buf[self.torch.as_tensor(list(rows), device=self.device)] = 0

    def finite_rows(self, bufs, n: int) -> np.ndarray:
        with self.torch.cuda.stream(self.stream):
            ok = self.torch.ones(n, dtype=self.torch.bool, device=self.device)
            for b in bufs:
                ok &= self.torch.isfinite(b[:n]).reshape(n, -1).all(dim=1)
        self.stream.synchronize()
        return ok.cpu().numpy()

    def synchronize(self) -> None:
        self.stream.synchronize()


def this_target(device=None) -> dict[str, str]:
    """GPU name, compute capability and TensorRT version here (BackendUnavailable if none)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"{NOT_AVAILABLE}: cannot import tensorrt ({exc}; pip install 'affedge[tensorrt]' on an NVIDIA GPU, or JetPack's python3-libnvinfer on a Jetson: docs/JETSON.md)") from None
    if device is None:
        try:
            import torch
        except ImportError:
            raise BackendUnavailable(f"{NOT_AVAILABLE}: the TensorRT backend uses torch for "
                                     "CUDA buffers and torch is not installed") from None
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"{NOT_AVAILABLE}: no CUDA device visible to torch")
        p = torch.cuda.get_device_properties(0)
        info = {"gpu_name": p.name, "compute_capability": f"{p.major}.{p.minor}"}
    else:
        info = device.info()
    return {**info, "tensorrt_version": trt.__version__}


def check_engine_target(rec: Mapping, here: Mapping[str, str]) -> None:
    """Refuse an engine built for another GPU or TensorRT version."""
    for key in ("compute_capability", "tensorrt_version", "gpu_name"):
        if str(rec.get(key)) != str(here[key]):
            raise BackendUnavailable(
                f"engine {rec['file']} was built for {rec.get('gpu_name')} (compute "
                f"{rec.get('compute_capability')}, TensorRT {rec.get('tensorrt_version')}); this "
                f"machine has {here['gpu_name']} (compute {here['compute_capability']}, TensorRT "
                f"{here['tensorrt_version']}): rebuild it here with `affedge build-engines "
                "BUNDLE`, or use the bundle's ONNX models")


class _Model:
    """One engine with its context and its preallocated device + pinned buffers."""

    def __init__(self, name: str, engine, ctx, device, trt):
        self.name, self.engine, self.ctx = name, engine, ctx
        self.inputs, self.outputs = [], []
        for i in range(engine.num_io_tensors):
            n = engine.get_tensor_name(i)
            (self.inputs if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
             else self.outputs).append(n)
        self.dtype = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n)))
                      for n in self.inputs + self.outputs}
        self.profile = {}
        for n in self.inputs:
            shape = tuple(engine.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                lo, _opt, hi = engine.get_tensor_profile_shape(n, 0)
                self.profile[n] = (tuple(lo), tuple(hi))
            else:
                self.profile[n] = (shape, shape)
        for n, (_lo, hi) in self.profile.items():  # output sizes at the profile's max
            if not ctx.set_input_shape(n, hi):
                raise BackendUnavailable(f"TensorRT engine {name}: its profile max {hi} for {n} "
                                         "is refused by the engine")
        self.max_shape = {n: self.profile[n][1] for n in self.inputs}
        for n in self.outputs:
            shape = tuple(ctx.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise BackendUnavailable(f"TensorRT engine {name}: output {n} has no bounded "
                                         f"shape ({shape})")
            self.max_shape[n] = shape
        self.dev = {n: device.empty(self.max_shape[n], self.dtype[n]) for n in self.max_shape}
        self.host = {n: device.pinned((int(np.prod(self.max_shape[n])),), self.dtype[n])
                     for n in self.max_shape}

    @property
    def max_batch(self) -> int | None:
        his = [hi[0] for lo, hi in self.profile.values() if lo and lo[0] != hi[0]]
        return min(his) if his else None


class TensorRTBackend(Backend):
    name = "tensorrt"
    format = "tensorrt"

    def __init__(self, bundle: Bundle, precision: str | Mapping[str, str] | None = None,
                 models=None, device=None):
        """``precision``: which engines ("fp16", ...; per model as a dict; default the first
        engine of each model). ``device``: the CUDA memory/stream object (default
        :class:`TorchCudaDevice`)."""
        self.precision_pref = precision
        here = this_target(device)  # raises BackendUnavailable without TensorRT/GPU
        super().__init__(bundle, models)
        import tensorrt as trt

        from affedge.export.tensorrt_build import shared_logger

        for rec in self._specs.values():
            check_engine_target(rec, here)
        self._trt = trt
        self.device = device if device is not None else TorchCudaDevice()
        self._runtime = trt.Runtime(shared_logger(trt))
        self._models: dict[str, _Model] = {}
        for model, rec in self._specs.items():
            blob = (self.bundle.root / rec["file"]).read_bytes()
            engine = self._runtime.deserialize_cuda_engine(blob)
            if engine is None:
                raise BackendUnavailable(f"TensorRT could not deserialize {rec['file']} (see the "
                                         "TensorRT log above)")
            self._models[model] = _Model(model, engine, engine.create_execution_context(),
                                         self.device, trt)
        self._target = here

    def _record(self, model: str) -> dict | None:
        pref = self.precision_pref
        if isinstance(pref, Mapping):
            pref = pref.get(model)
        return self.bundle.find(model, "tensorrt", pref or None)

    @property
    def providers(self) -> list[str]:
        return [f"TensorRT {self._target['tensorrt_version']} on {self._target['gpu_name']}"]

    def max_batch(self, model: str) -> int | None:
        """Most faces (rows) one call of ``model`` takes (the profile's max batch)."""
        return self._get(model).max_batch

    def _get(self, model: str) -> _Model:
        if not self._models:
            raise RuntimeError(f"{self.name}: backend closed (its engines were released by "
                               "close())")
        try:
            return self._models[model]
        except KeyError:
            raise KeyError(f"{self.name}: no model {model!r}; this backend has "
                           f"{self.models}") from None

    def _set_shapes(self, m: _Model, shapes: Mapping[str, tuple]) -> None:
        """Shapes inside the profile (one clear error naming max faces) and accepted."""
        for n, shape in shapes.items():
            lo, hi = m.profile[n]
            if len(shape) != len(hi):
                raise ValueError(f"{self.name}/{m.name}: input {n!r} must have rank {len(hi)}, "
                                 f"got shape {list(shape)}")
            if lo and lo[0] != hi[0] and shape[0] > hi[0]:
                raise ValueError(
                    f"{self.name}/{m.name}: {shape[0]} faces in one call, but this engine was "
                    f"built for at most {hi[0]} (its profile's max batch): lower max_faces or "
                    f"rebuild with `affedge build-engines BUNDLE --max-faces {shape[0]}`")
            bad = [(d, a, b) for d, a, b in zip(shape, lo, hi) if not (a <= d <= b)]
            if bad:
                raise ValueError(f"{self.name}/{m.name}: input {n!r} shape {list(shape)} is "
                                 f"outside the engine's profile {list(lo)}..{list(hi)}")
            if not m.ctx.set_input_shape(n, tuple(int(d) for d in shape)):
                raise ValueError(f"{self.name}/{m.name}: TensorRT refused shape {list(shape)} "
                                 f"for {n!r} (profile {list(lo)}..{list(hi)})")

    def _execute(self, m: _Model, host_in: Mapping[str, np.ndarray],
                 dev_in: Mapping[str, tuple[int, tuple]] | None = None,
                 dev_out: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        """Upload ``host_in`` through the pinned buffers, bind device-resident tensors
        (``dev_in``: name -> (address, shape); ``dev_out``: name -> address), execute, and
        return the outputs not in ``dev_out`` (float32, copied out of the pinned buffers)."""
        dev_in, dev_out = dev_in or {}, dev_out or {}
        self._set_shapes(m, {**{n: a.shape for n, a in host_in.items()},
                             **{n: s for n, (_p, s) in dev_in.items()}})
        d = self.device
        for n, a in host_in.items():
            stage = m.host[n][: a.size]
            stage[...] = a.reshape(-1)  # dtype conversion (e.g. fp16 I/O engines) happens here
            d.upload(m.dev[n], stage)
            m.ctx.set_tensor_address(n, d.ptr(m.dev[n]))
        for n, (ptr, _shape) in dev_in.items():
            m.ctx.set_tensor_address(n, ptr)
        shapes = {}
        for n in m.outputs:
            shapes[n] = tuple(int(x) for x in m.ctx.get_tensor_shape(n))
            m.ctx.set_tensor_address(n, dev_out[n] if n in dev_out else d.ptr(m.dev[n]))
        if not m.ctx.execute_async_v3(d.stream_handle):
            raise RuntimeError(f"TensorRT execution of {m.name!r} failed (see the TensorRT log)")
        outs = {}
        for n in m.outputs:
            if n in dev_out:
                continue
            size = int(np.prod(shapes[n]))
            d.download(m.host[n][:size], m.dev[n])
            outs[n] = shapes[n]
        d.synchronize()
        return {n: m.host[n][: int(np.prod(s))].reshape(s).astype(np.float32, copy=True)
                for n, s in outs.items()}

    def run(self, model_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        m = self._get(model_name)
        feeds = self.check_inputs(model_name, inputs)
        return self._execute(m, feeds)

    def resident_step(self, capacity: int | None = None):
        """A :class:`~affedge.sdk.backends.resident_state.ResidentStep` over the step engine:
        its states live on the device (``capacity`` rows, default the profile's max batch)."""
        from affedge.sdk.backends.resident_state import ResidentStep

        return ResidentStep(self, capacity)

    def close(self) -> None:
        self._models = {}


# ---------------------------------------------------------------------------------------------
# ONNX Runtime's TensorRT execution provider


def default_cache_dir(bundle: Bundle) -> Path:
    """Per-bundle cache directory: ``$AFFEDGE_CACHE_DIR`` or ``$XDG_CACHE_HOME/affedge`` (else
    ``~/.cache/affedge``) / ``bundles/<digest of the artifacts' sha256>`` - never the working
    directory, and never inside the bundle (which may be read-only or a zip)."""
    base = os.environ.get("AFFEDGE_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "affedge")
    h = hashlib.sha256("".join(sorted(a["sha256"] for a in bundle.artifacts)).encode())
    return Path(base) / "bundles" / h.hexdigest()[:16]


def _shape_str(shapes: Mapping[str, tuple]) -> str:
    return ",".join(f"{n}:{'x'.join(str(int(d)) for d in s)}" for n, s in shapes.items())


def ort_tensorrt_options(bundle: Bundle, max_faces: int, cache_dir: str | os.PathLike | None
                         = None, window: int = 64, fp16: bool = False,
                         device_id: int = 0) -> dict[str, dict[str, Any]]:
    """``{model: TensorrtExecutionProvider options}`` for the bundle's ONNX models.

    Each model gets explicit profile shapes (``trt_profile_min/opt/max_shapes``: batch 1..
    max_faces + 1 for the step - every track plus the background stream - and 1..max_faces
    for the encoder; window length 1..max(window, 512)), so ORT does not rebuild its engine
    when one face becomes two, and an engine + timing cache under ``cache_dir`` (default
    :func:`default_cache_dir` / ``ort-tensorrt/<model>``), not the working directory. Options
    are per model because the step and the window both have an input named ``embedding``
    with different ranks. ``fp16`` maps to ``trt_fp16_enable`` (TensorRT 10 only: TensorRT 11
    removed the weak-typing flag it sets).
    """
    from affedge.export.tensorrt_build import profiles_from_specs, step_batch

    if int(max_faces) < 1:
        raise ValueError(f"max_faces must be >= 1, got {max_faces}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir(bundle) / "ort-tensorrt"
    out = {}
    for model in ("encoder", "step", "window"):
        rec = bundle.find(model, "onnx", "fp32") or bundle.find(model, "onnx")
        if rec is None:
            continue
        batch = step_batch(max_faces) if model == "step" else int(max_faces)
        prof = profiles_from_specs(rec["inputs"], batch, window)
        d = root / model
        opts: dict[str, Any] = {
            "device_id": int(device_id), "trt_fp16_enable": bool(fp16),
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(d),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(d),
        }
        if prof:
            opts["trt_profile_min_shapes"] = _shape_str({n: p[0] for n, p in prof.items()})
            opts["trt_profile_opt_shapes"] = _shape_str({n: p[1] for n, p in prof.items()})
            opts["trt_profile_max_shapes"] = _shape_str({n: p[2] for n, p in prof.items()})
        out[model] = opts
    return out
