"""``affedge export CHECKPOINT -o BUNDLE``: fold, split and export a trained model into a bundle,
check every artifact against eager PyTorch and print the parity table (exit 1 when out of
bounds)."""
from __future__ import annotations

import argparse
import sys

from affedge.formats import DEFAULT_EXPORT_FORMATS, export_help

HELP = "export a checkpoint to a model bundle (ONNX, TorchScript, torch.export, TensorRT) + parity"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("-o", "--output", required=True,
                   help="bundle directory, or a path ending in .zip")
    p.add_argument("--format", default=",".join(DEFAULT_EXPORT_FORMATS),
                   help=export_help() + "; aoti is a slow C++ compile, tensorrt needs a GPU "
                        "(or build the engines on the target: affedge build-engines)")
    p.add_argument("--fp16", action="store_true",
                   help="FP16 TensorRT engines (needs tensorrt in --format; the other formats "
                        "are fp32)")
    p.add_argument("--int8", action="store_true",
                   help="add an int8 encoder (ONNX Runtime static QDQ; INT8 TensorRT engines)")
    p.add_argument("--calib", metavar="DATA",
                   help="face crops for int8 calibration (image directory, e.g. a data set's "
                        "cropped_aligned/, or .npy); default: the parity frames")
    p.add_argument("--quant", choices=("static", "dynamic"), default="static",
                   help="ONNX Runtime quantization method for --int8 (default: %(default)s)")
    p.add_argument("--dynamic-batch", dest="dynamic_batch", action="store_true", default=True,
                   help="dynamic batch N for encoder and step (default)")
    p.add_argument("--static-batch", dest="dynamic_batch", action="store_false",
                   help="fix N=1 in the encoder and step graphs")
    p.add_argument("--data", metavar="DIR",
                   help="Aff-Wild2-layout data set for parity inputs (default: deterministic "
                        "synthetic inputs)")
    p.add_argument("--force", action="store_true",
                   help="export even a checkpoint whose training verdict says it did not learn "
                        "(the bundle's manifest then carries a warning)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default: %(default)s)")
    p.add_argument("--parity-frames", type=int, default=160,
                   help="length of the parity sequence (>= receptive field; default %(default)s)")
    p.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache to reuse")
    p.add_argument("--sign", default=None, metavar="PRIVATE_KEY",
                   help="sign the bundle's manifest with this Ed25519 private key (PEM; make a "
                        "pair with python -m affedge.signing KEYDIR); kiosks then run it with "
                        "affedge run --trust PUBKEY")
    p.add_argument("--skip-unavailable", action="store_true",
                   help="skip (with the reason) formats whose toolchain is missing here, e.g. "
                        "tensorrt without TensorRT/a GPU, instead of refusing to export")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="also write the parity table and the bundle path as JSON to FILE "
                        "('-' or no FILE: stdout, instead of the table)")


def check_formats(args: argparse.Namespace) -> list[str]:
    """The --format list, refused before anything is exported when it cannot be honoured."""
    from affedge.export.api import FORMATS

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if not formats or bad:
        raise ValueError(f"--format: unknown {', '.join(bad) or 'empty list'}; choose from "
                         f"{', '.join(FORMATS)}")
    if args.fp16 and "tensorrt" not in formats:
        raise ValueError("--fp16 only changes TensorRT engines; add tensorrt to --format (e.g. "
                         "--format onnx,tensorrt) or drop --fp16")
    if "tensorrt" in formats and not args.skip_unavailable:
        from affedge.export.tensorrt_build import tensorrt_available

        ok, why = tensorrt_available()
        if not ok:
            raise RuntimeError(f"--format tensorrt: {why}; nothing was written. Build the "
                               "engines on the target machine, or drop tensorrt from --format")
    return formats


def run(args: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    from affedge import log

    ckpt = Path(args.checkpoint)
    if not ckpt.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {ckpt} (train writes "
                                "RUN_DIR/fold0/best)")
    formats = check_formats(args)
    if os.path.exists(args.output) and not os.path.isdir(args.output) \
            and not args.output.endswith(".zip"):
        raise ValueError(f"-o {args.output}: is a file; give a bundle directory or a .zip path")
    from affedge.export.api import export_bundle
    from affedge.export.parity import format_table

    if not log.verbose():
        log.filter_third_party_warnings(import_first=("torch",))
    res = export_bundle(
        args.checkpoint, args.output, formats=formats, fp16=args.fp16,
        int8=args.int8, calib=args.calib, dynamic_batch=args.dynamic_batch, data=args.data,
        opset=args.opset, parity_frames=args.parity_frames, quant_method=args.quant,
        timing_cache=args.timing_cache, progress=log.status, force=args.force)
    doc = {"bundle": str(res.bundle), "ok": bool(res.ok), "parity": res.parity,
           "skipped": res.skipped, "seconds": res.seconds}
    if args.json == "-":
        print(json.dumps(doc, indent=2, default=str))
    else:
        if not log.quiet():
            print()
            print(format_table(res.parity))
            for what, why in res.skipped.items():
                print(f"skipped {what}: {why}")
            print()
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=2, default=str)
            log.status(f"JSON: {args.json}")
    if not res.ok:
        print(f"PARITY FAILED: at least one artifact in {res.bundle} is outside its tolerance "
              "(see the table)", file=sys.stderr)
        return 1
    if args.sign:
        from affedge.signing import sign_bundle

        sign_bundle(res.bundle, args.sign)
    from affedge.bundle import load_bundle

    b = load_bundle(res.bundle)
    print(f"wrote bundle {res.bundle} (digest sha256:{b.digest}"
          + (", signed" if args.sign else "") + ")",
          file=sys.stderr if args.json == "-" else sys.stdout)
    me = log.invoked_as()
    log.status(f"next: {me} run 0 --bundle {res.bundle}   (camera 0; or a video file; "
               f"{me} bench {res.bundle} for its latency)")
    return 0
