"""Learning benchmark through the product: ``affedge synth`` + ``affedge train`` + ``affedge
export`` + ``affedge run``, scored from ``run``'s CSV against the held-out labels.

    python benchmarks/learning_product.py --videos 12 --seconds 60 --minutes 10
    python benchmarks/learning_product.py --videos 10 --seconds 30 --minutes 3 [--hog]

The training set is ``affedge synth DATA --videos N --seconds S --seed SEED``; the held-out set
is ``affedge synth HELD --videos H --seconds S --seed SEED+1 --identity-offset 1000`` (other
videos, identities never seen in training). ``affedge train DATA --encoder ENC --max-minutes M``
runs with its defaults otherwise (the device's profile); its wall time is measured around the
subprocess (interpreter start to exit). ``--hog`` runs ``python -c 'while True: pass'`` for the
whole training (a CPU-bound neighbour). The held-out CCC is computed over the concatenated
labelled frames of all held-out videos (label -5 = unlabelled, left out) from the CSV's raw
``valence``/``arousal`` columns (labelled frames without a prediction count as 0) with the
paper's CCC (affedge.metrics); the bundle runs twice, with its per-person baseline (the
default) and with ``--no-person-baseline`` (the model's own outputs). Writes ``OUT/result.json`` and prints one summary line. Data sets are reused when they exist.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from affedge.sdk.backends.cpu_features import cpu_model

from affedge.labels import INVALID as UNLABELLED  # -5: an unlabelled frame
from affedge.labels import read_annotation as read_labels


def cli(*args: str, log: Path) -> float:
    """Run ``python -m affedge.cli ARGS``, appending its output to ``log``; returns wall seconds."""
    t0 = time.time()
    with log.open("a") as fh:
        fh.write(f"\n$ affedge {' '.join(args)}\n")
        fh.flush()
        r = subprocess.run([sys.executable, "-m", "affedge.cli", *args], stdout=fh, check=False,
                           stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"affedge {args[0]} failed (exit {r.returncode}); see {log}")
    return time.time() - t0


def read_predictions(path: Path, n: int) -> tuple[np.ndarray, int]:
    """``[n, 2]`` raw V/A by frame index (missing = 0) and the number of frames predicted."""
    out = np.zeros((n, 2), np.float32)
    seen = 0
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            i = int(row["frame"])
            if 0 <= i < n and row["valence"] not in ("", "nan") and row["arousal"] not in ("", "nan"):
                out[i] = float(row["valence"]), float(row["arousal"])
                seen += 1
    return out, seen


def heldout_ccc(ys: list[np.ndarray], ps: list[np.ndarray]) -> tuple[dict[str, float], int]:
    """CCC per dimension over the concatenated videos' labelled frames, and their count. A frame
    labelled -5 is unlabelled (Aff-Wild2's convention; synth writes it on random "invalid"
    stretches, like unannotated spans of the real data): scored nowhere, as in training's
    validation and ``affedge demo``."""
    from affedge.metrics import ccc

    y, pr = np.concatenate(ys), np.concatenate(ps)
    labelled = (y != UNLABELLED).all(axis=1)
    y, pr = y[labelled], pr[labelled]
    return ({"valence": float(ccc(y[:, 0], pr[:, 0])), "arousal": float(ccc(y[:, 1], pr[:, 1]))},
            int(labelled.sum()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=10)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--heldout-videos", type=int, default=4)
    p.add_argument("--minutes", type=float, default=3.0, help="affedge train --max-minutes")
    p.add_argument("--encoder", default="mobile")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hog", action="store_true", help="a busy-loop process during training")
    p.add_argument("--out", default="runs/learning_product")
    p.add_argument("--train-args", default="", help="extra arguments for affedge train")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    tag = f"v{a.videos}s{a.seconds:g}seed{a.seed}"
    data, held = out.parent / f"data-{tag}", out.parent / f"heldout-{tag}-h{a.heldout_videos}"
    if not (data / "synthetic.json").is_file():
        cli("synth", str(data), "--videos", str(a.videos), "--seconds", str(a.seconds),
            "--seed", str(a.seed), "--no-progress", log=log)
    if not (held / "synthetic.json").is_file():
        cli("synth", str(held), "--videos", str(a.heldout_videos), "--seconds", str(a.seconds),
            "--seed", str(a.seed + 1), "--identity-offset", "1000", "--no-progress", log=log)
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a new run (train refuses an earlier one's dir)
    load_before = os.getloadavg()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if a.hog else None
    try:
        train_s = cli("train", str(data), "--encoder", a.encoder, "--max-minutes", str(a.minutes),
                      "--out", str(run_dir), "--no-progress", *a.train_args.split(), log=log)
    finally:
        if hog is not None:
            hog.terminate()
            hog.wait()
    load_after = os.getloadavg()
    summary = json.loads((run_dir / "crossval.json").read_text())["folds"]["0"]
    bundle = out / "bundle"
    export_args = ["--force"] if not summary["verdict"]["learned"] else []
    cli("export", str(run_dir / "fold0" / "best"), "-o", str(bundle), "--format", "onnx",
        *export_args, log=log)
    ys, ps, ps_model, covered = [], [], [], 0
    for video in sorted((held / "raw_videos").glob("*.mp4")):
        labels = next((held / "annotations" / "VA_Set").glob(f"*/{video.stem}.txt"))
        y = read_labels(labels)
        csv_path = out / f"heldout_{video.stem}.csv"
        cli("run", str(video), "--bundle", str(bundle), "--out", str(csv_path), log=log)
        pred, seen = read_predictions(csv_path, len(y))
        ys.append(y)
        ps.append(pred)
        covered += seen
        # the same bundle without its per-person baseline (the model's own outputs)
        csv_path = out / f"heldout_{video.stem}_model_only.csv"
        cli("run", str(video), "--bundle", str(bundle), "--out", str(csv_path),
            "--no-person-baseline", log=log)
        ps_model.append(read_predictions(csv_path, len(y))[0])
    held_ccc, n_labelled = heldout_ccc(ys, ps)
    model_only_ccc, _ = heldout_ccc(ys, ps_model)
    baseline = json.loads((bundle / "manifest.json").read_text()).get("person_baseline")
    budget = 60 * a.minutes
    res = {
        "command": f"affedge train {data} --encoder {a.encoder} --max-minutes {a.minutes:g}"
                   + (f" {a.train_args}" if a.train_args else ""),
        "data": {"videos": a.videos, "seconds": a.seconds, "seed": a.seed,
                 "heldout_videos": a.heldout_videos, "heldout_labelled_frames": n_labelled,
                 "heldout_frames_predicted": covered},
        "heldout_ccc": held_ccc,
        "heldout_ccc_without_person_baseline": model_only_ccc, "person_baseline": baseline,
        "validation": summary["verdict"]["val_ccc"], "untrained_validation":
            summary["verdict"]["untrained_ccc"], "verdict": summary["verdict"]["verdict"],
        "profile": summary["options"]["profile"], "epochs_run": summary["epochs_run"],
        "best_epoch": summary["best_epoch"], "stop_reason": summary["stop_reason"],
        "plan": summary.get("plan"), "train_wall_s": round(train_s, 1), "budget_s": budget,
        "within_budget_plus_10pct": train_s <= 1.1 * budget,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": load_before,
                    "load_after": load_after, "hog": a.hog},
    }
    (out / "result.json").write_text(json.dumps(res, indent=2))
    print(f"held-out CCC V {held_ccc['valence']:.3f} A {held_ccc['arousal']:.3f} (without the "
          f"person baseline V {model_only_ccc['valence']:.3f} A {model_only_ccc['arousal']:.3f})"
          f" | train wall "
          f"{train_s:.0f} s of {budget:.0f} s budget ({train_s / budget:.0%}) | "
          f"{summary['epochs_run']} epochs, {res['verdict']} | load {load_before[0]:.1f}->"
          f"{load_after[0]:.1f}{' +hog' if a.hog else ''} | {out / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
