"""``affedge run``, ``affedge demo`` and ``affedge doctor`` end to end (real files, real ORT)."""
from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from media import make_face_video, make_speech_wav, mux
from test_engine import FPS, bundle_dir  # noqa: F401  (shared session fixture)


def cli(name: str, argv: list[str]) -> int:
    """Parse with the command's own add_arguments plus the shared -q/-v and run it (as
    affedge/cli.py does, but letting exceptions through)."""
    import importlib

    from affedge import log
    from affedge.cli import add_common_arguments

    mod = importlib.import_module(f"affedge.commands.{name}")
    p = argparse.ArgumentParser(prog=f"affedge {name}")
    mod.add_arguments(p)
    add_common_arguments(p)
    args = p.parse_args(argv)
    log.setup(quiet_flag=args.quiet, verbose_flag=args.verbose)
    try:
        return int(mod.run(args) or 0)
    finally:
        log.setup()  # back to the default level for the next test


@pytest.fixture(scope="module")
def av_clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_media")
    meta = make_face_video(d / "v.mp4", seconds=1.2, fps=FPS)
    make_speech_wav(d / "s.wav", total=1.6)
    mux(d / "v.mp4", d / "s.wav", d / "av.mp4")
    return d, meta


def test_run_writes_one_csv_row_per_frame_and_a_plot(bundle_dir, av_clip, tmp_path, capsys):  # noqa: F811
    d, meta = av_clip
    out, png = tmp_path / "va.csv", tmp_path / "va.png"
    rc = cli("run", [str(d / "av.mp4"), "--bundle", str(bundle_dir), "--backend", "onnxruntime",
                     "--out", str(out), "--plot", str(png), "--smoothing", "0.5", "--show"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "continuing without a window" in err  # headless OpenCV here: says so, carries on
    # the header says what the bundle's identity rests on and how to pin it
    assert "(unpinned: checksums only; pin it with --bundle-digest or --trust)" in err
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == meta.n_frames
    assert [int(r["frame"]) for r in rows] == list(range(meta.n_frames))
    assert all(r["audio_present"] == "1" for r in rows)  # default audio: the file's own track
    v = np.array([float(r["valence"]) for r in rows])
    assert np.all(np.abs(v) <= 1)
    import cv2

    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


def test_run_jsonl_and_no_audio(bundle_dir, av_clip, tmp_path):  # noqa: F811
    d, meta = av_clip
    out = tmp_path / "va.jsonl"
    rc = cli("run", [str(d / "v.mp4"), "--bundle", str(bundle_dir), "--out", str(out),
                     "--audio", "none", "--quiet", "--max-frames", "10"])
    assert rc == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(10))
    assert all(not x["audio_present"] for x in lines)
    assert all("faces" in x for x in lines)


def test_run_missing_source_is_a_clear_error(bundle_dir, tmp_path):  # noqa: F811
    from affedge.sdk.sources import SourceError

    with pytest.raises(SourceError, match="not found"):
        cli("run", [str(tmp_path / "missing.mp4"), "--bundle", str(bundle_dir)])


def test_demo_with_given_bundle_clip_and_labels(bundle_dir, av_clip, tmp_path):  # noqa: F811
    d, meta = av_clip
    labels = tmp_path / "labels.csv"
    t = np.arange(meta.n_frames) / FPS
    with open(labels, "w") as fh:
        fh.write("frame,valence,arousal\n")
        for i in range(meta.n_frames):
            fh.write(f"{i},{0.5 * np.sin(t[i]):.4f},{0.3 * np.cos(2 * t[i]):.4f}\n")
    out_dir = tmp_path / "demo_out"
    rc = cli("demo", ["--bundle", str(bundle_dir), "--clip", str(d / "av.mp4"), "--labels",
                      str(labels), "--fast", "--quiet", "--out-dir", str(out_dir)])
    assert rc == 0
    metrics = json.loads((out_dir / "demo_metrics.json").read_text())
    assert metrics["frames"] == meta.n_frames
    assert metrics["metrics"]["frames_scored"] == meta.n_frames
    assert -1 <= metrics["metrics"]["raw"]["valence_ccc"] <= 1
    with open(out_dir / "demo_predictions.csv") as fh:
        assert len(list(csv.DictReader(fh))) == meta.n_frames
    assert (out_dir / "demo_va.png").stat().st_size > 1000


def test_demo_without_assets_says_how_to_build_them(monkeypatch, tmp_path):
    import affedge.sdk.recognizer as R

    monkeypatch.setattr(R, "DEMO_BUNDLE", tmp_path / "no_bundle")
    monkeypatch.setattr(R, "DEMO_CLIP", tmp_path / "no_clip.mp4")
    monkeypatch.setattr(R, "DEMO_LABELS", tmp_path / "no_labels.csv")
    with pytest.raises(FileNotFoundError, match="demo assets missing.*build them"):
        cli("demo", ["--out-dir", str(tmp_path / "o")])


def test_doctor_reports_backends_and_bundle(bundle_dir, capsys):  # noqa: F811
    assert cli("doctor", ["--bundle", str(bundle_dir), "--no-devices"]) == 0
    text = capsys.readouterr().out
    assert "onnxruntime:" in text and "CPUExecutionProvider" in text
    assert "gpu:" in text and "tensorrt:" in text
    assert "backend (auto):" in text and "TensorRT engines: none" in text
    assert cli("doctor", ["--json", "--no-devices"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert "CPUExecutionProvider" in rep["onnxruntime"]["providers"]


def test_doctor_as_a_console_command():
    r = subprocess.run([sys.executable, "-c", "import sys; from affedge.commands import doctor; "
                        "import argparse; p = argparse.ArgumentParser(); doctor.add_arguments(p); "
                        "sys.exit(doctor.run(p.parse_args(['--no-devices'])))"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "affedge" in r.stdout and "onnxruntime" in r.stdout


def test_run_header_names_the_pinned_identity(bundle_dir, av_clip, tmp_path, capsys):  # noqa: F811
    from affedge.bundle import load_bundle

    d, _ = av_clip
    digest = load_bundle(bundle_dir).digest
    rc = cli("run", [str(d / "av.mp4"), "--bundle", str(bundle_dir), "--max-frames", "3",
                     "--bundle-digest", digest, "--out", str(tmp_path / "p.csv")])
    assert rc == 0
    assert "(digest-pinned: matches --bundle-digest)" in capsys.readouterr().err


def test_precision_int8_needs_the_bundles_int8_encoder(bundle_dir, av_clip, tmp_path):  # noqa: F811
    """`run --precision int8` with a bundle exported without --int8 is refused before the first
    frame (the backends would run the fp32 encoder, and the user would never know); the demo
    bundle, which has one, runs it."""
    d, _ = av_clip
    out = tmp_path / "p.csv"
    with pytest.raises(ValueError, match="precision int8: bundle .* has no int8 encoder"):
        cli("run", [str(d / "av.mp4"), "--bundle", str(bundle_dir), "--precision", "int8",
                    "--out", str(out), "-q"])
    assert not out.exists() or out.read_text().count("\n") <= 1  # no prediction rows
    assert cli("run", [str(d / "av.mp4"), "--precision", "int8", "--out", str(out), "-q"]) == 0
    assert out.read_text().count("\n") > 10


def test_a_truncated_file_is_reported_not_passed_off_as_complete(bundle_dir, av_clip, tmp_path,  # noqa: F811
                                                                 capsys):
    """A faststart MP4 cut in half still declares all its frames in the index at its start:
    `run` gives a prediction for every frame it can decode and then says that the file ended
    early (before, it reported success as if the clip were complete)."""
    d, meta = av_clip
    fast = tmp_path / "fast.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(d / "av.mp4"), "-c", "copy",
                    "-movflags", "+faststart", str(fast)], check=True)
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "cut.csv"
    assert cli("run", [str(cut), "--bundle", str(bundle_dir), "--out", str(out)]) == 0
    rows = out.read_text().count("\n") - 1
    err = capsys.readouterr().err
    assert 0 < rows < 0.95 * meta.n_frames
    assert re.search(rf"ended after {rows} of the \d+ frames its container declares", err), err
    # -q keeps it: damaged input is part of the result (a new-user trial's batch with -q missed
    # a truncated file: nothing was printed and the exit code was 0)
    assert cli("run", [str(cut), "--bundle", str(bundle_dir), "--out", str(out), "-q"]) == 0
    assert "frames its container declares" in capsys.readouterr().err
    # the complete file gives no such warning
    assert cli("run", [str(fast), "--bundle", str(bundle_dir), "--out", str(out)]) == 0
    assert "frames its container declares" not in capsys.readouterr().err


def test_a_file_that_starts_late_is_not_called_truncated(bundle_dir, av_clip, tmp_path,  # noqa: F811
                                                         capsys):
    """Found by a new-user trial: an MKV whose timestamps start at 10 s (ffmpeg
    -output_ts_offset) declares, through OpenCV, its offset as frames too (452 for 150), and
    every frame read was reported as "ended after 150 of the 452 frames"."""
    d, meta = av_clip
    late = tmp_path / "late.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(d / "v.mp4"), "-c", "copy",
                    "-output_ts_offset", "10", str(late)], check=True)  # (video only: an MKV's
    # duration is its longest stream's, and this clip's speech outlasts its video)
    out = tmp_path / "late.csv"
    assert cli("run", [str(late), "--bundle", str(bundle_dir), "--out", str(out)]) == 0
    assert out.read_text().count("\n") - 1 >= 0.95 * meta.n_frames
    assert "frames its container declares" not in capsys.readouterr().err


def test_a_clip_cut_by_stream_copy_is_not_called_truncated(tmp_path, capsys):
    """Found by a new-user trial: ``ffmpeg -ss 5 -i clip -t 5 -c copy`` keeps, before the cut,
    the frames back to the previous keyframe and hides them with an edit list; OpenCV counts
    them (300 for the 150 that play), and every such clip was called truncated."""
    from affedge.sdk.recognizer import DEMO_CLIP

    cut = tmp_path / "cut.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "5", "-i", str(DEMO_CLIP), "-t", "5",
                    "-c", "copy", str(cut)], check=True)
    import cv2

    declared = cv2.VideoCapture(str(cut)).get(cv2.CAP_PROP_FRAME_COUNT)
    out = tmp_path / "cut.csv"
    assert cli("run", [str(cut), "--out", str(out)]) == 0
    rows = out.read_text().count("\n") - 1
    assert rows < 0.95 * declared  # the case: fewer frames play than OpenCV declares
    assert "frames its container declares" not in capsys.readouterr().err


def test_demo_scores_a_clip_against_its_aff_wild2_annotation(synth_dataset, tmp_path):
    """``affedge demo --clip --labels`` takes the annotation files ``affedge synth`` and
    Aff-Wild2 have ('valence,arousal', a row per frame, -5 = unlabelled): the -5 frames are
    left out, and the scores equal those of the same labels as a frame,valence,arousal CSV
    (the only format it read before: an annotation was refused)."""
    from affedge.labels import read_annotation

    video = sorted((synth_dataset / "raw_videos").glob("*.mp4"))[0]
    ann = read_annotation(next((synth_dataset / "annotations" / "VA_Set").glob(
        f"*/{video.stem}.txt")))
    ann[10:20] = -5.0  # an unannotated stretch
    ann_file = tmp_path / f"{video.stem}.txt"
    ann_file.write_text("valence,arousal\n" + "".join(f"{v:.6f},{a:.6f}\n" for v, a in ann))
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("frame,valence,arousal\n" + "".join(
        f"{i},{v:.6f},{a:.6f}\n" for i, (v, a) in enumerate(ann) if v != -5.0 and a != -5.0))
    got = {}
    for name, labels in (("ann", ann_file), ("csv", csv_file)):
        out_dir = tmp_path / name
        assert cli("demo", ["--clip", str(video), "--labels", str(labels), "--fast", "--quiet",
                            "--out-dir", str(out_dir)]) == 0
        got[name] = json.loads((out_dir / "demo_metrics.json").read_text())["metrics"]
    labelled = int(((ann != -5.0).all(axis=1)).sum())
    assert got["ann"]["frames_scored"] == labelled <= len(ann) - 10
    for kind in ("raw", "smoothed"):  # (the annotation reader parses to float32)
        assert got["ann"][kind] == pytest.approx(got["csv"][kind], abs=1e-6)


def test_a_labels_file_of_neither_format_is_one_clear_error(tmp_path):
    from affedge.labels import read_labels

    bad = tmp_path / "labels.txt"
    bad.write_text("time,v,a\n0.0,0.1,0.2\n")
    with pytest.raises(ValueError, match=r"Aff-Wild2 annotation .*frame,valence,arousal"):
        read_labels(bad)
    bad.write_text("valence,arousal\n0.1,0.2\n0.3\n")
    with pytest.raises(ValueError, match=r"line 3 has 1 columns"):
        read_labels(bad)


def test_run_on_the_demo_bundle_says_it_reads_synthetic_faces_only(tmp_path, capsys):
    """Found by a claims audit: ``affedge run CAMERA`` (the kiosk quick start) used the demo
    bundle without a word; only ``affedge demo``'s last line said it means nothing on real
    people."""
    from affedge.sdk.recognizer import DEMO_BUNDLE, DEMO_CLIP

    if not (DEMO_BUNDLE / "manifest.json").is_file():
        pytest.skip("the demo bundle is not built")
    out = tmp_path / "va.csv"
    assert cli("run", [str(DEMO_CLIP), "--max-frames", "3", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "affedge run: no --bundle: the demo bundle, trained on synthetic faces only" in err
    assert cli("run", [str(DEMO_CLIP), "--bundle", str(DEMO_BUNDLE), "--max-frames", "3",
                       "--out", str(tmp_path / "b.csv")]) == 0
    assert "synthetic faces only" not in capsys.readouterr().err
