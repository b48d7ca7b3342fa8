"""One grammar for every ``affedge`` subcommand (issue 16): -q/--quiet and -v/--verbose
everywhere, every option documented with its default, progress bars only on a terminal (never
under CI=true, TERM=dumb or NO_COLOR), no carriage-return updates in captured output, results
and "what next" lines. Real ``python -m affedge.cli`` subprocesses; a pseudo-terminal (pty) is
the terminal."""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from affedge.cli import COMMANDS, build_parser
from affedge.sdk.recognizer import DEMO_BUNDLE, DEMO_CLIP

ROOT = Path(__file__).resolve().parents[1]
HAVE_DEMO = (DEMO_BUNDLE / "manifest.json").is_file() and DEMO_CLIP.is_file()
needs_demo = pytest.mark.skipif(not HAVE_DEMO, reason="demo assets missing")
PLAIN_VARS = ("CI", "NO_COLOR", "TQDM_DISABLE", "AFFEDGE_DEBUG")


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PLAIN_VARS}
    env["TERM"] = "xterm-256color"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env.update(extra)
    return env


def affedge(*args, env=None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "affedge.cli", *map(str, args)],
                          env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def affedge_on_tty(*args, env=None, timeout: float = 300) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal; returns (exit code, raw output)."""
    import pty
    import select

    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100
    p = subprocess.Popen([sys.executable, "-m", "affedge.cli", *map(str, args)],
                         env=env or clean_env(), stdin=slave, stdout=slave, stderr=slave,
                         close_fds=True)
    os.close(slave)
    out = bytearray()
    try:
        while True:
            r, _, _ = select.select([master], [], [], timeout)
            if not r:
                raise TimeoutError(out.decode(errors="replace"))
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        rc = p.wait(timeout=60)
    return rc, out.decode(errors="replace")


BARE_CR = re.compile(r"\r(?!\n)")  # a terminal turns \n into \r\n; a bar rewrites with \r


# ------------------------------------------------------------------------------ parser shape
def subparsers() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_subcommand_shares_quiet_and_verbose_and_documents_every_option():
    subs = subparsers()
    assert set(subs) == set(COMMANDS)
    for name, sp in subs.items():
        opts = {s for a in sp._actions for s in a.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose"} <= opts, name
        assert "--no-progress" not in opts or name in ("synth", "train"), name
        fmt = sp.formatter_class(prog=sp.prog)
        for a in sp._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert a.help and a.help.strip(), f"affedge {name} {a.option_strings or a.dest}"
            shown = fmt._get_help_string(a)
            if a.default not in (None, False, argparse.SUPPRESS):
                assert "default" in shown.lower(), f"affedge {name} {a.option_strings}: {shown}"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_of_every_subcommand(name):
    r = affedge(name, "--help")
    assert r.returncode == 0, r.stderr
    assert "-q, --quiet" in r.stdout and "-v, --verbose" in r.stdout
    assert r.stderr == ""


def test_quiet_and_verbose_exclude_each_other():
    r = affedge("doctor", "-q", "-v")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_run_shares_demo_defaults_and_has_the_api_knobs():
    subs = subparsers()

    def defaults(sp):
        return {a.dest: a.default for a in sp._actions if a.option_strings}

    run, demo = defaults(subs["run"]), defaults(subs["demo"])
    for k in ("smoothing", "backend", "precision", "threads", "detector", "min_face",
              "detect_every", "max_faces", "bundle", "yunet_model"):
        assert k in run and k in demo and run[k] == demo[k], k
    assert run["smoothing"] == 0.6


# ------------------------------------------------------------------------------ -q / -v at work
@needs_demo
def test_run_quiet_prints_nothing_and_verbose_shows_debug_detail(tmp_path):
    out = tmp_path / "p.csv"
    r = affedge("run", DEMO_CLIP, "--max-frames", "8", "--out", out, "-q")
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stderr
    with open(out, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 8
    r = affedge("run", DEMO_CLIP, "--max-frames", "8", "--out", out, "-v")
    assert r.returncode == 0, r.stderr
    assert "INFO affedge.sdk.backends.select: backend" in r.stderr  # debug detail
    assert f"wrote {out}" in r.stderr


@needs_demo
def test_run_knobs_reach_the_recognizer(tmp_path):
    out = tmp_path / "p.jsonl"
    r = affedge("run", DEMO_CLIP, "--max-frames", "6", "--out", out, "--precision", "int8",
                "--threads", "1", "--detect-every", "1", "--min-face", "60", "--smoothing",
                "0", "-q")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 6
    # smoothing 0: the smoothed columns equal the raw ones
    assert all(x["valence"] == x["valence_smoothed"] for x in recs if x["valence"] is not None)


@needs_demo
def test_run_sync_detect_gives_the_synchronous_schedule_s_predictions(tmp_path):
    """``--sync-detect`` is ``async_detect=False``: each full pass frames its own frame, so the
    rows equal that Recognizer's ``run`` and differ from the default's."""
    import numpy as np

    from affedge.sdk.recognizer import Recognizer

    rows = {}
    for flag in ((), ("--sync-detect",)):
        out = tmp_path / f"p{len(flag)}.jsonl"
        r = affedge("run", DEMO_CLIP, "--max-frames", "40", "--out", out, "-q", *flag)
        assert r.returncode == 0, r.stderr
        rows[flag] = np.array([[x["valence"], x["arousal"]] for x in map(
            json.loads, out.read_text().splitlines())], np.float64)
    with Recognizer.demo(async_detect=False) as rec:
        preds = rec.run(str(DEMO_CLIP), audio="video")
        ref = np.array([[p.valence, p.arousal] for p, _ in zip(preds, range(40))], np.float64)
    sync = rows[("--sync-detect",)]
    assert sync.shape == ref.shape == (40, 2) and np.abs(sync - ref).max() < 1e-4
    assert np.abs(rows[()] - ref).max() > 1e-3  # the default schedule frames them otherwise


def test_run_summary_says_when_the_encoder_is_not_fp32():
    """`--precision int8` was visible nowhere in what `run` prints; the summary line now names
    the encoder's precision when it is not fp32 (the real int8 ONNX encoder of the demo)."""
    lines = {}
    for prec in ("int8", "fp32"):
        r = affedge("run", DEMO_CLIP, "--max-frames", "4", "--precision", prec,
                    "--backend", "onnxruntime")
        assert r.returncode == 0, r.stderr
        (lines[prec],) = [x for x in (r.stdout + r.stderr).splitlines() if " frames in " in x]
    assert "backend onnxruntime-cpu (encoder int8), latency" in lines["int8"], lines["int8"]
    assert "(encoder" not in lines["fp32"], lines["fp32"]


def test_affedge_debug_is_a_deprecated_alias_of_verbose(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    r = affedge("synth", f, env=clean_env(AFFEDGE_DEBUG="1"))
    assert r.returncode == 1
    assert "AFFEDGE_DEBUG is deprecated; use -v/--verbose" in r.stderr
    assert "Traceback" in r.stderr


# ------------------------------------------------------------------------------ progress bars
SYNTH = ("--videos", "1", "--seconds", "1", "--fps", "10")


def test_captured_output_has_no_carriage_returns(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:
        r = subprocess.run([sys.executable, "-m", "affedge.cli", "synth", tmp_path / "d",
                            *SYNTH], env=clean_env(), stdout=fh, stderr=subprocess.STDOUT,
                           timeout=300, check=False)
    text = log.read_text()
    assert r.returncode == 0, text
    assert "\r" not in text
    # one video cannot be cross-validated: the closing hint says so instead of `next: train`
    assert "wrote 1 video to" in text and "affedge train needs >= 5 Train_Set" in text
    assert "next: affedge train" not in text


@needs_demo
def test_run_log_in_a_file_has_no_carriage_returns(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:
        r = subprocess.run([sys.executable, "-m", "affedge.cli", "run", DEMO_CLIP,
                            "--max-frames", "40", "--out", tmp_path / "p.csv"],
                           env=clean_env(), stdout=fh, stderr=subprocess.STDOUT, timeout=300,
                           check=False)
    text = log.read_text()
    assert r.returncode == 0, text
    assert "\r" not in text and "40 frames" in text


def test_progress_bar_on_a_terminal_only_without_plain_conventions(tmp_path):
    rc, text = affedge_on_tty("synth", tmp_path / "a", *SYNTH)
    assert rc == 0, text
    assert BARE_CR.search(text), text  # the control: a bar on a real terminal
    for i, extra in enumerate(({"CI": "true"}, {"TERM": "dumb"}, {"NO_COLOR": "1"})):
        rc, text = affedge_on_tty("synth", tmp_path / f"b{i}", *SYNTH, env=clean_env(**extra))
        assert rc == 0, text
        assert not BARE_CR.search(text), (extra, text)
    rc, text = affedge_on_tty("synth", tmp_path / "c", *SYNTH, "-q")
    assert rc == 0 and not BARE_CR.search(text), text
    assert text.strip().startswith("wrote 1 video to") and "next:" not in text


# ------------------------------------------------------------------------------ results
def test_doctor_json_on_stdout():
    r = affedge("doctor", "--json", "--no-devices", "-q")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert "CPUExecutionProvider" in rep["onnxruntime"]["providers"]


@needs_demo
def test_bench_shows_no_internal_targets_but_keeps_them_in_json(tmp_path):
    js = tmp_path / "bench.json"
    r = affedge("bench", "--frames", "3", "--warmup", "0", "--no-reference", "--no-roofline",
                "--max-seconds", "3", "--json", js, "-q")
    assert r.returncode == 0, r.stderr
    assert "Pipeline stages" in r.stdout
    assert "target" not in r.stdout.lower() and "NOT met" not in r.stdout
    assert "targets" in json.loads(js.read_text())
    assert r.stderr == ""


@pytest.fixture(scope="module")
def fresh_checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from affedge.config import FeatureConfig, ModelConfig
    from affedge.training.model import AffectModel, save_checkpoint

    torch.manual_seed(0)
    cfg = ModelConfig(encoder="mobile")
    model = AffectModel(cfg).eval()
    norm = {"mfcc": {"mean": 0.5, "std": 3.0},
            "logmel": {"mean": [-4.0] * 64, "std": [2.0] * 64}}
    return save_checkpoint(tmp_path_factory.mktemp("ck"), model, cfg, FeatureConfig(), norm,
                           {"seed": 0, "folds": [0], "data": "unit-test"})


def test_export_quiet_prints_only_its_result_line(fresh_checkpoint, tmp_path):
    """``export -q`` on a fresh checkpoint: no third-party warnings, no table, one line."""
    out = tmp_path / "my_bundle"
    r = affedge("export", fresh_checkpoint, "-o", out, "--format", "onnx", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    line = r.stdout.strip()
    assert "\n" not in line and line.startswith(f"wrote bundle {out} (digest sha256:")
    assert (out / "manifest.json").is_file()


def test_training_curves_have_whole_epoch_ticks(tmp_path):
    """One epoch: a single tick at 0 (no -0.4 .. 0.4 axis); many epochs: whole numbers only;
    other x (seconds) keep fractional ticks."""
    import cv2

    from affedge.plotting import _xticks, plot_curves

    one = plot_curves(tmp_path / "one.png", [0], {"loss": [0.9]})
    assert list(_xticks(one.panels[0])) == [0.0]
    assert cv2.imread(str(tmp_path / "one.png")) is not None
    many = plot_curves(None, [0, 1, 2, 3], {"loss": [0.9, 0.7, 0.6, 0.5]})
    t = _xticks(many.panels[0])
    assert len(t) >= 2 and all(float(v).is_integer() for v in t)
    secs = plot_curves(None, [0.0, 0.5, 1.25], {"v": [0.1, 0.2, 0.3]}, xlabel="s")
    assert any(not float(v).is_integer() for v in _xticks(secs.panels[0]))


def test_next_hints_name_the_program_as_it_was_started(monkeypatch, tmp_path):
    """A checkout's ``.venv/bin/affedge`` is not on PATH: the "next:" hints said a bare
    ``affedge`` that the shell does not find."""
    import os
    import sys

    from affedge import log

    prog = tmp_path / ".venv" / "bin" / "affedge"
    prog.parent.mkdir(parents=True)
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [".venv/bin/affedge", "demo"])
    monkeypatch.chdir(tmp_path)
    assert log.invoked_as() == ".venv/bin/affedge"
    monkeypatch.setenv("PATH", str(prog.parent) + os.pathsep + "/usr/bin:/bin")
    assert log.invoked_as() == "affedge"  # the same program is found by its name
    monkeypatch.setattr(sys, "argv", ["-m", "x"])
    assert log.invoked_as() == "affedge"


@pytest.mark.parametrize("argv, says", [
    (["train", "DATA", "--max-minutes", "0"], "--max-minutes: must be a number > 0"),
    (["train", "DATA", "--max-minutes", "-1"], "--max-minutes: must be a number > 0"),
    (["train", "DATA", "--threads", "0"], "--threads: must be >= 1"),
    (["train", "DATA", "--window", "0"], "--window: must be >= 1"),
    (["run", "clip.mp4", "--min-face", "3"], "--min-face: must be >= 8"),
    (["demo", "--min-face", "7"], "--min-face: must be >= 8"),
])
def test_out_of_range_numbers_are_usage_errors(argv, says, capsys):
    """Values a command cannot honour are refused while parsing (exit 2, the option named),
    with the same bound the API enforces: `train --max-minutes 0` used to mean "no limit" and
    `run --min-face 3` passed the parser's ">= 1" to fail later with ">= 8"."""
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    assert says in capsys.readouterr().err


def test_train_refuses_a_hop_longer_than_the_window():
    from affedge.training.trainer import TrainOptions

    with pytest.raises(ValueError, match=r"hop \(200\) must be <= window \(10\)"):
        TrainOptions(window=10)
    with pytest.raises(ValueError, match="max_minutes must be > 0"):
        TrainOptions(max_minutes=0)
    assert TrainOptions(window=100, hop=100).hop == 100


def test_ctrl_c_exits_130_even_after_passing_through_embedded_python(tmp_path):
    """An interrupt that escaped code run through CPython's PyRun_* API (an extension executing
    Python at import) leaves a process-wide flag set; `python -m` then ended the process by
    SIGINT (-2 to a parent) although the CLI had caught the interrupt and returned 130. The
    interrupt here passes through a real PyRun_String call inside a real command."""
    (tmp_path / "interrupted_cli.py").write_text(
        "import ctypes, sys\n"
        "import affedge.commands.doctor as doctor\n"
        "def interrupted(args):\n"
        "    run = ctypes.pythonapi.PyRun_String\n"
        "    run.restype = ctypes.py_object\n"
        "    run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]\n"
        "    run(b'raise KeyboardInterrupt', 257, {}, {})  # 257: Py_file_input\n"
        "doctor.run = interrupted\n"
        "from affedge.cli import main\n"
        "sys.exit(main(['doctor']))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "interrupted_cli"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, (proc.returncode, proc.stderr)
    assert proc.stderr.strip() == "affedge doctor: interrupted", proc.stderr


def test_python_dash_m_affedge_is_the_affedge_command(tmp_path):
    """Found by a new-user trial: ``python -m affedge ...`` failed ("No module named
    affedge.__main__") where ``affedge ...`` worked."""
    import affedge

    out = subprocess.run([sys.executable, "-m", "affedge", "--version"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path, env=clean_env())
    assert out.returncode == 0 and affedge.__version__ in out.stdout + out.stderr, out
    bad = subprocess.run([sys.executable, "-m", "affedge", "no-such-command"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env=clean_env())
    assert bad.returncode == 2 and "no-such-command" in bad.stderr


@needs_demo
def test_the_status_line_shows_a_files_progress():
    """A batch user saw "frame 300" with no total: a file's line says how far it is."""
    r = affedge("run", DEMO_CLIP, "--realtime", "--max-frames", "70")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if "] frame" in x]
    assert lines and all(re.search(r"\] frame\s+\d+ of 70 \(\s*\d+ %(, ~\d+ s left)?\)", x)
                         for x in lines), lines


@needs_demo
def test_the_status_line_says_whose_values_it_shows_among_several_faces(tmp_path):
    """A kiosk trial: with several people the line showed one person's values and no count."""
    two = tmp_path / "two.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(DEMO_CLIP), "-ss", "5", "-i",
                    str(DEMO_CLIP), "-filter_complex", "[0:v][1:v]hstack", "-t", "3", "-an",
                    "-c:v", "libx264", "-preset", "ultrafast", str(two)], check=True)
    r = affedge("run", two, "--realtime", "--max-frames", "80")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if "] frame" in x]
    assert lines and re.search(r"face Y \(#\d+ of 2\)", lines[-1]), lines


def test_ctrl_c_while_the_parser_is_built_exits_130_without_a_traceback(monkeypatch, capsys):
    """A Hub trial: Ctrl-C in serve's first 0.3 s (plugins and the parser being set up) gave
    a 30-line traceback and death by SIGINT instead of exit 130."""
    import affedge.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["serve", "--help"]) == 130
    assert capsys.readouterr().err == ""
