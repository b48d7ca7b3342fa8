"""Nothing leaves the machine unasked: the runtimes affedge loads collect no telemetry."""
from __future__ import annotations


def test_onnx_runtime_collects_no_telemetry_under_affedge(tmp_path):
    """Found by a new-user trial: every ONNX Runtime session wrote a device id and an event
    cache (uploaded when a network is there) under ~/.cache/Microsoft/DeveloperTools: ONNX
    Runtime 1.29+ collects telemetry on Linux. ``import affedge`` turns it off; the same
    session without affedge shows what the check would see."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    model = root / "affedge" / "assets" / "models" / "blazeface" / "blazeface_short.onnx"
    session = ("import onnxruntime as ort, numpy as np\n"
               f"s = ort.InferenceSession({str(model)!r}, providers=['CPUExecutionProvider'])\n"
               "s.run(None, {'input': np.zeros((1, 3, 128, 128), np.float32)})\n")
    for name, code in (("plain", session), ("affedge", "import affedge\n" + session)):
        home = tmp_path / name
        # (ONNX Runtime collects nothing on CI machines either: CI=true, GITHUB_ACTIONS, ...)
        env = {k: v for k, v in os.environ.items() if k not in (
            "ORT_DISABLE_TELEMETRY", "CI", "GITHUB_ACTIONS", "TF_BUILD")}
        env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=str(root))
        home.mkdir()
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    assert list((tmp_path / "plain").rglob("deviceid"))  # the check can see it ...
    assert [str(p) for p in (tmp_path / "affedge").rglob("*")] == []  # ... and affedge: nothing
