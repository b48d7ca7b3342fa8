"""Can TensorRT's ONNX parser take this graph? An op allow-list and the Q/DQ rules, checked
before a build (on a machine without TensorRT too).

:data:`TRT_ONNX_OPS` lists the ONNX operators (default domain) that TensorRT 10.x/11.x's ONNX
parser implements (onnx-tensorrt's ``docs/operators.md``; operators that exist only in the
ONNX Runtime contrib domain or in the "QOperator" format, such as ``QLinearConv``,
``ConvInteger``, ``MatMulInteger`` and ``DynamicQuantizeLinear``, are not in it).
:func:`check_graph` returns the problems as one-line strings (empty list: buildable):

* operators outside the allow-list (with the node names);
* ``QuantizeLinear``/``DequantizeLinear`` whose zero point is not 0 or whose type is not int8:
  TensorRT accepts only symmetric int8 Q/DQ (EDGE.md) - ONNX Runtime's default static
  quantisation writes asymmetric uint8 activations, :func:`affedge.export.quantize.
  quantize_encoder` with ``symmetric=True`` writes what TensorRT takes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

TRT_ONNX_OPS = frozenset("""
Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool
BatchNormalization BitShift BlackmanWindow Cast CastLike Ceil Celu Clip Compress Concat
ConcatFromSequence Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DFT DeformConv
DepthToSpace DequantizeLinear Det Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid
HardSwish Hardmax Identity If InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool LRN LSTM MatMul Max MaxPool
MaxRoiPool Mean MeanVarianceNormalization Min Mish Mod Mul Multinomial Neg NonMaxSuppression
NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal
RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan
Scatter ScatterElements ScatterND Selu SequenceAt SequenceConstruct SequenceEmpty
SequenceErase SequenceInsert SequenceLength Shape Shrink Sigmoid Sign Sin Sinh Size Slice
Softmax Softplus Softsign SpaceToDepth Split SplitToSequence Sqrt Squeeze STFT Sub Sum Tan
Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())  # noqa: SIM905 - a readable table of names


def check_graph(model_or_path) -> list[str]:
    """One line per reason TensorRT's parser would refuse the graph (empty: buildable)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(
        str(model_or_path))
    g = model.graph
    problems: list[str] = []
    bad: dict[str, list[str]] = {}
    for n in g.node:
        if n.domain not in ("", "ai.onnx") or n.op_type not in TRT_ONNX_OPS:
            key = f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
            bad.setdefault(key, []).append(n.name or n.output[0])
    for op, nodes in sorted(bad.items()):
        problems.append(f"operator {op} is not supported by TensorRT's ONNX parser "
                        f"({len(nodes)} node(s), e.g. {nodes[0]})")
    consts = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a.t
    qdq: dict[str, list[str]] = {}  # reason -> node names
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp_name = n.input[2] if len(n.input) > 2 and n.input[2] else None
        if zp_name is None:
            continue  # no zero point: int8 (or the output_dtype attribute), zero
        t = consts.get(zp_name)
        if t is None:
            reason = "zero point computed at run time (TensorRT needs a constant 0)"
        elif t.data_type not in (TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4):
            reason = (f"{TensorProto.DataType.Name(t.data_type)} quantisation (TensorRT takes "
                      "symmetric int8 Q/DQ only)")
        elif np.any(numpy_helper.to_array(t) != 0):
            reason = "non-zero zero point (asymmetric; TensorRT takes symmetric Q/DQ only)"
        else:
            continue
        qdq.setdefault(reason, []).append(n.name or n.output[0])
    for reason, nodes in qdq.items():
        problems.append(f"{len(nodes)} Q/DQ node(s) with {reason}, e.g. {nodes[0]}")
    return problems


def require_buildable(path: str | Path) -> None:
    """Raise ValueError listing what TensorRT cannot take in ``path`` (before a long build)."""
    problems = check_graph(path)
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"{Path(path).name} cannot be built by TensorRT: "
                         + "; ".join(problems[:3]) + more)
