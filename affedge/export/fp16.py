"""fp32 ONNX graph -> mixed fp16 graph with fp32 inputs/outputs (the TensorRT 11 fp16 source).

TensorRT 11 removed ``BuilderFlag.FP16``: precision comes from the graph's own types in a
strongly typed network (EDGE.md). This module writes that graph with the ``onnx`` package:

* every node computes in fp16 except the numerically sensitive ones (:data:`KEEP_FP32_OPS`:
  softmax, layer/L2 normalisation, reductions of squares) and the L2-normalisation chain
  ``ReduceL2 -> Clip(eps) -> Expand -> Div`` (the 1e-12 epsilon underflows to 0 in fp16, and
  the division by the norm is where fp16 loses the unit length);
* float initializers and float ``Constant`` values are stored in the precision of the nodes
  that read them (a copy per precision when both read one);
* graph inputs and outputs stay float32: ``Cast`` nodes are inserted wherever a tensor crosses
  between an fp32 and an fp16 node, so callers (and the manifest's I/O specs) do not change.

Integer tensors (shapes, indices) are never touched. :func:`convert_to_fp16` returns notes for
the artifact record; :func:`fp16_parity` measures the result against the fp32 graph with ONNX
Runtime CPU (whose kernels may compute some fp16 nodes in fp32 after inserting casts, so the
check measures fp16 storage of weights and activations, which is what fp16 engines round).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: ops computed in fp32 inside the fp16 graph
KEEP_FP32_OPS = frozenset({
    "ReduceL2", "ReduceSumSquare", "LpNormalization", "Softmax", "LogSoftmax",
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "ReduceLogSumExp",
})
#: ops that may sit between a norm and the division by it (kept fp32 on that path)
_NORM_CHAIN_OPS = frozenset({"Clip", "Expand", "Max", "Add", "Sqrt", "Reciprocal", "Unsqueeze",
                             "Reshape", "Identity", "Div", "Mul"})
#: ops that only read a tensor's shape: no cast needed in front of them
_TYPE_AGNOSTIC_OPS = frozenset({"Shape", "Size"})
#: ops whose output type is not their input's (they are left as they are)
_FIXED_OUTPUT_OPS = frozenset({"Shape", "Size", "QuantizeLinear", "DequantizeLinear",
                               "DynamicQuantizeLinear", "ArgMax", "ArgMin", "NonZero",
                               "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
                               "IsNaN", "IsInf", "Not", "And", "Or", "Xor", "TopK"})


def _fp32_nodes(graph) -> set[int]:
    """Indices of nodes kept in fp32: sensitive ops and the norm -> Div chain after them."""
    keep = {i for i, n in enumerate(graph.node) if n.op_type in KEEP_FP32_OPS}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(graph.node):
        for x in n.input:
            consumers[x].append(i)
    norms = [i for i in keep if graph.node[i].op_type in ("ReduceL2", "ReduceSumSquare")]
    for start in norms:  # follow the norm forward until (and including) the Div that uses it
        frontier = list(graph.node[start].output)
        seen: set[int] = set()
        while frontier:
            t = frontier.pop()
            for j in consumers.get(t, []):
                n = graph.node[j]
                if j in seen or n.op_type not in _NORM_CHAIN_OPS:
                    continue
                seen.add(j)
                keep.add(j)
                if n.op_type not in ("Div", "Mul"):
                    frontier.extend(n.output)
    return keep


def convert_to_fp16(src: str | Path, dst: str | Path,
                    keep_fp32_ops: frozenset[str] = KEEP_FP32_OPS) -> dict[str, Any]:
    """Write the fp16 version of ``src`` to ``dst``; returns notes for the artifact record."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise ValueError(f"{src}: already quantised (Q/DQ nodes); convert the fp32 graph")
    model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = model.graph
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    types: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    inits = {t.name: t for t in g.initializer}
    for t in g.initializer:
        types[t.name] = t.data_type
    keep_set = frozenset(keep_fp32_ops)
    fp32 = _fp32_nodes(g) | {i for i, n in enumerate(g.node) if n.op_type in keep_set}

    # storage precision of every float tensor after conversion
    store: dict[str, int] = {vi.name: FLOAT for vi in g.input}
    new_nodes = []
    cast_cache: dict[tuple[str, int], str] = {}
    init_copies: dict[tuple[str, int], str] = {}
    new_inits = []
    n_cast = 0

    def as_type(name: str, want: int) -> str:
        nonlocal n_cast
        if not name or types.get(name) not in (FLOAT, HALF):
            return name
        if name in inits:
            key = (name, want)
            if key not in init_copies:
                arr = numpy_helper.to_array(inits[name])
                arr = arr.astype(np.float16 if want == HALF else np.float32)
                new_name = name if want == inits[name].data_type else \
                    f"{name}__{'fp16' if want == HALF else 'fp32'}"
                new_inits.append(numpy_helper.from_array(arr, new_name))
                init_copies[key] = new_name
            return init_copies[key]
        have = store.get(name, types[name])
        if have == want:
            return name
        key = (name, want)
        if key not in cast_cache:
            out = f"{name}__to_{'fp16' if want == HALF else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=want,
                                              name=f"cast_{len(cast_cache)}_{out}"))
            cast_cache[key] = out
            n_cast += 1
        return cast_cache[key]

    for i, n in enumerate(g.node):
        want = FLOAT if i in fp32 else HALF
        if n.op_type in _TYPE_AGNOSTIC_OPS:
            new_nodes.append(n)
            continue
        ins = [as_type(x, want) for x in n.input]
        del n.input[:]
        n.input.extend(ins)
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i in (FLOAT, HALF):
                    a.i = want
        elif n.op_type in ("Constant", "ConstantOfShape"):
            for a in n.attribute:
                if a.name == "value" and a.t.data_type in (FLOAT, HALF):
                    arr = numpy_helper.to_array(a.t).astype(
                        np.float16 if want == HALF else np.float32)
                    a.t.CopyFrom(numpy_helper.from_array(arr, a.t.name))
        elif n.op_type in ("EyeLike", "RandomNormal", "RandomUniform", "RandomNormalLike",
                           "RandomUniformLike"):
            for a in n.attribute:
                if a.name == "dtype" and a.i in (FLOAT, HALF):
                    a.i = want
        new_nodes.append(n)
        for o in n.output:
            if n.op_type in _FIXED_OUTPUT_OPS:
                continue
            if types.get(o) in (FLOAT, HALF) or (
                    o not in types and n.op_type in ("Constant", "ConstantOfShape")):
                store[o] = want
                types.setdefault(o, FLOAT)
    # graph outputs back to fp32
    for o in g.output:
        if store.get(o.name) == HALF:
            inner = f"{o.name}__fp16"
            for n in new_nodes:
                for k, x in enumerate(n.output):
                    if x == o.name:
                        n.output[k] = inner
                for k, x in enumerate(n.input):
                    if x == o.name:
                        n.input[k] = inner
            new_nodes.append(helper.make_node("Cast", [inner], [o.name], to=FLOAT,
                                              name=f"cast_out_{o.name}"))
            n_cast += 1
    del g.node[:]
    g.node.extend(new_nodes)
    used = {x for n in g.node for x in n.input}
    kept_inits = [t for t in g.initializer if t.data_type not in (FLOAT, HALF)]
    del g.initializer[:]
    g.initializer.extend(t for t in kept_inits + new_inits if t.name in used)
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return {"exporter": "affedge.export.fp16 (onnx)",
            "fp16": {"fp32_nodes": len(fp32), "casts": n_cast,
                     "fp32_ops": sorted(keep_set), "io": "float32"}}


def fp16_parity(fp32_path: str | Path, fp16_path: str | Path,
                feeds: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Max |fp16 - fp32| per output, both graphs run by ONNX Runtime CPU on ``feeds``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    a = ort.InferenceSession(str(fp32_path), so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(fp16_path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in a.get_outputs()]
    ya = a.run(names, dict(feeds))
    yb = b.run(names, dict(feeds))
    out = {}
    for n, x, y in zip(names, ya, yb):
        if y.dtype != np.float32:
            raise AssertionError(f"{fp16_path}: output {n} is {y.dtype}, expected float32")
        out[n] = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
    return out
