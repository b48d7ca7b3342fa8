"""The README's "First five minutes" blocks run as written and write what they say.

Each block is the ```bash fence right after an HTML comment ``<!-- quickstart: NAME -->`` in
README.md. It runs unchanged in a real ``bash -euo pipefail`` subprocess, in a fresh temporary
directory that stands in for the checkout: ``.venv/bin/affedge`` and ``.venv/bin/python`` there
are two-line wrappers around this interpreter (``python -m affedge.cli``) with this checkout on
``PYTHONPATH``, so the blocks' own command lines are what runs.

Small inputs come in only through the shell defaults the blocks declare (``${NAME:-default}``),
set here in the environment:

* camera and microphone: ``CAMERA`` = the bundled demo clip (a video file instead of camera 0)
  and ``MIC`` = a WAV of real espeak-ng speech (instead of the default microphone); there is
  no camera, microphone or display on a test machine (``--show`` then says so and carries on);
* ``FRAMES`` (frames per run, bench iterations), ``WARMUP``, ``VIDEOS``, ``VIDEO_SECONDS``,
  ``MINUTES`` (the training budget): tiny values; ``FORCE=1`` (export the model that tiny
  budget could not teach, which export otherwise refuses).

Each test checks exit status 0 and that every file the block says it writes exists and is not
empty (and that its rows parse where they are data).
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import media
import pytest

from affedge.sdk.recognizer import DEMO_BUNDLE, DEMO_CLIP

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HAVE_DEMO = (DEMO_BUNDLE / "manifest.json").is_file() and DEMO_CLIP.is_file()
needs_demo = pytest.mark.skipif(not HAVE_DEMO, reason="demo assets missing")

_BLOCK = re.compile(r"<!--\s*quickstart:\s*([\w-]+)\s*-->\s*\n```bash\n(.*?)\n```", re.DOTALL)


def quickstart_blocks(text: str | None = None) -> dict[str, str]:
    """NAME -> the bash text of every ``<!-- quickstart: NAME -->`` block of the README."""
    text = README.read_text(encoding="utf-8") if text is None else text
    blocks: dict[str, str] = {}
    for name, body in _BLOCK.findall(text):
        assert name not in blocks, f"two quickstart blocks named {name!r}"
        blocks[name] = body
    return blocks


def fake_checkout(tmp: Path) -> None:
    """``.venv/bin/{affedge,python}`` in ``tmp`` that run this interpreter and checkout."""
    bin_dir = tmp / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, cmd in (("python", f'"{sys.executable}"'),
                      ("affedge", f'"{sys.executable}" -m affedge.cli')):
        f = bin_dir / name
        f.write_text(f'#!/bin/sh\nexec {cmd} "$@"\n')
        f.chmod(0o755)


def run_block(name: str, tmp: Path, timeout: float, **env_vars: str) -> subprocess.CompletedProcess:
    block = quickstart_blocks()[name]
    fake_checkout(tmp)
    env = {k: v for k, v in os.environ.items() if k != "AFFEDGE_DEBUG"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DISPLAY", None)  # --show must carry on without a display
    env.update(env_vars)
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp, env=env,
                       capture_output=True, text=True, encoding="utf-8", errors="replace",
                       timeout=timeout, check=False)
    assert r.returncode == 0, f"block {name!r} exited {r.returncode}\n{r.stdout[-3000:]}\n" \
                              f"{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r


def non_empty(*paths: Path) -> None:
    for p in paths:
        assert p.is_file(), f"{p.name} was not written"
        assert p.stat().st_size > 0, f"{p.name} is empty"


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    wav = tmp_path_factory.mktemp("mic") / "mic.wav"
    media.make_speech_wav(wav, total=3.0)
    return wav


def test_the_readme_has_the_four_blocks():
    blocks = quickstart_blocks()
    assert set(blocks) == {"kiosk", "robot", "researcher", "batch"}, sorted(blocks)
    for body in blocks.values():
        assert ".venv/bin/" in body  # run from the checkout, like the README's setup block


@needs_demo
def test_kiosk_block(tmp_path, speech_wav):
    frames = 45
    r = run_block("kiosk", tmp_path, 300, CAMERA=str(DEMO_CLIP), MIC=str(speech_wav),
                  FRAMES=str(frames))
    assert "--show:" in r.stderr  # no display here: said so, carried on
    non_empty(tmp_path / "dashboard.txt", tmp_path / "va.csv", tmp_path / "va.png")
    lines = (tmp_path / "dashboard.txt").read_text().splitlines()
    assert len(lines) == frames
    assert all(len(line.split()) == 4 for line in lines)
    with open(tmp_path / "va.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == frames
    assert any(row["audio_present"] == "1" for row in rows)  # the WAV reached the model
    assert (tmp_path / "va.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_demo
def test_batch_block(tmp_path):
    """A folder with the demo clip and a short cut of it without audio: a CSV per video and
    the summary; the scoring prints the demo's CCC and plots it."""
    import shutil

    from affedge.sdk.recognizer import DEMO_LABELS

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(DEMO_CLIP, videos / "demo_clip.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(DEMO_CLIP), "-t", "2", "-c:v",
                    "libx264", "-preset", "ultrafast", "-an", str(videos / "short.mp4")],
                   check=True)
    r = run_block("batch", tmp_path, 300, VIDEOS=str(videos), VIDEO="demo_clip",
                  LABELS=str(DEMO_LABELS))
    summary = json.loads((tmp_path / "va_out/affedge_batch.json").read_text())
    assert [v["frames"] for v in summary["videos"]] == [600, 60] and summary["failed"] == 0
    scores = eval(r.stdout.strip().splitlines()[-1], {})  # the block's printed dict
    assert scores["valence_ccc"] >= 0.8 and scores["arousal_ccc"] >= 0.6, scores
    non_empty(tmp_path / "va_out/demo_clip.png", tmp_path / "va_out/short.csv")


@needs_demo
def test_robot_block(tmp_path, speech_wav):
    frames = 40
    run_block("robot", tmp_path, 300, CAMERA=str(DEMO_CLIP), MIC=str(speech_wav),
              FRAMES=str(frames))
    out = tmp_path / "va_robot.jsonl"
    non_empty(out)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == frames
    assert [r["frame"] for r in recs] == list(range(frames))
    assert all(r["schema"] == 1 for r in recs)
    assert any(r["audio_present"] for r in recs)


@needs_demo  # bench's default clip is the demo clip
@pytest.mark.slow
def test_researcher_block(tmp_path):
    # 0.5 min: the smallest budget train accepts for this set (a 3-second one, used before, is
    # refused now: it cannot cache one trial); FORCE: export even a model that did not learn
    run_block("researcher", tmp_path, 900, VIDEOS="6", VIDEO_SECONDS="3", MINUTES="0.5",
              FORCE="1", FRAMES="5", WARMUP="1")
    non_empty(tmp_path / "runs/m/crossval.json", tmp_path / "runs/m/fold0/best/model.safetensors",
              tmp_path / "my_bundle/manifest.json", tmp_path / "bench.json",
              tmp_path / "heldout/raw_videos/synth_00100.mp4",
              tmp_path / "heldout_va.csv", tmp_path / "heldout_va.png")
    assert json.loads((tmp_path / "bench.json").read_text())
    with open(tmp_path / "heldout_va.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 30  # every frame of the 3 s held-out clip at 30 fps
    # the held-out clip scored against its annotation (its -5 frames left out)
    from affedge.labels import read_annotation

    ann = read_annotation(next(tmp_path.glob("heldout/annotations/VA_Set/*/synth_00100.txt")))
    scored = json.loads((tmp_path / "heldout_scored/demo_metrics.json").read_text())["metrics"]
    assert scored["frames_scored"] == int((ann != -5.0).all(axis=1).sum()) > 0
    assert -1.0 <= scored["raw"]["valence_ccc"] <= 1.0
