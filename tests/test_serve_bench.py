"""benchmarks/bench_serve.py runs end to end with tiny settings (the numbers come from the full
run; this checks the harness: every frame of every source predicted, messages received)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("zmq")
pytest.importorskip("websockets")
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_bench_serve_small(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_serve.py"),
                        "--clip-seconds", "0.5", "--repeats", "1", "--latency-seconds", "1.5",
                        "--clients", "3", "--client-seconds", "2", "--json", str(out)],
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                       text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    th = res["throughput"]
    assert len(th["frames"]) == 4 and min(th["frames"]) >= 14  # 0.5 s at 30 fps each
    assert th["hub_mean_batch"][0] > 1.0 and th["ratio_median"] > 0
    for v in ("hub", "independent"):  # the process's CPU time over each timed run
        cpu = th["cpu"][v][0]
        assert cpu["ms_per_frame"] > 0 and 0 < cpu["cores_busy"] <= os.cpu_count() + 0.5
    assert th["cpu_ratio_median"] > 0
    for kind in ("zmq", "ws"):
        lat = res["latency"][kind]
        assert lat["messages"] == lat["pushed"] > 10
        assert lat["extra_ms_p50"] > 0  # arrival after the prediction was made
    cl = res["clients"]
    assert cl["min_messages_per_client"] > 0 and cl["frames_clients"] > 0
