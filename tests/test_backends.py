"""Runtime backends on a real exported bundle: ONNX Runtime, TorchScript and eager torch agree;
auto-selection picks ORT CPU here and says why the faster ones were skipped."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from affedge.bundle import load_bundle, thaw, write_bundle
from affedge.config import FeatureConfig, ModelConfig
from affedge.sdk.backends import (
    BackendUnavailable,
    OnnxRuntimeBackend,
    describe_selection,
    select_backend,
)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    from affedge.export.api import export_bundle
    from affedge.training.model import AffectModel, save_checkpoint

    torch.manual_seed(1)
    torch.set_num_threads(1)
    cfg = ModelConfig(encoder="mobile")
    ck = save_checkpoint(tmp_path_factory.mktemp("ck"), AffectModel(cfg).eval(), cfg,
                         FeatureConfig(), {}, {"seed": 1})
    out = tmp_path_factory.mktemp("b") / "bundle"
    # the legacy ONNX exporter keeps this fixture fast; test_export covers the dynamo path
    res = export_bundle(ck, out, formats=["onnx", "torchscript"], onnx_exporter="legacy",
                        parity_frames=125)
    assert res.ok
    return out


@pytest.fixture(scope="module")
def inputs(bundle_dir):
    b = load_bundle(bundle_dir)
    rng = np.random.default_rng(0)
    step = b.find("step", "onnx")
    feeds = {}
    for s in step["inputs"]:
        shape = [2 if d == "N" else d for d in s["shape"]]
        feeds[s["name"]] = rng.standard_normal(shape).astype(np.float32)
    win = {"embedding": rng.standard_normal((2, 30, 512)).astype(np.float32),
           "audio_mfcc": rng.standard_normal((2, 30, 39)).astype(np.float32),
           "audio_logmel": rng.standard_normal((2, 30, 64)).astype(np.float32)}
    frames = np.tanh(rng.standard_normal((3, 3, 40, 40))).astype(np.float32)
    return {"encoder": {"frames": frames}, "step": feeds, "window": win}


def _openvino_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def test_auto_selects_onnxruntime_cpu_with_reasons(bundle_dir):
    """No GPU here: auto picks OpenVINO where it is installed (ahead of ONNX Runtime CPU in the
    format table), ONNX Runtime CPU otherwise; the skipped candidates carry their reasons."""
    be = select_backend(load_bundle(bundle_dir))
    want = ("openvino", "openvino") if _openvino_importable() else ("onnxruntime-cpu", "ort-cpu")
    assert be.name == want[0]
    report = {name: (status, why) for name, status, why in be.selection}
    assert report[want[1]][0] == "selected"
    assert report["tensorrt"][0] == "skipped" and "TensorRT/NVIDIA GPU not available" in \
        report["tensorrt"][1]
    assert "CUDAExecutionProvider" in report["ort-cuda"][1]
    # the reason says what to install (a new user got the provider list alone)
    import onnxruntime
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert "comes with onnxruntime-gpu" in report["ort-cuda"][1]
    assert "skipped" in describe_selection(be)
    be.close()
    ort = select_backend(load_bundle(bundle_dir), "onnxruntime")
    assert ort.name == "onnxruntime-cpu" and ort.providers == ["CPUExecutionProvider"]
    # INTERFACES.md argument order and a path are accepted too
    assert select_backend("ort-cpu", load_bundle(bundle_dir)).name == "onnxruntime-cpu"
    assert select_backend(str(bundle_dir), "onnxruntime").name == "onnxruntime-cpu"
    with pytest.raises(ValueError, match="unknown backend"):
        select_backend(bundle_dir, "coreml")


@pytest.mark.parametrize("kind", ["torchscript", "torch"])
def test_backends_agree_with_onnxruntime(bundle_dir, inputs, kind):
    b = load_bundle(bundle_dir)
    ort_be = OnnxRuntimeBackend(b, "cpu")
    other = select_backend(b, kind)
    assert other.name == kind
    for model in ("encoder", "step", "window"):
        ref = ort_be.run(model, inputs[model])
        got = other.run(model, inputs[model])
        assert set(got) == set(ref) == set(ort_be.output_names(model))
        for name in ref:
            np.testing.assert_allclose(got[name], ref[name], atol=2e-5, rtol=1e-4,
                                       err_msg=f"{kind}/{model}/{name}")
    other.close()


def test_dynamic_batch_and_output_shapes(bundle_dir, inputs):
    be = OnnxRuntimeBackend(load_bundle(bundle_dir), "cpu")
    for n in (1, 4):
        out = be.run("encoder", {"frames": np.zeros((n, 3, 40, 40), np.float32)})
        assert out["embedding"].shape == (n, 512)
    out = be.run("step", inputs["step"])
    assert out["va"].shape == (2, 2)
    for i, spec in enumerate(s for s in be.input_specs("step") if s["name"].startswith("state_")):
        assert out[f"state_out_{i}"].shape == (2, *spec["shape"][1:])
    assert be.run("window", inputs["window"])["va"].shape == (2, 30, 2)


def test_bad_inputs_are_named(bundle_dir, inputs):
    be = OnnxRuntimeBackend(load_bundle(bundle_dir), "cpu")
    with pytest.raises(ValueError, match="missing \\['frames'\\]"):
        be.run("encoder", {"image": inputs["encoder"]["frames"]})
    with pytest.raises(TypeError, match="'frames' must be float32, got float64"):
        be.run("encoder", {"frames": inputs["encoder"]["frames"].astype(np.float64)})
    with pytest.raises(ValueError, match="'frames' must have shape"):
        be.run("encoder", {"frames": np.zeros((2, 3, 48, 48), np.float32)})
    bad = dict(inputs["step"])
    bad["audio_mfcc"] = bad["audio_mfcc"][:1]  # N mismatch between inputs
    with pytest.raises(ValueError, match="audio_mfcc"):
        be.run("step", bad)
    with pytest.raises(KeyError, match="no model 'decoder'"):
        be.run("decoder", {})


def test_int8_precision_falls_back_to_fp32_encoder_when_absent(bundle_dir):
    be = OnnxRuntimeBackend(load_bundle(bundle_dir), "cpu", precision="int8")
    assert be.precision("encoder") == "fp32"


def test_an_option_no_backend_takes_is_refused_with_the_known_ones(bundle_dir):
    """A misspelt option (``precison``) used to be dropped silently (fp32 ran); an option only
    some candidates take still goes to those (``fp16``: the TensorRT EP, not ORT CPU)."""
    from affedge.sdk.recognizer import Recognizer

    with pytest.raises(ValueError, match=r"unknown backend option 'precison'.*precision"):
        select_backend(bundle_dir, "auto", precison="int8")
    with pytest.raises(ValueError, match=r"unknown backend options 'a', 'b'"):
        Recognizer(bundle_dir, backend="onnxruntime", backend_options={"b": 1, "a": 2})
    be = select_backend(bundle_dir, "ort-cpu", fp16=True)
    assert be.name == "onnxruntime-cpu"
    be.close()


def test_eager_torch_without_a_spec_artifact_names_what_is_missing(tmp_path):
    """A bundle with the weights but no onnx/torchscript/torch-export artifact (e.g. exported
    with --format aoti only) was skipped as having "no 'safetensors' artifacts", although it
    has them; the reason now says what eager torch lacks."""
    pytest.importorskip("torch")
    import json
    import shutil

    from affedge.sdk.backends.torch_backend import TorchBackend
    from affedge.sdk.recognizer import DEMO_BUNDLE

    b = tmp_path / "weights_only"
    shutil.copytree(DEMO_BUNDLE, b)
    m = json.loads((b / "manifest.json").read_text())
    for a in m["artifacts"]:
        if a["format"] != "safetensors":
            (b / a["file"]).unlink()
    m["artifacts"] = [a for a in m["artifacts"] if a["format"] == "safetensors"]
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BackendUnavailable, match="has the safetensors weights, but eager torch "
                                                  "also needs an onnx"):
        TorchBackend(load_bundle(b))


def test_unavailable_provider_is_refused(bundle_dir):
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider"):
        OnnxRuntimeBackend(load_bundle(bundle_dir), "cuda")


def test_a_skipped_backend_is_named_once_in_the_reasons(bundle_dir):
    """A backend whose own reason starts with its name is not named twice ("openvino:
    openvino: ...")."""
    from affedge.sdk.backends.select import select_backend

    for runner, says in (("aoti", "no AOTInductor packages"),
                         ("torch-export", "no 'torch-export' artifacts")):
        with pytest.raises(RuntimeError) as info:
            select_backend(bundle_dir, runner)
        line = str(info.value).splitlines()[1]
        assert line.startswith(f"  {runner}: ") and f"{runner}: {runner}" not in line, line
        assert says in line, line


def test_mismatched_engine_refused_and_bundle_falls_back(bundle_dir, tmp_path):
    from affedge.sdk.backends.tensorrt_backend import check_engine_target

    b = load_bundle(bundle_dir)
    rec = {"file": "encoder.engine", "gpu_name": "Orin", "compute_capability": "8.7",
           "tensorrt_version": "10.3.0"}
    here = {"gpu_name": "NVIDIA H100", "compute_capability": "9.0", "tensorrt_version": "10.9.0"}
    with pytest.raises(BackendUnavailable, match="built for Orin .*rebuild it"):
        check_engine_target(rec, here)
    check_engine_target(rec, dict(rec))  # same target passes
    # a bundle carrying an engine for another machine still runs, on ONNX Runtime
    eng = tmp_path / "encoder.engine"
    eng.write_bytes(b"\x01fake-serialized-engine")
    files = [{**a, "source": b.root / a["file"]} for a in thaw(b.manifest["artifacts"])]
    enc = thaw(b.find("encoder", "onnx"))
    files.append({**{k: enc[k] for k in ("inputs", "outputs")}, "name": "encoder",
                  "format": "tensorrt", "file": "encoder.engine", "source": eng,
                  "precision": "fp16", **{k: rec[k] for k in rec if k != "file"}})
    fields = {k: v for k, v in thaw(b.manifest).items() if k != "artifacts"}
    b2 = load_bundle(write_bundle(tmp_path / "with_engine", fields, files))
    be = select_backend(b2)
    assert be.name == ("openvino" if _openvino_importable() else "onnxruntime-cpu")
    assert "TensorRT/NVIDIA GPU not available" in dict(
        (n, why) for n, _, why in be.selection)["tensorrt"]


def test_tensorrt_backend_needs_tensorrt(bundle_dir):
    from affedge.sdk.backends.tensorrt_backend import TensorRTBackend

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="TensorRT/NVIDIA GPU not available"):
            TensorRTBackend(load_bundle(bundle_dir))
        pytest.skip("TensorRT/NVIDIA GPU not available")


def test_runtime_imports_stay_light():
    code = ("import sys, affedge.sdk.backends, affedge.bundle; "
            "bad = [m for m in ('torch', 'tensorrt', 'onnx', 'affedge.training', "
            "'affedge.export') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
