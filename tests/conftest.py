"""Shared fixtures: a tiny synthetic data set in the Aff-Wild2 layout (session scope)."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory):
    """6 short videos (3 s at 25 fps, ~25 % occluded) written by the real generator."""
    from affedge.training.data.synthetic import generate

    root = tmp_path_factory.mktemp("synth") / "ds"
    generate(root, 6, seed=7, seconds=3.0, fps=25.0, occlusion=0.25, progress=False)
    return root


@pytest.fixture(scope="session")
def synth_record(synth_dataset):
    """The generator's synthetic.json for ``synth_dataset``."""
    return json.loads((synth_dataset / "synthetic.json").read_text())


@pytest.fixture()
def sessions(monkeypatch):
    """Count every onnxruntime.InferenceSession construction (the real class runs): the
    bundle tests check that a refusal comes before any session exists."""
    import onnxruntime as ort

    made: list[str] = []
    real = ort.InferenceSession

    class CountingSession(real):  # type: ignore[misc, valid-type]
        def __init__(self, path_or_bytes, *a, **k):
            made.append(str(path_or_bytes))
            super().__init__(path_or_bytes, *a, **k)

    monkeypatch.setattr(ort, "InferenceSession", CountingSession)
    return made


@pytest.fixture()
def demo(tmp_path):
    """A private, writable copy of the bundled demo bundle (for edits)."""
    import shutil

    from affedge.sdk.recognizer import DEMO_BUNDLE

    dst = tmp_path / "demo_bundle"
    shutil.copytree(DEMO_BUNDLE, dst)
    return dst


@pytest.fixture(autouse=True)
def _process_state_restored():
    """Process-wide state a test must not hand to the tests after it:

    - the log level: the CLI's -q/-v set it (``affedge.log.setup``); a command run in-process
      left -q on, and a later test waited for output that -q rightly suppressed;
    - the C locale's character set: in one CI run a later test decoded a subprocess's UTF-8
      output as ASCII (``locale.getpreferredencoding``) after something in the process had
      changed ``LC_CTYPE`` behind Python's back; it is put back and the test is named.
    """
    import locale
    import warnings

    from affedge import log

    level = log._level
    ctype = locale.setlocale(locale.LC_CTYPE)  # query only
    yield
    log._level = level
    now = locale.setlocale(locale.LC_CTYPE)
    if now != ctype:
        locale.setlocale(locale.LC_CTYPE, ctype)
        warnings.warn(f"LC_CTYPE changed from {ctype!r} to {now!r} during this test; restored",
                      stacklevel=1)
