"""fp16 ONNX conversion (the TensorRT 11 fp16 source) and the TensorRT graph checks, on the
shipped demo bundle's real graphs, measured with ONNX Runtime CPU."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from affedge.export.fp16 import convert_to_fp16, fp16_parity
from affedge.export.trt_ops import check_graph, require_buildable

DEMO = Path(__file__).parents[1] / "affedge" / "assets" / "demo" / "demo_bundle"


def _feeds(path: Path, n: int = 3, w: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = onnx.load(str(path), load_external_data=False)
    feeds = {}
    for i in m.graph.input:
        dims = [d.dim_value if d.dim_value else (n if d.dim_param == "N" else w)
                for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


@pytest.mark.parametrize("model,tol", [("encoder", 1e-3), ("step", 5e-3), ("window", 5e-3)])
def test_fp16_graph_matches_fp32(tmp_path, model, tol):
    src = DEMO / f"{model}.onnx"
    dst = tmp_path / f"{model}.fp16.onnx"
    notes = convert_to_fp16(src, dst)
    feeds = _feeds(src)
    if model == "encoder":
        feeds = {k: np.tanh(v) for k, v in feeds.items()}  # crops are in [-1, 1]
    err = fp16_parity(src, dst, feeds)
    assert set(err) == {o.name for o in onnx.load(str(src)).graph.output}
    assert max(err.values()) <= tol, err
    assert max(err.values()) > 0  # it really computes with fp16 weights
    g = onnx.load(str(dst)).graph
    # fp32 I/O, fp16 weights
    f32 = onnx.TensorProto.FLOAT
    assert all(v.type.tensor_type.elem_type == f32 for v in list(g.input) + list(g.output))
    halves = [t for t in g.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert halves and notes["fp16"]["casts"] >= 2
    assert check_graph(dst) == []


def test_l2_normalisation_stays_fp32(tmp_path):
    dst = tmp_path / "encoder.fp16.onnx"
    convert_to_fp16(DEMO / "encoder.onnx", dst)
    m = onnx.shape_inference.infer_shapes(onnx.load(str(dst)))
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    types.update({t.name: t.data_type for t in m.graph.initializer})
    f32 = onnx.TensorProto.FLOAT
    chain = [n for n in m.graph.node if n.op_type in ("ReduceL2", "Clip", "Div")]
    assert {n.op_type for n in chain} == {"ReduceL2", "Clip", "Div"}
    for n in chain:
        assert types[n.output[0]] == f32, (n.op_type, n.name)
        # the eps of Clip (1e-12) would be 0 in fp16
        for x in n.input[1:]:
            if x in types and types[x] in (f32, onnx.TensorProto.FLOAT16):
                assert types[x] == f32
    import onnxruntime as ort

    s = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    y = s.run(None, {"frames": np.tanh(_feeds(DEMO / "encoder.onnx")["frames"])})[0]
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)


def test_quantised_graph_is_refused(tmp_path):
    with pytest.raises(ValueError, match="already quantised"):
        convert_to_fp16(DEMO / "encoder.int8.onnx", tmp_path / "x.onnx")


def test_trt_check_flags_asymmetric_and_qoperator_graphs(tmp_path):
    probs = check_graph(DEMO / "encoder.int8.onnx")  # ORT default: uint8 activations
    assert any("UINT8 quantisation" in p for p in probs), probs
    assert any("INT32 quantisation" in p for p in probs)  # quantised biases
    with pytest.raises(ValueError, match="cannot be built by TensorRT"):
        require_buildable(DEMO / "encoder.int8.onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(DEMO / "encoder.onnx"), str(tmp_path / "dyn.onnx"),
                     weight_type=QuantType.QInt8)
    assert any(p.startswith("operator ConvInteger") for p in check_graph(tmp_path / "dyn.onnx"))
    for m in ("encoder", "step", "window"):
        assert check_graph(DEMO / f"{m}.onnx") == []


def _demo_face_inputs(n: int) -> np.ndarray:
    """Encoder inputs [n, 3, 40, 40] from the demo clip's first frames, made the runtime's way:
    the bundle's detector and crop recipe, then its crop normalisation."""
    import cv2

    from affedge.bundle import load_bundle
    from affedge.features.crops import crop_face
    from affedge.features.faces import to_model_input
    from affedge.features.frontend import detector_from_record
    from affedge.preprocess import crop_normaliser
    from affedge.sdk.recognizer import DEMO_CLIP

    b = load_bundle(DEMO)
    det = detector_from_record(b.manifest["face_frontend"])
    recipe = b.manifest["face_frontend"]["crop_recipe"]
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    crops = []
    while len(crops) < n:
        ok, frame = cap.read()
        assert ok, "demo clip ended before enough faces were found"
        faces = det.detect(frame)
        if faces:
            crops.append(crop_face(frame, faces[0], recipe))
        for _ in range(7):  # spread the crops over the clip
            cap.read()
    return to_model_input(np.stack(crops), norm=crop_normaliser(b.manifest.get("crop")))


def test_symmetric_int8_encoder_is_trt_buildable(tmp_path):
    """TensorRT's int8 wants symmetric QDQ: the graph passes the TensorRT op check and its
    embeddings are as close to fp32 as the default (asymmetric) int8's on the same real face
    crops (measured on the demo encoder: median cosine 0.898 vs 0.906, min 0.83 vs 0.83)."""
    from affedge.export.quantize import quantize_encoder

    crops = _demo_face_inputs(24)  # real model inputs: the demo clip's faces, its front end
    rec = quantize_encoder(DEMO / "encoder.onnx", tmp_path / "enc.int8.onnx", crops,
                           symmetric=True)
    assert rec["quantization"]["symmetric"] is True
    assert check_graph(tmp_path / "enc.int8.onnx") == []
    import onnxruntime as ort

    a = ort.InferenceSession(str(DEMO / "encoder.onnx"), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(tmp_path / "enc.int8.onnx"),
                             providers=["CPUExecutionProvider"])
    quantize_encoder(DEMO / "encoder.onnx", tmp_path / "asym.int8.onnx", crops, symmetric=False)
    c = ort.InferenceSession(str(tmp_path / "asym.int8.onnx"), providers=["CPUExecutionProvider"])
    ya, yb = a.run(None, {"frames": crops})[0], b.run(None, {"frames": crops})[0]
    yc = c.run(None, {"frames": crops})[0]
    cos, cos_asym = np.sum(ya * yb, axis=1), np.sum(ya * yc, axis=1)  # all unit length
    assert np.median(cos) > np.median(cos_asym) - 0.03, (np.median(cos), np.median(cos_asym))
    assert cos.min() > 0.75, cos.min()
    with pytest.raises(ValueError, match="needs static"):
        quantize_encoder(DEMO / "encoder.onnx", tmp_path / "d.onnx", None, "dynamic",
                         symmetric=True)
