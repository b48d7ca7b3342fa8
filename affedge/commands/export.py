"""``affedge export CHECKPOINT -o BUNDLE``: fold, split and export a trained model into a bundle,
check every artifact against eager PyTorch and print the parity table (exit 1 when out of
bounds)."""
from __future__ import annotations

import argparse

HELP = "export a checkpoint to a model bundle (ONNX, TorchScript, torch.export, TensorRT) + parity"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("-o", "--output", required=True,
                   help="bundle directory, or a path ending in .zip")
    p.add_argument("--format", default="onnx,torchscript,torch-export",
                   help="comma-separated: onnx, torchscript, torch-export, aoti (AOTInductor, "
                        "slow C++ compile), tensorrt (default: %(default)s)")
    p.add_argument("--fp16", action="store_true", help="FP16 TensorRT engines")
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
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default: %(default)s)")
    p.add_argument("--parity-frames", type=int, default=160,
                   help="length of the parity sequence (>= receptive field; default %(default)s)")
    p.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache to reuse")


def run(args: argparse.Namespace) -> int:
    import logging

    from affedge.export.api import export_bundle
    from affedge.export.parity import format_table

    logging.getLogger("torch").setLevel(logging.ERROR)
    res = export_bundle(
        args.checkpoint, args.output, formats=args.format.split(","), fp16=args.fp16,
        int8=args.int8, calib=args.calib, dynamic_batch=args.dynamic_batch, data=args.data,
        opset=args.opset, parity_frames=args.parity_frames, quant_method=args.quant,
        timing_cache=args.timing_cache, progress=print)
    print()
    print(format_table(res.parity))
    for what, why in res.skipped.items():
        print(f"skipped {what}: {why}")
    print(f"\nbundle: {res.bundle}")
    if not res.ok:
        print("PARITY FAILED: at least one artifact is outside its tolerance (see table)")
        return 1
    return 0
