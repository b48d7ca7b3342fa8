"""Export of a real AffectModel (mobile encoder) through `affedge export`: every artifact is loaded
by its runtime and checked against eager PyTorch; the manifest carries the parity records."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from affedge.bundle import load_bundle, thaw
from affedge.config import FeatureConfig, ModelConfig
from affedge.export import parity as P


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from affedge.training.model import AffectModel, save_checkpoint

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = ModelConfig(encoder="mobile")
    model = AffectModel(cfg).eval()
    norm = {"mfcc": {"mean": 0.5, "std": 3.0}, "logmel": {"mean": [-4.0] * 64, "std": [2.0] * 64}}
    return save_checkpoint(tmp_path_factory.mktemp("ck"), model, cfg, FeatureConfig(), norm,
                           {"seed": 0, "folds": [0], "data": "unit-test"})


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """One CLI export (dynamo ONNX exporter, TorchScript, torch.export, int8 encoder)."""
    import argparse

    from affedge.commands import export as cmd

    out = tmp_path_factory.mktemp("exp") / "bundle"
    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    args = p.parse_args([str(checkpoint), "-o", str(out), "--format",
                         "onnx,torchscript,torch-export,tensorrt", "--int8",
                         "--parity-frames", "130", "--skip-unavailable"])
    rc = cmd.run(args)
    return rc, out


def test_cli_exit_code_and_bundle(exported):
    rc, out = exported
    assert rc == 0
    b = load_bundle(out)
    m = b.manifest
    assert m["schema_version"] == 1
    assert m["receptive_field"] == 121
    assert m["model"]["encoder"] == "mobile"
    # scalar reference-style stats were expanded per dimension
    assert len(m["audio_norm"]["mfcc"]["mean"]) == 39 and m["audio_norm"]["mfcc"]["std"][0] == 3.0
    have = {(a["name"], a["format"]) for a in m["artifacts"]}
    for name in ("encoder", "step", "window"):
        for fmt in ("onnx", "torchscript", "torch-export"):
            assert (name, fmt) in have
    assert ("encoder", "onnx-int8") in have and ("weights", "safetensors") in have
    # TensorRT is not installable here: skipped with the reason, never a crash
    assert "TensorRT/NVIDIA GPU not available" in m["export"]["skipped"]["tensorrt"]
    assert m["provenance"]["seed"] == 0


def test_onnx_artifacts_named_checked_and_dynamic(exported):
    _, out = exported
    b = load_bundle(out)
    enc = b.find("encoder", "onnx")
    assert enc["exporter"] in ("dynamo", "legacy") and enc["opset"] == 18
    assert thaw(enc["inputs"]) == [{"name": "frames", "shape": ["N", 3, 40, 40], "dtype": "float32"}]
    assert enc["outputs"][0]["name"] == "embedding"
    step = b.find("step", "onnx")
    names = [i["name"] for i in step["inputs"]]
    assert names[:3] == ["embedding", "audio_mfcc", "audio_logmel"]
    n_states = len(names) - 3
    assert n_states == 3 * 8  # one state per causal conv: 3 TCNs x 4 blocks x 2 convs
    assert [o["name"] for o in step["outputs"]] == ["va"] + [f"state_out_{i}"
                                                             for i in range(n_states)]
    assert m_shape(step, "state_1") == ["N", 128, 4]  # conv2 of block 0: (k-1)*d = 4
    model = onnx.load(str(b.artifact("encoder", "onnx")))
    onnx.checker.check_model(model, full_check=True)
    import onnxruntime as ort

    s = ort.InferenceSession(str(b.artifact("encoder", "onnx")), providers=["CPUExecutionProvider"])
    y = s.run(None, {"frames": np.zeros((5, 3, 40, 40), np.float32)})[0]
    assert y.shape == (5, 512)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-4)  # L2-normalised


def m_shape(art, name):
    return next(list(i["shape"]) for i in art["inputs"] if i["name"] == name)


def test_parity_records_within_thresholds(exported):
    _, out = exported
    recs = load_bundle(out).manifest["parity"]
    fmts = {(r["artifact"], r["format"]) for r in recs}
    for fmt in ("onnx", "torchscript", "torch-export"):
        for art in ("encoder", "step", "window", "pipeline"):
            assert (art, fmt) in fmts
    for r in recs:
        if r["precision"] == "fp32":
            assert r["status"] == "pass", r
            for e in r["outputs"].values():
                assert e["max_abs"] <= 1e-4 * max(1.0, e["ref_max"])
        if r["artifact"] == "pipeline" and r["precision"] == "fp32":
            assert r["ccc"]["max_delta"] <= 0.005
    int8 = [r for r in recs if r["format"] == "onnx-int8"]
    enc8 = next(r for r in int8 if r["artifact"] == "encoder")
    assert enc8["status"] == "report" and 0 < enc8["outputs"]["embedding"]["max_abs"] < 0.5
    pipe8 = next(r for r in int8 if r["artifact"] == "pipeline")
    assert "max_delta" in pipe8["ccc"]  # CCC impact of the int8 encoder is reported


def test_step_contract_from_zero_state_matches_offline(exported, checkpoint):
    """The exported step (ORT) from zero state == eager offline forward, frame by frame."""
    from affedge.sdk.backends import OnnxRuntimeBackend
    from affedge.training.model import load_checkpoint

    _, out = exported
    model, _ = load_checkpoint(checkpoint)
    b = load_bundle(out)
    inp = P.synthetic_inputs(model.cfg, n_frames=40, seed=3)
    ref = P.EagerReference(model, inp)
    be = OnnxRuntimeBackend(b, "cpu")
    y, _ = P.run_step_sequence(lambda f: be.run("step", f), be.input_names("step"),
                               ref.step.state_specs(), ref.embedding, inp.audio)
    np.testing.assert_allclose(y, ref.y, atol=1e-5)


def test_parity_helpers():
    e = P.errors(np.array([0.5, -2.0]), np.array([0.5, -2.0001]))
    assert e["max_abs"] == pytest.approx(1e-4) and e["ref_max"] == 2.0
    assert P.within(e, "fp32") is True  # 1e-4 <= 1e-4 * max(1, 2)
    assert P.within(P.errors(np.zeros(2), np.full(2, 1e-3)), "fp32") is False
    assert P.within(P.errors(np.zeros(2), np.full(2, 1e-3)), "fp16") is True
    assert P.within(e, "int8") is None
    assert P.errors(np.zeros(2), np.array([0.0, np.nan]))["max_abs"] == float("inf")
    table = P.format_table([{"artifact": "encoder", "format": "onnx", "precision": "fp32",
                             "size": 2_000_000, "outputs": {"embedding": e}, "status": "pass"}])
    assert "encoder" in table and "2.00" in table and "pass" in table
    assert "report:" not in table
    # a status "report" is explained under the table (a new-user trial found it nowhere)
    table = P.format_table([{"artifact": "encoder", "format": "onnx-int8", "precision": "int8",
                             "size": 1_000_000, "outputs": {"embedding": e},
                             "ccc": {"max_delta": 0.02}, "status": "report"}])
    assert table.splitlines()[-1].startswith("report: an int8 artifact outside the fp32 limit "
                                             "(CCC delta > 0.005)")


def test_export_rejects_bad_requests(checkpoint, tmp_path):
    from affedge.export.api import export_bundle

    with pytest.raises(ValueError, match="unknown export format"):
        export_bundle(checkpoint, tmp_path / "b", formats=["onnx", "coreml"])
    other = tmp_path / "notabundle"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an affedge bundle"):
        export_bundle(checkpoint, other, formats=["onnx"])
    # a bundle with the user's own files in it: replacing it used to delete them silently
    import shutil

    from affedge.sdk.recognizer import DEMO_BUNDLE

    mine = tmp_path / "mine"
    shutil.copytree(DEMO_BUNDLE, mine)
    (mine / "notes.txt").write_text("keep")
    (mine / "backup").mkdir()
    with pytest.raises(FileExistsError, match=r"2 file\(s\) or folder\(s\) that are not part "
                                              r"of it \(backup/, notes.txt\)"):
        export_bundle(checkpoint, mine, formats=["onnx"])
    assert (mine / "notes.txt").read_text() == "keep" and (mine / "backup").is_dir()
    with pytest.raises(FileNotFoundError):
        export_bundle(tmp_path / "missing", tmp_path / "b2", formats=["onnx"])


def test_tensorrt_build_skips_with_reason():
    from affedge.export.tensorrt_build import tensorrt_available

    ok, why = tensorrt_available()
    if not ok:
        assert why.startswith("TensorRT/NVIDIA GPU not available")
        pytest.skip(why)
    assert "TensorRT" in why


def test_manifest_is_plain_json(exported):
    _, out = exported
    m = json.loads((out / "manifest.json").read_text())
    assert isinstance(m["artifacts"], list) and m["parity_inputs"].startswith("deterministic")


def test_export_leaves_the_grad_mode_of_the_process_alone(exported):
    """Export runs under no_grad but must not switch autograd off process-wide (training in
    the same process after an export failed with 'does not require grad')."""
    assert torch.is_grad_enabled()
    w = torch.ones(2, requires_grad=True)
    (w * 3).sum().backward()
    assert torch.equal(w.grad, torch.full((2,), 3.0))


@pytest.fixture(scope="module")
def visual_bundle(tmp_path_factory):
    """A visual-only model (no audio branch) exported without an int8 encoder; the export's
    exit code with it."""
    import argparse

    from affedge.commands import export as cmd
    from affedge.training.model import AffectModel, save_checkpoint

    tmp = tmp_path_factory.mktemp("visual")
    torch.manual_seed(0)
    cfg = ModelConfig(encoder="mobile", fusion=False)
    ck = save_checkpoint(tmp / "ck", AffectModel(cfg).eval(), cfg, FeatureConfig(), {},
                         {"seed": 0, "folds": [0], "data": "unit-test"})
    out = tmp / "bundle"
    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    rc = cmd.run(p.parse_args([str(ck), "-o", str(out), "--format", "onnx,torch-export",
                               "--parity-frames", "130", "--force"]))
    return rc, out


def test_a_visual_only_model_exports_through_torch_export_and_runs(visual_bundle):
    """Found while training ``--modality v`` on videos without audio: export stopped at
    torch.export ("`inputs` has 1 elements, but `dynamic_shapes` has 2"): the window graph of
    a visual-only model takes no audio, and its empty ``*audio`` still got a shape entry. The
    bundle now exports, passes parity and runs frames without any audio."""
    from affedge.sdk.recognizer import Recognizer

    rc, out = visual_bundle
    assert rc == 0
    arts = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert {a["format"] for a in arts} >= {"onnx", "torch-export"}
    onnx = next(a for a in arts if a["format"] == "onnx" and a["name"] == "window")
    assert onnx["exporter"] == "dynamo"  # (it fell back to the legacy exporter)
    rng = np.random.default_rng(0)
    with Recognizer(out, backend="onnxruntime") as rec:
        p = rec.push_frame(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), t=0.0)
        assert np.isfinite(p.valence) and not p.audio_present


def test_int8_on_a_bundle_without_an_int8_encoder_is_refused_everywhere(visual_bundle):
    """Found by a new-user trial: ``bench --precision int8`` on a bundle without an int8
    encoder measured its fp32 graph and reported "precision int8", and
    ``Recognizer(..., backend_options={"precision": "int8"})`` ran fp32 silently (``run``
    alone refused). One check now refuses all of them, naming the export that adds one."""
    import subprocess
    import sys

    from affedge.sdk.recognizer import Recognizer

    _, out = visual_bundle
    for backend in ("onnxruntime", "openvino", "auto", ["onnxruntime", "openvino"]):
        with pytest.raises(ValueError, match=r"precision int8: bundle .* has no int8 encoder; "
                                             r"export one with `affedge export"):
            Recognizer(out, backend=backend, backend_options={"precision": "int8"})
    r = subprocess.run([sys.executable, "-m", "affedge.cli", "bench", str(out), "--precision",
                        "int8", "--frames", "5", "--no-roofline", "--no-reference"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "has no int8 encoder" in r.stderr, r.stderr[-800:]
    assert "precision int8" not in r.stdout


def test_a_visual_only_bundle_says_so_in_doctor_and_run(visual_bundle, tmp_path):
    """Found by a new-user trial: ``doctor --bundle`` did not show that a bundle is visual only,
    and ``run`` on a clip with sound said "(audio: video)" and decoded a track the model never
    reads."""
    import subprocess
    import sys

    from affedge.sdk.recognizer import DEMO_CLIP

    _, out = visual_bundle
    doc = subprocess.run([sys.executable, "-m", "affedge.cli", "doctor", "--bundle", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert f"bundle: {out} (encoder mobile, visual only," in doc.stdout, doc.stdout
    r = subprocess.run([sys.executable, "-m", "affedge.cli", "run", str(DEMO_CLIP), "--bundle",
                        str(out), "--max-frames", "3", "--out", str(tmp_path / "p.csv")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-600:]
    assert "(audio: none: a visual-only bundle)" in r.stderr, r.stderr[-600:]
