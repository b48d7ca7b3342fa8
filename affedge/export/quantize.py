"""CPU int8 face encoder via ONNX Runtime quantization.

``static`` (default): QDQ format, per-channel int8 weights, uint8 activations calibrated
(MinMax) on real face crops through a :class:`CropReader`; the graph is pre-processed
(shape inference + ORT fusions) first, as ORT's quantization guide recommends. ``dynamic``:
weights int8, activations quantized at run time (no calibration data; ConvInteger on CPU).
On CPUs with AVX-512 VNNI / AMX the int8 convs use the integer dot-product units; the speed-up
is measured in ``benchmarks/bench_backends.py``, accuracy in the export parity table (CCC impact).
Only the encoder is quantized: the step model is tiny and recurrent (its state would accumulate
quantization error), so it stays fp32.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


class CropReader:
    """ORT ``CalibrationDataReader`` over model-input crops ``float32 [M, 3, S, S]``."""

    def __init__(self, frames: np.ndarray, batch: int = 8, input_name: str = "frames"):
        if frames.ndim != 4 or frames.dtype != np.float32:
            raise ValueError(f"calibration crops must be float32 [M, 3, S, S], got "
                             f"{frames.dtype} {frames.shape}")
        self._batches = [frames[i:i + batch] for i in range(0, len(frames), batch)]
        self._it: Iterator | None = None
        self.input_name = input_name

    def get_next(self):
        if self._it is None:
            self._it = iter(self._batches)
        b = next(self._it, None)
        return None if b is None else {self.input_name: b}

    def rewind(self):
        self._it = None


def load_calibration_crops(path: str | Path, crop_size: int = 40, limit: int = 256) -> np.ndarray:
    """Model-input crops from ``path``: a directory of face-crop images (searched recursively,
    e.g. a data set's ``cropped_aligned/``) or a ``.npy`` float32 [M,3,S,S] / uint8 [M,H,W,3]."""
    import cv2

    from affedge.features.faces import frames_to_input, resize_crops

    path = Path(path)
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.dtype == np.float32 and arr.ndim == 4 and arr.shape[1] == 3:
            return arr[:limit]
        if arr.dtype == np.uint8 and arr.ndim == 4:
            rgb = resize_crops(arr[:limit], 48)
            return frames_to_input(rgb, crop_size)
        raise ValueError(f"{path}: calibration array must be float32 [M,3,S,S] or uint8 "
                         f"[M,H,W,3], got {arr.dtype} {arr.shape}")
    if not path.is_dir():
        raise FileNotFoundError(f"calibration data not found: {path}")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise ValueError(f"{path}: no .jpg/.png face crops for calibration")
    step = max(1, len(files) // limit)  # spread over videos/time
    crops = []
    for p in files[::step][:limit]:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{p}: unreadable image")
        crops.append(img)
    from affedge.features.faces import to_model_input

    return to_model_input(np.stack(crops))


def quantize_encoder(fp32_path: str | Path, out_path: str | Path,
                     calib: np.ndarray | None = None, method: str = "static",
                     per_channel: bool = True, symmetric: bool = False) -> dict[str, Any]:
    """Write the int8 encoder; returns notes for the artifact record.

    ``symmetric=True`` (static only) writes the Q/DQ graph TensorRT takes: int8 activations and
    weights with zero point 0 (``ActivationSymmetric``/``WeightSymmetric``) and float biases
    (``QuantizeBias=False``: TensorRT has no int32 bias dequantisation); checked by
    :func:`affedge.export.trt_ops.check_graph`."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if symmetric and method != "static":
        raise ValueError("symmetric (TensorRT) int8 needs static quantization")
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        if method == "static":
            if calib is None or len(calib) == 0:
                raise ValueError("static int8 quantization needs calibration crops (--calib)")
            sym = {"ActivationSymmetric": True, "WeightSymmetric": True,
                   "QuantizeBias": False} if symmetric else {}
            quantize_static(str(pre), str(out_path), CropReader(calib),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                            weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, extra_options=sym)
        elif method == "dynamic":
            quantize_dynamic(str(pre), str(out_path), per_channel=per_channel,
                             weight_type=QuantType.QInt8)
        else:
            raise ValueError(f"unknown quantization method {method!r} (static or dynamic)")
    return {"exporter": f"onnxruntime.quantization ({method}, "
                        f"{'per-channel' if per_channel else 'per-tensor'})",
            "quantization": {"method": method, "per_channel": per_channel,
                             "symmetric": bool(symmetric),
                             "calibration_crops": 0 if calib is None else len(calib)}}
