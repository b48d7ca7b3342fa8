"""Backend latency: ORT CPU fp32 vs int8 (QDQ) face encoder, the streaming step per frame, and
TorchScript / eager torch for comparison. Run:

    .venv/bin/python -m pytest benchmarks/bench_backends.py --benchmark-only \
        --benchmark-columns=min,median,mean,max,rounds

Encoder batch 1 is the single-face per-frame case; batch 8 several faces. ORT uses one intra-op
thread so numbers are comparable on a shared machine. The int8 speed-up comes from VNNI/AMX
integer dot products (see affedge/export/quantize.py).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from affedge.bundle import load_bundle
    from affedge.config import FeatureConfig, ModelConfig
    from affedge.export.api import export_bundle
    from affedge.training.model import AffectModel, save_checkpoint

    torch.manual_seed(0)
    torch.set_num_threads(1)
    enc = __import__("os").environ.get("AFFEDGE_BENCH_ENCODER", "mobile")
    cfg = ModelConfig(encoder=enc)
    ck = save_checkpoint(tmp_path_factory.mktemp("ck"), AffectModel(cfg).eval(), cfg,
                         FeatureConfig(), {}, {})
    out = tmp_path_factory.mktemp("b") / "bundle"
    res = export_bundle(ck, out, formats=["onnx", "torchscript"], int8=True,
                        onnx_exporter="legacy", parity_frames=125)
    for r in res.parity:
        if r["format"] == "onnx-int8":
            print(r["artifact"], r["outputs"], r.get("ccc"))
    return load_bundle(out)


def _ort(bundle, precision):
    from affedge.sdk.backends import OnnxRuntimeBackend

    return OnnxRuntimeBackend(bundle, "cpu", precision=precision, intra_op_threads=1)


@pytest.mark.parametrize("n", [1, 8])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_encoder_ort(benchmark, bundle, precision, n):
    be = _ort(bundle, precision)
    x = {"frames": np.tanh(np.random.default_rng(0).standard_normal((n, 3, 40, 40))).astype(
        np.float32)}
    be.run("encoder", x)
    benchmark.extra_info.update(precision=precision, batch=n, providers=be.providers)
    benchmark(be.run, "encoder", x)


def test_step_ort(benchmark, bundle):
    be = _ort(bundle, "fp32")
    feeds = {s["name"]: np.zeros([1 if d == "N" else d for d in s["shape"]], np.float32)
             for s in be.input_specs("step")}
    be.run("step", feeds)
    benchmark(be.run, "step", feeds)


@pytest.mark.parametrize("kind", ["torchscript", "torch"])
def test_encoder_torch(benchmark, bundle, kind):
    from affedge.sdk.backends import select_backend

    be = select_backend(bundle, kind)
    x = {"frames": np.zeros((1, 3, 40, 40), np.float32)}
    be.run("encoder", x)
    benchmark(be.run, "encoder", x)
