"""``affedge run`` over several videos: a folder, a pattern, a list; per-video outputs and a
summary; a failing video does not stop the batch (real clips cut with ffmpeg, real runs)."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_cli_user_errors import affedge
from tests.test_serve_helpers import cut_clip

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    cut_clip(d / "a.mp4", 1.0, start=0.0)
    cut_clip(d / "b.mp4", 1.0, start=4.0)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(d / "a.mp4"), "-an", "-c", "copy",
                    str(d / "silent.mp4")], check=True)
    (d / "broken.mp4").write_bytes((d / "b.mp4").read_bytes()[:15000])
    (d / "notes.txt").write_text("not a video\n")
    return d


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_folder_runs_video_by_video_and_a_broken_one_does_not_stop_it(folder, tmp_path):
    out = tmp_path / "out"
    r = affedge("run", str(folder), "--out-dir", str(out))
    assert r.returncode == 1, r.stderr  # one video failed
    summary = json.loads((out / "affedge_batch.json").read_text())
    by = {Path(v["source"]).name: v for v in summary["videos"]}
    assert sorted(by) == ["a.mp4", "b.mp4", "broken.mp4", "silent.mp4"]  # not notes.txt
    assert summary["failed"] == 1 and summary["done"] == summary["given"] == 4
    assert "cannot open video file" in by["broken.mp4"]["error"]
    assert by["broken.mp4"]["output"] is None and not (out / "broken.csv").exists()
    assert by["silent.mp4"]["audio"] == "none" and by["a.mp4"]["audio"] == "video"
    for name in ("a", "b", "silent"):
        v = by[f"{name}.mp4"]
        got = rows(out / f"{name}.csv")
        assert v["output"] == str(out / f"{name}.csv") and v["frames"] == len(got) == 30
        assert v["frames_with_face"] == sum(x["face_present"] == "1" for x in got)
    # each output equals that video's own run (one Recognizer, reset for each video)
    single = tmp_path / "b_alone.csv"
    assert affedge("run", str(folder / "b.mp4"), "--out", str(single), "-q").returncode == 0
    drop = ("latency_ms", "wall_time")
    assert [{k: x[k] for k in x if k not in drop} for x in rows(single)] == \
        [{k: x[k] for k in x if k not in drop} for x in rows(out / "b.csv")]
    assert "[1/4]" in r.stderr and "broken.mp4: error: cannot open video file" in r.stderr
    assert "4 of 4 videos, 3 written, 1 failed (broken.mp4)" in r.stderr


def test_a_quoted_pattern_and_jsonl_and_the_refusals(folder, tmp_path):
    out = tmp_path / "j"
    r = affedge("run", str(folder / "[ab].mp4"), "--out-dir", str(out), "--out-format",
                "jsonl", "-q")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.jsonl", "affedge_batch.json",
                                                     "b.jsonl"]
    assert len((out / "a.jsonl").read_text().splitlines()) == 30
    two = (str(folder / "a.mp4"), str(folder / "b.mp4"))
    for args, why in (((*two,), "several videos need --out-dir DIR"),
                      ((*two, "--out", "x.csv"), "--out names one output; use --out-dir"),
                      ((*two, "--out-dir", str(tmp_path), "--plot", "p.png"), "--plot names"),
                      ((str(folder / "zz*.mp4"), "--out-dir", str(tmp_path)),
                       "no file matches this pattern"),
                      ((str(tmp_path / "j"), "--out-dir", str(tmp_path / "k")),
                       "no video files in this folder"),
                      ((str(folder / "a.mp4"), "0", "--out-dir", str(tmp_path / "k")),
                       "and 0 is a camera; several cameras or streams at once: affedge serve"),
                      ((*two, "--out-dir", str(folder / "a.mp4")),  # (a QA trial: the bare
                       f"--out-dir {folder / 'a.mp4'}: a file, not a folder")):  # "File exists")
        r = affedge("run", *args)
        assert r.returncode == 1 and why in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_sigterm_finishes_the_video_in_progress_and_writes_the_summary(folder, tmp_path):
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "affedge.cli", "run", str(folder / "a.mp4"),
                             str(folder / "b.mp4"), str(folder / "silent.mp4"), "--out-dir",
                             str(out), "--realtime"], cwd=str(ROOT), stderr=subprocess.PIPE,
                            text=True)
    end = time.monotonic() + 120
    while not (out / "a.csv").exists() and time.monotonic() < end:  # the first video's rows
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err
    summary = json.loads((out / "affedge_batch.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and summary["done"] < 3, summary
    for v in summary["videos"]:  # every output written is whole: one row per frame done
        assert len(rows(Path(v["output"]))) == v["frames"] > 0, v
    assert "its output is whole" in err


def test_python_run_audio_auto_takes_each_files_own_track_when_it_has_one(folder):
    """A mixed folder from Python: ``audio="video"`` refuses a file without a track, so a
    batch script needed its own check (new-user trial); ``audio="auto"`` is run's default."""
    from affedge.sdk.recognizer import Recognizer
    from affedge.sdk.sources import SourceError

    with Recognizer.demo() as rec:
        with pytest.raises(SourceError):
            list(rec.run(str(folder / "silent.mp4"), audio="video"))
        silent = list(rec.run(str(folder / "silent.mp4"), audio="auto"))
        auto = list(rec.run(str(folder / "a.mp4"), audio="auto"))
        video = list(rec.run(str(folder / "a.mp4"), audio="video"))
    assert len(silent) == 30 and not any(p.audio_present for p in silent)
    assert any(p.audio_present for p in auto)
    assert [(p.valence, p.arousal) for p in auto] == [(p.valence, p.arousal) for p in video]


def test_audio_auto_without_pyav_says_the_track_is_not_read(folder):
    """A plain ``pip install affedge`` has no PyAV: ``audio="auto"`` then ran on the face alone
    with no sign of it (a release engineer's trial; the demo's arousal CCC 0.92 -> 0.46)."""
    code = ("import sys, warnings; sys.modules['av'] = None\n"  # PyAV not installed
            "from affedge.sdk.recognizer import Recognizer\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    with Recognizer.demo(backend='onnxruntime') as rec:\n"
            f"        ps = list(rec.run({str(folder / 'a.mp4')!r}, audio='auto'))\n"
            "print(len(ps), any(p.audio_present for p in ps))\n"
            "print([str(x.message) for x in w if 'PyAV' in str(x.message)])\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    count, said = r.stdout.splitlines()[-2:]
    assert count == "30 False" and "affedge[video-audio]" in said, r.stdout
