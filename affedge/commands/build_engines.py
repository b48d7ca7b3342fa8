"""``affedge build-engines BUNDLE``: build TensorRT engines on this device from the bundle's
ONNX, check them against ONNX Runtime CPU and add them to the manifest (exit 1 on failure;
the bundle is left unchanged then)."""
from __future__ import annotations

import argparse

HELP = "build TensorRT engines for a bundle on this GPU/Jetson (parity-checked, added to it)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory (or .zip with --out)")
    p.add_argument("--out", metavar="DIR", help="write the result to DIR instead of updating "
                                                "the bundle in place")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16",
                   help="engine precision (int8: symmetric Q/DQ encoder, fp16 step; default "
                        "%(default)s)")
    p.add_argument("--max-faces", type=int, default=16,
                   help="most faces per frame the engines accept (default %(default)s; the "
                        "step engine takes one more row for the background stream)")
    p.add_argument("--models", default="encoder,step",
                   help="comma-separated: encoder, step, window (default %(default)s)")
    p.add_argument("--window", type=int, default=64,
                   help="optimal window length for the window engine (default %(default)s)")
    p.add_argument("--calib", metavar="DATA", help="face crops for int8 calibration (image "
                                                   "directory or .npy; default synthetic crops)")
    p.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache (default: "
                                                          "in the bundle's cache directory)")
    p.add_argument("--workspace-mib", type=int, default=1024,
                   help="TensorRT workspace limit in MiB (default %(default)s)")
    p.add_argument("--dla", type=int, metavar="CORE", help="build for this DLA core (Orin), "
                                                           "GPU fallback for the rest")
    p.add_argument("--no-parity-gate", action="store_true",
                   help="keep the engines even when parity fails (reported in the manifest)")


def run(args: argparse.Namespace) -> int:
    from affedge.export.engines import build_engines

    res = build_engines(args.bundle, out=args.out, precision=args.precision,
                        max_faces=args.max_faces,
                        models=[m.strip() for m in args.models.split(",") if m.strip()],
                        window=args.window, calib=args.calib, timing_cache=args.timing_cache,
                        workspace_bytes=int(args.workspace_mib) << 20, dla_core=args.dla,
                        require_parity=not args.no_parity_gate, progress=print)
    for p in res["parity"]:
        worst = max(p["outputs"].items(), key=lambda kv: kv[1]["max_abs"])
        print(f"parity    {p['artifact']:8s} {p['precision']}: max abs err {worst[1]['max_abs']:.3e}"
              f" ({worst[0]}) vs ONNX Runtime CPU -> {p['status']}")
    print(f"bundle {res['bundle']}: {len(res['engines'])} engine(s) added "
          f"({res['engines'][0]['gpu_name']}, TensorRT {res['engines'][0]['tensorrt_version']})")
    return 0 if res["ok"] else 1
