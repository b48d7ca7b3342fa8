"""Smoke test of ``affedge bench``: a real (small, random-weights) bundle, a real clip, real
timings; asserts the JSON structure and that every latency summary is positive and ordered.
No timing thresholds (speed lives in benchmarks/)."""
from __future__ import annotations

import argparse
import json
import math
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from affedge.benchmarking.harness import LatencyStats, measure
from affedge.benchmarking.pipeline import STAGES

STAT_KEYS = ("n", "mean_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "fps")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """The random-weights bundle a bench without a bundle exports (``fresh_bundle``), written
    by torch's legacy ONNX exporter here (~5 s against ~25 s; bench measures whatever graphs
    it is given)."""
    from affedge.benchmarking.pipeline import fresh_bundle

    torch.set_num_threads(1)
    return fresh_bundle(tmp_path_factory.mktemp("bench") / "bundle", "mobile", int8=True,
                        say=lambda m: None, onnx_exporter="legacy")


@pytest.fixture(scope="module")
def result(bundle_dir, tmp_path_factory):
    from affedge.benchmarking import roofline
    from affedge.commands import bench

    # the roofline's GEMM peaks at 256 instead of 1024: the same code, ~60x less work (the
    # emulated bf16 GEMM alone took ~20 s of this suite on a CPU without AVX512-BF16)
    mp = pytest.MonkeyPatch()
    mp.setattr(roofline, "GEMM_SIZE", 256)
    out = tmp_path_factory.mktemp("benchout") / "out.json"
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    args = p.parse_args([str(bundle_dir), "--frames", "20", "--warmup", "2", "--window", "130",
                         "--json", str(out)])
    try:
        rc = bench.run(args)
    finally:
        mp.undo()
    return rc, json.loads(out.read_text())


def _check_stats(s: dict, where: str) -> None:
    assert set(STAT_KEYS) <= set(s), f"{where}: keys {sorted(s)}"
    assert s["n"] >= 1, where
    for k in STAT_KEYS[1:]:
        assert isinstance(s[k], float) and math.isfinite(s[k]) and s[k] > 0, (where, k, s[k])
    assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"], (where, s)
    assert s["min_ms"] <= s["mean_ms"] <= s["max_ms"], (where, s)
    assert abs(s["fps"] - 1000.0 / s["mean_ms"]) < 1e-6 * s["fps"], (where, s)


def test_exit_code_and_sections(result):
    rc, doc = result
    assert rc == 0
    assert doc["schema"] == "affedge-bench/1"
    for key in ("machine_at_start", "machine_at_end", "config", "bundle", "encoder_formats",
                "clip", "pipeline_backend", "stages", "single_stream", "reference", "targets",
                "roofline"):
        assert key in doc, key
    assert doc["config"]["frames"] == 20 and doc["config"]["threads"] == 1
    assert doc["bundle"]["encoder"] == "mobile"
    m = doc["machine_at_start"]
    assert m["usable_cores"] >= 1 and len(m["loadavg_1_5_15"]) == 3


def test_every_stage_has_ordered_positive_percentiles(result):
    _, doc = result
    assert list(doc["stages"]) == list(STAGES)
    for name, s in doc["stages"].items():
        _check_stats(s, name)
        assert s["n"] == 20 or name.startswith("end_to_end"), (name, s["n"])
    assert doc["single_stream"]["p90_ms"] == doc["stages"]["whole_frame"]["p90_ms"]
    # the tick's own time split: detector, encoder and step calls inside it, and the rest
    bd = doc["whole_frame_breakdown"]
    assert bd["detect"] > 0 and bd["encoder"] > 0 and bd["step"] > 0
    assert bd["whole_frame_mean"] == pytest.approx(doc["stages"]["whole_frame"]["mean_ms"])
    parts = bd["detect"] + bd["encoder"] + bd["step"] + bd["other"]
    assert parts == pytest.approx(bd["whole_frame_mean"])
    assert bd["detect"] + bd["encoder"] + bd["step"] < bd["whole_frame_mean"]
    for name in ("detect", "encoder", "step"):
        _check_stats(bd["calls"][name], f"in-tick {name}")
    # asynchronous full passes (the push API's default on two cores) are timed beside the
    # tick, on the worker thread, and not subtracted from it
    from affedge.sdk.backends.threads import usable_cpus

    if usable_cpus() >= 2:
        assert bd["detect_worker"] > 0
        _check_stats(bd["calls"]["detect_worker"], "full passes on the worker")
    # the synthetic/demo clip shows a face: the detector found it in most frames
    assert doc["clip"]["faces_detected"] > 0.5


def test_encoder_formats_table(result):
    _, doc = result
    rows = {(r["format"], r["precision"]): r for r in doc["encoder_formats"]}
    fp32 = rows[("ONNX Runtime CPU", "fp32")]
    assert fp32["status"] == "ok" and fp32["size_mb"] > 0
    assert fp32["parity_max_abs"] is not None and fp32["parity_max_abs"] < 1e-3
    _check_stats(fp32["stats"], "encoder onnx fp32")
    int8 = rows[("ONNX Runtime CPU", "int8")]
    assert int8["status"] == "ok" and int8["size_mb"] < fp32["size_mb"]
    _check_stats(int8["stats"], "encoder onnx int8")
    # the bundle has no TorchScript artifact: reported as absent, not an error
    assert rows[("TorchScript", "fp32")]["status"] == "absent"
    for r in doc["encoder_formats"]:
        assert r["status"] in ("ok", "absent", "unavailable"), r


def test_reference_and_roofline(result):
    _, doc = result
    ref = doc["reference"]
    assert ref["window"] == 130
    _check_stats(ref["streaming"], "streaming")
    _check_stats(ref["reference"], "reference")
    assert ref["ratio_p50"] > 0
    rf = doc["roofline"]
    assert rf["flops"]["encoder"] > 0 and rf["flops"]["step"] > 0 and rf["flops"]["window_130"] > 0
    for prec in ("fp32", "bf16", "int8"):
        assert rf["peaks"][prec]["gflops"] > 0, prec
    parts = {(r["part"], r["precision"]) for r in rf["rows"]}
    assert ("encoder (ONNX Runtime CPU)", "fp32") in parts
    assert ("encoder (ONNX Runtime CPU)", "int8") in parts
    for r in rf["rows"]:
        assert r["bound_ms"] > 0 and r["measured_ms"] > 0
        assert r["achieved_over_limit"] == pytest.approx(r["bound_ms"] / r["measured_ms"])


def test_targets_reported(result):
    _, doc = result
    t = doc["targets"]
    assert t["encoder"] == "mobile"
    assert t["whole_frame_p99_over_encoder_p99"] > 0
    assert t["whole_frame_p50_over_encoder_p50"] > 1  # the tick contains the encoder call
    assert t["whole_frame_p99_over_encoder_p99_vs_isolated_encoder"] > 0
    assert isinstance(t["end_to_end_at_least_60fps"], bool)
    assert isinstance(t["end_to_end_at_least_120fps"], bool)
    # both capture loops were timed (interleaved runs) and compared
    assert t["pipeline_speedup"] == pytest.approx(
        t["end_to_end_fps"] / t["end_to_end_serial_fps"])


def test_latency_stats_and_measure():
    s = LatencyStats.from_samples([3.0, 1.0, 2.0, 4.0])
    assert (s.n, s.min_ms, s.max_ms, s.mean_ms) == (4, 1.0, 4.0, 2.5)
    assert s.p50_ms == 2.5 and s.fps == 400.0
    with pytest.raises(ValueError, match="no samples"):
        LatencyStats.from_samples([])
    with pytest.raises(ValueError, match="finite"):
        LatencyStats.from_samples([1.0, float("nan")])
    calls = []
    st = measure(lambda: calls.append(1), iters=7, warmup=3)
    assert len(calls) == 10 and st.n == 7


def test_bad_arguments_are_clear_errors(bundle_dir):
    from affedge.benchmarking.runner import run_bench

    with pytest.raises(ValueError, match="--frames"):
        run_bench(str(bundle_dir), frames=0)
    with pytest.raises(ValueError, match="threads"):
        run_bench(str(bundle_dir), threads=0)


def test_detect_every_defaults_to_the_runtime_default(result):
    """--detect-every left out: the pipeline stages run the runtime's detection schedule
    (engine.DEFAULT_DETECT_EVERY), and the report line says so (no "what-if")."""
    from affedge.benchmarking.runner import _detection_note
    from affedge.commands import bench
    from affedge.sdk.engine import DEFAULT_DETECT_EVERY

    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    assert p.parse_args([]).detect_every is None
    assert "what-if" not in p.format_help()
    _, doc = result
    assert doc["config"]["detect_every"] is None
    note = _detection_note(doc["config"]["detect_every"])
    assert f"every {DEFAULT_DETECT_EVERY} frames" in note and "(runtime default)" in note
    assert "full-frame detection on every frame" in _detection_note(1)
    assert "every 7 frames" in _detection_note(7) and "default" not in _detection_note(7)


def test_a_row_that_cannot_run_shows_its_specific_reason():
    """The table cell keeps the reasons under a "...here:" heading (not the heading cut off)."""
    from affedge.benchmarking.report import _short_reason

    why = ("no backend can run bundle /long/path/to/the/demo_bundle here:\n"
           "  openvino: CPU does not report BF16")
    assert _short_reason(why) == "openvino: CPU does not report BF16"
    assert _short_reason("absent: no torchscript encoder") == "absent: no torchscript encoder"
    long = _short_reason("x" * 200)
    assert len(long) == 90 and long.endswith("...")


# ------------------------------------------------------------------------------ short / odd clips
# Each of these runs the real ``affedge bench`` code (bench.add_arguments + bench.run, errors
# turned into the CLI's one-line message) in a child process with a timeout, so a regression
# to an endless loop fails the test instead of hanging the suite.
_BENCH_CHILD = """
import argparse, sys
from affedge.cli import _user_error
from affedge.commands import bench
p = argparse.ArgumentParser()
bench.add_arguments(p)
try:
    sys.exit(bench.run(p.parse_args(sys.argv[1:])))
except Exception as exc:
    msg = _user_error(exc)
    if msg is None:
        raise
    print(f"affedge bench: error: {msg}", file=sys.stderr)
    sys.exit(1)
"""
_BENCH_TIMEOUT_S = 120  # a passing run takes a few seconds; the bug this guards was a hang


def _bench(*args: str):
    import subprocess
    import sys

    cmd = [sys.executable, "-c", _BENCH_CHILD, *map(str, args)]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=_BENCH_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"affedge bench {' '.join(map(str, args))} did not finish in "
                    f"{_BENCH_TIMEOUT_S} s (hang); stderr: {exc.stderr!r}")


@pytest.fixture(scope="module")
def short_clips(tmp_path_factory):
    """Face clips with an audio track of 5 frames and 1 frame, and a 1 s one without audio."""
    import numpy as np
    from media import make_face_video, mux, write_wav

    d = tmp_path_factory.mktemp("clips")
    noise = (0.01 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    write_wav(d / "noise.wav", noise, 16000)
    out = {}
    for name, seconds in (("five", 5 / 25), ("one", 1 / 25)):
        v = make_face_video(d / f"{name}_video.mp4", seconds=seconds, fps=25.0)
        assert v.n_frames == round(seconds * 25)
        out[name] = mux(v.path, d / "noise.wav", d / f"{name}.mp4")
    out["noaudio"] = make_face_video(d / "noaudio.mp4", seconds=1.0, fps=25.0).path  # cv2: no audio
    return out


@pytest.mark.parametrize("clip, extra", [("five", ()), ("one", ("--warmup", "1"))],
                         ids=["5-frame-clip-default-warmup", "1-frame-clip-warmup-1"])
def test_a_clip_shorter_than_the_warmup_finishes(bundle_dir, short_clips, tmp_path, clip, extra):
    """A clip with fewer frames than the per-run end-to-end warm-up used to hang forever after
    "stages on ...": every run skipped all its Predictions. It now finishes with samples."""
    out = tmp_path / "out.json"
    r = _bench(bundle_dir, "--frames", "5", "--no-roofline", "--no-reference", "--clip",
               short_clips[clip], *extra, "--json", out)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["clip"]["frames"] == (5 if clip == "five" else 1)
    for name in ("end_to_end", "end_to_end_serial"):
        _check_stats(doc["stages"][name], name)
        assert doc["stages"][name]["n"] == 5, (name, doc["stages"][name])


def test_a_clip_without_audio_is_benchmarked_with_silence(bundle_dir, short_clips, tmp_path):
    """The run said "no audio track ...; using silence" and then failed in the end-to-end
    stages with "... has no audio track"; now silence is used through the whole run."""
    out = tmp_path / "out.json"
    r = _bench(bundle_dir, "--frames", "5", "--warmup", "2", "--no-roofline", "--no-reference",
               "--clip", short_clips["noaudio"], "--json", out)
    assert r.returncode == 0, r.stderr
    assert "no audio track" in r.stderr and "using silence" in r.stderr
    assert "error" not in r.stderr
    doc = json.loads(out.read_text())
    assert list(doc["stages"]) == list(STAGES)
    for name, s in doc["stages"].items():
        _check_stats(s, name)


@pytest.mark.parametrize("kind", ["missing", "directory", "not-a-video"])
def test_a_bad_clip_is_refused_before_any_measurement(bundle_dir, tmp_path, kind):
    """A nonexistent (or unusable) --clip was only reported after the encoder table (~30 s)."""
    clip = {"missing": tmp_path / "nope.mp4", "directory": tmp_path}.get(kind)
    if clip is None:
        clip = tmp_path / "text.mp4"
        clip.write_text("not a video\n")
    r = _bench(bundle_dir, "--frames", "5", "--no-roofline", "--no-reference", "--clip", clip)
    assert r.returncode == 1, (r.stdout, r.stderr)
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("affedge bench: error:")]
    assert len(err) == 1 and str(clip) in err[0], r.stderr
    assert {"missing": "does not exist", "directory": "not a file",
            "not-a-video": "cannot decode"}[kind] in err[0]
    assert "encoder in every format" not in r.stderr and "Traceback" not in r.stderr


def test_an_unavailable_row_keeps_its_whole_reason(bundle_dir, tmp_path, monkeypatch, capsys):
    """A row no backend can run kept only the heading line of select_backend's error ("no
    backend can run bundle ... here:"), in the table and the JSON; the specific reason under it
    was lost. A real (encoder-only) bench run with the ORT CPU int8 runner made unavailable."""
    from affedge.commands import bench
    from affedge.sdk.backends import select as select_mod
    from affedge.sdk.backends.base import BackendUnavailable

    real = select_mod._factory

    def factory(name, opts):
        if name == "ort-cpu" and opts.get("precision") == "int8":
            def refuse(b):
                raise BackendUnavailable("CPU does not report VNNI\nand a second detail line")
            return refuse
        return real(name, opts)

    monkeypatch.setattr(select_mod, "_factory", factory)
    out = tmp_path / "out.json"
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    rc = bench.run(p.parse_args([str(bundle_dir), "--encoder-only", "--no-roofline", "--frames",
                                 "3", "--warmup", "1", "--json", str(out)]))
    assert rc == 0
    table = capsys.readouterr().out
    rows = {(r["format"], r["precision"]): r for r in json.loads(out.read_text())
            ["encoder_formats"]}
    row = rows[("ONNX Runtime CPU", "int8")]
    assert row["status"] == "unavailable"
    why = row["reason"]
    assert "\n" not in why
    for part in ("ort-cpu: CPU does not report VNNI", "and a second detail line",
                 f"no backend can run bundle {bundle_dir}", ):
        assert part in why, why
    assert rows[("ONNX Runtime CPU", "fp32")]["status"] == "ok"  # only that row is refused
    line = next(ln for ln in table.splitlines() if "int8" in ln and "ONNX Runtime CPU" in ln)
    assert "unavailable: ort-cpu: CPU does not report VNNI" in line, line


def test_unavailable_reason_is_one_whole_line():
    from affedge.benchmarking.pipeline import unavailable_reason

    assert unavailable_reason(RuntimeError("no backend can run bundle b here:\n  openvino: "
                                           "CPU does not report BF16\n  torch: no torch")) == \
        "openvino: CPU does not report BF16; torch: no torch (no backend can run bundle b here)"
    assert unavailable_reason(ValueError("first\nsecond")) == "first; second"
    assert unavailable_reason(ValueError("x" * 300)) == "x" * 300  # not cut
    assert unavailable_reason(ValueError("")) == "ValueError"


def test_sigterm_removes_the_bench_temporary_directory(bundle_dir, tmp_path):
    """SIGTERM while bench holds its work directory (/tmp/affedge-bench-*): exit 143 with one
    line, and the directory is removed (before, the signal's default action left it behind)."""
    import signal
    import subprocess
    import sys
    import time

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    err = tmp_path / "stderr.txt"
    with open(err, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", _BENCH_CHILD, str(bundle_dir),
                                 "--frames", "100000", "--no-roofline", "--no-reference"],
                                env=env, stdout=subprocess.DEVNULL, stderr=fh)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp.glob("affedge-bench-*")):
            assert proc.poll() is None, f"bench ended ({proc.returncode}): {err.read_text()}"
            assert time.monotonic() < deadline, "no affedge-bench-* directory within 120 s"
            time.sleep(0.05)
        time.sleep(1.0)  # inside the measurement
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    text = err.read_text()
    assert rc == 128 + signal.SIGTERM, (rc, text)
    assert "terminated by SIGTERM" in text and "Traceback" not in text, text
    # (a third-party library leaves its own '.ses' session file in TMPDIR; ours are affedge-*)
    assert not list(tmp.glob("affedge-*")), list(tmp.iterdir())


def test_a_backend_that_cannot_run_here_is_refused_before_any_measurement():
    """Found by a new-user trial: ``bench --backend tensorrt`` measured the whole encoder
    format table (seconds) before refusing."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "affedge.cli", "bench", "--backend", "tensorrt",
                        "--frames", "5", "--no-roofline"], capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("affedge bench: error: no backend can "
                                                        "run"), r.stderr
    assert "tensorrt:" in r.stderr and "encoder in every format" not in r.stderr, r.stderr


def test_a_busy_machine_is_said_under_the_machine_line():
    """Found by a new-user trial: one run measured an encoder at 2.06 ms p50, the next at
    17.85 ms, at load 3-4 on 2 cores; the load was printed, but nothing said the figures were
    unreliable."""
    from affedge.benchmarking.runner import _busy_note

    idle = {"usable_cores": 2, "loadavg_1_5_15": [0.4, 0.5, 0.5]}
    busy = {"usable_cores": 2, "loadavg_1_5_15": [3.6, 3.0, 2.0]}
    assert _busy_note(idle) == ""  # (the load at the end counts the run's own threads)
    assert "busy as the run began (1-minute load 3.6 on 2 cores)" in _busy_note(busy)
