"""Roofline-style lower bounds: FLOPs per frame / measured GEMM peak of this machine.

The peak is *measured*, not taken from a data sheet: the best of a few large square matrix
products in the precision of interest, with the same thread count as the model measurement:

* fp32: torch ``mm`` (oneDNN/MKL), ONNX Runtime ``MatMul`` (MLAS) and numpy ``@`` (its BLAS;
  its thread count follows the BLAS's own setting) — the best one is the fp32 peak;
* bf16: torch ``mm`` on bfloat16 tensors (AVX-512 BF16 / AMX where the CPU has them);
* int8: ONNX Runtime ``MatMulInteger`` (uint8 x int8 -> int32, what the quantized encoder's
  QDQ convs turn into) and ``torch._int_mm`` (int8 x int8 -> int32) where present.

FLOPs (2 x multiply-adds) per frame come from the bundle manifest's ``flops`` record when the
exporter wrote one, else are counted with ``torch.utils.flop_counter`` on randomly initialised
modules of the bundle's configuration (FLOPs do not depend on the weights).

``lower bound (ms) = FLOPs / peak``; ``achieved = lower bound / measured`` is the fraction of
the machine's GEMM peak the model reaches (1.0 = at the roofline). Small convs, depthwise convs
and per-call overheads keep real models well below 1.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

GEMM_SIZE = 1024  # 2 x 1024^3 = 2.1 GFLOP per product: long enough to time, short on 2 cores


def _best_seconds(fn: Callable[[], Any], reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _gflops(n: int, seconds: float) -> float:
    return 2.0 * n ** 3 / seconds / 1e9


def _torch(threads: int):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(int(threads))
    return torch


def _ort_matmul_session(kind: str, n: int, threads: int):
    """An ORT session computing one n x n product: ``fp32`` MatMul or ``int8`` MatMulInteger."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if kind == "fp32":
        a_t, b_t, y_t, op = TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT, "MatMul"
    else:
        a_t, b_t, y_t, op = TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, "MatMulInteger"
    rng = np.random.default_rng(0)
    if kind == "fp32":
        b = rng.standard_normal((n, n)).astype(np.float32)
    else:
        b = rng.integers(-127, 128, (n, n)).astype(np.int8)
    init = helper.make_tensor("B", b_t, b.shape, b.tobytes(), raw=True)
    node = helper.make_node(op, ["A", "B"], ["Y"])
    graph = helper.make_graph([node], f"gemm_{kind}",
                              [helper.make_tensor_value_info("A", a_t, [n, n])],
                              [helper.make_tensor_value_info("Y", y_t, [n, n])], [init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    if kind == "fp32":
        a = rng.standard_normal((n, n)).astype(np.float32)
    else:
        a = rng.integers(0, 256, (n, n)).astype(np.uint8)
    return sess, {"A": a}


def measure_peaks(threads: int = 1, n: int = GEMM_SIZE, reps: int = 5,
                  precisions: tuple[str, ...] = ("fp32", "bf16", "int8")) -> dict[str, Any]:
    """Measured GEMM peak (GFLOP/s, or GOP/s for int8) per precision with ``threads`` threads.

    Returns ``{precision: {"gflops": best, "by": {method: gflops}}}``; a method that cannot run
    here (torch or onnx missing, no bf16 support) is listed under ``"skipped"`` with the reason.
    """
    out: dict[str, Any] = {"threads": int(threads), "size": int(n)}
    torch = _torch(threads)
    rng = np.random.default_rng(0)
    for prec in precisions:
        by: dict[str, float] = {}
        skipped: dict[str, str] = {}
        if prec == "fp32":
            a = rng.standard_normal((n, n)).astype(np.float32)
            b = rng.standard_normal((n, n)).astype(np.float32)
            by["numpy"] = _gflops(n, _best_seconds(lambda a=a, b=b: a @ b, reps))
            if torch is not None:
                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                by["torch"] = _gflops(n, _best_seconds(lambda ta=ta, tb=tb: torch.mm(ta, tb), reps))
            else:
                skipped["torch"] = "torch not installed"
        if prec in ("fp32", "int8"):
            try:
                sess, feed = _ort_matmul_session(prec, n, threads)
                by["onnxruntime"] = _gflops(
                    n, _best_seconds(lambda sess=sess, feed=feed: sess.run(None, feed), reps))
            except ImportError as exc:
                skipped["onnxruntime"] = f"onnx/onnxruntime missing ({exc})"
        if prec == "bf16":
            if torch is None:
                skipped["torch"] = "torch not installed"
            else:
                ta = torch.randn(n, n, dtype=torch.bfloat16)
                tb = torch.randn(n, n, dtype=torch.bfloat16)
                by["torch"] = _gflops(n, _best_seconds(lambda ta=ta, tb=tb: torch.mm(ta, tb), reps))
        if prec == "int8" and torch is not None and hasattr(torch, "_int_mm"):
            ta = torch.randint(-127, 128, (n, n), dtype=torch.int8)
            tb = torch.randint(-127, 128, (n, n), dtype=torch.int8)
            try:
                by["torch._int_mm"] = _gflops(n, _best_seconds(
                    lambda ta=ta, tb=tb: torch._int_mm(ta, tb), reps))
            except RuntimeError as exc:  # pragma: no cover - build without CPU int8 mm
                skipped["torch._int_mm"] = str(exc).splitlines()[0]
        rec: dict[str, Any] = {"gflops": max(by.values()) if by else None,
                               "best": max(by, key=by.get) if by else None, "by": by}
        if skipped:
            rec["skipped"] = skipped
        out[prec] = rec
    return out


# ------------------------------------------------------------------------------ FLOPs
def _count(module, *args) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*args)
    return int(counter.get_total_flops())


def count_model_flops(model_cfg, window: int = 300) -> dict[str, int]:
    """FLOPs per frame of each model part, counted with torch's flop counter on random weights.

    ``encoder``: one face crop; ``step``: one streaming step (N=1); ``window_<W>``: one
    re-run of the window form over ``W`` frames (the per-frame cost of the stateless reference
    approach is ``W x encoder + window_<W>``). Needs torch (raises ImportError naming it).
    """
    try:
        import torch
    except ImportError as exc:
        raise ImportError("counting FLOPs needs torch (pip install 'affedge[train]'); or export "
                          "the bundle with a flops record in its manifest") from exc
    from affedge.export.streaming import StreamingStep, WindowForm
    from affedge.training.backbones import build_encoder, count_flops
    from affedge.training.model import TemporalFusion

    torch.manual_seed(0)
    enc = build_encoder(model_cfg.encoder, model_cfg)
    tf = TemporalFusion(model_cfg).eval()
    step = StreamingStep(tf).eval()
    win = WindowForm(tf).eval()
    dims = [d for _, d in model_cfg.audio_streams] if model_cfg.fusion else []
    step_args = (torch.zeros(1, model_cfg.embed_dim), *[torch.zeros(1, d) for d in dims],
                 *step.initial_states(1))
    win_args = (torch.zeros(1, window, model_cfg.embed_dim),
                *[torch.zeros(1, window, d) for d in dims])
    return {"encoder": count_flops(enc, model_cfg.crop_size),
            "step": _count(step, *step_args),
            f"window_{window}": _count(win, *win_args)}


def model_flops(bundle, window: int = 300) -> tuple[dict[str, int], str]:
    """FLOPs per part for a bundle: ``(flops, source)``; the manifest's ``flops`` record when
    present (source "manifest"), else counted with torch (source "torch flop_counter")."""
    rec = bundle.manifest.get("flops") if hasattr(bundle, "manifest") else None
    if isinstance(rec, dict) and "encoder" in rec:
        return {k: int(v) for k, v in rec.items() if isinstance(v, (int, float))}, "manifest"
    return count_model_flops(bundle.model_config(), window), "torch flop_counter"


def roofline_row(flops: float, peak_gflops: float | None, measured_ms: float) -> dict[str, Any]:
    """Lower bound (ms), achieved GFLOP/s and achieved/limit for one part and precision.

    Pass the *best* (minimum) measured latency: the peak is a best-of-N GEMM too, so on a
    shared machine both sides are the least-disturbed runs (p50 against a best-of peak would
    mix contention into the ratio)."""
    achieved_gflops = flops / (measured_ms * 1e-3) / 1e9 if measured_ms > 0 else float("nan")
    if not peak_gflops:
        return {"flops": int(flops), "measured_ms": measured_ms,
                "achieved_gflops": achieved_gflops, "bound_ms": None, "achieved_over_limit": None}
    bound_ms = flops / (peak_gflops * 1e9) * 1e3
    return {"flops": int(flops), "peak_gflops": peak_gflops, "bound_ms": bound_ms,
            "measured_ms": measured_ms, "achieved_gflops": achieved_gflops,
            "achieved_over_limit": bound_ms / measured_ms if measured_ms > 0 else float("nan")}
