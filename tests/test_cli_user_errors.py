"""User mistakes get one line on stderr and exit 1 (or 2 for usage), never a traceback: real
``python -m affedge.cli`` subprocesses on real files. Outputs are checked before a run starts,
so a bad ``--plot`` does not cost a whole run."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from affedge.sdk.recognizer import DEMO_BUNDLE, DEMO_CLIP

ROOT = Path(__file__).resolve().parents[1]
HAVE_DEMO = (DEMO_BUNDLE / "manifest.json").is_file() and DEMO_CLIP.is_file()
needs_demo = pytest.mark.skipif(not HAVE_DEMO, reason="demo assets missing")


def affedge(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("AFFEDGE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "affedge.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def one_line_error(r: subprocess.CompletedProcess, code: int = 1, *needles: str) -> str:
    err = r.stderr.strip()
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
    return err


# ------------------------------------------------------------------------------ run --out/--plot
@needs_demo
def test_out_is_a_directory(tmp_path):
    d = tmp_path / "outdir.csv"
    d.mkdir()
    one_line_error(affedge("run", DEMO_CLIP, "--out", d, "-q"), 1, "--out", "is a directory")


@needs_demo
def test_out_under_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    one_line_error(affedge("run", DEMO_CLIP, "--out", f / "p.csv", "-q"), 1, "--out",
                   "not a directory")


@needs_demo
def test_a_run_refused_before_its_first_frame_leaves_an_earlier_out_whole(tmp_path):
    """No backend here (TensorRT): the run is refused, and the CSV of an earlier run at the
    same --out path keeps its rows (it used to be truncated to its header)."""
    keep = tmp_path / "keep.csv"
    keep.write_text("frame,valence\n0,0.1\n1,0.2\n")
    one_line_error(affedge("run", DEMO_CLIP, "--backend", "tensorrt", "--out", keep, "-q"), 1,
                   "tensorrt")
    assert keep.read_text() == "frame,valence\n0,0.1\n1,0.2\n"
    fresh = tmp_path / "new.jsonl"
    one_line_error(affedge("run", DEMO_CLIP, "--backend", "tensorrt", "--out", fresh, "-q"), 1)
    assert not fresh.exists()  # nothing half-made either


@needs_demo
def test_a_source_that_fails_to_open_leaves_an_earlier_out_whole(tmp_path):
    """A truncated video, or an audio file that does not exist, fails after the model has
    loaded: the CSV of an earlier run at the same --out path keeps its rows (the file used to
    be emptied to its header when the model had loaded, before the source was opened)."""
    truncated = tmp_path / "trunc.mp4"
    truncated.write_bytes(DEMO_CLIP.read_bytes()[:20000])
    keep = tmp_path / "keep.csv"
    keep.write_text("frame,valence\n0,0.1\n1,0.2\n")
    for args in ((truncated,), (DEMO_CLIP, "--audio", tmp_path / "missing.wav")):
        r = affedge("run", *args, "--out", keep, "-q")
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert keep.read_text() == "frame,valence\n0,0.1\n1,0.2\n", args


@needs_demo
def test_several_outs_are_all_written_and_one_given_twice_is_refused(tmp_path):
    """``--out`` repeats, as in ``serve`` (a second one used to replace the first silently)."""
    import csv
    import json

    a, b = tmp_path / "a.csv", tmp_path / "b.jsonl"
    r = affedge("run", DEMO_CLIP, "--out", a, "--out", b, "--max-frames", "12", "-q")
    assert r.returncode == 0, r.stderr
    with open(a, newline="") as fh:
        rows = list(csv.DictReader(fh))
    recs = [json.loads(line) for line in b.read_text().splitlines()]
    assert [int(x["frame"]) for x in rows] == [x["frame"] for x in recs] == list(range(12))
    one_line_error(affedge("run", DEMO_CLIP, "--out", a, "--out", str(a), "-q"), 1,
                   "--out", "given twice")


@needs_demo
def test_out_unknown_kind(tmp_path):
    one_line_error(affedge("run", DEMO_CLIP, "--out", tmp_path / "p.txt", "-q"), 1,
                   ".csv", ".jsonl")


@pytest.fixture
def full_disk(tmp_path):
    """A directory on a full file system: a 32 KiB tmpfs when this process may mount one, else
    a directory whose .csv name is a symlink to /dev/full (every write: ENOSPC)."""
    mnt = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mnt)],
                       capture_output=True, check=False)
    if r.returncode == 0:
        yield mnt / "p.csv"
        subprocess.run(["umount", str(mnt)], check=False)
        return
    if not os.path.exists("/dev/full"):
        pytest.skip("cannot mount a tmpfs and there is no /dev/full")
    (mnt / "p.csv").symlink_to("/dev/full")
    yield mnt / "p.csv"


@needs_demo
def test_disk_full_is_one_line_with_the_rows_written(full_disk):
    err = one_line_error(affedge("run", DEMO_CLIP, "--out", full_disk, "-q"), 1,
                         "--out", "No space left on device")
    assert "rows" in err


@needs_demo
def test_plot_must_be_a_png_and_is_checked_before_the_run(tmp_path):
    out = tmp_path / "p.csv"
    one_line_error(affedge("run", DEMO_CLIP, "--plot", tmp_path / "x.txt", "--out", out), 1,
                   "--plot", ".png")
    assert not out.exists()  # refused before any output was opened or any frame ran


@needs_demo
def test_plot_into_an_unwritable_place(tmp_path):
    one_line_error(affedge("run", DEMO_CLIP, "--plot", "/proc/affedge_va.png"), 1, "--plot")
    f = tmp_path / "afile"
    f.write_text("x")
    one_line_error(affedge("run", DEMO_CLIP, "--plot", f / "va.png"), 1, "--plot",
                   "not a directory")


@needs_demo
def test_yunet_model_that_is_not_onnx(tmp_path):
    bad = tmp_path / "yunet.onnx"
    bad.write_text("this is not a protobuf\n")
    one_line_error(affedge("run", DEMO_CLIP, "--detector", "yunet", "--yunet-model", bad), 1,
                   "--yunet-model", "cannot load")
    one_line_error(affedge("run", DEMO_CLIP, "--detector", "yunet"), 1, "--yunet-model")


@pytest.mark.parametrize("n", ["0", "-5", "x"])
def test_max_frames_must_be_positive(n):
    one_line_error(affedge("run", "clip.mp4", "--max-frames", n), 2, "--max-frames",
                   "affedge run --help")


def test_missing_video_file_is_refused_before_the_model_loads(tmp_path):
    """One line, and no "affedge run: ... backend ..." status line before it (the model used
    to be loaded first)."""
    r = affedge("run", tmp_path / "missing.mp4")
    one_line_error(r, 1, "video file not found", "missing.mp4")
    assert "backend" not in r.stderr, r.stderr


def test_missing_bundle(tmp_path):
    one_line_error(affedge("run", "0", "--bundle", tmp_path / "nope", "-q"), 1)


# ------------------------------------------------------------------------------ other commands
def test_synth_onto_an_existing_file(tmp_path):
    f = tmp_path / "data"
    f.write_text("x")
    one_line_error(affedge("synth", f, "--videos", "1"), 1, "is a file")
    assert f.read_text() == "x"


@needs_demo
def test_demo_when_out_dir_is_a_file(tmp_path):
    f = tmp_path / "demo_out"
    f.write_text("x")
    one_line_error(affedge("demo", "--out-dir", f, "--fast"), 1, "--out-dir", "is a file")


def test_doctor_with_a_bad_bundle_exits_non_zero(tmp_path):
    bad = tmp_path / "bad_bundle"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    r = affedge("doctor", "--bundle", bad, "--no-devices")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "bundle" in r.stderr and "error" in r.stderr
    # the one-line error carries the reason, not Python's exception class name
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("affedge doctor: error: bundle") and "Error:" not in last, last


def test_export_tensorrt_without_tensorrt_refuses_and_writes_nothing(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    out = tmp_path / "bundle"
    one_line_error(affedge("export", ckpt, "-o", out, "--format", "onnx,tensorrt"), 1,
                   "tensorrt", "nothing was written")
    assert not out.exists()


def test_export_fp16_without_a_format_that_uses_it(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    out = tmp_path / "bundle"
    one_line_error(affedge("export", ckpt, "-o", out, "--fp16"), 1, "--fp16", "tensorrt")
    assert not out.exists()


def test_export_unknown_format(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    one_line_error(affedge("export", ckpt, "-o", tmp_path / "b", "--format", "onnx,tflite"), 1,
                   "tflite")


def test_train_on_a_data_set_too_small_for_its_folds(tmp_path):
    data = tmp_path / "small"
    r = affedge("synth", data, "--videos", "3", "--seconds", "0.5", "--fps", "10", "-q")
    assert r.returncode == 0, r.stderr
    err = one_line_error(affedge("train", data, "--encoder", "mobile", "--out",
                                 tmp_path / "run"), 1, ">= 5 Train_Set", "6 in all")
    assert "--videos 6" in err
    assert not (tmp_path / "run").exists()


def test_a_stopped_synth_is_named_incomplete_by_synth_and_train(tmp_path):
    """Ctrl-C during synth left some videos and no synthetic.json: synth again said 'already
    holds a data set' and train would have trained on the fragment without a word."""
    import signal
    import time

    data = tmp_path / "d"
    proc = subprocess.Popen(
        # 40 videos: enough that synth is still writing when the signal lands (with 8, a CI
        # run saw it finish between the first video and the SIGINT: exit 0)
        [sys.executable, "-m", "affedge.cli", "synth", str(data), "--videos", "40", "--seconds",
         "3", "--fps", "10", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list((data / "raw_videos").glob("*.mp4")) and proc.poll() is None:
        assert time.monotonic() < deadline, "synth wrote no video within 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, proc.stderr.read()
    assert not (data / "synthetic.json").exists()
    one_line_error(affedge("synth", data, "--videos", "8", "-q"), 1, "incomplete data set",
                   "remove it")
    one_line_error(affedge("train", data, "--encoder", "mobile", "--out", tmp_path / "run"), 1,
                   "incomplete synthetic data set", "synth again")
    assert not (tmp_path / "run").exists()


def test_train_on_a_file_and_export_of_a_run_directory_say_what_they_are(tmp_path):
    f = tmp_path / "score.py"
    f.write_text("x")
    one_line_error(affedge("train", f), 1, "score.py is a file", "data set directory")
    run = tmp_path / "runs" / "m"
    (run / "fold0" / "best").mkdir(parents=True)
    one_line_error(affedge("export", run, "-o", tmp_path / "b"), 1, "is a training run",
                   str(run / "fold0" / "best"))


def test_verbose_shows_the_traceback(tmp_path):
    f = tmp_path / "data"
    f.write_text("x")
    r = affedge("synth", f, "-v")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_onnxruntime_invalid_argument_is_one_line(tmp_path):
    """A real ONNX Runtime InvalidArgument (wrong input rank) becomes one line."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from affedge.cli import _user_error

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path / "relu.onnx"
    onnx.save(m, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception) as ei:
        sess.run(None, {"x": np.zeros((2, 2, 2), np.float32)})
    msg = _user_error(ei.value)
    assert msg is not None and "\n" not in msg and "x" in msg, msg


def test_overlay_window_starts_at_a_readable_size():
    from affedge.sdk.overlay import WINDOW_LONG_SIDE, window_size

    assert window_size(320, 240) == (900, 675)  # the demo clip: scaled up, aspect kept
    assert window_size(3840, 2160) == (1280, 720)  # 4K: fits a laptop screen
    assert window_size(1000, 700) == (1000, 700)
    lo, hi = WINDOW_LONG_SIDE
    for w, h in ((160, 120), (640, 480), (1920, 1080), (480, 640)):
        ww, hh = window_size(w, h)
        assert lo <= max(ww, hh) <= hi and abs(ww / hh - w / h) < 0.01


# ------------------------------------------------------------------------------ found by a new user
@needs_demo
def test_an_unusable_backend_keeps_its_reason_on_the_one_line():
    """The message's first line ends with a colon and the reasons follow it: they are joined
    onto the one line instead of being dropped (TensorRT cannot exist here)."""
    err = one_line_error(affedge("run", DEMO_CLIP, "--backend", "tensorrt", "-q"), 1,
                         "no backend can run bundle", "tensorrt:")
    assert not err.endswith(":"), err


def test_a_text_file_as_video_prints_no_native_library_lines(tmp_path, monkeypatch):
    """OpenCV's and FFmpeg's own stderr lines stay quiet unless -v; our message remains."""
    # an in-process CLI call earlier in this session set these for its own process (and so for
    # its children, ours included): start from what a user's shell has
    monkeypatch.delenv("OPENCV_FFMPEG_LOGLEVEL", raising=False)
    monkeypatch.delenv("OPENCV_LOG_LEVEL", raising=False)
    f = tmp_path / "notes.mp4"
    f.write_text("not a video\n")
    err = one_line_error(affedge("run", f, "-q"), 1, "cannot open video file")
    assert "moov atom" not in err and "[ WARN" not in err
    loud = affedge("run", f, "-v")
    assert loud.returncode == 1 and "moov atom" in loud.stderr


@needs_demo
def test_serve_stops_when_the_reader_of_stdout_leaves():
    """``affedge serve --out - | head -2``: the command ends (exit 0) instead of running every
    source to its end with nowhere to send the predictions."""
    import json

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen([sys.executable, "-m", "affedge.cli", "serve", "--source", str(DEMO_CLIP),
                          "--audio", "video", "--name", "a", "--source", str(DEMO_CLIP),
                          "--audio", "video", "--name", "b", "--out", "-"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = [json.loads(p.stdout.readline()) for _ in range(2)]
        p.stdout.close()  # the reader leaves, like `head -2`
        rc = p.wait(timeout=60)
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
    assert {r["source"] for r in first} <= {"a", "b"}
    assert rc == 0, err
    assert "no output left" in err and "Traceback" not in err
    # the two 600-frame sources did not run to their end
    assert "a: 600 predictions" not in err, err


# ------------------------------------------------------------- an install without the extras
def _without(tmp_path, *modules: str) -> dict:
    """An environment where importing ``modules`` fails as it does when they are not installed
    (a module of that name earlier on the path raising ImportError, as a --no-deps install on a
    Jetson lacks them)."""
    shadow = tmp_path / "shadow"
    shadow.mkdir(exist_ok=True)
    for m in modules:
        (shadow / f"{m}.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{m}'\", name='{m}')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), str(ROOT)])}
    env.pop("AFFEDGE_DEBUG", None)
    return env


@needs_demo
def test_without_pyav_a_video_file_runs_on_the_face_alone_and_says_so(tmp_path):
    out = tmp_path / "p.csv"
    r = subprocess.run([sys.executable, "-m", "affedge.cli", "run", str(DEMO_CLIP),
                        "--max-frames", "3", "--out", str(out)], env=_without(tmp_path, "av"),
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "no audio: reading a video file's audio track needs PyAV" in r.stderr, r.stderr
    assert "affedge[video-audio]" in r.stderr
    d = subprocess.run([sys.executable, "-m", "affedge.cli", "doctor"], capture_output=True,
                       env=_without(tmp_path, "av"), text=True, timeout=300, check=False)
    assert "av MISSING (a video file's audio track)" in d.stdout + d.stderr


@needs_demo
def test_a_minimal_install_runs_the_demo_and_names_the_extra_it_lacks(tmp_path):
    """Found by a minimal-install trial (numpy, OpenCV, ONNX Runtime only): ``affedge demo``
    failed for want of PyAV (the README's first command); train/synth said only "No module
    named 'torch'" / "'av'", and synth left empty folders behind."""
    def cli(*args, missing=("av",)):
        return subprocess.run([sys.executable, "-m", "affedge.cli", *map(str, args)],
                              env=_without(tmp_path, *missing), capture_output=True, text=True,
                              timeout=300, check=False)

    r = cli("demo", "--fast", "--out-dir", tmp_path / "demo")
    assert r.returncode == 0, r.stderr
    assert "without audio (reading its track needs PyAV" in r.stderr
    assert "CCC vs ground truth" in r.stdout
    r = cli("serve", "--source", DEMO_CLIP, "--out", tmp_path / "s.jsonl")
    assert r.returncode == 0, r.stderr
    assert "no audio: reading a file's audio track needs PyAV" in r.stderr
    one_line_error(cli("synth", tmp_path / "data", "--videos", "1", "--seconds", "1"), 1,
                   "PyAV", "pip install 'affedge[video-audio]'")
    assert not (tmp_path / "data").exists()
    one_line_error(cli("train", tmp_path / "data", missing=("torch",)), 1,
                   "No module named 'torch'", "pip install 'affedge[train]'")


def test_without_soxr_16khz_audio_works_and_resampling_says_how_to_install(tmp_path):
    code = ("import numpy as np\n"
            "from affedge.features.audio_io import StreamResampler\n"
            "x = np.zeros(1600, np.float32)\n"
            "assert StreamResampler(16000, 16000).push(x).size == 1600\n"
            "try:\n"
            "    StreamResampler(48000, 16000)\n"
            "except ImportError as exc:\n"
            "    print(exc)\n")
    r = subprocess.run([sys.executable, "-c", code], env=_without(tmp_path, "soxr"),
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "needs the soxr package" in r.stdout and "pip install 'soxr>=0.3.7'" in r.stdout


def test_doctor_names_a_missing_bundle_once(tmp_path):
    missing = tmp_path / "no_such_bundle"
    r = affedge("doctor", "--bundle", missing, "--no-devices")
    assert r.returncode == 1, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("affedge doctor: error: ") and last.count(str(missing)) == 1, last
    # ... and only there (the report above it said it too: the error came out twice)
    assert (r.stdout + r.stderr).count(str(missing)) == 1, r.stdout + r.stderr
    # the report lists the serve extras beside the audio ones
    assert re.search(r"serve packages: pyzmq \S+, websockets \S+, pyyaml \S+", r.stdout), r.stdout
    # ... and the CPU the numbers depend on (model, cores, SIMD flags, load)
    assert re.search(r"^cpu: .+; \d+ usable of \d+ logical cores; .+; load [\d.]+ ", r.stdout,
                     re.M), r.stdout


@needs_demo
def test_new_user_trial_messages_name_the_option_and_the_way_out(tmp_path):
    """Found by a new-user trial: each of these used to mislead (an internal name, advice the
    command cannot follow, a file reported missing that exists)."""
    wav = tmp_path / "speech.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(DEMO_CLIP), "-vn", "-t", "2",
                    str(wav)], check=True, timeout=120)
    # a WAV given as the video: it has no video stream (was "corrupt, truncated ...?")
    one_line_error(affedge("run", wav, "-q"), 1, "has no video stream", "--audio")
    # --threads out of range: argparse's exit 2 under the option's name (was intra_op_threads)
    err = one_line_error(affedge("run", DEMO_CLIP, "--threads", "100", "-q"), 2, "--threads",
                         "at most")
    assert "intra_op_threads" not in err
    # run has no --token: it says so instead of pointing at serve's options as if they were its
    one_line_error(affedge("run", DEMO_CLIP, "--out", "ws://0.0.0.0:8799", "-q"), 1,
                   "loopback only", "affedge serve --token")
    # a labels file that is not text names --labels (was a bare UnicodeDecodeError)
    one_line_error(affedge("demo", "--clip", DEMO_CLIP, "--labels", DEMO_CLIP, "--fast", "-q",
                           "--out-dir", tmp_path / "o"), 1, "--labels", "not a text labels")
    # export given the checkpoint's file: it is a file, export its directory
    ckpt = tmp_path / "best"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"x")
    one_line_error(affedge("export", ckpt / "model.safetensors", "-o", tmp_path / "b"), 1,
                   "is a file", f"export {ckpt}")


@needs_demo
def test_demo_on_a_clip_without_audio_runs_on_the_face_alone(tmp_path):
    """``demo --clip`` has no --audio: a clip without a track used to stop with advice to use a
    microphone or a WAV, which demo cannot take."""
    clip = tmp_path / "silent.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(DEMO_CLIP), "-an", "-t", "1",
                    "-c:v", "libx264", "-preset", "ultrafast", str(clip)], check=True,
                   timeout=120)
    r = affedge("demo", "--clip", clip, "--fast", "--out-dir", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert "without audio (it has no track)" in r.stderr
    assert (tmp_path / "o" / "demo_predictions.csv").read_text().count("\n") == 1 + 30


def test_a_training_checkpoint_given_as_a_bundle_says_how_to_make_one(tmp_path):
    """A new user passed ``runs/m/fold0/best`` to ``run --bundle`` and got only "manifest.json
    is missing"."""
    from affedge.bundle import BundleError, load_bundle

    run = tmp_path / "runs" / "m"
    best = run / "fold0" / "best"
    best.mkdir(parents=True)
    (best / "model.safetensors").write_bytes(b"\0" * 8)
    (best / "config.json").write_text("{}")
    (run / "crossval.json").write_text("{}")
    one_line_error(affedge("run", DEMO_CLIP, "--bundle", best, "--max-frames", "1"), 1,
                   "manifest.json is missing", "this is a training checkpoint",
                   f"affedge export {best} -o BUNDLE")
    with pytest.raises(BundleError, match=re.escape(f"training run folder; make a bundle with: "
                                                    f"affedge export {best} -o BUNDLE")):
        load_bundle(run)
    with pytest.raises(BundleError, match=r"manifest.json is missing$"):
        load_bundle(tmp_path)  # any other folder: no hint


@needs_demo
def test_demo_on_your_own_bundle_and_labels_names_them_not_the_demo(tmp_path):
    """``demo --bundle mine --clip c --labels l`` closed with "this demo model learned
    synthetic faces and means nothing on real people" and scored "CCC vs ground truth"."""
    import shutil

    from affedge.sdk.recognizer import DEMO_LABELS

    mine = tmp_path / "my_bundle"
    shutil.copytree(DEMO_BUNDLE, mine)
    labels = tmp_path / ("my_labels" + DEMO_LABELS.suffix)
    shutil.copy(DEMO_LABELS, labels)
    r = affedge("demo", "--fast", "--bundle", mine, "--clip", DEMO_CLIP, "--labels", labels,
                "--out-dir", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert f"CCC vs {labels.name} (" in r.stdout and "ground truth" not in r.stdout, r.stdout
    assert "means nothing" not in r.stderr and f"run 0 --bundle {mine}" in r.stderr, r.stderr


@needs_demo
def test_run_audio_video_on_a_silent_file_is_refused_before_the_model_loads(tmp_path):
    """``run clip.mp4 --audio video`` on a file without a track printed the run's start line
    (backend, bundle) and only then failed (serve checks first)."""
    clip = tmp_path / "silent.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(DEMO_CLIP), "-t", "1",
                    "-an", str(clip)], check=True, timeout=120)
    one_line_error(affedge("run", clip, "--audio", "video", "--max-frames", "2"), 1,
                   f"{clip} has no audio track", "--audio none")


@needs_demo
def test_an_out_path_in_missing_folders_creates_them_and_says_so(tmp_path):
    """A typo in an --out folder made folders without a word (``wrote`` named the path)."""
    out = tmp_path / "typo" / "sub" / "va.csv"
    r = affedge("run", DEMO_CLIP, "--max-frames", "2", "--audio", "none", "--out", out)
    assert r.returncode == 0, r.stderr
    assert f"--out {out}: created the folder {out.parent}" in r.stderr, r.stderr
    assert len(out.read_text().splitlines()) == 3  # header + 2 rows
    r = affedge("run", DEMO_CLIP, "--max-frames", "2", "--audio", "none", "--out", out)
    assert r.returncode == 0 and "created the folder" not in r.stderr, r.stderr


def _run_on_a_live_stream(tmp_path, first_row, then, *args):
    """``affedge run URL ARGS`` against an FFmpeg HTTP stream of the demo clip; once
    ``first_row`` exists (the stream runs) and 2 s more, ``then(server)`` acts on the FFmpeg
    server, which is killed afterwards -> (the run's exit code, its stderr)."""
    import time

    from tests.test_serve_helpers import free_port

    url = f"http://127.0.0.1:{free_port()}/live.ts"
    server = subprocess.Popen(["ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i",
                               str(DEMO_CLIP), "-c", "copy", "-f", "mpegts", "-listen", "1", url])
    try:
        run = subprocess.Popen([sys.executable, "-m", "affedge.cli", "run", url, *map(str, args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
        end = time.monotonic() + 120
        while time.monotonic() < end and not first_row.exists():
            time.sleep(0.2)  # the first row is written: the stream runs
        time.sleep(2)
        then(server)
        server.kill()
        _, err = run.communicate(timeout=120)
    finally:
        server.kill()
        server.wait(10)
    return run.returncode, err


@needs_demo
def test_a_stream_that_disconnects_mid_run_still_gets_its_plot_and_summary(tmp_path):
    """Found by a new-user trial: ``run URL --out c.csv --plot p.png`` whose camera stream
    died (the commonest end of a kiosk run) exited with the error alone: no plot, no summary,
    no "wrote" line (a signal got all three)."""
    csv_path, png = tmp_path / "c.csv", tmp_path / "p.png"
    rc, err = _run_on_a_live_stream(tmp_path, csv_path, lambda server: None,  # then it dies
                                    "--out", csv_path, "--plot", png)
    rows = csv_path.read_text().splitlines()
    assert rc == 1 and len(rows) > 30, err
    last = err.strip().splitlines()[-1]
    assert "stopped delivering frames" in last and f"after {len(rows) - 1} frames" in last, err
    assert png.stat().st_size > 10_000
    assert f"wrote {csv_path}, {png}" in err and " fps)" in err, err


@needs_demo
def test_a_stalled_stream_is_reported_while_the_run_waits_for_it(tmp_path):
    """Found by a new-user trial: a camera stream that stalls (here its ffmpeg server stopped
    with SIGSTOP) left the run silent until the stream's 10 s read timeout; the status line
    now says within ~2 s that no frame came and the run waits, and the run goes on when the
    stream comes back."""
    import signal
    import time

    out = tmp_path / "c.csv"
    stalled = []

    def stall(server):
        server.send_signal(signal.SIGSTOP)  # the camera hangs
        time.sleep(5)
        stalled.append(len(out.read_text().splitlines()))
        server.send_signal(signal.SIGCONT)
        time.sleep(3)  # then it goes away

    _, err = _run_on_a_live_stream(tmp_path, out, stall, "--out", out)
    notes = [ln for ln in err.splitlines() if "no frame for" in ln]
    assert notes and "the source stalled; waiting for it" in notes[0], err
    assert len(notes) <= 3, err  # one line every 2 s, not one per check
    assert len(out.read_text().splitlines()) > stalled[0], err  # it went on after the stall


@needs_demo
def test_demo_labels_of_another_clip_draw_a_warning(tmp_path):
    """Found by a new-user trial: ``demo --clip A --labels B`` scored clip A against another
    video's labels without a word; and a non-text labels file was refused without saying
    which formats are taken."""
    from affedge.sdk.recognizer import DEMO_LABELS

    rows = DEMO_LABELS.read_text().splitlines()
    short = tmp_path / "other.txt"  # the labels of a shorter video
    short.write_text("\n".join(rows[:401]) + "\n")
    r = affedge("demo", "--fast", "--labels", short, "--out-dir", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    last = rows[400].split(",")[0]
    assert f"--labels {short}: the labels cover frames 0-{last} but the clip has 600 frames: " \
        "labels of another clip?" in r.stderr, r.stderr[-800:]
    ok = affedge("demo", "--fast", "--out-dir", tmp_path / "o2")
    assert ok.returncode == 0 and "labels of another clip" not in ok.stderr
    binary = tmp_path / "gt.npz"
    binary.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xff\xfe")
    r = affedge("demo", "--fast", "--labels", binary, "--out-dir", tmp_path / "o3")
    assert r.returncode != 0 and "'frame,valence,arousal' CSV" in r.stderr, r.stderr[-500:]


@needs_demo
def test_serve_whose_only_output_fails_exits_1_and_names_it(full_disk):
    """Found by an operator's trial: serve whose only output hit a full disk stopped with
    "no output left" and exit code 0, so a supervisor's restart-on-failure left it down. A
    reader that quits (``--out - | head``) is still a normal end (exit 0, tested in
    test_serve.py)."""
    r = affedge("serve", "--source", DEMO_CLIP, "--out", full_disk, "-q")  # 600 rows > 32 KiB
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "No space left on device" in r.stderr and "Traceback" not in r.stderr
    assert "outputs that failed and were dropped" in r.stderr
    if not full_disk.is_symlink():  # a real full file system: the file ends with a whole row
        data = full_disk.read_text()  # (the trial's ended in half a row)
        lines = data.splitlines()
        assert data.endswith("\n") and len(lines) > 2
        assert len({len(x.split(",")) for x in lines}) == 1, lines[-1]


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path):
    """A QA trial: ``affedge run still.png --plot still.png`` replaced the photo with the plot;
    the same for ``--out`` on the audio file."""
    import cv2
    import numpy as np

    img = tmp_path / "still.png"
    cv2.imwrite(str(img), np.full((120, 160, 3), 90, np.uint8))
    before = img.read_bytes()
    r = affedge("run", img, "--plot", img, "--audio", "none")
    one_line_error(r, 1, f"--plot {img}: that is an input of this run")
    import wave

    wav = tmp_path / "a.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 1600)
    sound = wav.read_bytes()
    r = affedge("run", img, "--audio", wav, "--out", wav)
    one_line_error(r, 1, f"--out {wav}: that is an input of this run")
    assert img.read_bytes() == before and wav.read_bytes() == sound


def test_an_unreadable_video_says_so(tmp_path):
    """A QA trial: a video without read permission was called "corrupt, truncated or
    unsupported format?"."""
    import shutil as sh

    from affedge.sdk.recognizer import DEMO_CLIP

    v = tmp_path / "v.mp4"
    sh.copy(DEMO_CLIP, v)
    v.chmod(0)
    args = ["run", str(v), "--audio", "none", "--max-frames", "2"]
    if os.geteuid() == 0:  # (root reads anything: drop that power for the child)
        if sh.which("setpriv") is None:
            pytest.skip("running as root without setpriv")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        r = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
                            sys.executable, "-m", "affedge.cli", *args], env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    else:
        r = affedge(*args)
    one_line_error(r, 1, f"cannot read video file {v}: Permission denied")


def test_an_audio_file_without_an_audio_track_says_so_for_the_file_given(tmp_path):
    """A QA trial: ``--audio silent.mp4`` (a video without sound) said "audio='video' needs
    one", about an option the user had not used."""
    from affedge.sdk.recognizer import DEMO_CLIP

    silent = tmp_path / "silent.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(DEMO_CLIP), "-t", "0.5", "-an",
                    "-c:v", "libx264", "-preset", "ultrafast", str(silent)], check=True,
                   timeout=120)
    r = affedge("run", DEMO_CLIP, "--audio", silent, "--max-frames", "3")
    err = one_line_error(r, 1, f"{silent} has no audio track (as the audio, give a file with "
                                "one")
    assert "audio='video'" not in err
