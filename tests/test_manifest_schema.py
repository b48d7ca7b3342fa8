"""Every field of a real manifest is checked before any inference session exists.

The demo bundle (real ONNX graphs + safetensors) is copied and one field is edited per case; the
artifacts' checksums still match (the case is a *consistent* forgery, or the edited ONNX file is
re-listed with its new sha256 and size). ``load_bundle``, ``Recognizer`` and ``select_backend``
must raise a BundleError naming the field, while a counting ``onnxruntime.InferenceSession``
subclass (the real class does the work) proves no session was created.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from affedge.bundle import BundleError, load_bundle, sha256_file
from affedge.manifest_schema import (
    MAX_RECEPTIVE_FIELD,
    MAX_STREAM_STATE_BYTES,
    OUTPUTS,
    read_onnx_signature,
)
from affedge.sdk.recognizer import DEMO_BUNDLE

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.skipif(not (DEMO_BUNDLE / "manifest.json").is_file(),
                                reason="demo bundle not present")


def _m(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _w(root: Path, m: dict) -> None:
    (root / "manifest.json").write_text(json.dumps(m))


def _art(m: dict, name: str, fmt: str = "onnx") -> dict:
    return next(a for a in m["artifacts"] if a["name"] == name and a["format"] == fmt)


def _refused(root: Path, sessions: list, match: str) -> str:
    from affedge.sdk.backends import select_backend
    from affedge.sdk.recognizer import Recognizer

    with pytest.raises(BundleError, match=match) as ei:
        load_bundle(root)
    msg = str(ei.value)
    assert "\n" not in msg, "one line"
    with pytest.raises(BundleError, match=match):
        Recognizer(root, backend="cpu")
    with pytest.raises(BundleError, match=match):
        select_backend(root, "cpu")
    assert sessions == [], f"a session was created before the refusal: {sessions}"
    return msg


def test_demo_bundle_passes_and_creates_sessions(demo, sessions):
    from affedge.sdk.recognizer import Recognizer

    b = load_bundle(demo)
    assert b.outputs == list(OUTPUTS)
    with Recognizer(b, backend="cpu") as rec:
        p = rec.push_frame(np.full((120, 160, 3), 90, np.uint8), 0.0)
    # the bundle's graphs, plus the face detector its front end names (the runtime's own VAD
    # model is loaded from bytes, not a path)
    graphs = sorted(Path(x).name for x in sessions if x.endswith(".onnx"))
    assert b.manifest["face_frontend"]["detector"] == "blazeface-short"
    assert graphs == ["blazeface_short.onnx", "encoder.onnx", "step.onnx", "window.onnx"]
    assert math.isfinite(p.valence)  # the counter does see the sessions of a valid bundle


# (section, key, value, the field the message must name)
FIELD_CASES = [
    ("features", "hop_length", 0, r"features\.hop_length"),
    ("features", "hop_length", 500, r"features\.win_length"),  # hop > win
    ("features", "sample_rate", 0, r"features\.sample_rate"),
    ("features", "sample_rate", -16000, r"features\.sample_rate"),
    ("features", "sample_rate", 16000.5, r"features\.sample_rate"),
    ("features", "sample_rate", 10**9, r"features\.sample_rate"),
    ("features", "win_length", 0, r"features\.win_length"),
    ("features", "n_fft", 256, r"features\.n_fft"),  # < win_length 400
    ("features", "n_fft", 1 << 30, r"features\.n_fft"),
    ("features", "mfcc_fmax", 9000.0, r"features\.mfcc_fmax"),  # above sr/2
    ("features", "logmel_fmin", 7500.0, r"features\.logmel_fmax"),  # fmin == fmax
    ("features", "logmel_offset", 0.0, r"features\.logmel_offset"),
    ("features", "delta_width", 0, r"features\.delta_width"),
    ("features", "mfcc_n_ceps", 0, r"features\.mfcc_n_ceps"),
    ("features", "logmel_n_mels", 10**6, r"features\.logmel_n_mels"),
    ("features", "preemphasis", float("nan"), r"features\.preemphasis"),
    ("features", "streams", ["mfcc", "vggish"], r"features\.streams"),
    ("features", "streams", ["mfcc", "mfcc"], r"features\.streams"),
    ("features", "frame_size", 0, r"features\.frame_size"),
    ("features", "aligned_size", 0, r"features\.aligned_size"),
    ("features", "aligned_size", 100_000, r"features\.aligned_size"),  # 30 GB crop buffers
    ("features", "crop_size", 64, r"features\.crop_size"),  # > frame_size 48
    ("features", "surprise", 1, r"features: unknown keys \['surprise'\]"),
    ("model", "crop_size", 32, r"model\.crop_size"),
    ("model", "kernel_size", 0, r"model\.kernel_size"),
    ("model", "embed_dim", -1, r"model\.embed_dim"),
    ("model", "encoder", "resnet", r"model\.encoder"),
    ("model", "outputs", ["arousal", "valence"], r"model\.outputs"),
    ("model", "fusion", 1, r"model\.fusion"),
    ("model", "audio_streams", [["mfcc", 40], ["logmel", 64]], r"model\.audio_streams"),
    ("model", "visual_channels", [128] * 100, r"model\.visual_channels"),
    ("video", "fps", 0, r"video\.fps"),
    ("video", "fps", float("inf"), r"video\.fps"),
    ("crop", "size", 41, r"crop\.size"),
    ("crop", "std", [0.5, 0.0, 0.5], r"crop\.std"),
]


@pytest.mark.parametrize("section,key,value,field", FIELD_CASES,
                         ids=[f"{s}.{k}={v!r}"[:40] for s, k, v, _ in FIELD_CASES])
def test_out_of_range_field_refused_before_any_session(demo, sessions, section, key, value,
                                                       field):
    m = _m(demo)
    m[section][key] = value
    _w(demo, m)
    _refused(demo, sessions, field)


@pytest.mark.parametrize("value", [200_000, 0, -1, 120, 122, MAX_RECEPTIVE_FIELD + 1])
def test_receptive_field_refused(demo, sessions, value):
    m = _m(demo)
    m["receptive_field"] = value
    _w(demo, m)
    _refused(demo, sessions, r"receptive_field")


@pytest.mark.parametrize("outputs", [["valence", "arousal2"], ["valence"], [],
                                     ["arousal", "valence"], ["valence", "arousal", "x"]])
def test_outputs_renamed_removed_or_swapped_refused(demo, sessions, outputs):
    m = _m(demo)
    m["outputs"] = outputs
    _w(demo, m)
    _refused(demo, sessions, r"outputs: must be exactly \['valence', 'arousal'\]")


def test_statistics_length_must_equal_stream_dim(demo, sessions):
    m = _m(demo)
    m["audio_norm"]["mfcc"]["mean"].pop()
    m["audio_norm"]["mfcc"]["std"].pop()
    _w(demo, m)
    _refused(demo, sessions, r"audio_norm\['mfcc'\]\.mean: has 38 values, stream 'mfcc' has 39")
    m["audio_norm"]["vggish"] = {"mean": [0.0], "std": [1.0]}
    m["audio_norm"]["mfcc"] = _m(DEMO_BUNDLE)["audio_norm"]["mfcc"]
    _w(demo, m)
    _refused(demo, sessions, r"audio_norm\['vggish'\]: not one of the feature streams")


@pytest.mark.parametrize("shape", [["N", 512, 10**7], ["N", 10**6, 10**6], ["N", 1 << 22, 4]])
def test_huge_state_shapes_refused(demo, sessions, shape):
    m = _m(demo)
    step = _art(m, "step")
    step["inputs"][3]["shape"] = shape  # state_0
    step["outputs"][1]["shape"] = shape  # state_out_0
    m["streaming"]["states"][0]["shape"] = shape
    _w(demo, m)
    msg = _refused(demo, sessions, r"step")
    assert "MiB per stream" in msg or "elements" in msg or "dimension" in msg, msg


def test_per_stream_memory_bound_is_stated_and_enforced(demo, sessions):
    """A state just over the bound (and consistent in every record) is refused by the bound."""
    m = _m(demo)
    step = _art(m, "step")
    big = ["N", 512, MAX_STREAM_STATE_BYTES // (512 * 4) + 1]
    step["inputs"][3]["shape"] = step["outputs"][1]["shape"] = big
    m["streaming"]["states"][0]["shape"] = big
    _w(demo, m)
    _refused(demo, sessions, r"MiB per stream \(bound 64 MiB\)")


def test_state_shape_must_match_the_graph(demo, sessions):
    """A small, self-consistent edit of a state shape disagrees with the ONNX graph itself."""
    m = _m(demo)
    step = _art(m, "step")
    step["inputs"][3]["shape"] = step["outputs"][1]["shape"] = ["N", 512, 5]
    m["streaming"]["states"][0]["shape"] = ["N", 512, 5]
    _w(demo, m)
    _refused(demo, sessions, r"artifact 'step'.*state_0.*differs from the graph's")


@pytest.mark.parametrize("edit,match", [
    (lambda s: s["outputs"].__setitem__(0, {**s["outputs"][0], "name": "valence_arousal"}),
     r"no 'va' output"),
    (lambda s: s["inputs"].__setitem__(1, {**s["inputs"][1], "dtype": "float16"}),
     r"dtype"),
    (lambda s: s["inputs"].__setitem__(slice(1, 3), s["inputs"][2:0:-1]),
     r"manifest names .* differ from the graph's"),
    (lambda s: s["inputs"].pop(4), r"state_1.*|differ from"),
    (lambda s: s["inputs"].append({"name": "extra", "shape": ["N", 1], "dtype": "float32"}),
     r"\['extra'\] are inputs the runtime does not feed"),
    (lambda s: s["outputs"].__setitem__(0, {**s["outputs"][0], "shape": ["N", 3]}),
     r"'va': shape \['N', 3\] must be \['N', 2\]"),
    # found by the manifest-semantics fuzzer: one input with a fixed batch of 2
    (lambda s: s["inputs"][11].__setitem__("shape", [2, 39, 4]),
     r"leading \(batch\) dimensions .* must be one symbol or all 1"),
    (lambda s: s["inputs"][1].__setitem__("shape", ["N", "N"]),
     r"'audio_mfcc': symbolic dimension 'N'"),
])
def test_step_signature_edits_refused(demo, sessions, edit, match):
    m = _m(demo)
    edit(_art(m, "step"))
    _w(demo, m)
    _refused(demo, sessions, match)


def test_encoder_signature_must_match_crop_and_graph(demo, sessions):
    m = _m(demo)
    enc = _art(m, "encoder")
    enc["inputs"][0]["name"] = "images"
    _w(demo, m)
    _refused(demo, sessions, r"encoder.*manifest names \['images'\] differ from the graph's "
                             r"\['frames'\]")
    m = _m(DEMO_BUNDLE)
    _art(m, "encoder")["inputs"][0]["shape"] = ["N", 3, 48, 48]
    _w(demo, m)
    _refused(demo, sessions, r"encoder.*frames.*must be \['N', 3, 40, 40\]")


def _relist(root: Path, name: str, fmt: str = "onnx") -> None:
    m = _m(root)
    a = _art(m, name, fmt)
    p = root / a["file"]
    a["sha256"], a["size"] = sha256_file(p), p.stat().st_size
    _w(root, m)


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "weights.bin"])
def test_onnx_external_data_refused(demo, tmp_path, sessions, location):
    """An encoder whose weights live in an external file (outside the bundle, absolute, or
    even a sibling) is refused: every weight must be inside the checksummed file."""
    onnx = pytest.importorskip("onnx")
    from onnx.external_data_helper import set_external_data

    model = onnx.load(str(demo / "encoder.onnx"))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    (tmp_path / "outside.bin").write_bytes(init.raw_data)
    set_external_data(init, location=location, offset=0, length=len(init.raw_data))
    init.data_location = onnx.TensorProto.EXTERNAL
    init.ClearField("raw_data")
    (demo / "encoder.onnx").write_bytes(model.SerializeToString())
    _relist(demo, "encoder")
    _refused(demo, sessions, rf"encoder\.onnx.*tensor '{init.name}' uses external data")


def test_external_data_inside_a_subgraph_attribute_refused(tmp_path):
    """The reader walks node attributes and subgraphs too (an If branch holding a tensor)."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    t = helper.make_tensor("c", TensorProto.FLOAT, [1], [1.0])
    t.data_location = TensorProto.EXTERNAL
    t.ClearField("float_data")
    ext = t.external_data.add()
    ext.key, ext.value = "location", "../../secret"
    then = helper.make_graph([helper.make_node("Constant", [], ["y"], value=t)], "then", [],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    els = helper.make_graph([helper.make_node("Constant", [], ["y"], value_floats=[0.0])],
                            "else", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                       [1])])
    g = helper.make_graph(
        [helper.make_node("If", ["b"], ["y"], then_branch=then, else_branch=els)], "g",
        [helper.make_tensor_value_info("b", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    p = tmp_path / "if.onnx"
    p.write_bytes(helper.make_model(g).SerializeToString())
    with pytest.raises(BundleError, match="tensor 'c' uses external data"):
        read_onnx_signature(p)


def test_reader_agrees_with_the_onnx_package_on_every_demo_graph():
    onnx = pytest.importorskip("onnx")
    for f in sorted(DEMO_BUNDLE.glob("*.onnx")):
        mp = onnx.load(str(f), load_external_data=False)
        sig = read_onnx_signature(f)
        inits = {t.name for t in mp.graph.initializer}

        def conv(vis, inits=inits):
            out = []
            for v in vis:
                if v.name in inits:
                    continue
                tt = v.type.tensor_type
                shape = [d.dim_value if d.HasField("dim_value") else
                         (d.dim_param if d.HasField("dim_param") else None)
                         for d in tt.shape.dim]
                out.append((v.name, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name,
                            shape))
            return out

        assert [(x["name"], x["dtype"], x["shape"]) for x in sig["inputs"]] == \
            conv(mp.graph.input), f.name
        assert [(x["name"], x["dtype"], x["shape"]) for x in sig["outputs"]] == \
            conv(mp.graph.output), f.name
        assert sig["opsets"] == {(o.domain or "ai.onnx"): o.version for o in mp.opset_import}


@pytest.mark.parametrize("cut", [1, 7, 100, 5000, -1, -4096])
def test_truncated_onnx_with_matching_checksum_is_a_bundle_error(demo, sessions, cut):
    data = (demo / "step.onnx").read_bytes()
    (demo / "step.onnx").write_bytes(data[:cut])
    _relist(demo, "step")
    _refused(demo, sessions, r"step\.onnx.*not a valid ONNX model")


def test_garbage_onnx_with_matching_checksum_is_a_bundle_error(demo, sessions):
    rng = np.random.default_rng(3)
    (demo / "encoder.onnx").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _relist(demo, "encoder")
    _refused(demo, sessions, r"encoder\.onnx.*not a valid ONNX model")


def test_valid_edits_within_range_still_load_and_tick(demo):
    """The schema refuses nonsense, not settings: another sample rate / frame rate loads and
    runs a tick cleanly."""
    from affedge.sdk.recognizer import Recognizer

    m = _m(demo)
    m["features"]["sample_rate"] = 22050
    m["video"]["fps"] = 25.0
    _w(demo, m)
    with Recognizer(demo, backend="cpu") as rec:
        rec.push_audio(np.zeros(22050, np.float32), 0.0, 22050)
        p = rec.push_frame(np.full((120, 160, 3), 90, np.uint8), 0.5)
    assert math.isfinite(p.valence) and math.isfinite(p.arousal)


# ----------------------------------------------------------------------------- ONNX Runtime bound
def _declared_ort_bound() -> tuple[int, ...]:
    import re

    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    spec = next(d for d in deps if d.replace(" ", "").startswith("onnxruntime"))
    m = re.fullmatch(r"onnxruntime>=([0-9.]+)", spec.replace(" ", ""))
    assert m, f"onnxruntime must be declared with a lower bound, got {spec!r}"
    return tuple(int(x) for x in m.group(1).split("."))


def test_installed_onnxruntime_satisfies_the_declared_bound():
    bound = _declared_ort_bound()
    assert bound >= (1, 23, 2), "older versions fail on the demo bundle (see pyproject.toml)"
    from affedge.sdk.backends.onnxruntime_backend import version_tuple

    assert version_tuple(ort.__version__) >= bound, (ort.__version__, bound)


def test_onnx_runtime_below_the_fix_runs_without_the_broken_fusion():
    """1.23.2-1.24.2 get the SkipLayerNormFusion switched off (their fused kernel refuses the
    step graph); the fixed versions keep every optimisation."""
    from affedge.sdk.backends.onnxruntime_backend import session_kwargs

    off = {"disabled_optimizers": ["SkipLayerNormFusion"]}
    assert session_kwargs("1.23.2") == off and session_kwargs("1.24.2") == off
    assert session_kwargs("1.24.3") == {} and session_kwargs("1.32.0+cu126") == {}


def test_demo_graphs_run_with_the_runtimes_optimisation_level():
    """ORT 1.20-1.24.2 fuse the step graph's layer norm into SkipLayerNormalization and then
    refuse its 2-D gamma at run time (the runtime switches that fusion off there). Every demo
    graph is loaded at ORT_ENABLE_ALL with the runtime's session keywords and run once; its
    opsets are ones this ONNX Runtime implements."""
    from affedge.sdk.backends.onnxruntime_backend import session_kwargs

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for f in sorted(DEMO_BUNDLE.glob("*.onnx")):
        sig = read_onnx_signature(f)
        # ONNX Runtime's compatibility table: 1.18 and later implement ai.onnx opset 21
        assert sig["opsets"]["ai.onnx"] <= 21, f"{f.name}: opset {sig['opsets']}"
        sess = ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"],
                                    **session_kwargs(ort.__version__))
        feeds = {i.name: np.zeros([d if isinstance(d, int) else 2 for d in i.shape], np.float32)
                 for i in sess.get_inputs()}
        outs = sess.run(None, feeds)
        assert all(np.isfinite(o).all() for o in outs), f.name


def test_the_package_version_is_written_once_for_users():
    """pyproject.toml and ``affedge.__version__`` must agree (a release engineer found the
    version written in both, with nothing to keep them together), and the serve extra carries
    what ``serve --config`` needs on Python 3.10 (tomli)."""
    import tomllib

    import affedge

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml")
                            .read_text())["project"]
    assert affedge.__version__ == project["version"]
    assert any(d.replace(" ", "").startswith("tomli>=") and "python_version<'3.11'"
               in d.replace(" ", "") for d in project["optional-dependencies"]["serve"])
