"""The synthetic Aff-Wild2-format generator (affedge.training.data.synthetic, `affedge synth`)."""
from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest

from affedge.features.faces import FaceDetector
from affedge.training.data import synthetic as S


def test_layout_and_record(synth_dataset, synth_record):
    rec = synth_record
    assert rec["version"] == S.GENERATOR_VERSION and rec["seed"] == 7
    assert len(rec["videos"]) == 6
    parts = [v["partition"] for v in rec["videos"]]
    assert parts.count("Validation_Set") == 1 and parts.count("Train_Set") == 5
    for v in rec["videos"]:
        name, n = v["name"], v["n_frames"]
        assert n == 75
        assert (synth_dataset / "raw_videos" / f"{name}.mp4").is_file()
        ann = synth_dataset / "annotations" / "VA_Set" / v["partition"] / f"{name}.txt"
        lines = ann.read_text().splitlines()
        assert lines[0] == "valence,arousal" and len(lines) == n + 1
        rows = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
        invalid = np.zeros(n, bool)
        for s, e in v["invalid"]:
            invalid[s:e] = True
        assert invalid.any()
        assert np.all(rows[invalid] == -5)
        assert np.all(np.abs(rows[~invalid]) <= 1)
        gt = np.load(synth_dataset / "ground_truth" / f"{name}.npz")
        np.testing.assert_allclose(rows[~invalid, 0], gt["valence"][~invalid], atol=1e-4)
        crops = sorted((synth_dataset / "cropped_aligned" / name).glob("*.jpg"))
        written = np.flatnonzero(gt["crop_written"])
        assert [c.name for c in crops] == [f"{i + 1:05d}.jpg" for i in written]
        img = cv2.imread(str(crops[0]))
        assert img.shape == (112, 112, 3)
        # crops exist exactly where the detector found the face (the runtime policy);
        # occlusion stretches are as long as requested
        occ = sum(e - s for s, e in v["occlusion"])
        assert occ == round(0.25 * n)
        assert v["frames_detected"] == len(written)
        assert v["frames_detected"] >= v["frames_visible"] * 0.9


def test_video_container(synth_dataset, synth_record):
    v = synth_record["videos"][0]
    with av.open(str(synth_dataset / "raw_videos" / f"{v['name']}.mp4")) as c:
        vs, aus = c.streams.video[0], c.streams.audio[0]
        assert float(vs.average_rate) == 25.0
        assert (vs.width, vs.height) == (320, 240)
        assert aus.rate == 16000 and aus.channels == 1
        n = sum(1 for _ in c.decode(vs))
    assert n == 75


def test_detector_hit_rate_on_visible_frames(synth_dataset, synth_record):
    """The runtime detector (full frame, defaults) finds the face in >= 90 % of the decoded
    frames where it is neither occluded nor out of view."""
    det = FaceDetector()
    hits = total = 0
    for v in synth_record["videos"]:
        hidden = set()
        for s, e in v["occlusion"] + v["out_of_view"]:
            hidden.update(range(s, e))
        with av.open(str(synth_dataset / "raw_videos" / f"{v['name']}.mp4")) as c:
            for i, fr in enumerate(c.decode(video=0)):
                if i % 3 or i in hidden:
                    continue
                total += 1
                hits += bool(det.detect(fr.to_ndarray(format="bgr24")))
    assert total > 50
    assert hits / total >= 0.9, f"hit rate {hits}/{total}"


def test_identity_from_index_only_and_offset(tmp_path):
    a, b = S.make_identity(1234), S.make_identity(1234)
    assert a == b and S.make_identity(1235) != a
    rec = S.generate(tmp_path / "t", 2, seed=3, seconds=0.6, fps=10, identity_offset=500,
                     progress=False)
    assert [v["name"] for v in rec["videos"]] == ["synth_00500", "synth_00501"]
    assert rec["videos"][0]["identity"] == S.make_identity(500).to_json()


def _snapshot(root):
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".txt", ".jpg", ".npz"):
            out[str(p.relative_to(root))] = p.read_bytes()
    rec = json.loads((root / "synthetic.json").read_text())
    rec.pop("frames_per_second_generated")
    return out, rec


def test_deterministic_given_seed(tmp_path):
    kw = dict(seconds=1.0, fps=15, occlusion=0.3, progress=False)
    S.generate(tmp_path / "a", 2, seed=5, **kw)
    S.generate(tmp_path / "b", 2, seed=5, **kw)
    S.generate(tmp_path / "c", 2, seed=6, **kw)
    fa, ra = _snapshot(tmp_path / "a")
    fb, rb = _snapshot(tmp_path / "b")
    fc, _ = _snapshot(tmp_path / "c")
    assert fa == fb and ra == rb
    assert fa != fc


def test_trajectories_bounded_and_cover_range():
    rng = np.random.default_rng(0)
    xs = np.concatenate([S.va_trajectory(rng, 3000, 30.0) for _ in range(10)])
    assert np.all(np.abs(xs) < 1.0)
    assert xs.min() < -0.8 and xs.max() > 0.8
    steps = np.abs(np.diff(S.va_trajectory(rng, 3000, 30.0)))
    assert steps.max() < 0.2  # smooth at 30 fps


def test_occlusion_stretches_are_long():
    rng = np.random.default_rng(1)
    st = S.occlusion_stretches(rng, 3000, 30.0, 0.5)
    covered = sum(e - s for s, e in st)
    assert 0.4 * 3000 <= covered <= 0.65 * 3000
    assert all(e - s >= 121 for s, e in st)  # longer than the model's receptive field
    assert all(st[k][1] <= st[k + 1][0] for k in range(len(st) - 1))


def test_speech_prosody_follows_arousal():
    ident = S.make_identity(2)
    n = 300

    def run(a):
        rng = np.random.default_rng(0)
        pcm, mouth = S.synth_speech(rng, ident, np.zeros(n), np.full(n, a), 30.0, 10.0, 30.0)
        return pcm, mouth

    lo, mlo = run(-0.9)
    hi, mhi = run(0.9)
    assert lo.dtype == np.float32 and lo.shape == (160000,)
    assert np.max(np.abs(hi)) <= 0.95 + 1e-6
    rms = lambda x: float(np.sqrt(np.mean(x**2)))
    assert rms(hi) > 2 * rms(lo)  # louder
    onsets = lambda m: int(np.sum(np.diff((m > 0).astype(int)) == 1))
    assert onsets(mhi) > 1.3 * onsets(mlo)  # more syllables per second


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="--videos"):
        S.generate(tmp_path / "x", 0)
    with pytest.raises(ValueError, match="--occlusion"):
        S.generate(tmp_path / "x", 1, occlusion=1.5)


def test_synth_command(tmp_path, capsys):
    import argparse

    from affedge.commands import synth

    p = argparse.ArgumentParser()
    synth.add_arguments(p)
    out = tmp_path / "cli"
    args = p.parse_args([str(out), "--videos", "2", "--seconds", "0.6", "--fps", "10",
                         "--seed", "1", "--no-progress"])
    assert synth.run(args) == 0
    assert "wrote 2 videos" in capsys.readouterr().out
    assert (out / "synthetic.json").is_file()
    with pytest.raises(ValueError, match="already holds a data set"):
        synth.run(args)  # refuses to overwrite; affedge.cli prints it as one error line
