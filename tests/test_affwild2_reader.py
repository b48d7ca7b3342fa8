"""The Aff-Wild2 VA reader on files written by the synthetic generator, and its errors."""
from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest

from affedge.config import FeatureConfig
from affedge.features.align import sample_at
from affedge.features.audio import extract
from affedge.training.data import synthetic as S
from affedge.training.data.affwild2 import AffWild2VA, read_annotation


def _mini_root(src, rec, dst, k=0):
    """Copy one video of the fixture data set into a fresh root (for the error cases)."""
    v = rec["videos"][k]
    name, part = v["name"], v["partition"]
    for sub in ("raw_videos", "cropped_aligned", "annotations/VA_Set/Train_Set",
                "annotations/VA_Set/Validation_Set"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "raw_videos" / f"{name}.mp4", dst / "raw_videos")
    shutil.copytree(src / "cropped_aligned" / name, dst / "cropped_aligned" / name)
    ann = dst / "annotations" / "VA_Set" / part / f"{name}.txt"
    shutil.copy(src / "annotations" / "VA_Set" / part / f"{name}.txt", ann)
    return name, ann


def test_partitions_match_the_generator(synth_dataset, synth_record):
    r = AffWild2VA(synth_dataset)
    for part in ("Train_Set", "Validation_Set"):
        names = [t.name for t in r.trials(part)]
        want = sorted(v["name"] for v in synth_record["videos"] if v["partition"] == part)
        assert names == want
    with pytest.raises(ValueError, match="unknown partition"):
        r.trials("Test_Set")


def test_load_end_to_end(synth_dataset, synth_record):
    cfg = FeatureConfig()
    r = AffWild2VA(synth_dataset, cfg)
    v = synth_record["videos"][0]
    t = r.trial(v["name"])
    d = r.load(t)
    n = v["n_frames"]
    gt = np.load(synth_dataset / "ground_truth" / f"{v['name']}.npz")
    invalid = np.zeros(n, bool)
    for s, e in v["invalid"]:
        invalid[s:e] = True
    L = int((~invalid).sum())
    assert len(d) == L and d.frames.shape == (L, 48, 48, 3) and d.frames.dtype == np.uint8
    np.testing.assert_array_equal(d.frame_index, np.flatnonzero(~invalid))
    assert d.fps == 25.0
    np.testing.assert_allclose(d.frame_times, d.frame_index / 25.0)
    np.testing.assert_allclose(d.labels[:, 0], gt["valence"][~invalid], atol=1e-4)
    np.testing.assert_allclose(d.labels[:, 1], gt["arousal"][~invalid], atol=1e-4)
    # faces: present exactly where a crop file exists; filler is black; pixels = resized jpg
    np.testing.assert_array_equal(d.face_present, gt["crop_written"][~invalid])
    assert not d.frames[~d.face_present].any()
    k = int(np.flatnonzero(d.face_present)[0])
    jpg = cv2.imread(str(t.crops_dir / f"{d.frame_index[k] + 1:05d}.jpg"))
    ref = cv2.resize(jpg, (48, 48), interpolation=cv2.INTER_AREA)[..., ::-1]
    np.testing.assert_array_equal(d.frames[k], ref)
    # audio: every stream on the frame times, aligned with the clean generator signal
    assert d.audio["mfcc"].shape == (L, 39) and d.audio["logmel"].shape == (L, 64)
    assert all(np.isfinite(a).all() and a.dtype == np.float32 for a in d.audio.values())
    tt, ff = extract(gt["pcm"], cfg)["logmel"]
    clean = sample_at(tt, ff, d.frame_times, mode="previous")
    corr = np.corrcoef(clean.mean(1), d.audio["logmel"].mean(1))[0, 1]
    assert corr > 0.95, corr


def test_cache_roundtrip_and_invalidation(synth_dataset, synth_record, tmp_path):
    root = tmp_path / "root"
    name, ann = _mini_root(synth_dataset, synth_record, root)
    cache = tmp_path / "cache"
    r = AffWild2VA(root, cache_dir=cache)
    a = r.load(name)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1
    b = AffWild2VA(root, cache_dir=cache).load(name)
    for f in ("frames", "face_present", "labels", "frame_index", "frame_times"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    for s in a.audio:
        np.testing.assert_array_equal(a.audio[s], b.audio[s])
    # a changed annotation is a new cache key, and the new labels are read
    lines = ann.read_text().splitlines()
    lines[1] = "0.5,0.5"
    ann.write_text("\n".join(lines) + "\n")
    os.utime(ann, ns=(1, 1))
    c = AffWild2VA(root, cache_dir=cache).load(name)
    assert len(list(cache.glob("*.npz"))) == 2
    assert c.frame_index[0] == 0 and np.allclose(c.labels[0], 0.5)


def test_left_right_share_the_video_audio(synth_dataset, synth_record, tmp_path):
    root = tmp_path / "root"
    name, ann = _mini_root(synth_dataset, synth_record, root)
    for side in ("left", "right"):
        shutil.copy(ann, ann.with_name(f"{name}_{side}.txt"))
        crops = root / "cropped_aligned"
        shutil.copytree(crops / name, crops / f"{name}_{side}")
    ann.unlink()
    r = AffWild2VA(root)
    trials = r.trials(ann.parent.name)
    assert [t.name for t in trials] == [f"{name}_left", f"{name}_right"]
    assert all(t.video_path.name == f"{name}.mp4" for t in trials)
    a, b = r.load(trials[0]), r.load(trials[1])
    np.testing.assert_array_equal(a.audio["mfcc"], b.audio["mfcc"])
    np.testing.assert_array_equal(a.frames, b.frames)


@pytest.mark.parametrize("text, msg", [
    ("v,a\n0.1,0.2\n", "header"),
    ("valence,arousal\n0.1,0.2,0.3\n", "3 columns"),
    ("valence,arousal\n0.1,abc\n", "not numeric"),
    ("valence,arousal\n0.1,7\n", "outside"),
    ("valence,arousal\n", "no annotation rows"),
])
def test_bad_annotation_text(tmp_path, text, msg):
    p = tmp_path / "vid.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=msg) as e:
        read_annotation(p)
    assert "vid.txt" in str(e.value)


def test_annotation_length_must_match_video(synth_dataset, synth_record, tmp_path):
    root = tmp_path / "root"
    name, ann = _mini_root(synth_dataset, synth_record, root)
    lines = ann.read_text().splitlines()
    ann.write_text("\n".join(lines[:-20]) + "\n")
    with pytest.raises(ValueError, match=r"55 annotation rows .* 75 frames") as e:
        AffWild2VA(root).load(name)
    assert name in str(e.value)
    ann.write_text("\n".join(lines[:-2]) + "\n")  # within the tolerance
    assert len(AffWild2VA(root).load(name)) > 0
    # 4 rows too many (within the tolerance): the rows past the last frame are left out (they
    # failed with "audio track is 3.0 s but the video/annotation covers 3.1 s")
    ann.write_text("\n".join(lines + ["0.1,0.2"] * 4) + "\n")
    d = AffWild2VA(root).load(name)
    assert d.frame_index.max() < 75 and len(d) == len(AffWild2VA(synth_dataset).load(name))


def test_corrupt_jpg_names_the_file(synth_dataset, synth_record, tmp_path):
    root = tmp_path / "root"
    name, _ = _mini_root(synth_dataset, synth_record, root)
    gt = np.load(synth_dataset / "ground_truth" / f"{name}.npz")
    valid_crop = None
    d = AffWild2VA(synth_dataset).load(name)
    valid_crop = int(d.frame_index[np.flatnonzero(d.face_present)[0]])
    bad = root / "cropped_aligned" / name / f"{valid_crop + 1:05d}.jpg"
    assert gt["crop_written"][valid_crop]
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match="unreadable face image") as e:
        AffWild2VA(root).load(name)
    assert bad.name in str(e.value)


def test_missing_folders_and_files(synth_dataset, synth_record, tmp_path):
    with pytest.raises(FileNotFoundError, match="root not found"):
        AffWild2VA(tmp_path / "nope")
    root = tmp_path / "root"
    name, ann = _mini_root(synth_dataset, synth_record, root)
    shutil.rmtree(root / "cropped_aligned" / name)
    with pytest.raises(FileNotFoundError, match="crop folder") as e:
        AffWild2VA(root).load(name)
    assert name in str(e.value)
    (root / "raw_videos" / f"{name}.mp4").unlink()
    with pytest.raises(FileNotFoundError, match="no video") as e:
        AffWild2VA(root).trials(ann.parent.name)
    assert ann.name in str(e.value)
    shutil.rmtree(root / "raw_videos")
    with pytest.raises(FileNotFoundError, match="raw_videos"):
        AffWild2VA(root)


def test_audio_shorter_than_video(synth_dataset, synth_record, tmp_path):
    root = tmp_path / "root"
    name, _ = _mini_root(synth_dataset, synth_record, root)
    path = root / "raw_videos" / f"{name}.mp4"
    w = S._Mp4Writer(path, 25.0)
    frame = np.zeros((S.FRAME_H, S.FRAME_W, 3), np.uint8)
    for _ in range(75):
        w.write_frame(frame)
    w.write_audio(np.zeros(int(1.5 * 16000), np.float32))  # 1.5 s of a 3 s video
    w.close()
    with pytest.raises(ValueError, match="audio track is") as e:
        AffWild2VA(root).load(name)
    assert f"{name}.mp4" in str(e.value)


def test_crops_named_otherwise_are_refused_with_the_pattern(synth_dataset, synth_record,
                                                            tmp_path):
    """Home-made crops saved as 00001.png matched no frame: every frame became "no face" and
    training learned from the audio alone, silently."""
    root = tmp_path / "root"
    name, _ = _mini_root(synth_dataset, synth_record, root)
    crops = root / "cropped_aligned" / name
    for f in list(crops.iterdir()):
        f.rename(f.with_suffix(".png"))
    with pytest.raises(ValueError, match=r"00001\.jpg.*1-based frame number") as e:
        AffWild2VA(root).load(name)
    assert str(crops) in str(e.value) and ".png" in str(e.value)


def test_a_fold_without_any_face_crop_is_refused(synth_dataset, tmp_path):
    """Empty crop folders (a failed face-cropping step): the fold has no face at all, and
    training would call an audio-only model "learned"."""
    from affedge.training.fold_data import load_fold

    root = tmp_path / "ds"
    shutil.copytree(synth_dataset, root, ignore=shutil.ignore_patterns("*.npz"))
    for d in (root / "cropped_aligned").iterdir():
        for f in d.iterdir():
            f.unlink()
    with pytest.raises(ValueError, match="none of the .* labelled frames has a face crop"):
        load_fold(root, 0, cache_dir=tmp_path / "cache")
    assert load_fold(synth_dataset, 0, cache_dir=tmp_path / "cache2").train  # with faces: fine


def test_videos_without_audio_train_visual_only(synth_dataset, tmp_path):
    """A data set whose videos have no audio track (stripped with ffmpeg -an): the
    audio-visual reader refuses it and says a visual-only model does not need audio; the
    visual-only one (``train --modality v``) reads it with zero audio features. The cache
    keeps the two apart."""
    import subprocess

    from affedge.training.fold_data import load_fold

    root = tmp_path / "ds"
    shutil.copytree(synth_dataset, root, ignore=shutil.ignore_patterns("*.npz"))
    for v in (root / "raw_videos").glob("*.mp4"):
        silent = v.with_name("silent.mp4")
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(v), "-an", "-c:v", "copy",
                        str(silent)], check=True, timeout=60)
        silent.replace(v)
    cache = tmp_path / "cache"
    fold = load_fold(root, 0, cache_dir=cache, require_audio=False)
    assert fold.train and all(not a.any() for t in fold.train + fold.val for a in t.audio)
    assert all(len(a) == len(t.labels) for t in fold.train for a in t.audio)
    with pytest.raises(ValueError, match=r"no audio track .*--modality v, does not"):
        load_fold(root, 0, cache_dir=cache)  # not served from the visual-only cache entries
    # export --data of a visual-only model reads its parity sequence from the same videos
    from affedge.config import ModelConfig
    from affedge.export.parity import data_inputs

    seq = data_inputs(root, ModelConfig(encoder="mobile", fusion=False), FeatureConfig(),
                      n_frames=400)
    assert seq.audio == {} and len(seq.frames) == len(seq.labels) > 0
    # videos that have audio read the same either way
    ref = load_fold(synth_dataset, 0, cache_dir=tmp_path / "c2")
    vis = load_fold(synth_dataset, 0, cache_dir=tmp_path / "c3", require_audio=False)
    for a, b in zip(ref.train, vis.train):
        for x, y in zip(a.audio, b.audio):
            np.testing.assert_array_equal(x, y)


def test_a_refused_training_run_leaves_no_empty_run_folder(synth_dataset, synth_record, tmp_path):
    """Found by a new-user trial: ``affedge train`` refused a data set (crops saved as .png)
    with a clear message but left ``runs/x/fold0/`` behind, empty."""
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "ds"
    shutil.copytree(synth_dataset, root, ignore=shutil.ignore_patterns("*.npz"))
    for d in (root / "cropped_aligned").iterdir():
        for f in list(d.iterdir()):
            f.rename(f.with_suffix(".png"))
    run = tmp_path / "runs" / "x"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "affedge.cli", "train", str(root), "--encoder",
                        "mobile", "--out", str(run), "--max-minutes", "1"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode != 0 and "00001.jpg" in r.stderr, r.stderr[-600:]
    assert not run.exists()
