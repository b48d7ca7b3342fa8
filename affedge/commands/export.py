"""``affedge export CHECKPOINT -o BUNDLE``: fold, split and export a trained model into a bundle,
check every artifact against eager PyTorch and print the parity table (exit 1 when out of
bounds)."""
from __future__ import annotations

import argparse
import signal
import sys

from affedge.commands.argtypes import at_least, positive_int
from affedge.commands.termination import Terminated, cleanup_on_termination
from affedge.export.exporters import DYNAMO_MIN_OPSET, MIN_OPSET, OPSET
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
    p.add_argument("--quant", choices=("static", "dynamic"), default=None,
                   help="ONNX Runtime quantization method for --int8 (default: static)")
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
    p.add_argument("--opset", type=at_least(MIN_OPSET), default=None,
                   help=f"ONNX opset of the graphs (default: {OPSET}; below {DYNAMO_MIN_OPSET} "
                        "they are written by torch's legacy exporter)")
    p.add_argument("--parity-frames", type=positive_int, default=160,
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
    onnx_out = "onnx" in formats or "tensorrt" in formats or args.int8
    if args.opset is not None and not onnx_out:
        raise ValueError(f"--opset {args.opset} only changes ONNX graphs; add onnx to --format "
                         "or drop --opset")
    if args.calib is not None and not args.int8:
        raise ValueError("--calib only calibrates the --int8 encoder; add --int8 or drop --calib")
    if args.quant is not None and not args.int8:
        raise ValueError(f"--quant {args.quant} only chooses how the --int8 encoder is "
                         "quantized; add --int8 or drop --quant")
    if args.quant == "dynamic" and args.calib is not None:
        raise ValueError("--quant dynamic uses no calibration data; drop --calib (or use "
                         "--quant static)")
    if "tensorrt" in formats and not args.skip_unavailable:
        from affedge.export.tensorrt_build import tensorrt_available

        ok, why = tensorrt_available()
        if not ok:
            raise RuntimeError(f"--format tensorrt: {why}; nothing was written. Build the "
                               "engines on the target machine, drop tensorrt from --format, "
                               "or pass --skip-unavailable to write the other formats")
    return formats


def usage_error(message: str) -> int:
    """A usage mistake found after parsing: one line like argparse's, exit status 2."""
    print(f"affedge export: error: {message} (see affedge export --help)", file=sys.stderr)
    return 2


def check_arguments(args: argparse.Namespace, ckpt) -> str | None:
    """The usage error in option values that depend on the checkpoint or the installed
    exporters, else None (checked before anything is exported)."""
    import json

    from affedge.config import ModelConfig, from_dict

    if args.opset is not None:
        from affedge.export.onnx_export import check_opset

        try:
            check_opset(args.opset)
        except ValueError as exc:
            return f"--{exc}"
    try:
        raw = json.loads((ckpt / "config.json").read_text())
        rf = int(from_dict(ModelConfig, raw["model"]).receptive_field)
    except Exception:  # noqa: BLE001  (a broken checkpoint: load_checkpoint says what is wrong)
        return None
    if args.parity_frames < rf:
        return (f"--parity-frames {args.parity_frames}: must be >= the model's receptive field "
                f"({rf} frames) so the parity check covers a full receptive field")
    return None


def check_inputs(args: argparse.Namespace) -> None:
    """--calib and --data name existing inputs (refused before any work: FileNotFoundError)."""
    from pathlib import Path

    from affedge.export.api import calib_input_exists

    if args.calib is not None and not calib_input_exists(args.calib):
        raise FileNotFoundError(f"--calib {args.calib}: not found (give a directory of "
                                "face-crop images or a .npy file)")
    if args.data is not None and not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data}: no such directory (give an Aff-Wild2-layout "
                                "data set)")
    if args.data is not None:  # its layout too, before minutes of export work
        from affedge.training.data.affwild2 import AffWild2VA

        try:
            AffWild2VA(Path(args.data))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"--data {exc}") from None


def run(args: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    from affedge import log

    ckpt = Path(args.checkpoint)
    if ckpt.is_file():
        raise ValueError(f"{ckpt} is a file; a checkpoint is its directory: export "
                         f"{ckpt.parent}")
    if not ckpt.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {ckpt} (train writes "
                                "RUN_DIR/fold0/best)")
    folds = sorted(p.parent.name for p in ckpt.glob("fold*/best"))
    if not (ckpt / "config.json").exists() and folds:
        raise FileNotFoundError(f"{ckpt} is a training run, not a checkpoint: export one of its "
                                f"folds' best models, e.g. {ckpt / folds[0] / 'best'}")
    bad = check_arguments(args, ckpt)
    if bad:
        return usage_error(bad)
    formats = check_formats(args)
    check_inputs(args)
    if os.path.exists(args.output) and not os.path.isdir(args.output) \
            and not args.output.endswith(".zip"):
        raise ValueError(f"-o {args.output}: is a file; give a bundle directory or a .zip path")
    if os.path.isfile(os.path.join(args.output, "manifest.json")) or os.path.isfile(args.output):
        log.status(f"export: {args.output} holds a bundle; the new one replaces it once it is "
                   "complete and checked (refused if the folder holds anything else)")
    from affedge.export.api import export_bundle
    from affedge.export.parity import format_table

    if not log.verbose():
        log.filter_third_party_warnings(import_first=("torch",))
    try:
        with cleanup_on_termination():
            res = export_bundle(
                args.checkpoint, args.output, formats=formats, fp16=args.fp16,
                int8=args.int8, calib=args.calib, dynamic_batch=args.dynamic_batch,
                data=args.data, opset=OPSET if args.opset is None else args.opset,
                parity_frames=args.parity_frames, quant_method=args.quant or "static",
                timing_cache=args.timing_cache, progress=log.status, force=args.force)
    except Terminated as exc:
        print(f"affedge export: terminated by {signal.Signals(exc.signum).name}; temporary "
              "files removed" + (f", the previous {args.output} is unchanged"
                                 if os.path.exists(args.output) else ""), file=sys.stderr)
        raise
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
    if not res.ok and not res.parity:
        print(f"PARITY NOT CHECKED: no backend here could load an artifact of {res.bundle} "
              "(see the skipped lines); check the bundle with affedge doctor --bundle",
              file=sys.stderr)
        return 1
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
