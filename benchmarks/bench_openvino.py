"""IR-50 encoder, batch 1: ONNX Runtime fp32 / int8 vs OpenVINO fp32 / bf16 / int8 vs torch bf16.

Every variant is the shipped backend class (what runs is what is measured), with ``--threads``
intra-op threads (default 1) through the runtime's thread policy, on a random-weights IR-50 bundle
(``fresh_bundle``; latency does not depend on the weights' values). Latency: variants
interleaved round by round, p50/p99 per variant and the p50 ratio to ONNX Runtime fp32.
Error: max |embedding - ONNX Runtime fp32 embedding| on real face crops from a small synthetic
set (held out: not the int8 calibration frames, which ``fresh_bundle`` draws differently), with
the embedding's own max |value| for scale. OpenVINO bf16 runs only where the CPU reports BF16;
otherwise the row says so. Prints the CPU model, its bf16-relevant flags and the load average.
About 2-3 minutes (``--seconds``).

    python benchmarks/bench_openvino.py [--bundles DIR] [--seconds 60] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_threads import bundle_for, cpu_model


def cpu_flags() -> list[str]:
    want = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                      if ln.startswith("flags")), []))
    return [f for f in want if f in flags]


def real_crops(workdir: Path, n: int = 48) -> np.ndarray:
    """Model inputs from a 2-video synthetic set (generated once under ``workdir``)."""
    import cv2

    from affedge.features.faces import to_model_input
    from affedge.training.data.synthetic import generate

    root = workdir / "synth_crops"
    if not (root / "synthetic.json").exists():
        generate(root, 2, seed=11, seconds=2.0, fps=25.0, occlusion=0.0, progress=False)
    files = sorted((root / "cropped_aligned").rglob("*.jpg"))
    files = files[:: max(1, len(files) // n)][:n]
    return to_model_input(np.stack([cv2.imread(str(f)) for f in files]))


def make_variants(bundle, threads, cache: Path):
    """[(label, backend or None, note)] -- None with the reason when a variant cannot run."""
    from affedge.sdk.backends.base import BackendUnavailable
    from affedge.sdk.backends.onnxruntime_backend import OnnxRuntimeBackend

    enc = ("encoder",)
    out = [("ORT fp32", OnnxRuntimeBackend(bundle, "cpu", intra_op_threads=threads, models=enc),
            "reference"),
           ("ORT int8 (QDQ)", OnnxRuntimeBackend(bundle, "cpu", precision="int8",
                                                 intra_op_threads=threads, models=enc), "")]
    try:
        from affedge.sdk.backends.openvino_backend import OpenVinoBackend

        for prec in ("fp32", "bf16", "int8"):
            label = f"OpenVINO {prec}" + (" (QDQ)" if prec == "int8" else "")
            try:
                out.append((label, OpenVinoBackend(bundle, precision=prec, models=enc,
                                                   intra_op_threads=threads, cache_dir=cache),
                            ""))
            except BackendUnavailable as exc:
                out.append((label, None, str(exc)))
    except ImportError as exc:
        out.append(("OpenVINO", None, str(exc)))
    try:
        from affedge.sdk.backends.torch_backend import TorchBackend

        for prec in ("fp32", "bf16"):
            out.append((f"torch {prec}" + (" (weights + channels_last)" if prec == "bf16"
                                           else ""),
                        TorchBackend(bundle, precision=prec, models=enc,
                                     intra_op_threads=threads), ""))
    except (BackendUnavailable, ImportError) as exc:
        out.append(("torch", None, str(exc)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", type=Path,
                    default=Path(tempfile.gettempdir()) / "affedge-bench-bundles")
    ap.add_argument("--encoder", default="ir50")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads for every variant (default 1, as in issue 18's table "
                         "and the roofline)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--cell-seconds", type=float, default=0.4)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from affedge.bundle import load_bundle
    from affedge.sdk.backends.threads import thread_policy

    bundle = load_bundle(bundle_for(args.encoder, args.bundles))
    crops = real_crops(args.bundles)
    variants = make_variants(bundle, args.threads, args.bundles / "ov_cache")
    runnable = [(lb, be) for lb, be, _ in variants if be is not None]
    ref = runnable[0][1].run("encoder", {"frames": crops})["embedding"]
    err, calls = {}, {}
    x1 = {"frames": crops[:1]}
    for lb, be in runnable:
        got = np.concatenate([be.run("encoder", {"frames": crops[i:i + 1]})["embedding"]
                              for i in range(len(crops))])
        err[lb] = float(np.abs(got - ref).max())
        t0 = time.perf_counter()
        be.run("encoder", x1)
        calls[lb] = int(min(40, max(1, args.cell_seconds / (time.perf_counter() - t0))))
    times = {lb: [] for lb, _ in runnable}
    load_before = os.getloadavg()
    t_end, rounds, rng = time.monotonic() + args.seconds, 0, random.Random(0)
    while rounds < 3 or time.monotonic() < t_end:
        order = runnable[:]
        rng.shuffle(order)
        for lb, be in order:
            be.run("encoder", x1)
            for _ in range(calls[lb]):
                t0 = time.perf_counter()
                be.run("encoder", x1)
                times[lb].append(time.perf_counter() - t0)
        rounds += 1
    load_after = os.getloadavg()

    import onnxruntime as ort
    try:
        import openvino as ov
        ov_version = ov.get_version()
    except ImportError:
        ov_version = "not installed"
    pol = thread_policy(args.threads)
    print(f"CPU {cpu_model()} x{os.cpu_count()} flags {cpu_flags()}; onnxruntime "
          f"{ort.__version__}, openvino {ov_version}; {pol.describe()}; {rounds} interleaved "
          f"rounds; loadavg before {load_before[0]:.2f} after {load_after[0]:.2f}")
    print(f"{args.encoder} encoder, batch 1; error on {len(crops)} synthetic-set face crops vs "
          f"ORT fp32 (embedding max |value| {float(np.abs(ref).max()):.3g})")
    print(f"{'variant':36s} {'p50 ms':>9s} {'p99 ms':>9s} {'n':>5s} {'vs ORT fp32':>11s} "
          f"{'max abs err':>11s}")
    base = float(np.median(times[runnable[0][0]]))
    rows = []
    for lb, be, note in variants:
        if be is None:
            print(f"{lb:36s} not run: {note}")
            rows.append({"variant": lb, "skipped": note})
            continue
        a = np.asarray(times[lb]) * 1e3
        r = {"variant": lb, "p50_ms": float(np.median(a)), "p99_ms": float(np.percentile(a, 99)),
             "n": int(a.size), "ratio_vs_ort_fp32": float(np.median(a)) / (base * 1e3),
             "max_abs_err": err[lb], "precision": be.precision("encoder")}
        rows.append(r)
        print(f"{lb:36s} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f} {r['n']:5d} "
              f"{r['ratio_vs_ort_fp32']:11.2f} {r['max_abs_err']:11.2e}")
        be.close()
    if args.json:
        args.json.write_text(json.dumps({
            "cpu": cpu_model(), "flags": cpu_flags(), "loadavg_before": load_before,
            "loadavg_after": load_after, "rounds": rounds, "threads": pol.threads,
            "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
