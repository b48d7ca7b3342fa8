"""OpenVINO backend: runs the bundle's ONNX artifacts with OpenVINO (CPU, and GPU/NPU devices).

No separate export: OpenVINO's ``read_model`` reads the bundle's ``.onnx`` files directly, with
their dynamic batch ``N`` (N faces for the encoder, N streams for the step) kept dynamic. The
process has one ``ov.Core`` (:func:`shared_core`; a Core per backend broke signal delivery).

Precision (the ``precision`` option) applies to the encoder, the model that costs; the step and
window always run in fp32 (they are small, and their outputs are the predictions):

* ``"fp32"``: ``INFERENCE_PRECISION_HINT = f32`` (set explicitly: on CPUs with AMX OpenVINO
  would otherwise pick bf16 by itself);
* ``"bf16"``: ``INFERENCE_PRECISION_HINT = bf16`` on the fp32 graph -- only where the device
  lists ``BF16`` in its ``OPTIMIZATION_CAPABILITIES`` (AVX-512 BF16 / AMX CPUs); elsewhere
  OpenVINO would silently run fp32, so asking for it is refused with the reason;
* ``"int8"``: the bundle's ``onnx-int8`` QDQ encoder (OpenVINO executes the quantize/dequantize
  pairs as int8 kernels); without that artifact the fp32 encoder runs, as in ONNX Runtime;
* ``None`` / ``"auto"``: bf16 where the device reports BF16, else fp32.

``precision(model)`` reports what actually runs, read back from the compiled model.

Batch: every model is compiled with its dynamic ``N``; in addition the batch sizes in
``static_batch`` (default ``(1,)``: one face, one stream -- the common tick) get their own
compiled copy with that ``N`` fixed, which OpenVINO optimises further (mobile encoder, batch 1:
1.5 ms static vs 1.9 ms dynamic on an AMD EPYC; IR-50: no difference). Another N runs on the
dynamic model, so no call ever waits for a compile, and the first call with it starts a
background compile of a static copy for it (at most ``learn_batches`` such sizes per model, N
up to :data:`MAX_LEARNED_BATCH`), used from then on: a hub with 4 sources calls batch 4 on
every tick, where the dynamic model lost to the static one (demo bundle, 2-core AMD EPYC,
medians of 100 calls: encoder 5.1 vs 3.0 ms, step 7.0 vs 4.9 ms; outputs equal to 6e-8).
Threads follow :mod:`affedge.sdk.backends.threads` (``intra_op_threads``, ``$AFFEDGE_THREADS``).
Compiled models are cached (OpenVINO ``CACHE_DIR``) in ``cache_dir``: default
``$AFFEDGE_CACHE_DIR/openvino``, else ``$XDG_CACHE_HOME/affedge/openvino``, else
``~/.cache/affedge/openvino`` -- never the working directory; ``cache_dir=False`` disables it.
openvino is imported lazily (``pip install 'affedge[openvino]'``).
"""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from affedge.bundle import Bundle
from affedge.sdk.backends.base import Backend, BackendUnavailable
from affedge.sdk.backends.threads import openvino_config, thread_policy

PRECISIONS = ("fp32", "bf16", "int8")
#: the largest batch size that gets a static copy compiled on first use (see the docstring)
MAX_LEARNED_BATCH = 32
_HINT = {"fp32": "f32", "bf16": "bf16"}
_INSTALL = "pip install 'affedge[openvino]'"


#: imported by ``import openvino`` for its ``convert_model`` (not used at run time); importing
#: it sends a usage event to Google Analytics from a forked child process (openvino_telemetry,
#: on unless the user opted out or ``CI=true``; seen in OpenVINO 2026.4). affedge runs on
#: kiosks and robots and must not contact anything the user did not configure.
_PHONES_HOME = "openvino.tools.ovc"


def import_openvino():
    """The ``openvino`` module, loaded without its converter's usage telemetry
    (:data:`_PHONES_HOME`: kept out of the import, and importable again afterwards), or
    BackendUnavailable saying how to install it."""
    blocked = "openvino" not in sys.modules and _PHONES_HOME not in sys.modules
    if blocked:
        sys.modules[_PHONES_HOME] = None  # its import raises ImportError, which openvino skips
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable(f"openvino is not installed ({_INSTALL}): {exc}") from None
    finally:
        if blocked and sys.modules.get(_PHONES_HOME, 0) is None:
            del sys.modules[_PHONES_HOME]
    return openvino


_CORE = None
_CORE_LOCK = threading.Lock()
#: the process that made ``_CORE``: a child forked after it may not use OpenVINO (see
#: shared_core)
_CORE_PID: int | None = None
FORKED = ("OpenVINO cannot run in a process forked after its parent used OpenVINO (its "
          "compile hangs there, openvinotoolkit/openvino#416); start worker processes with "
          "multiprocessing's 'spawn' method (multiprocessing.get_context('spawn').Pool(...)) "
          "to use it, or choose backend='onnxruntime'")


def _after_fork_in_child() -> None:
    global _CORE_LOCK
    _CORE_LOCK = threading.Lock()  # (another thread of the parent may have held it)


os.register_at_fork(after_in_child=_after_fork_in_child)


def shared_core():
    """The process's one ``ov.Core``: made on first use, never destroyed; every OpenVINO user
    in affedge (backends, detectors, device probes) goes through it.

    Why one: OpenVINO's CPU plugin gives the thread that loads it a new alternate signal stack
    and, when its Core is destroyed, unmaps that stack and puts back the one it found. Two
    Cores destroyed in the order they were made (A, B, del A, del B) therefore leave the
    thread's alternate stack pointing at A's unmapped memory, and the next signal handled on
    that thread (Ctrl-C, SIGTERM: Python's handlers run on the alternate stack) kills the
    process with SIGSEGV and no traceback (openvino 2026.4; it killed the test suite once a
    detector and a model backend, or two backends, had come and gone)."""
    global _CORE, _CORE_PID
    with _CORE_LOCK:
        if _CORE is not None and _CORE_PID != os.getpid():
            # a fork child of a process that used OpenVINO: its compile hung for good there
            # (a multiprocessing Pool forked after a Recognizer was closed, new-user trial);
            # backend "auto" goes on to ONNX Runtime, said once
            import warnings

            warnings.warn(f"affedge: {FORKED}; this process uses another backend",
                          RuntimeWarning, stacklevel=2)
            raise BackendUnavailable(FORKED)
        if _CORE is None:
            _CORE = import_openvino().Core()
            _CORE_PID = os.getpid()
        return _CORE


_COMPILE_LOCK = threading.Lock()


def compile_model(model, device: str, config: dict):
    """``shared_core().compile_model`` with one compile at a time in the process.

    OpenVINO's compile sets the C locale to "C" and puts the previous one back when it ends;
    two compiles at once (a background static-batch compile next to another) interleave
    those calls, and the process was left in the "C" locale: Python then took ASCII as the
    preferred encoding, and decoding a subprocess's UTF-8 output failed (it broke a CI run).
    Compiles are rare (start-up, a new batch size), so the lock costs nothing at run time."""
    with _COMPILE_LOCK:
        return shared_core().compile_model(model, device, config)


def default_cache_dir() -> Path:
    """Where compiled models are cached unless ``cache_dir`` says otherwise (never the cwd)."""
    if os.environ.get("AFFEDGE_CACHE_DIR"):
        return Path(os.environ["AFFEDGE_CACHE_DIR"]) / "openvino"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "affedge" / "openvino"


def openvino_devices() -> list[str]:
    """OpenVINO's devices here (e.g. ``["CPU", "GPU.0", "NPU"]``); ``[]`` without openvino."""
    try:
        return list(shared_core().available_devices)
    except Exception:  # noqa: BLE001 - missing library or broken plugin: no devices
        return []


def openvino_device_lines() -> list[str]:
    """One line per device for ``affedge doctor``: name, full name and capabilities
    (``BF16`` there means the bf16 precision is available)."""
    try:
        ov = import_openvino()
    except BackendUnavailable as exc:
        return [f"openvino: not installed ({_INSTALL})"] if "not installed" in str(exc) else [
            str(exc)]
    core = shared_core()
    lines = [f"openvino {ov.get_version()}"]
    for dev in core.available_devices:
        try:
            full = core.get_property(dev, "FULL_DEVICE_NAME")
            caps = ", ".join(core.get_property(dev, "OPTIMIZATION_CAPABILITIES"))
        except Exception as exc:  # noqa: BLE001 - a plugin that cannot answer still gets a line
            full, caps = "?", f"properties unavailable: {exc}"
        lines.append(f"openvino device {dev}: {full} [{caps}]")
    return lines


def device_capabilities(core, device: str) -> list[str]:
    try:
        return list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 - e.g. AUTO/MULTI have no single answer
        return []


class OpenVinoBackend(Backend):
    """The bundle's ONNX models compiled by OpenVINO (one compiled model per model)."""

    name = "openvino"
    format = "onnx"

    def __init__(self, bundle: Bundle, device: str = "CPU", precision: str | None = None,
                 cache_dir: str | os.PathLike | bool | None = None,
                 intra_op_threads: int | None = None, models: tuple[str, ...] | None = None,
                 static_batch: tuple[int, ...] = (1,), learn_batches: int = 8):
        ov = import_openvino()
        if not isinstance(learn_batches, int) or learn_batches < 0:
            raise ValueError(f"learn_batches must be an int >= 0, got {learn_batches!r}")
        if any(not isinstance(n, int) or n < 1 for n in static_batch):
            raise ValueError(f"static_batch must be batch sizes >= 1, got {static_batch!r}")
        if precision not in (None, "auto", *PRECISIONS):
            raise ValueError(f"openvino precision must be one of {PRECISIONS} or 'auto', "
                             f"got {precision!r}")
        self._ov = ov
        core = shared_core()
        if device.split(".")[0] not in ("AUTO", "MULTI", "HETERO") and \
                device not in core.available_devices:
            raise BackendUnavailable(f"openvino: device {device!r} not among "
                                     f"{core.available_devices}")
        caps = device_capabilities(core, device)
        if precision in (None, "auto"):
            precision = "bf16" if "BF16" in caps else "fp32"
            self.precision_reason = (f"auto: {device} reports {caps}; "
                                     f"{'bf16' if precision == 'bf16' else 'no BF16, fp32'}")
        elif precision == "bf16" and "BF16" not in caps:
            raise BackendUnavailable(f"openvino: {device} does not report BF16 in its "
                                     f"optimization capabilities {caps}; it would run fp32 "
                                     "(use precision='fp32')")
        else:
            self.precision_reason = f"asked for {precision}"
        self.precision_pref = precision
        self.device = device
        super().__init__(bundle, models)
        self.threads = thread_policy(intra_op_threads)
        base = openvino_config(self.threads) if device == "CPU" else {
            "PERFORMANCE_HINT": "LATENCY"}
        if cache_dir is None:
            cache_dir = default_cache_dir()
        if cache_dir is not False:
            try:
                Path(cache_dir).mkdir(parents=True, exist_ok=True)
                base["CACHE_DIR"] = str(cache_dir)
                self.cache_dir: Path | None = Path(cache_dir)
            except OSError:  # read-only home: run uncached rather than fail
                self.cache_dir = None
        else:
            self.cache_dir = None
        self._compiled, self._requests, self._locks, self._effective = {}, {}, {}, {}
        self._static_src: dict[str, tuple] = {}  # model -> (net, cfg): for learned batches
        self._learn_left = {}
        self._learning: list[threading.Thread] = []
        self._learn_lock = threading.Lock()
        self._core = core
        for model, rec in self._specs.items():
            path = self.bundle.root / rec["file"]
            hint = "bf16" if (model == "encoder" and precision == "bf16") else "fp32"
            cfg = dict(base, INFERENCE_PRECISION_HINT=_HINT[hint])
            try:
                net = core.read_model(str(path))
                names = [p.get_any_name() for p in net.inputs]
                if names != [s["name"] for s in rec["inputs"]]:
                    raise BackendUnavailable(f"{rec['file']}: graph inputs {names} differ from "
                                             "the manifest")
                compiled = compile_model(net, device, cfg)
            except BackendUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise BackendUnavailable(f"openvino could not compile {rec['file']} for "
                                         f"{device}: {first}") from None
            self._compiled[model] = compiled
            self._requests[model] = {None: compiled.create_infer_request()}
            self._locks[model] = threading.Lock()
            self._effective[model] = self._read_precision(compiled, rec)
            if self._batch_only(rec):
                self._static_src[model] = (net, cfg)
                self._learn_left[model] = learn_batches
                for n in static_batch:
                    self._requests[model][n] = self._compile_static(model, n)
        self._out_index = {m: self._output_index(m) for m in self._compiled}

    def _compile_static(self, model: str, n: int):
        """An infer request of ``model`` compiled with its batch ``N`` fixed to ``n``."""
        net, cfg = self._static_src[model]
        fixed = net.clone()
        fixed.reshape({p.get_any_name(): [n, *[int(d) for d in s["shape"][1:]]]
                       for p, s in zip(fixed.inputs, self._spec(model)["inputs"])})
        return compile_model(fixed, self.device, cfg).create_infer_request()

    def _learn(self, model: str, n: int) -> None:
        """Compile a static copy for batch ``n`` on a background thread (see the docstring)."""
        with self._learn_lock:
            reqs = self._requests.get(model)
            if reqs is None or n in reqs or n > MAX_LEARNED_BATCH or \
                    self._learn_left.get(model, 0) <= 0:
                return
            self._learn_left[model] -= 1
            reqs[n] = None  # taken: the dynamic model serves n until the copy is ready

            def compile_it():
                try:
                    req = self._compile_static(model, n)
                except Exception:  # noqa: BLE001 - the dynamic model keeps serving n
                    return
                with self._learn_lock:
                    if self._requests.get(model) is reqs:
                        reqs[n] = req

            th = threading.Thread(target=compile_it, name=f"affedge-openvino-{model}-b{n}",
                                  daemon=True)
            self._learning.append(th)
            th.start()

    def wait_learned(self, timeout: float | None = None) -> None:
        """Wait for the static copies being compiled in the background (tests, benchmarks)."""
        for th in list(self._learning):
            th.join(timeout)

    # -- which artifact serves a model: the int8 QDQ encoder when asked and present
    def _record(self, model: str) -> dict | None:
        from affedge.sdk.backends.onnxruntime_backend import onnx_record

        return onnx_record(self.bundle, model, self.precision_pref)

    @staticmethod
    def _batch_only(rec: dict) -> bool:
        """True when the only free dimension of every input is the leading batch ``N``."""
        shapes = [s["shape"] for s in rec["inputs"]]
        return all(sh and sh[0] == shapes[0][0] and isinstance(sh[0], str)
                   and all(isinstance(d, int) for d in sh[1:]) for sh in shapes)

    @staticmethod
    def _read_precision(compiled, rec: dict) -> str:
        try:
            hint = compiled.get_property("INFERENCE_PRECISION_HINT")
            # an ``ov.Type``: its name is "bf16"/"f16"/"f32"; its str() is "<Type: 'bfloat16'>"
            # (which the old "bf16" substring test misread as fp32 on an AMX CPU)
            t = str(getattr(hint, "get_type_name", lambda: hint)()).lower()
        except Exception:  # noqa: BLE001 - devices without the property
            t = ""
        if rec.get("precision") == "int8":
            return "int8"
        if "bf16" in t or "bfloat16" in t:
            return "bf16"
        return "fp16" if "f16" in t or "float16" in t else "fp32"

    def _output_index(self, model: str) -> list[int]:
        """Position of each manifest output among the compiled model's outputs."""
        have = [o.get_any_name() for o in self._compiled[model].outputs]
        idx = []
        for n in self.output_names(model):
            matches = [i for i, o in enumerate(self._compiled[model].outputs) if n in o.names]
            if not matches:
                raise BackendUnavailable(f"openvino/{model}: output {n!r} not in the compiled "
                                         f"model's outputs {have}")
            idx.append(matches[0])
        return idx

    def precision(self, model: str) -> str:
        self._spec(model)
        return self._effective.get(model, self._spec(model)["precision"])

    @property
    def providers(self) -> list[str]:
        return [f"openvino:{self.device}"]

    def run(self, model_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._compiled:
            raise RuntimeError(f"{self.name}: backend closed (its compiled models were released "
                               "by close()); create a new backend")
        feeds = self.check_inputs(model_name, inputs)
        reqs = self._requests[model_name]
        n = len(next(iter(feeds.values())))
        req = reqs.get(n, False)
        if req is False and model_name in self._static_src:
            self._learn(model_name, n)
        if req is None or req is False:
            req = reqs[None]
        with self._locks[model_name]:
            # OpenVINO reads the (checked, contiguous) arrays in place (shared tensors, no
            # copy through Python), and the outputs are read from the request's tensors:
            # ``infer(dict)`` and its result dict spend ~0.5 ms of Python per demo step call
            # (25 inputs) dispatching and wrapping; measured interleaved in one run: 2.0 ->
            # 1.43 ms median per step call, identical outputs
            for i, a in enumerate(feeds.values()):
                req.set_input_tensor(i, self._ov.Tensor(a, shared_memory=True))
            req.infer()
            outs = [np.array(req.get_output_tensor(i).data, dtype=np.float32, copy=True)
                    for i in self._out_index[model_name]]
        return dict(zip(self.output_names(model_name), outs))

    def close(self) -> None:
        with self._learn_lock:
            self._requests = {}
            self._compiled = {}
        self.wait_learned()  # no compile left running into interpreter shutdown
