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
