"""Helpers for the serve tests (a real ``affedge serve`` subprocess, clips cut with ffmpeg,
free ports) and the checks of the TOML file form."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from affedge.sdk.recognizer import DEMO_CLIP

ROOT = Path(__file__).resolve().parent.parent


def cut_clip(path, seconds: float, start: float = 0.0) -> Path:
    """The first ``seconds`` of the demo clip (video + its audio track), re-encoded."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed to cut the test clips")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-i", str(DEMO_CLIP),
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
                    "-c:a", "aac", str(path)], check=True, timeout=120)
    return Path(path)


def http_stream(clip):
    """``clip`` served once as an MPEG-TS stream over HTTP on 127.0.0.1 by a real ffmpeg, at
    its own pace -> (url, the ffmpeg Popen: kill it when done)."""
    url = f"http://127.0.0.1:{free_port()}/live.ts"
    return url, subprocess.Popen(["ffmpeg", "-v", "error", "-re", "-i", str(clip), "-c", "copy",
                                  "-f", "mpegts", "-listen", "1", url])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """``python -m affedge.commands.serve ARGS`` with --port-file; stdout/stderr to files."""

    def __init__(self, tmp: Path, *args: str, env=None):
        self.tmp = Path(tmp)
        self.port_file = self.tmp / f"ports{time.monotonic_ns()}.json"
        self.out_path = self.tmp / f"stdout{time.monotonic_ns()}.txt"
        self.err_path = self.tmp / f"stderr{time.monotonic_ns()}.txt"
        e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "affedge.commands.serve", *args, "--port-file",
             str(self.port_file)], cwd=str(self.tmp), env=e,
            stdout=open(self.out_path, "w"), stderr=open(self.err_path, "w"))

    def ports(self, timeout: float = 90.0) -> dict:
        """The bound addresses (waits for the port file; fails if the process died)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.port_file.exists():
                return json.loads(self.port_file.read_text())
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.stderr()}")
            time.sleep(0.1)
        raise AssertionError(f"no port file after {timeout} s: {self.stderr()}")

    def stderr(self) -> str:
        return self.err_path.read_text() if self.err_path.exists() else ""

    def stdout_lines(self) -> list[str]:
        return self.out_path.read_text().splitlines()

    def wait(self, timeout: float = 120.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"serve did not exit within {timeout} s: {self.stderr()}")

    def signal(self, sig=signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# --------------------------------------------------------------------------- config file
def test_config_reads_sources_outputs_and_options(tmp_path):
    from affedge.serve.config import load_config

    (tmp_path / "a.mp4").write_bytes(b"x")
    f = tmp_path / "serve.toml"
    f.write_text('publish = ["zmq://127.0.0.1:0"]\nout = "-"\nrealtime = true\n'
                 '[options]\nsmoothing = 0.3\nperson_baseline = false\n'
                 '[[source]]\nname = "door"\nvideo = "a.mp4"\naudio = "video"\n'
                 '[[source]]\nvideo = 0\n')
    cfg = load_config(f)
    assert cfg.publish == ["zmq://127.0.0.1:0"] and cfg.out == ["-"] and cfg.realtime
    assert cfg.options == {"smoothing": 0.3, "person_baseline": False}
    assert cfg.sources[0] == {"name": "door", "video": str(tmp_path / "a.mp4"),
                              "audio": "video"}
    assert cfg.sources[1] == {"video": 0}


def test_a_yaml_config_reads_as_its_toml_twin(tmp_path):
    """Issue 17 offers the sources as a TOML or YAML file; a .yaml was read as TOML ("not
    valid TOML")."""
    from affedge.serve.config import load_config

    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "serve.toml").write_text(
        'backend = "ort-cpu"\npublish = ["zmq://127.0.0.1:0"]\nout = "-"\n'
        '[options]\nsmoothing = 0.3\n'
        '[[source]]\nname = "door"\nvideo = "a.mp4"\naudio = "video"\n'
        '[[source]]\nvideo = 0\n')
    (tmp_path / "serve.yml").write_text(
        "backend: ort-cpu\npublish: [zmq://127.0.0.1:0]\nout: '-'\n"
        "options:\n  smoothing: 0.3\n"
        "source:\n  - {name: door, video: a.mp4, audio: video}\n  - video: 0\n")
    assert load_config(tmp_path / "serve.yml") == load_config(tmp_path / "serve.toml")
    assert load_config(tmp_path / "serve.yml").sources[0]["video"] == str(tmp_path / "a.mp4")
    for text, says in (("publish: [a\n", "not valid YAML"),
                       ("- a\n- b\n", "the top level must be a mapping"),
                       ("source:\n  - 0\n", "a list of mappings under source:"),
                       ("options:\n  smoothng: 0.1\n", "smoothng"),
                       ("!!python/object/apply:os.system ['echo hi']\n", "not valid YAML")):
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(ValueError, match=re.escape(says)):
            load_config(tmp_path / "bad.yaml")


def test_a_top_level_key_under_options_is_pointed_to_the_top(tmp_path):
    from affedge.serve.config import load_config

    f = tmp_path / "serve.toml"
    f.write_text('[options]\nbackend = "ort-cpu"\n')
    with pytest.raises(ValueError, match="backend go.es. at the top of the file"):
        load_config(f)


def test_config_paths_are_relative_to_the_file(tmp_path, monkeypatch):
    """Only video and token_file were; a WAV, an output file and the bundle came from the
    working directory (a service's is often /)."""
    from affedge.serve.config import load_config

    f = tmp_path / "etc" / "serve.toml"
    f.parent.mkdir()
    f.write_text('bundle = "models/b"\nout = ["rows.jsonl", "-"]\n'
                 '[[source]]\nvideo = "a.mp4"\naudio = "a.wav"\n'
                 '[[source]]\nvideo = 0\naudio = "mic:1"\n')
    monkeypatch.chdir(tmp_path)
    cfg = load_config("etc/serve.toml")
    assert cfg.bundle == str(f.parent / "models" / "b")
    assert cfg.out == [str(f.parent / "rows.jsonl"), "-"]
    assert cfg.sources[0]["audio"] == str(f.parent / "a.wav")
    assert cfg.sources[1]["audio"] == "mic:1"


def test_flags_win_over_the_config_options_and_clashes_are_refused(tmp_path):
    """[options] silently overrode --smoothing and the other flags; the same output or
    address twice (config + flag) was bound twice; --token and --token-file together, a
    negative --start-delay and a '*' origin were taken; --show was offered and refused."""
    import affedge.commands.serve as serve
    from affedge.cli import main

    cut_clip(tmp_path / "c.mp4", 0.7)
    f = tmp_path / "serve.toml"
    f.write_text('publish = ["zmq://127.0.0.1:0"]\nout = ["rows.jsonl"]\n'
                 '[options]\nsmoothing = 0.6\n[[source]]\nvideo = "c.mp4"\n')
    # the real command: --smoothing 0 on the command line, 0.6 in the file -> unsmoothed rows
    assert main(["serve", "--config", str(f), "--smoothing", "0", "--publish",
                 "ws://127.0.0.1:0", "-q"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert len(rows) >= 15 and all(r["valence_smoothed"] == r["valence"] for r in rows
                                   if r["valence"] is not None)
    assert any(r["valence"] is not None for r in rows)
    tok = tmp_path / "tok"
    tok.write_text("abc")
    two = tmp_path / "two"  # a new-user trial's file: its two lines were taken as one token
    two.write_text("secret-token-123456\nsecond line\n")
    for argv, says in (
            (("--token-file", str(two)), "the token holds 2 lines"),
            (("--token", "my token"), "--token: the token holds a space"),
            (("--publish", "ws://127.0.0.1:8799", "--publish", "ws://127.0.0.1:8799"),
             "--publish ws://127.0.0.1:8799: given twice"),
            (("--out", str(tmp_path / "rows.jsonl")), "rows.jsonl: given twice"),
            (("--token", "x", "--token-file", str(tok)), "--token and --token-file"),
            (("--allow-origin", "*"), "--allow-origin *: give a page origin")):
        with pytest.raises(ValueError, match=re.escape(says)):
            serve.run(_serve_args("--config", str(f), *argv))
    for argv in (("--start-delay", "-1"), ("--start-delay", "nan"), ("--show",)):
        with pytest.raises(SystemExit):
            _serve_args("--source", "0", *argv)


def test_a_short_token_is_taken_with_a_warning_even_with_q(capsys):
    """A security trial: under -q (the README's systemd setup) the warning was not shown."""
    from affedge import log
    from affedge.commands.serve import _checked_token

    old = log._level
    try:
        log._level = log.QUIET  # (what -q sets)
        assert _checked_token("x", "--token") == "x"
        assert "the token is 1 characters, easy to guess" in capsys.readouterr().err
        assert _checked_token("k" * 24, "--token") == "k" * 24
        assert capsys.readouterr().err == ""
    finally:
        log._level = old


def test_a_token_file_others_may_write_is_refused_one_all_may_read_warned(tmp_path, capsys):
    """A security trial: a world-writable token file (chmod 666) was taken silently; any user
    of the machine could replace the token. As ssh does: refused, and a warning when every
    user may read it."""
    import affedge.commands.serve as serve

    tok = tmp_path / "tok"
    tok.write_text("k" * 24 + "\n")
    for mode in (0o666, 0o620):
        tok.chmod(mode)
        with pytest.raises(ValueError, match=f"other users may write it \\(mode {mode:04o}\\); "
                                             f"chmod 600"):
            serve._token(_serve_args("--source", "0", "--token-file", str(tok)), None)
    tok.chmod(0o644)
    assert serve._token(_serve_args("--source", "0", "--token-file", str(tok)), None) == "k" * 24
    assert "readable by every user of this machine (mode 0644)" in capsys.readouterr().err
    tok.chmod(0o600)
    assert serve._token(_serve_args("--source", "0", "--token-file", str(tok)), None) == "k" * 24
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("text, word", [
    ('publsh = ["zmq://127.0.0.1:0"]\n', "publsh"),
    ('[[source]]\nvideo = "a.mp4"\naudoi = "video"\n', "audoi"),
    ('[[source]]\naudio = "video"\n', "video must be"),
    ('[options]\nsmoothng = 0.1\n', "smoothng"),
    ('publish = [1]\n', "publish must be"),
    ('publish = \n', "not valid TOML"),
    # types in [options] and sources: named by file, table and key (one was a traceback)
    ('[options]\nsmoothing = "high"\n', "options. smoothing must be a number in .0, 1., got 'high'"),
    ('[options]\nthreads = "two"\n', "options. threads must be a whole number >= 1"),
    ('[options]\nprecision = "int4"\n', "options. precision must be 'fp32', 'bf16' or 'int8'"),
    ('[options]\nperson_baseline = "no"\n', "options. person_baseline must be true or false"),
    ('[[source]]\nvideo = 0\nname = 5\n', "source 1: name must be a non-empty string, got 5"),
    ('[[source]]\nvideo = 0\nrealtime = 1\n', "source 1: realtime must be true or false"),
])
def test_config_refuses_mistakes_by_name(tmp_path, text, word):
    from affedge.serve.config import load_config

    f = tmp_path / "serve.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=word):
        load_config(f)


# --------------------------------------------------------------------------- source flags
def _serve_args(*argv):
    import argparse

    from affedge.commands.serve import add_arguments

    p = argparse.ArgumentParser(prog="affedge serve")
    add_arguments(p)
    return p.parse_args(list(argv))


def test_audio_and_name_belong_to_the_source_before_them():
    """Pairing used to be by count: ``--source a --source b --name second`` named a.mp4
    "second" (and gave b's --audio to a)."""
    from affedge.commands.serve import _sources

    a = _serve_args("--source", "a.mp4", "--source", "b.mp4", "--name", "second",
                    "--source", "0", "--audio", "mic:1", "--name", "front")
    assert a.source_specs == [{"video": "a.mp4"}, {"video": "b.mp4", "name": "second"},
                              {"video": "0", "audio": "mic:1", "name": "front"}]
    srcs = _sources(a, None)
    assert [s.get("name") for s in srcs] == [None, "second", "front"]
    assert srcs[2]["audio"] == "mic:1" and srcs[0].get("audio") != "mic:1"


@pytest.mark.parametrize("argv, words", [
    (("--name", "x", "--source", "a.mp4"), "put it after the --source it belongs to"),
    (("--source", "a.mp4", "--audio", "none", "--audio", "mic"), "already has --audio none"),
])
def test_source_flags_out_of_place_are_one_line_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        _serve_args(*argv)
    assert e.value.code == 2
    assert words in capsys.readouterr().err


def test_a_bad_output_is_refused_before_anything_binds(tmp_path, capfd):
    """``--out rows.txt`` (no sink for .txt) after a ``--publish zmq://``, or a ``--port-file``
    in a missing folder: refused before the ZeroMQ socket is bound and announced (it was bound,
    announced, then refused; the port file's error named an internal temporary file)."""
    import affedge.commands.serve as serve

    clip = cut_clip(tmp_path / "c.mp4", 0.5)
    port = free_port()
    for argv, says in ((("--out", str(tmp_path / "rows.txt")), "unknown output kind"),
                       (("--out", "tcp://127.0.0.1:1"), "network outputs go to --publish"),
                       (("--publish", "tcp://127.0.0.1:1"), "use zmq://HOST:PORT"),
                       (("--port-file", str(tmp_path / "no_dir" / "p.json")),
                        f"folder {tmp_path / 'no_dir'} does not exist")):
        with pytest.raises(ValueError, match=re.escape(says)):
            serve.run(_serve_args("--source", str(clip), "--publish",
                                  f"zmq://127.0.0.1:{port}", *argv))
        assert "ZeroMQ PUB" not in capfd.readouterr().err


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_serve_exits_1_when_its_inference_loop_dies(tmp_path, monkeypatch, capfd):
    """A security trial ran serve out of file handles: the loop died with OSError(24), serve
    said "every source ended" and exited 0, so a restart-on-failure unit never restarted
    it. Now it says why it stopped and exits 1."""
    import affedge.commands.serve as serve
    from affedge.serve import Hub

    cut_clip(tmp_path / "c.mp4", 0.5)

    def gather(self, ready):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(Hub, "_gather", gather)
    args = _serve_args("--source", str(tmp_path / "c.mp4"), "--out", str(tmp_path / "r.jsonl"))
    assert serve.run(args) == 1
    err = capfd.readouterr().err
    assert "the inference loop stopped: OSError(24, 'Too many open files')" in err
    assert "affedge serve: the inference loop stopped (OSError)" in err
    assert "src0: 0 predictions" in err
