"""The OpenVINO backend against ONNX Runtime fp32 on the demo bundle: encoder on real face crops
from the synthetic set, the streaming step through many steps with its state, batch 1 and 3,
int8 (the bundle's QDQ encoder), bf16 where the CPU has it, and the whole demo clip through a
Recognizer. Skips with the reason where openvino cannot be imported."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from affedge.sdk.recognizer import DEMO_BUNDLE, DEMO_CLIP, demo_assets_missing

try:
    from affedge.sdk.backends.openvino_backend import import_openvino

    openvino = import_openvino()  # (without openvino's usage telemetry)
    OV_SKIP = None
except Exception as exc:  # noqa: BLE001 (BackendUnavailable; the reason is shown by pytest -rs)
    OV_SKIP = f"openvino cannot be imported here ({exc}); pip install 'affedge[openvino]'"

pytestmark = [
    pytest.mark.skipif(OV_SKIP is not None, reason=OV_SKIP or ""),
    pytest.mark.skipif(bool(demo_assets_missing()),
                       reason=f"demo assets missing: {demo_assets_missing()}"),
]

#: fp32 OpenVINO vs fp32 ONNX Runtime (different kernels, same precision)
FP32_TOL = 1e-4
#: bf16 encoder embedding vs fp32 on the trained demo encoder: the same bound as the torch bf16
#: test's (tests/test_torch_bf16.py, 6.4e-3..7.9e-3 there); OpenVINO 2026.4 on a Xeon with AMX
#: measured 8.6e-3 (the first bf16 machine this test ran on; issue 18's 5e-3 was for torch)
BF16_TOL = 1e-2


@pytest.fixture(scope="module")
def bundle():
    from affedge.bundle import load_bundle

    return load_bundle(DEMO_BUNDLE)


@pytest.fixture(scope="module")
def crops(synth_dataset, bundle) -> np.ndarray:
    """Model inputs [M, 3, 40, 40] from the synthetic set's aligned face crops (every 5th
    frame of each video), through the runtime's own preprocessing."""
    import cv2

    from affedge.features.faces import to_model_input

    files = sorted((Path(synth_dataset) / "cropped_aligned").rglob("*.jpg"))[::5]
    assert len(files) >= 30, f"synthetic set has only {len(files)} crops"
    bgr = np.stack([cv2.imread(str(f)) for f in files])
    return to_model_input(bgr, bundle.feature_config())


@pytest.fixture(scope="module")
def ort(bundle):
    from affedge.sdk.backends.onnxruntime_backend import OnnxRuntimeBackend

    be = OnnxRuntimeBackend(bundle, "cpu", intra_op_threads=1)
    yield be
    be.close()


@pytest.fixture(scope="module")
def ov(bundle, tmp_path_factory):
    from affedge.sdk.backends.openvino_backend import OpenVinoBackend

    be = OpenVinoBackend(bundle, precision="fp32", intra_op_threads=1,
                         cache_dir=tmp_path_factory.mktemp("ovcache"))
    yield be
    be.close()


def _embed(be, x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([be.run("encoder", {"frames": x[i:i + n]})["embedding"]
                           for i in range(0, len(x) - n + 1, n)])


@pytest.mark.parametrize("n", [1, 3])
def test_encoder_fp32_matches_onnxruntime_on_real_crops(ov, ort, crops, n):
    assert ov.precision("encoder") == "fp32" and ov.providers == ["openvino:CPU"]
    # batch 1 runs the static-N copy, batch 3 the dynamic model: both paths are compared
    assert set(ov._requests["encoder"]) == set(ov._requests["step"]) == {None, 1}
    assert set(ov._requests["window"]) == {None}  # N and W free: dynamic only
    got, ref = _embed(ov, crops, n), _embed(ort, crops, n)
    assert got.shape == ref.shape == (len(crops) // n * n, 512) and got.dtype == np.float32
    err = float(np.abs(got - ref).max())
    assert err <= FP32_TOL, f"fp32 embedding error {err:.2e} > {FP32_TOL}"


def _step_inputs(be, emb: np.ndarray, rng) -> dict[str, np.ndarray]:
    n = len(emb)
    feeds = {}
    for s in be.input_specs("step"):
        shape = [n if d == "N" else d for d in s["shape"]]
        feeds[s["name"]] = (emb if s["name"] == "embedding"
                            else np.zeros(shape, np.float32) if s["name"].startswith("state")
                            else rng.standard_normal(shape).astype(np.float32))
    return feeds


@pytest.mark.parametrize("n", [1, 3])
def test_streaming_step_with_state_matches_onnxruntime(ov, ort, crops, n):
    """20 steps, each backend carrying its own state: outputs and states stay within fp32
    tolerance (errors would compound through the state if a kernel were wrong)."""
    rng = np.random.default_rng(n)
    emb = ort.run("encoder", {"frames": crops[:20 * n]})["embedding"].reshape(20, n, 512)
    states = {}
    state_names = [s["name"] for s in ov.input_specs("step") if s["name"].startswith("state")]
    assert state_names, "the step artifact carries no state"
    for t in range(20):
        feeds = _step_inputs(ov, emb[t], rng)
        outs = {}
        for name, be in (("ov", ov), ("ort", ort)):
            f = dict(feeds, **states.get(name, {}))
            outs[name] = be.run("step", f)
            states[name] = {s: outs[name]["state_out_" + s[len("state_"):]] for s in state_names}
        for k in outs["ort"]:
            assert outs["ov"][k].shape == outs["ort"][k].shape
            err = float(np.abs(outs["ov"][k] - outs["ort"][k]).max())
            assert err <= FP32_TOL, f"step {t} output {k}: error {err:.2e}"
    # the state really moved (the comparison above is not over constant zeros)
    assert any(np.abs(v).max() > 1e-3 for v in states["ov"].values())


def test_int8_runs_the_bundles_qdq_encoder(bundle, ort, crops, tmp_path):
    from affedge.sdk.backends.onnxruntime_backend import OnnxRuntimeBackend
    from affedge.sdk.backends.openvino_backend import OpenVinoBackend

    if bundle.find("encoder", "onnx-int8") is None:
        pytest.skip("the demo bundle has no onnx-int8 encoder")
    ov8 = OpenVinoBackend(bundle, precision="int8", models=("encoder",), cache_dir=tmp_path)
    ort8 = OnnxRuntimeBackend(bundle, "cpu", precision="int8", models=("encoder",))
    assert ov8.precision("encoder") == "int8"
    x = crops[:32]
    ref = ort.run("encoder", {"frames": x})["embedding"]
    got = ov8.run("encoder", {"frames": x})["embedding"]
    got_ort8 = ort8.run("encoder", {"frames": x})["embedding"]
    # int8 is an approximation: same order of error as ONNX Runtime's int8 on the same graph,
    # and clearly closer to fp32 than the embedding's own spread
    e_ov, e_ort = float(np.abs(got - ref).max()), float(np.abs(got_ort8 - ref).max())
    assert e_ov <= 3 * e_ort + 1e-3, (e_ov, e_ort)
    assert e_ov < 0.5 * float(ref.max() - ref.min())


def test_bf16_where_supported_else_refused_with_reason(bundle, ort, crops, tmp_path):
    from affedge.sdk.backends.base import BackendUnavailable
    from affedge.sdk.backends.openvino_backend import (OpenVinoBackend, openvino_devices,
                                                       shared_core)

    assert "CPU" in openvino_devices()
    auto = OpenVinoBackend(bundle, models=("encoder", "step"), cache_dir=tmp_path)
    caps = shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert auto.precision("step") == "fp32"
    if "BF16" not in caps:
        assert auto.precision("encoder") == "fp32", "auto must fall back to fp32 without BF16"
        with pytest.raises(BackendUnavailable, match="does not report BF16"):
            OpenVinoBackend(bundle, precision="bf16", cache_dir=tmp_path)
        pytest.skip(f"this CPU reports {caps} (no BF16): bf16 parity not measurable here; "
                    "ran fp32 only")
    assert auto.precision("encoder") == "bf16"
    got = auto.run("encoder", {"frames": crops})["embedding"]
    ref = ort.run("encoder", {"frames": crops})["embedding"]
    err = float(np.abs(got - ref).max())
    assert err <= BF16_TOL, f"bf16 embedding error {err:.2e} > {BF16_TOL}"


def test_a_new_batch_size_gets_a_static_copy_compiled_in_the_background(bundle, crops,
                                                                          tmp_path):
    """The first call with batch 3 runs on the dynamic model and starts a static compile for
    3; once it is ready, batch 3 runs there with the same outputs; ``learn_batches=0`` keeps
    to the dynamic model; close() waits for a compile in flight."""
    from affedge.sdk.backends.openvino_backend import OpenVinoBackend

    x = {"frames": crops[:3]}
    be = OpenVinoBackend(bundle, models=("encoder",), cache_dir=tmp_path)
    assert sorted(k for k in be._requests["encoder"] if k) == [1]
    first = be.run("encoder", x)["embedding"]
    be.wait_learned(60)
    assert be._requests["encoder"].get(3) is not None, "no static copy for batch 3"
    again = be.run("encoder", x)["embedding"]
    np.testing.assert_allclose(again, first, atol=FP32_TOL)
    be.run("encoder", {"frames": crops[:5]})  # another size starts another compile ...
    be.close()  # ... which close() waits for
    assert not any(th.is_alive() for th in be._learning)
    fixed = OpenVinoBackend(bundle, models=("encoder",), cache_dir=tmp_path, learn_batches=0)
    fixed.run("encoder", x)
    fixed.wait_learned(60)
    assert 3 not in fixed._requests["encoder"]
    fixed.close()


def test_bad_options_and_closed_backend(bundle, tmp_path):
    from affedge.sdk.backends.base import BackendUnavailable
    from affedge.sdk.backends.openvino_backend import OpenVinoBackend

    with pytest.raises(ValueError, match="precision"):
        OpenVinoBackend(bundle, precision="fp8")
    with pytest.raises(BackendUnavailable, match="device 'NOPE'"):
        OpenVinoBackend(bundle, device="NOPE")
    with pytest.raises(ValueError, match="intra_op_threads"):
        OpenVinoBackend(bundle, intra_op_threads=0)
    with pytest.raises(ValueError, match="static_batch"):
        OpenVinoBackend(bundle, static_batch=(0,))
    with pytest.raises(ValueError, match="learn_batches"):
        OpenVinoBackend(bundle, learn_batches=-1)
    be = OpenVinoBackend(bundle, models=("encoder",), cache_dir=tmp_path / "c")
    assert any((tmp_path / "c").iterdir()), "compiled model not cached in cache_dir"
    with pytest.raises(ValueError, match="must have shape"):
        be.run("encoder", {"frames": np.zeros((1, 3, 32, 32), np.float32)})
    be.close()
    with pytest.raises(RuntimeError, match="closed"):
        be.run("encoder", {"frames": np.zeros((1, 3, 40, 40), np.float32)})


def _run_demo(backend) -> np.ndarray:
    from affedge.sdk.recognizer import Recognizer

    with Recognizer(DEMO_BUNDLE, backend=backend) as rec:
        preds = list(rec.run(str(DEMO_CLIP), audio="video"))
    return np.array([(p.frame, p.valence, p.arousal, p.face_present) for p in preds],
                    dtype=np.float64)


def _ccc(x: np.ndarray, y: np.ndarray) -> float:
    mx, my = x.mean(), y.mean()
    return float(2 * np.mean((x - mx) * (y - my)) / (x.var() + y.var() + (mx - my) ** 2))


def test_whole_demo_through_a_recognizer_matches_onnxruntime(ov, ort):
    """The demo clip (600 frames, its own audio) through Recognizer with the OpenVINO backend:
    same frames, same face decisions, V/A within 1e-4 of the ONNX Runtime run (measured on an
    AMD EPYC: max |dV| 6e-7, |dA| 9e-7) and the CCC against the clip's labels unchanged
    (<= 0.005, issue 18's criterion; measured: equal to 5 decimals)."""
    from affedge.sdk.recognizer import DEMO_LABELS

    got, ref = _run_demo(ov), _run_demo(ort)
    assert got.shape == ref.shape and len(got) == 600
    assert np.array_equal(got[:, 0], ref[:, 0]) and np.array_equal(got[:, 3], ref[:, 3])
    err = float(np.abs(got[:, 1:3] - ref[:, 1:3]).max())
    assert err <= FP32_TOL, f"demo V/A differ by {err:.2e}"
    assert np.ptp(got[:, 1]) > 0.1, "predictions do not move: the comparison would be empty"
    lab = np.genfromtxt(DEMO_LABELS, delimiter=",", names=True)
    idx = lab["frame"].astype(int)
    for col, name in ((1, "valence"), (2, "arousal")):
        c_ov, c_ort = _ccc(got[idx, col], lab[name]), _ccc(ref[idx, col], lab[name])
        assert abs(c_ov - c_ort) <= 0.005, (name, c_ov, c_ort)


def test_openvino_loads_without_its_usage_telemetry():
    """``import openvino`` imports its model converter, whose import sends a usage event to
    Google Analytics (openvino_telemetry) unless CI=true: affedge keeps that module out. Run in
    a clean subprocess without CI in its environment."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, threading, importlib.util\n"
        "from affedge.features.detectors.model_runner import openvino_available\n"
        "from affedge.sdk.backends.openvino_backend import import_openvino\n"
        "assert openvino_available()\n"
        "ov = import_openvino()\n"
        "ov.Core()\n"
        "print('ovc' if 'openvino.tools.ovc' in sys.modules else 'no-ovc')\n"
        "print('telemetry' if 'openvino_telemetry' in sys.modules else 'no-telemetry')\n"
        "print('findable' if importlib.util.find_spec('openvino.tools.ovc') else 'gone')\n"
        "print(sorted(t.name for t in threading.enumerate() if not t.daemon))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[:3] == ["no-ovc", "no-telemetry", "findable"], out.stdout
    assert lines[3] == "['MainThread']", out.stdout  # no telemetry sender thread


def test_signals_still_arrive_after_backends_close_in_the_order_they_opened(tmp_path):
    """Two OpenVINO backends closed in the order they were made, then Ctrl-C and SIGTERM: both
    handlers run. With a Core each, OpenVINO's CPU plugin left the main thread's alternate
    signal stack pointing at unmapped memory and the first signal killed the process with
    SIGSEGV (it killed the test suite so). Its own process: a crash must not take pytest."""
    import os
    import subprocess
    import sys

    code = (
        "import gc, os, signal\n"
        "from affedge.bundle import load_bundle\n"
        "from affedge.sdk.backends.openvino_backend import OpenVinoBackend\n"
        f"bundle = load_bundle({str(DEMO_BUNDLE)!r})\n"
        f"kw = dict(precision='fp32', intra_op_threads=1, cache_dir={str(tmp_path)!r})\n"
        "first = OpenVinoBackend(bundle, **kw)\n"
        "second = OpenVinoBackend(bundle, **kw)\n"
        "first.close(); del first; gc.collect()\n"
        "second.close(); del second; gc.collect()\n"
        "got = []\n"
        "for s in (signal.SIGINT, signal.SIGTERM):\n"
        "    signal.signal(s, lambda n, f: got.append(n))\n"
        "    os.kill(os.getpid(), s)\n"
        "print('handled', sorted(got))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=180, env={**os.environ, "CI": "true"})
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-2000:]}"
    assert r.stdout.strip().splitlines()[-1] == f"handled {sorted([2, 15])}", r.stdout


def test_every_openvino_user_shares_the_one_core(bundle, tmp_path):
    from affedge.features.detectors.blazeface import MODEL_DIR, VARIANTS
    from affedge.features.detectors.model_runner import DetectorModel
    from affedge.sdk.backends.openvino_backend import OpenVinoBackend, shared_core

    be = OpenVinoBackend(bundle, precision="fp32", intra_op_threads=1, cache_dir=tmp_path)
    det = DetectorModel(str(MODEL_DIR / VARIANTS["short"]["file"]), runtime="openvino")
    try:
        assert be._core is shared_core() and det._core is shared_core()
    finally:
        be.close()


def test_compiles_at_once_leave_the_process_locale_alone(bundle, monkeypatch):
    """OpenVINO's compile switches the C locale to "C" and back; the background compiles of new
    batch sizes (two models at once in a hub) interleaved that and left the process in "C",
    where Python's preferred encoding is ASCII (a CI run then failed decoding UTF-8 output).
    Compiles are serialised: the real Core compiles, through a wrapper that counts how many
    run at once and holds each 50 ms so that unserialised ones would overlap."""
    import locale
    import threading
    import time

    from affedge.sdk.backends import openvino_backend as ob

    class Counting:
        def __init__(self, core):
            self.core, self.now, self.peak, self.lock = core, 0, 0, threading.Lock()

        def compile_model(self, *args, **kwargs):
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            try:
                time.sleep(0.05)
                return self.core.compile_model(*args, **kwargs)
            finally:
                with self.lock:
                    self.now -= 1

        def __getattr__(self, name):
            return getattr(self.core, name)

    counting = Counting(ob.shared_core())
    monkeypatch.setattr(ob, "_CORE", counting)
    before = locale.setlocale(locale.LC_CTYPE)
    be = ob.OpenVinoBackend(bundle, precision="fp32", intra_op_threads=1, cache_dir=False)
    try:
        for n in range(2, 6):  # each call starts a background compile for its batch size
            for model in ("encoder", "step"):
                feeds = {s["name"]: np.zeros([n if isinstance(d, str) else d
                                              for d in s["shape"]], np.float32)
                         for s in be.input_specs(model)}
                be.run(model, feeds)
        be.wait_learned()
    finally:
        be.close()
    assert counting.peak == 1, f"{counting.peak} compiles ran at once"
    assert locale.setlocale(locale.LC_CTYPE) == before


def _in_forked_child(backend: str, out) -> None:
    import warnings

    from affedge.sdk.recognizer import Recognizer

    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            with Recognizer.demo(backend=backend) as rec:
                out.put(("ok", rec.backend.name, [str(w.message) for w in said]))
    except Exception as exc:  # noqa: BLE001
        out.put(("error", type(exc).__name__, str(exc)))


def test_a_process_forked_after_openvino_was_used_never_hangs_in_it():
    """A multiprocessing Pool forked after the parent used (and closed) an OpenVINO
    Recognizer hung for good in OpenVINO's compile (a new-user trial's batch script;
    openvinotoolkit/openvino#416). In such a child, backend "auto" takes ONNX Runtime and
    says why once; an explicit "openvino" is refused with the remedy (the spawn start method)."""
    import multiprocessing as mp

    from affedge.sdk.recognizer import Recognizer

    with Recognizer.demo(backend="openvino") as rec:  # the parent uses OpenVINO, then closes
        assert rec.backend.name == "openvino"
    ctx = mp.get_context("fork")
    got = {}
    for backend in ("auto", "openvino"):
        q = ctx.Queue()
        p = ctx.Process(target=_in_forked_child, args=(backend, q))
        p.start()
        p.join(120)
        alive = p.is_alive()
        if alive:
            p.kill()
        assert not alive, f"the forked child hung with backend {backend!r}"
        got[backend] = q.get(timeout=5)
    kind, name, said = got["auto"]
    assert kind == "ok" and name != "openvino", got["auto"]
    assert any("'spawn'" in m for m in said), said
    kind, exc, msg = got["openvino"]
    assert kind == "error" and "forked" in msg and "'spawn'" in msg, got["openvino"]
