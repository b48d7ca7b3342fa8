"""The TensorRT builder against fake TensorRT 10.x and 11.x API surfaces (no GPU here): the
version branches, strong typing from the fp16 / Q/DQ graphs, TF32 cleared, profiles checked
against max_faces up front, one logger, the timing cache, and engines refused elsewhere."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from fake_tensorrt import FAKE_GPU, install

from affedge.export import tensorrt_build as tb

DEMO = Path(__file__).parents[1] / "affedge" / "assets" / "demo" / "demo_bundle"
ENC_PROFILE = {"frames": ((1, 3, 40, 40), (1, 3, 40, 40), (16, 3, 40, 40))}


def _header(engine: Path) -> dict:
    blob = engine.read_bytes()
    n = int.from_bytes(blob[8:12], "little")
    return json.loads(blob[12:12 + n])


@pytest.fixture(params=["10.3.0", "11.1.0"])
def trt(request, monkeypatch):
    return install(monkeypatch, request.param)


def test_fake_surfaces_match_the_release_notes(monkeypatch):
    t10 = install(monkeypatch, "10.3.0")
    assert tb.api_generation(t10) == 10
    assert t10.BuilderFlag.FP16 is not None and t10.IInt8EntropyCalibrator2 is not None
    t11 = install(monkeypatch, "11.1.0")
    assert tb.api_generation(t11) == 11
    cfg = t11.Builder(t11.Logger()).create_builder_config()
    for get in (lambda: t11.BuilderFlag.FP16, lambda: t11.BuilderFlag.INT8,
                lambda: t11.IInt8EntropyCalibrator2, lambda: cfg.int8_calibrator,
                lambda: cfg.set_calibration_profile, lambda: t11.BuilderFlag.DIRECT_IO):
        with pytest.raises(AttributeError):
            get()
    assert t11.BuilderFlag.TF32 is not None  # still there in 11


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_strongly_typed_build_on_both_versions(trt, tmp_path, precision):
    src = tb.prepare_source(DEMO / "encoder.onnx", precision, tmp_path)
    rec = tb.build_engine(src, tmp_path / "e.engine", ENC_PROFILE, precision, max_batch=16,
                          gpu=FAKE_GPU)
    h = _header(tmp_path / "e.engine")
    assert h["strongly_typed"] is True
    assert not {"FP16", "INT8", "TF32"} & set(h["flags"])  # precision from the graph, TF32 off
    assert h["profile"]["frames"][2] == [16, 3, 40, 40]
    assert rec["tensorrt_version"] == trt.__version__
    assert rec["gpu_name"] == FAKE_GPU["gpu_name"] and rec["compute_capability"] == "8.7"
    assert rec["api"] == int(trt.__version__.split(".")[0]) and rec["tf32"] is False


def test_export_api_flags_convert_the_fp32_graph_on_11(monkeypatch, tmp_path):
    """`affedge export --format tensorrt --fp16` calls build_engine(fp32.onnx, fp16=True): on
    TensorRT 11 that must build the fp16 graph, not set the removed flag."""
    install(monkeypatch, "11.1.0")
    tb.build_engine(DEMO / "encoder.onnx", tmp_path / "e.engine", ENC_PROFILE, fp16=True,
                    gpu=FAKE_GPU)
    import onnx

    h = _header(tmp_path / "e.engine")
    blob = (tmp_path / "e.engine").read_bytes()
    g = onnx.load_from_string(blob[12 + int.from_bytes(blob[8:12], "little"):]).graph
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in g.initializer)
    assert "FP16" not in h["flags"]


def test_int8_is_symmetric_qdq_without_calibrator(trt, tmp_path):
    crops = np.tanh(np.random.default_rng(0).standard_normal((16, 3, 40, 40))).astype(
        np.float32)
    src = tb.prepare_source(DEMO / "encoder.onnx", "int8", tmp_path, crops)
    assert tb.source_precision(src) == "int8"
    tb.build_engine(src, tmp_path / "e.engine", ENC_PROFILE, "int8", gpu=FAKE_GPU)
    assert "INT8" not in _header(tmp_path / "e.engine")["flags"]
    # ONNX Runtime's default (asymmetric uint8) graph is refused before any build
    with pytest.raises(ValueError, match="cannot be built by TensorRT.*UINT8"):
        tb.build_engine(DEMO / "encoder.int8.onnx", tmp_path / "x.engine", ENC_PROFILE,
                        gpu=FAKE_GPU)
    with pytest.raises(ValueError, match="calibration crops"):
        tb.prepare_source(DEMO / "encoder.onnx", "int8", tmp_path)


def test_weak_typing_is_the_10_only_branch(monkeypatch, tmp_path):
    install(monkeypatch, "10.3.0")
    tb.build_engine(DEMO / "encoder.onnx", tmp_path / "w.engine", ENC_PROFILE, typing="weak",
                    gpu=FAKE_GPU)
    h = _header(tmp_path / "w.engine")
    assert "FP16" in h["flags"] and h["strongly_typed"] is False
    install(monkeypatch, "11.1.0")
    with pytest.raises(ValueError, match="removed BuilderFlag.FP16"):
        tb.build_engine(DEMO / "encoder.onnx", tmp_path / "w.engine", ENC_PROFILE,
                        typing="weak", gpu=FAKE_GPU)


def test_profiles_checked_before_anything_is_built(trt, tmp_path):
    with pytest.raises(ValueError, match="at most 16 faces.*max_faces needs \\(20\\).*"
                                         "--max-faces 20"):
        tb.build_engine(DEMO / "encoder.onnx", tmp_path / "e.engine", ENC_PROFILE,
                        max_batch=20, gpu=FAKE_GPU)
    assert not (tmp_path / "e.engine").exists()
    with pytest.raises(ValueError, match="min <= opt <= max"):
        tb.check_profiles({"frames": ((4, 3, 40, 40), (1, 3, 40, 40), (16, 3, 40, 40))}, 4)
    with pytest.raises(ValueError, match="no profile"):
        tb.build_engine(DEMO / "encoder.onnx", tmp_path / "e.engine", {}, gpu=FAKE_GPU)
    with pytest.raises(ValueError, match="is an fp32 graph, not fp16"):
        tb.build_engine(DEMO / "encoder.onnx", tmp_path / "e.engine", ENC_PROFILE, "fp16",
                        gpu=FAKE_GPU)


def test_profiles_from_manifest_specs():
    from affedge.bundle import load_bundle

    b = load_bundle(DEMO)
    step = tb.profiles_from_specs(b.find("step", "onnx")["inputs"], tb.step_batch(4))
    assert step["embedding"] == ([1, 512], [1, 512], [5, 512])
    assert all(hi[0] == 5 for _, _, hi in step.values()) and len(step) == 3 + 24  # embedding, 2 audio, 24 states
    win = tb.profiles_from_specs(b.find("window", "onnx")["inputs"], 4, window=64)
    assert win["embedding"] == ([1, 1, 512], [1, 64, 512], [4, 512, 512])


def test_one_logger_and_timing_cache_reused(trt, tmp_path):
    cache = tmp_path / "timing.cache"
    for i in range(2):
        tb.build_engine(DEMO / "encoder.onnx", tmp_path / f"e{i}.engine", ENC_PROFILE,
                        timing_cache=cache, gpu=FAKE_GPU)
    assert trt.Logger.instances == 1
    assert json.loads(cache.read_bytes())["builds"] == 2  # read back and extended


def test_engine_needs_the_tensorrt_that_built_it(monkeypatch, tmp_path):
    t10 = install(monkeypatch, "10.3.0")
    tb.build_engine(DEMO / "encoder.onnx", tmp_path / "e.engine", ENC_PROFILE, gpu=FAKE_GPU)
    assert t10.Runtime(t10.Logger()).deserialize_cuda_engine(
        (tmp_path / "e.engine").read_bytes()) is not None
    t11 = install(monkeypatch, "11.1.0")
    assert t11.Runtime(t11.Logger()).deserialize_cuda_engine(
        (tmp_path / "e.engine").read_bytes()) is None
    assert "not compatible with this version" in t11.fake_log[-1][1]
