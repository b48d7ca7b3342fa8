"""Shared fixtures of the benchmark suites: thread settings, exported models, the clip.

Every suite measures with ``AFFEDGE_BENCH_THREADS`` threads (default 1: the machine is shared;
set it to the core count to use all cores) in torch, OpenCV and ONNX Runtime alike.

Exported artifacts are cached between runs in pytest's cache directory
(``.pytest_cache/d/affedge-bench/``; ``--cache-clear`` rebuilds them), keyed by the torch and
onnxruntime versions, so ``--benchmark-compare`` runs time the same graphs without re-exporting.
All models have random weights: latency does not depend on the weights' values.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

THREADS = int(os.environ.get("AFFEDGE_BENCH_THREADS", "1"))


def pytest_configure(config):
    import cv2

    cv2.setNumThreads(THREADS)
    try:
        import torch

        torch.set_num_threads(THREADS)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def threads() -> int:
    return THREADS


@pytest.fixture(scope="session")
def cache_dir(request, tmp_path_factory) -> Path:
    key = f"torch{md.version('torch')}-ort{md.version('onnxruntime')}".replace("+", "_")
    cache = getattr(request.config, "cache", None)
    if cache is None:  # -p no:cacheprovider
        return tmp_path_factory.mktemp("affedge-bench")
    return Path(cache.mkdir("affedge-bench")) / key


def ort_session(path: Path, threads: int = THREADS):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (full graph opts)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _export_encoder(name: str, out: Path) -> dict[str, Path]:
    """Folded random-weights encoder -> ``encoder.onnx`` (dynamic N) + static-QDQ int8 copy."""
    import torch

    from affedge.config import ModelConfig
    from affedge.export.folding import fold_encoder
    from affedge.export.onnx_export import export_onnx
    from affedge.export.quantize import quantize_encoder
    from affedge.training.backbones import build_encoder

    out.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out / "encoder.onnx", out / "encoder.int8.onnx"
    if fp32.is_file() and int8.is_file():
        return {"fp32": fp32, "int8": int8}
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=name)
    enc = fold_encoder(build_encoder(name, cfg).eval())
    with tempfile.TemporaryDirectory() as tmp:
        tmp_fp32 = Path(tmp) / "encoder.onnx"
        export_onnx(enc, (torch.rand(2, 3, 40, 40) * 2 - 1,), tmp_fp32, ["frames"],
                    ["embedding"], {"frames": {0: "N"}, "embedding": {0: "N"}})
        calib = np.random.default_rng(0).uniform(-1, 1, (32, 3, 40, 40)).astype(np.float32)
        tmp_int8 = Path(tmp) / "encoder.int8.onnx"
        quantize_encoder(tmp_fp32, tmp_int8, calib, "static")
        tmp_fp32.replace(fp32)
        tmp_int8.replace(int8)
    return {"fp32": fp32, "int8": int8}


@pytest.fixture(scope="session")
def encoder_onnx(cache_dir):
    """``encoder_onnx(name) -> {"fp32": path, "int8": path}`` (exported once, cached)."""
    made: dict[str, dict[str, Path]] = {}

    def get(name: str) -> dict[str, Path]:
        if name not in made:
            made[name] = _export_encoder(name, cache_dir / f"encoder_{name}")
        return made[name]

    return get


@pytest.fixture(scope="session")
def bundle(cache_dir):
    """A bundle for the streaming/pipeline suites: the demo bundle when present, else a
    random-weights mobile bundle exported once (ONNX encoder/step/window + int8 encoder)."""
    from affedge.bundle import load_bundle
    from affedge.sdk.recognizer import DEMO_BUNDLE

    if (DEMO_BUNDLE / "manifest.json").exists():
        return load_bundle(DEMO_BUNDLE)
    out = cache_dir / "bundle_mobile"
    if not (out / "manifest.json").is_file():
        from affedge.benchmarking.pipeline import fresh_bundle

        fresh_bundle(out, "mobile", int8=True, say=lambda m: None)
    return load_bundle(out)


@pytest.fixture(scope="session")
def clip(cache_dir):
    """The demo clip when present, else a 4 s synthetic clip (rendered once, cached)."""
    from affedge.benchmarking.pipeline import load_clip
    from affedge.sdk.recognizer import DEMO_CLIP

    if DEMO_CLIP.exists():
        return load_clip(DEMO_CLIP)
    rendered = sorted((cache_dir / "clip" / "synth" / "raw_videos").glob("*.mp4"))
    if rendered:
        return load_clip(rendered[0])
    return load_clip(None, cache_dir / "clip", say=lambda m: None)
