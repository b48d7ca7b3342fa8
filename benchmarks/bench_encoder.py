"""The face encoder per backend and precision (pytest-benchmark).

Matrix: encoder {mobile, ir50} x batch {1, 4 faces} x
{ONNX Runtime CPU fp32, ONNX Runtime int8 (static QDQ), torch eager fp32, torch eager bf16
autocast}; on a GPU machine also ORT CUDA EP / TensorRT EP (fp16) and torch CUDA fp16 eager /
CUDA-graph replay (skipped with the reason where there is no GPU). CPU cases use
``AFFEDGE_BENCH_THREADS`` threads (default 1). Random weights (latency does not depend on
them); ONNX graphs exported with affedge's own exporter and quantizer, cached.

Run:  .venv/bin/python -m pytest benchmarks/bench_encoder.py --benchmark-only -q \\
          --benchmark-group-by=group --benchmark-columns=median,iqr,ops
Quick: add ``-k mobile`` (IR-50 is ~6 GFLOP per crop: ~0.1 s per crop on one core).
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import ort_session

ENCODERS = ("mobile", "ir50")
BATCHES = (1, 4)


def _rounds(name: str) -> dict:
    # IR-50 on one core is ~0.1 s per crop: fewer rounds keep the suite in minutes
    return {"rounds": 30, "warmup_rounds": 3} if name == "mobile" else \
        {"rounds": 8, "warmup_rounds": 1}


def _crops(batch: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (batch, 3, 40, 40)).astype(np.float32)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_onnxruntime(benchmark, encoder_onnx, name, precision, batch):
    sess = ort_session(encoder_onnx(name)[precision])
    x = _crops(batch)
    benchmark.group = f"encoder-{name}-batch{batch}"
    benchmark.extra_info.update(backend="onnxruntime-cpu", precision=precision, batch=batch)
    (y,) = benchmark.pedantic(sess.run, args=(["embedding"], {"frames": x}), **_rounds(name))
    assert y.shape == (batch, 512) and np.all(np.isfinite(y))


@pytest.fixture(scope="module")
def eager():
    torch = pytest.importorskip("torch")
    from affedge.config import ModelConfig
    from affedge.export.folding import fold_encoder
    from affedge.training.backbones import build_encoder

    made = {}

    def get(name):
        if name not in made:
            torch.manual_seed(0)
            made[name] = fold_encoder(build_encoder(name, ModelConfig(encoder=name)).eval())
        return made[name]

    return torch, get


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_torch_eager(benchmark, eager, name, precision, batch):
    torch, get = eager
    enc = get(name)
    x = torch.from_numpy(_crops(batch))

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=precision == "bf16"):
            return enc(x)

    benchmark.group = f"encoder-{name}-batch{batch}"
    benchmark.extra_info.update(backend="torch-eager", precision=precision, batch=batch)
    y = benchmark.pedantic(run, **_rounds(name))
    assert tuple(y.shape) == (batch, 512)


# ------------------------------------------------------------------------------ GPU (skip here)
def _ort_gpu_session(path, provider: str):
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        pytest.skip(f"{provider} not in this onnxruntime build "
                    f"({ort.get_available_providers()})")
    opts = {"trt_fp16_enable": True} if provider == "TensorrtExecutionProvider" else {}
    sess = ort.InferenceSession(str(path), providers=[(provider, opts), "CPUExecutionProvider"])
    if sess.get_providers()[0] != provider:
        pytest.skip(f"{provider} could not run the encoder (fell back to {sess.get_providers()})")
    return sess


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "TensorrtExecutionProvider"])
@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_onnxruntime_gpu(benchmark, encoder_onnx, name, provider, batch):
    """ORT CUDA EP (fp32) / TensorRT EP (fp16). ``sess.run`` returns host arrays, so every
    timed call includes the device synchronisation and copies."""
    sess = _ort_gpu_session(encoder_onnx(name)["fp32"], provider)
    x = _crops(batch)
    benchmark.group = f"encoder-gpu-{name}-batch{batch}"
    benchmark.extra_info.update(backend=provider, batch=batch)
    benchmark.pedantic(sess.run, args=(["embedding"], {"frames": x}), rounds=200,
                       warmup_rounds=20)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("mode", ["eager-fp16", "cuda-graph-fp16"])
@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_torch_cuda(benchmark, eager, name, mode, batch):
    """torch on CUDA in fp16: eager, and the same forward captured once in a CUDA graph and
    replayed (removes the per-kernel launch overhead that dominates batch-1 latency). Each
    timed call ends with ``torch.cuda.synchronize()``."""
    torch, get = eager
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device available to torch")
    enc = get(name).cuda().half()
    x = torch.from_numpy(_crops(batch)).cuda().half()
    with torch.inference_mode():
        if mode == "eager-fp16":
            def run():
                y = enc(x)
                torch.cuda.synchronize()
                return y
        else:
            static_x = x.clone()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):  # warm up on a side stream before capture
                    enc(static_x)
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_y = enc(static_x)

            def run():
                graph.replay()
                torch.cuda.synchronize()
                return static_y
        benchmark.group = f"encoder-gpu-{name}-batch{batch}"
        benchmark.extra_info.update(backend=f"torch-cuda {mode}", batch=batch)
        y = benchmark.pedantic(run, rounds=200, warmup_rounds=20)
    assert tuple(y.shape) == (batch, 512)
