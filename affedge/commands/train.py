"""``affedge train``: train the audio-visual model on an Aff-Wild2-layout dataset.

Heavy imports (torch) happen inside :func:`run`. Multi-GPU / multi-node: launch the same command
through ``torchrun`` (``torchrun --nproc_per_node N -m affedge.cli train DATA ...``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "train the valence/arousal model (6-fold cross-validation, CCC loss, gradual release)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", metavar="DATA_DIR", help="dataset root (Aff-Wild2 VA layout or `affedge synth` output)")
    p.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory (default: runs/<encoder>-<modality>)")
    p.add_argument("--encoder", choices=("ir50", "ir18", "mobile"), default="ir50", help="face encoder (default ir50, the paper's)")
    p.add_argument("--modality", choices=("av", "v"), default="av", help="av: audio-visual fusion; v: visual only")
    p.add_argument("--folds", default="0", help="'0', 'all' or a list like '0,1' (default 0 = the official split)")
    p.add_argument("--epochs", type=int, default=100, help="max epochs of temporal training (PAPER.md: 100)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per step on cached features (default 8)")
    p.add_argument("--e2e-batch-size", type=int, default=2, help="windows per step once deeper encoder groups are released")
    p.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate (PAPER.md: 1e-5)")
    p.add_argument("--min-lr", type=float, default=None, help="release/stop threshold (default lr/10, PAPER.md 1e-6)")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="classic L2 weight decay (default 1e-3)")
    p.add_argument("--window", type=int, default=300, help="window length in frames (default 300)")
    p.add_argument("--hop", type=int, default=200, help="window hop in frames (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/fold*/last/")
    p.add_argument("--pretrained-encoder", default=None, metavar="CKPT",
                   help="checkpoint dir whose encoder.* weights start the gradual release (skips stage 0)")
    p.add_argument("--pretrain-epochs", type=int, default=3, help="stage 0 encoder pretraining epochs (0 = skip)")
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--pretrain-stride", type=int, default=1, help="use every n-th face frame per pretraining epoch")
    p.add_argument("--views", type=int, default=2, help="cached augmentation views per frame (default 2)")
    p.add_argument("--no-reload-best", action="store_true", help="do not reset to the best weights after each epoch")
    p.add_argument("--no-release", action="store_true", help="never release encoder groups beyond the output layer")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-time budget per fold")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--cache-dir", default=None, help="dataset feature cache directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars / per-epoch lines")


def options_from_args(args: argparse.Namespace):
    from affedge.training.trainer import TrainOptions

    return TrainOptions(
        encoder=args.encoder, modality=args.modality, epochs=args.epochs, batch_size=args.batch_size,
        e2e_batch_size=args.e2e_batch_size, lr=args.lr, min_lr=args.min_lr, weight_decay=args.weight_decay,
        window=args.window, hop=args.hop, seed=args.seed, reload_best=not args.no_reload_best,
        release=not args.no_release, views=args.views, pretrained_encoder=args.pretrained_encoder,
        pretrain_epochs=args.pretrain_epochs, pretrain_lr=args.pretrain_lr,
        pretrain_stride=args.pretrain_stride, max_minutes=args.max_minutes, threads=args.threads,
        resume=args.resume, progress=not args.no_progress, cache_dir=args.cache_dir)


def run(args: argparse.Namespace) -> int:
    data = Path(args.data_dir)
    if not data.is_dir():
        raise FileNotFoundError(f"dataset directory not found: {data}")
    if args.pretrained_encoder and not Path(args.pretrained_encoder).exists():
        raise FileNotFoundError(f"--pretrained-encoder: not found: {args.pretrained_encoder}")
    from affedge.training import ddp
    from affedge.training.crossval import cross_validate, parse_folds

    folds = parse_folds(args.folds)
    opts = options_from_args(args)
    out = Path(args.out or f"runs/{args.encoder}-{args.modality}")
    try:
        summary = cross_validate(data, out, folds, opts=opts)
        is_main = ddp.context().is_main
    finally:
        ddp.shutdown()
    if is_main:
        for f, r in summary["folds"].items():
            m = r["best_metrics"]
            print(f"fold {f}: valence CCC {m['valence_ccc']:.4f}  arousal CCC {m['arousal_ccc']:.4f}  "
                  f"(best epoch {r['best_epoch']}, {r['stop_reason']}, {r['wall_seconds']:.0f} s)")
        print(f"results: {out / 'crossval.json'}")
        print(json.dumps(summary["mean"]))
    return 0
