"""The user's own extensions reach the command line: a module named in AFFEDGE_PLUGINS registers
a detector and a sink, and ``affedge run``/``serve`` use them; a plugin that fails to import
stops the command with its reason."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from affedge.sdk.recognizer import DEMO_BUNDLE, DEMO_CLIP

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (DEMO_BUNDLE / "manifest.json").is_file(),
                                reason="demo assets missing")

PLUGIN = '''
import json
from affedge.features.detectors import register_detector
from affedge.features.detectors.blazeface import BlazeFaceShort
from affedge.sdk.sinks import Sink, register_sink


@register_detector("myface")
class MyFace(BlazeFaceShort):
    """BlazeFace-short under another name."""


@register_sink("lines")
class LinesSink(Sink):
    def __init__(self, target):
        super().__init__()
        self.target, self.rows = target, 0
        self._fh = open(target.split("://", 1)[1], "w")

    def write(self, p, source=None):
        self._fh.write(json.dumps({"frame": p.frame, "source": source}) + "\\n")
        self.rows += 1

    def flush(self):
        self._fh.flush()

    def close(self):
        self._fh.close()
        super().close()
'''


def affedge(tmp_path, *args, plugins="myplug"):
    env = {**os.environ, "AFFEDGE_PLUGINS": plugins,
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "affedge.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_plugins_detector_and_sink_reach_run_and_serve(tmp_path):
    """Found by a new-user trial: a registered detector was an "invalid choice" for
    ``--detector`` and a registered sink scheme an "unknown output kind" (run) or "network
    outputs go to --publish" (serve), unless the installed package was edited."""
    (tmp_path / "myplug.py").write_text(PLUGIN)
    clip = tmp_path / "short.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(DEMO_CLIP), "-t", "1", "-c", "copy",
                    str(clip)], check=True, timeout=60)
    r = affedge(tmp_path, "run", clip, "--detector", "myface", "--max-frames", "3", "--out",
                f"lines://{tmp_path / 'run.txt'}")
    assert r.returncode == 0, r.stderr[-600:]
    assert [json.loads(x)["frame"] for x in (tmp_path / "run.txt").read_text().splitlines()] \
        == [0, 1, 2]
    r = affedge(tmp_path, "serve", "--source", clip, "--name", "cam", "--out",
                f"lines://{tmp_path / 'serve.txt'}")
    assert r.returncode == 0, r.stderr[-600:]
    rows = [json.loads(x) for x in (tmp_path / "serve.txt").read_text().splitlines()]
    assert len(rows) >= 25 and {x["source"] for x in rows} == {"cam"}
    assert "myface" in affedge(tmp_path, "run", "--help").stdout


def test_a_plugin_that_fails_to_import_stops_the_command_with_its_reason(tmp_path):
    r = affedge(tmp_path, "doctor", plugins="no_such_plugin_mod")
    assert r.returncode == 1
    assert r.stderr.strip() == ("affedge: error: plugin 'no_such_plugin_mod' (AFFEDGE_PLUGINS) "
                                "failed to import: ModuleNotFoundError: No module named "
                                "'no_such_plugin_mod'")
