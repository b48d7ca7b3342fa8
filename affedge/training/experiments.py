"""Learning experiments: does the pipeline learn, and does audio help when the face is hidden?

For ablations only: the README's learning numbers come from the product itself
(``benchmarks/learning_product.py``: ``affedge synth`` + ``affedge train`` + ``affedge run``).

Run as a module (``python -m affedge.training.experiments ...``):

* ``learn --data D --heldout H`` — train one model (default ``mobile`` encoder, A+V, fold 0) on
  ``D`` within a wall-time budget and report CCC on ``H``, a separately generated synthetic set
  (other seed, ``--identity-offset``: no video or identity seen in training).
* ``occlusion --data D --heldout H`` — train the A+V and the visual-only model with the same
  budget and seed on occluded data and compare their held-out CCC.

Held-out evaluation uses every trial of ``H`` (both partitions), the audio normalisation
statistics of the training fold, the centre crop, and reports the *offline* numbers (300/200
windows, overlap averaged, PAPER.md §6.1) and the *streaming* numbers (one causal pass over the
whole trial from zero state, which is what the exported step model computes frame by frame).
Results go to ``--out`` as ``result.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affedge.training.trainer import (
    FoldData,
    TrainOptions,
    Trial,
    embed_frames,
    load_fold,
    predict_embeddings,
    train_fold,
    va_metrics,
)


def load_heldout(root: str | Path, norm_stats: dict[str, Any], feature_cfg, cache_dir=None) -> list[Trial]:
    """Every trial of a held-out dataset, audio normalised with the *training* statistics."""
    from affedge.training.data import affwild2, normalization

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"held-out dataset directory not found: {root}")
    ds = affwild2.AffWild2VA(root, feature_cfg, cache_dir=cache_dir)
    out = []
    for part in affwild2.PARTITIONS:
        for tid in ds.trials(part):
            r = ds.load(tid)
            audio = normalization.apply_stats(r.audio, norm_stats)
            out.append(Trial(tid.name, r.frames, np.asarray(r.face_present, bool),
                             np.asarray(r.labels, np.float32),
                             [np.asarray(audio[n], np.float32) for n in feature_cfg.streams], float(r.fps)))
    if not out:
        raise ValueError(f"{root}: held-out dataset has no trials")
    return out


@torch.no_grad()
def evaluate(model, trials: list[Trial], window: int = 300, hop: int = 200) -> dict[str, Any]:
    """Offline (windowed, overlap-averaged) and streaming (one causal pass) metrics."""
    model.eval()
    ys, off, stream = [], [], []
    for t in trials:
        emb = embed_frames(model.encoder, t.frames, model.cfg.crop_size)
        off.append(predict_embeddings(model.temporal, emb, t.audio, window, hop))
        aud = [torch.from_numpy(a)[None] for a in t.audio] if model.cfg.fusion else []
        stream.append(model.temporal(emb[None], aud)[0].numpy())
        ys.append(t.labels)
    y = np.concatenate(ys)
    return {"offline": va_metrics(y, np.concatenate(off)),
            "streaming": va_metrics(y, np.concatenate(stream)),
            "untrained_reference": None, "frames": int(len(y)), "trials": len(trials)}


def untrained_metrics(opts: TrainOptions, data: FoldData, trials: list[Trial]) -> dict[str, float]:
    """Held-out metrics of a freshly initialised model (same seed): the no-learning baseline."""
    from affedge.training.model import AffectModel
    from affedge.training.trainer import model_config_for, set_seed

    set_seed(opts.seed)
    model = AffectModel(model_config_for(opts, data.feature_cfg))
    return evaluate(model, trials, opts.window, opts.hop)["offline"]


def run_one(data_dir: str, heldout: str, out: Path, opts: TrainOptions, fold: int = 0) -> dict[str, Any]:
    t0 = time.time()
    data = load_fold(data_dir, fold, cache_dir=opts.cache_dir,
                     require_audio=opts.modality == "av")
    load_s = time.time() - t0
    t1 = time.time()
    summary = train_fold(data_dir, out, fold=fold, opts=opts, data=data)
    train_s = time.time() - t1
    model = summary.pop("model")
    trials = load_heldout(heldout, data.norm_stats, data.feature_cfg, opts.cache_dir)
    res = evaluate(model, trials, opts.window, opts.hop)
    res["untrained_reference"] = untrained_metrics(opts, data, trials)
    res.update({"train_wall_seconds": round(train_s, 1), "data_load_seconds": round(load_s, 1),
                "validation": summary["best_metrics"], "stop_reason": summary["stop_reason"],
                "epochs_run": summary["epochs_run"], "best_epoch": summary["best_epoch"],
                "train_trials": summary["train_trials"], "train_frames": summary["train_frames"],
                "val_trials": summary["val_trials"], "val_frames": summary["val_frames"],
                "heldout_frames": res["frames"], "heldout_trials": res["trials"],
                "options": summary["options"], "encoder_pretrain": summary["encoder_pretrain"]})
    return res


def _opts(args: argparse.Namespace, modality: str) -> TrainOptions:
    return TrainOptions(encoder=args.encoder, modality=modality, epochs=args.epochs,
                        batch_size=args.batch_size, lr=args.lr, seed=args.seed, views=args.views,
                        pretrain_epochs=args.pretrain_epochs, pretrain_lr=args.pretrain_lr,
                        pretrain_stride=args.pretrain_stride, max_minutes=args.minutes,
                        threads=args.threads, progress=not args.quiet, cache_dir=args.cache_dir,
                        release=not args.no_release, e2e_batch_size=args.e2e_batch_size,
                        reload_best=not args.no_reload_best)


def _line(name: str, r: dict[str, Any]) -> str:
    o, s, u = r["offline"], r["streaming"], r["untrained_reference"]
    return (f"{name}: held-out CCC V={o['valence_ccc']:.4f} A={o['arousal_ccc']:.4f} "
            f"(streaming V={s['valence_ccc']:.4f} A={s['arousal_ccc']:.4f}; untrained "
            f"V={u['valence_ccc']:.4f} A={u['arousal_ccc']:.4f}); train {r['train_wall_seconds']:.0f} s, "
            f"{r['epochs_run']} epochs, {r['stop_reason']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m affedge.training.experiments", description=__doc__.split("\n")[0])
    p.add_argument("experiment", choices=("learn", "occlusion"))
    p.add_argument("--data", required=True, help="training dataset (affedge synth output)")
    p.add_argument("--heldout", required=True, help="held-out dataset (other seed and identity offset)")
    p.add_argument("--out", default="runs/experiments")
    p.add_argument("--encoder", default="mobile")
    p.add_argument("--modality", default="av", choices=("av", "v"), help="for 'learn'")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-time budget per model (training)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--e2e-batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--pretrain-stride", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--no-release", action="store_true")
    p.add_argument("--no-reload-best", action="store_true",
                   help="keep training from the current weights after a non-improving epoch")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.experiment == "learn":
        results = {args.modality: run_one(args.data, args.heldout, out / args.modality, _opts(args, args.modality))}
    else:
        results = {m: run_one(args.data, args.heldout, out / m, _opts(args, m)) for m in ("av", "v")}
        mean = {m: (r["offline"]["valence_ccc"] + r["offline"]["arousal_ccc"]) / 2 for m, r in results.items()}
        results["av_minus_v_mean_ccc"] = mean["av"] - mean["v"]
    results["command"] = " ".join(["python -m affedge.training.experiments"] + (argv if argv is not None else sys.argv[1:]))
    results["total_wall_seconds"] = round(time.time() - t0, 1)
    (out / "result.json").write_text(json.dumps(results, indent=2))
    for m in ("av", "v"):
        if m in results:
            print(_line(m, results[m]))
    if "av_minus_v_mean_ccc" in results:
        print(f"A+V minus V (mean CCC): {results['av_minus_v_mean_ccc']:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
