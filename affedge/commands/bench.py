"""``affedge bench [BUNDLE]``: latency percentiles per pipeline stage, the encoder in every
format/precision, the streaming-vs-window reference ratio and a roofline, as tables and JSON."""
from __future__ import annotations

import argparse
import signal
import sys

from affedge.commands.termination import Terminated, cleanup_on_termination
from affedge.formats import backend_help

HELP = "benchmark a bundle: p50/p90/p99 per stage, formats table, roofline (--json for JSON)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from affedge.sdk.engine import DEFAULT_DETECT_EVERY

    p.add_argument("bundle", nargs="?", default=None,
                   help="bundle directory or .zip (default: the demo bundle; if absent, a "
                        "fresh random-weights bundle exported into a temporary directory)")
    p.add_argument("--backend", default="auto",
                   help="pipeline backend: " + backend_help() + " (default: %(default)s)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="encoder precision of the pipeline backend (int8: the bundle's ONNX "
                        "int8 encoder; bf16: OpenVINO on a CPU with BF16; default: "
                        "%(default)s)")
    p.add_argument("--frames", type=int, default=100,
                   help="timed iterations per stage, after the warm-up (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=10,
                   help="untimed warm-up iterations per stage (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for every measurement and for the GEMM peak (default: "
                        "%(default)s; use the core count for all cores)")
    p.add_argument("--encoder-only", action="store_true",
                   help="only the face encoder table (and its roofline)")
    p.add_argument("--clip", metavar="VIDEO",
                   help="video for the pipeline stages, with audio (a clip without an audio "
                        "track is benchmarked with silence; default: the demo clip, else a "
                        "rendered synthetic clip)")
    p.add_argument("--encoder", choices=("mobile", "ir18", "ir50"), default="mobile",
                   help="architecture of the fresh random-weights bundle when there is no "
                        "BUNDLE and no demo bundle (default: %(default)s)")
    p.add_argument("--window", type=int, default=300,
                   help="window length W of the reference comparison (default: %(default)s)")
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="skip the streaming vs window-recompute comparison")
    p.add_argument("--no-roofline", dest="roofline", action="store_false",
                   help="skip the GEMM peak measurement and roofline")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="time cap per stage (at least 5 timed iterations still run; default "
                        "%(default)s)")
    p.add_argument("--min-face", type=int, default=None, metavar="PX",
                   help="smallest face side (pixels) the face detector searches for; larger is "
                        "faster (default: FaceDetector's own, 40)")
    p.add_argument("--detect-every", type=int, default=None, metavar="K",
                   help="full-frame face detection every K frames, a search of a small region "
                        "around each tracked face in between (1: full frame every frame; "
                        f"default: {DEFAULT_DETECT_EVERY}, the runtime's)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="also write the results as JSON to FILE ('-' or no FILE: JSON on "
                        "stdout instead of the tables)")


def run(args: argparse.Namespace) -> int:
    import json

    from affedge import log
    from affedge.benchmarking import report
    from affedge.benchmarking.runner import render, run_bench

    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if args.window < 1:
        raise ValueError(f"--window must be >= 1, got {args.window}")
    if args.clip is not None and not args.encoder_only:
        # before any measurement: a bad --clip must not cost the encoder table's ~30 s first
        from affedge.benchmarking.pipeline import check_clip

        check_clip(args.clip)
    try:
        with cleanup_on_termination():
            doc = run_bench(args.bundle, backend=args.backend, precision=args.precision,
                            frames=args.frames, warmup=args.warmup, threads=args.threads,
                            encoder_only=args.encoder_only, clip=args.clip,
                            encoder=args.encoder, reference=args.reference,
                            window=args.window, roofline=args.roofline,
                            max_seconds=args.max_seconds, min_face=args.min_face,
                            detect_every=args.detect_every, say=log.status)
    except Terminated as exc:
        print(f"affedge bench: terminated by {signal.Signals(exc.signum).name}; nothing was "
              "written, temporary files removed", file=sys.stderr)
        raise
    if args.json == "-":
        print(json.dumps(report.jsonable(doc), indent=2))
        return 0
    # the project's own targets stay in the JSON ("targets"), not in the user's tables
    print()
    print(render({k: v for k, v in doc.items() if k != "targets"}))
    if args.json:
        path = report.write_json(doc, args.json)
        log.status(f"\nJSON: {path}")
    return 0

