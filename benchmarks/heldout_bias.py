"""Where a held-out CCC is lost: per-video mean bias vs tracking, and how much of the bias the audio carries.

CCC over concatenated videos punishes a per-video offset of the prediction's mean as much as a
wrong shape. This prints, per held-out video of an ``affedge synth`` set: the labels' mean, the
prediction's mean, their difference (bias), Pearson r (the shape), the slope of the prediction
on the label (1 = the full range; below 1 = a compressed range, so the error grows with the
label's distance from the mean), the video's own CCC, and the generator's identity parameters
that set the face and voice (``synthetic.json``).

``--swap-audio`` re-muxes every video with the audio track of the next one (ffmpeg, streams
copied) and runs the bundle again: the change of the prediction's mean is what the audio
contributes to it; what is left of the bias comes from the face.

    python benchmarks/heldout_bias.py --bundle runs/learning_10/bundle \\
        --heldout runs/heldout-v12s60seed1-h4 --csv-dir runs/learning_10 [--swap-audio]

Predictions are read from ``CSV_DIR/heldout_<video>.csv`` (what benchmarks/learning_product.py
writes) and made with ``affedge run`` where missing.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_product import UNLABELLED, read_labels, read_predictions  # noqa: E402

#: the identity parameters printed (affedge.training.data.synthetic.Identity)
IDENTITY_KEYS = ("loudness_db", "f0", "rate", "eye_w", "eye_dx", "neutral_brow", "neutral_smile")
DIMS = ("valence", "arousal")


def video_stats(labels: np.ndarray, pred: np.ndarray) -> dict:
    """Per dimension over the labelled frames of one video (``[n, 2]`` V/A each): label mean,
    prediction mean, bias (prediction - label mean), Pearson r, least-squares slope of the
    prediction on the label, and CCC."""
    from affedge.metrics import ccc

    keep = (labels != UNLABELLED).all(axis=1)
    y, p = labels[keep].astype(np.float64), pred[keep].astype(np.float64)
    out = {"labelled_frames": int(keep.sum())}
    for k, dim in enumerate(DIMS):
        yk, pk = y[:, k], p[:, k]
        r = float(np.corrcoef(yk, pk)[0, 1]) if yk.std() > 0 and pk.std() > 0 else float("nan")
        slope = float(np.cov(yk, pk, bias=True)[0, 1] / yk.var()) if yk.var() > 0 \
            else float("nan")
        out[dim] = {"label_mean": float(yk.mean()), "pred_mean": float(pk.mean()),
                    "bias": float(pk.mean() - yk.mean()), "pearson": r, "slope": slope,
                    "ccc": float(ccc(yk, pk))}
    return out


def run_bundle(video: Path, bundle: Path, out_csv: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "affedge.cli", "run", str(video), "--bundle",
                        str(bundle), "--out", str(out_csv)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"affedge run {video} failed: {r.stderr.strip().splitlines()[-1:]}")


def swap_audio(video: Path, audio_from: Path, out: Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-i", str(audio_from),
                    "-map", "0:v", "-map", "1:a", "-c", "copy", "-shortest", str(out)],
                   check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--heldout", required=True, type=Path, help="an `affedge synth` folder")
    ap.add_argument("--csv-dir", type=Path, help="where heldout_<video>.csv are (or go)")
    ap.add_argument("--swap-audio", action="store_true",
                    help="also run every video with the next video's audio track")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args(argv)
    meta = json.loads((a.heldout / "synthetic.json").read_text())
    idents = {v["name"]: v.get("identity", {}) for v in meta.get("videos", [])}
    videos = sorted((a.heldout / "raw_videos").glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no videos in {a.heldout / 'raw_videos'}")
    csv_dir = a.csv_dir or Path(tempfile.mkdtemp(prefix="heldout_bias_"))
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, video in enumerate(videos):
            labels = read_labels(next((a.heldout / "annotations" / "VA_Set").glob(
                f"*/{video.stem}.txt")))
            csv_path = csv_dir / f"heldout_{video.stem}.csv"
            if not csv_path.is_file():
                run_bundle(video, a.bundle, csv_path)
            pred, _ = read_predictions(csv_path, len(labels))
            row = video_stats(labels, pred)
            row["identity"] = {k: idents.get(video.stem, {}).get(k) for k in IDENTITY_KEYS}
            if a.swap_audio and len(videos) > 1:
                other = videos[(i + 1) % len(videos)]
                mixed, mixed_csv = Path(tmp) / f"{video.stem}_swap.mp4", Path(tmp) / "s.csv"
                swap_audio(video, other, mixed)
                run_bundle(mixed, a.bundle, mixed_csv)
                swapped, _ = read_predictions(mixed_csv, len(labels))
                s = video_stats(labels, swapped)
                row["audio_from"] = other.stem
                for dim in DIMS:
                    row[dim]["pred_mean_other_audio"] = s[dim]["pred_mean"]
            res[video.stem] = row
    print(f"{'video':14s} {'dim':8s} {'label':>7s} {'pred':>7s} {'bias':>7s} {'r':>6s} "
          f"{'slope':>6s} {'CCC':>6s}" + (f" {'other-audio':>12s}" if a.swap_audio else ""))
    for name, row in res.items():
        for dim in DIMS:
            d = row[dim]
            extra = f" {d['pred_mean_other_audio']:12.3f}" if "pred_mean_other_audio" in d else ""
            print(f"{name:14s} {dim:8s} {d['label_mean']:7.3f} {d['pred_mean']:7.3f} "
                  f"{d['bias']:7.3f} {d['pearson']:6.3f} {d['slope']:6.3f} {d['ccc']:6.3f}"
                  f"{extra}")
        ident = ", ".join(f"{k} {v:.2f}" for k, v in row["identity"].items() if v is not None)
        print(f"{'':14s} identity: {ident}")
    if a.swap_audio:
        for dim in DIMS:
            bias = [abs(r[dim]["bias"]) for r in res.values()]
            moved = [abs(r[dim]["pred_mean"] - r[dim]["pred_mean_other_audio"])
                     for r in res.values() if "pred_mean_other_audio" in r[dim]]
            print(f"{dim}: mean |bias| {np.mean(bias):.3f}; swapping the audio moved the "
                  f"prediction's mean by {np.mean(moved):.3f} on average")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
