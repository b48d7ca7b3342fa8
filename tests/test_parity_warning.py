"""A recognizer that runs a precision which failed its bundle's export parity check says so."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from affedge.sdk.recognizer import DEMO_BUNDLE, DEMO_CLIP

needs_demo = pytest.mark.skipif(not (DEMO_BUNDLE / "manifest.json").exists(),
                                reason="demo assets missing")


@needs_demo
def test_the_demo_int8_encoder_warns_and_fp32_does_not():
    """Found by a new-user trial: ``--precision int8`` on the demo bundle ran without a word,
    though its manifest marks the int8 pipeline "report" (CCC moved by 0.024 > 0.005)."""
    from affedge import Recognizer

    with pytest.warns(RuntimeWarning, match=r"int8 model did not pass its export parity check "
                                            r"\(CCC moved by 0\.024, threshold 0\.005\)"):
        Recognizer.demo(backend="ort-cpu", backend_options={"precision": "int8"}).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the fp32 case
        Recognizer.demo(backend="ort-cpu").close()


def test_parity_problem_reads_the_pipeline_record():
    from affedge.sdk.parity_warning import parity_problem

    rec = {"artifact": "pipeline", "precision": "int8", "threshold": 0.005,
           "ccc": {"max_delta": 0.02}, "status": "report"}
    m = {"parity": [{"artifact": "encoder", "precision": "int8", "status": "report"}, rec]}
    assert "CCC moved by 0.020, threshold 0.005" in parity_problem(m, "int8")
    assert parity_problem(m, "fp32") is None  # no record: nothing to say
    assert parity_problem({"parity": [dict(rec, status="pass")]}, "int8") is None
    assert parity_problem({}, "int8") is None


@needs_demo
def test_the_cli_prints_it_as_one_warning_line():
    r = subprocess.run([sys.executable, "-m", "affedge.cli", "run", str(DEMO_CLIP),
                        "--precision", "int8", "--max-frames", "2", "--audio", "none"],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if "parity" in x]
    assert len(lines) == 1 and lines[0].startswith("affedge run: warning: the bundle's int8"), \
        r.stderr
    assert "RuntimeWarning" not in r.stderr


@needs_demo
def test_bench_and_doctor_show_an_int8_encoder_that_did_not_pass_its_parity_check(monkeypatch):
    """Found by a new-user trial: bench's format table said "ok" for the int8 encoder (meaning
    "it ran") and doctor listed it without a word, while its export parity check said
    "report" (the CCC moved): int8 looked as good as fp32."""
    from affedge.benchmarking import pipeline
    from affedge.benchmarking.report import encoder_table
    from affedge.bundle import load_bundle
    from affedge.sdk.doctor import collect

    bundle = load_bundle(DEMO_BUNDLE)
    monkeypatch.setattr(pipeline, "ENCODER_VARIANTS", tuple(
        v for v in pipeline.ENCODER_VARIANTS if v[1] == "ort-cpu"))
    rows = pipeline.encoder_rows(bundle, iters=3, warmup=1, max_seconds=5, say=lambda m: None)
    by = {r["precision"]: r for r in rows}
    assert by["int8"]["status"] == "ok" and by["int8"]["export_parity"] == "report"
    assert "export_parity" not in by["fp32"]
    table = encoder_table(rows)
    assert "ok; export parity report" in table and table.count("export parity") == 1
    listed = collect(DEMO_BUNDLE, devices=False)["bundle"]["artifacts"]
    int8 = [a for a in listed if a.endswith(")") and " int8 " in a]
    assert int8 == ["encoder onnx-int8 int8 (export parity: report, CCC moved by 0.024)"], listed
    assert not any("parity" in a for a in listed if " int8 " not in a)
