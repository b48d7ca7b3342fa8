"""``affedge train``: train the audio-visual model on an Aff-Wild2-layout dataset.

Heavy imports (torch) happen inside :func:`run`. Multi-GPU / multi-node: launch the same command
through ``torchrun`` (``torchrun --nproc_per_node N -m affedge.cli train DATA ...``).
"""
from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path

from affedge.commands.argtypes import positive_float, positive_int

HELP = "train the valence/arousal model (6-fold cross-validation, CCC loss, gradual release)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", metavar="DATA_DIR", help="dataset root (Aff-Wild2 VA layout or `affedge synth` output)")
    p.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory (default: runs/<encoder>-<modality>)")
    p.add_argument("--encoder", choices=("ir50", "ir18", "mobile"), default="ir50", help="face encoder (default ir50, the paper's)")
    p.add_argument("--modality", choices=("av", "v"), default="av", help="av: audio-visual fusion; v: visual only")
    p.add_argument("--folds", default="0", help="'0', 'all' or a list like '0,1' (default 0 = the official split)")
    p.add_argument("--profile", choices=("paper", "fast"), default=None,
                   help="defaults for the options below: 'paper' = PAPER.md's protocol (lr 1e-5, "
                        "reload best, 3 stage-0 pretraining epochs, 2 views) for a GPU and the "
                        "real data set; 'fast' = what works in minutes on a CPU (lr 2e-3, no "
                        "pretraining, 1 view, no reload); default: paper with a CUDA GPU, else "
                        "fast. Options given explicitly override the profile")
    p.add_argument("--epochs", type=positive_int, default=None, help="max epochs of temporal training (both profiles: 100, PAPER.md)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per step on cached features (default 8)")
    p.add_argument("--e2e-batch-size", type=positive_int, default=2, help="windows per step once deeper encoder groups are released")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (paper: 1e-5, fast: 2e-3)")
    p.add_argument("--min-lr", type=float, default=None, help="release/stop threshold (default lr/10, PAPER.md 1e-6)")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="classic L2 weight decay (default 1e-3)")
    p.add_argument("--window", type=positive_int, default=300, help="window length in frames (default 300)")
    p.add_argument("--hop", type=positive_int, default=200, help="window hop in frames (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/fold*/last/")
    p.add_argument("--pretrained-encoder", default=None, metavar="CKPT",
                   help="checkpoint dir whose encoder.* weights start the gradual release (skips stage 0)")
    p.add_argument("--pretrain-epochs", type=int, default=None, help="stage 0 encoder pretraining epochs, 0 = skip (paper: 3, fast: 0)")
    p.add_argument("--pretrain-lr", type=float, default=1e-3, help="stage 0 learning rate (default 1e-3)")
    p.add_argument("--pretrain-stride", type=positive_int, default=1, help="use every n-th face frame per pretraining epoch (default 1)")
    p.add_argument("--views", type=positive_int, default=None, help="cached augmentation views per frame (paper: 2, fast: 1)")
    p.add_argument("--reload-best", action=argparse.BooleanOptionalAction, default=None,
                   help="reset to the best weights after each epoch (paper: on, fast: off)")
    p.add_argument("--release", action=argparse.BooleanOptionalAction, default=None,
                   help="gradual release of encoder groups beyond the output layer (both: on)")
    p.add_argument("--person-baseline", action=argparse.BooleanOptionalAction, default=None,
                   help="fit on the validation videos how far to pull each tracked person's "
                        "running mean toward the training mean at run time (fast: on, paper: off)")
    p.add_argument("--select-window", type=positive_int, default=None, metavar="N",
                   help="keep the epoch whose validation CCC averaged with the N-1 epochs "
                        "before it is best; the learning-rate schedule and early stopping use "
                        "the same averaged score (fast: 3, as one epoch's score on 1-2 "
                        "validation videos is noisy; paper: 1, the best single epoch)")
    p.add_argument("--max-minutes", type=positive_float, default=None,
                   help="wall-time budget of the whole command in minutes, counted from the "
                        "process start (data loading, caching, pretraining, epochs, releases, "
                        "validation, writing); a plan measured from the first batches is printed "
                        "and the folds share it (default: none)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default on a CPU: the cores other processes leave free, measured over 0.5 s, at least 1)")
    p.add_argument("--cache-dir", default=None,
                   help="keep the preprocessed trials (face crops, audio features; .npz) here "
                        "to reuse them across runs (default: none, each run preprocesses the "
                        "videos)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars / per-epoch lines (bars are also off with -q, when "
                        "stderr is not a terminal, and under CI=true, TERM=dumb or NO_COLOR)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="the cross-validation summary as JSON on stdout (or written to FILE)")


PROFILE_OPTIONS = ("lr", "epochs", "reload_best", "pretrain_epochs", "views", "release",
                   "person_baseline", "select_window")


def resolve_profile(args: argparse.Namespace) -> tuple[str, dict, str]:
    """``(profile, {option: value}, why)`` for the options a profile sets."""
    from affedge.training.profiles import resolve

    return resolve(getattr(args, "profile", None),
                   {k: getattr(args, k, None) for k in PROFILE_OPTIONS})


def options_from_args(args: argparse.Namespace):
    from affedge.training.selection import check_window
    from affedge.training.trainer import TrainOptions

    profile, values, _ = resolve_profile(args)
    if args.select_window is not None:  # given: a window longer than the run is refused
        check_window(values["select_window"], values["epochs"])
    else:  # the profile's: at most the run's epochs
        values["select_window"] = min(values["select_window"], values["epochs"])
    return TrainOptions(
        encoder=args.encoder, modality=args.modality, batch_size=args.batch_size,
        e2e_batch_size=args.e2e_batch_size, min_lr=args.min_lr, weight_decay=args.weight_decay,
        window=args.window, hop=args.hop, seed=args.seed, pretrained_encoder=args.pretrained_encoder,
        pretrain_lr=args.pretrain_lr, pretrain_stride=args.pretrain_stride,
        max_minutes=args.max_minutes, threads=args.threads, resume=args.resume,
        progress=not args.no_progress and not _quiet(), cache_dir=args.cache_dir,
        profile=profile, announce=not _quiet(), **values)


def _by_window(fold_summary: dict) -> str:
    """How the kept epoch was chosen, when not by its own score alone."""
    n = int((fold_summary.get("options") or {}).get("select_window", 1))
    if n <= 1:
        return ""
    return f", best {n}-epoch mean validation CCC {fold_summary['best_score']:.4f}"


def _quiet() -> bool:
    from affedge import log

    return log.quiet()


def unlike_folds_note(summary: dict) -> str | None:
    """A note when the budget cut some folds' training trials (``--folds all`` on a short
    --max-minutes): their mean mixes folds that saw unlike amounts of data."""
    used = sorted({(r.get("plan") or {}).get("train_trials") for r in
                   summary["folds"].values()} - {None})
    if len(used) < 2:
        return None
    return (f"note: the folds trained on {used[0]}-{used[-1]} trials each (the budget cut "
            f"some): the mean mixes unlike folds; give more --max-minutes")


def drop_empty_run(out: Path) -> None:
    """Remove ``out`` when nothing but empty folders is in it (a refusal or an interrupt came
    before the first file: ``runs/x/fold0/`` was left behind, empty)."""
    if not out.is_dir() or any(p.is_file() for p in out.rglob("*")):
        return
    for d in sorted(out.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        d.rmdir()
    out.rmdir()


def check_dataset_size(data: Path, folds: list[int]) -> None:
    """Refuse a data set too small for 6-fold cross-validation, saying how many videos it needs
    (affedge.training.data.folds.six_fold_split: the Train_Set is cut into
    len(PAPER_CHUNKS) chunks, one per fold, and the Validation_Set is the sixth part)."""
    from affedge.training.data.affwild2 import AffWild2VA
    from affedge.training.data.folds import PAPER_CHUNKS

    ds = AffWild2VA(data)
    n_train, n_val = len(ds.trials("Train_Set")), len(ds.trials("Validation_Set"))
    need_train, need_val = len(PAPER_CHUNKS), 1
    if n_train < need_train or n_val < need_val:
        raise ValueError(
            f"{data}: {n_train} Train_Set and {n_val} Validation_Set videos; cross-validation "
            f"(fold {', '.join(map(str, folds))} of 6) needs >= {need_train} Train_Set videos "
            f"(one per fold chunk) and >= {need_val} Validation_Set video, "
            f"{need_train + need_val} in all (e.g. affedge synth DIR --videos "
            f"{need_train + need_val})")


def run(args: argparse.Namespace) -> int:
    import sys

    from affedge import log
    started = command_start(args)  # --max-minutes counts from here

    data = Path(args.data_dir)
    if data.is_file():
        raise ValueError(f"{data} is a file; train reads a data set directory (Aff-Wild2 "
                         f"layout, e.g. from affedge synth)")
    if not data.is_dir():
        raise FileNotFoundError(f"dataset directory not found: {data}")
    if args.pretrained_encoder and not Path(args.pretrained_encoder).exists():
        raise FileNotFoundError(f"--pretrained-encoder: not found: {args.pretrained_encoder}")
    from affedge.sdk.person_baseline import describe as describe_baseline
    from affedge.training import ddp
    from affedge.training.crossval import cross_validate, parse_folds
    from affedge.training.data.synthetic import check_complete
    from affedge.training.verdict import LEARN_MARGIN, describe

    folds = parse_folds(args.folds)
    check_complete(data)
    check_dataset_size(data, folds)
    opts = options_from_args(args)
    if opts.threads is None and ddp.context().device.type != "cuda":
        import dataclasses
        import os

        from affedge.training.budget import auto_threads, busy_cores

        busy = busy_cores()
        opts = dataclasses.replace(opts, threads=auto_threads(load=busy))
        seen = (f"{busy:.1f} cores busy with other work" if busy is not None else
                f"1-min load average {os.getloadavg()[0]:.1f}")
        log.status(f"threads {opts.threads} ({seen} on {os.cpu_count()} cores; --threads "
                   f"overrides)")
    profile, values, why = resolve_profile(args)
    log.status(f"profile {profile} ({why}): " + ", ".join(f"{k}={v}" for k, v in values.items()))
    deadline = started + 60 * args.max_minutes if args.max_minutes is not None else None
    if deadline is not None and len(folds) > 1:
        import time

        share = (deadline - time.time()) / len(folds)
        if share < MIN_FOLD_SECONDS:
            log.status(f"note: --max-minutes {args.max_minutes:g} leaves each of the "
                       f"{len(folds)} folds ~{share:.0f} s, and loading, the untrained baseline "
                       f"and the final validation take ~10 s of each: folds this short learn "
                       f"little (the first one least: it also warms up). Give at least "
                       f"{len(folds) * MIN_FOLD_SECONDS / 60:.1f} minutes, or train fewer folds "
                       f"(--folds 0)")
    out = Path(args.out or f"runs/{args.encoder}-{args.modality}")
    check_run_dir(out, args.resume)
    existed = out.exists()
    if not log.verbose():
        log.filter_third_party_warnings(import_first=("torch",))
    from affedge.commands.termination import Terminated, cleanup_on_termination

    try:
        with cleanup_on_termination():
            summary = cross_validate(data, out, folds, deadline=deadline, opts=opts)
        is_main = ddp.context().is_main
    except (KeyboardInterrupt, Terminated) as exc:
        # (a Ctrl-C is then reported by the CLI as 'interrupted'; SIGTERM exits 143 here)
        how = "" if isinstance(exc, KeyboardInterrupt) else \
            f"terminated by {signal.Signals(exc.signum).name}; "
        kept = any(out.glob("fold*/last")) or any(out.glob("fold*/pretrain"))
        print(f"affedge train: {how}" + (
            f"the checkpoints written so far are in {out} (they carry no verdict, so export "
            f"refuses them without --force); the same command with --resume continues the run"
            if kept else "no checkpoint was written yet"), file=sys.stderr, flush=True)
        raise
    finally:
        ddp.shutdown()
        if not existed:
            drop_empty_run(out)  # a run refused or stopped before writing anything
    if not is_main:
        return 0
    best_fold = max(summary["folds"], key=lambda f: _mean_ccc(summary["folds"][f]))
    best_ckpt = out / f"fold{best_fold}" / "best"
    if args.json == "-":
        print(json.dumps({**summary, "results": str(out / "crossval.json"),
                          "checkpoint": str(best_ckpt)}, indent=2, default=str))
    else:
        for f, r in summary["folds"].items():
            m = r["best_metrics"]
            print(f"fold {f}: valence CCC {m['valence_ccc']:.4f}  arousal CCC "
                  f"{m['arousal_ccc']:.4f}  (kept epoch {r['best_epoch']}{_by_window(r)}; "
                  f"stopped: {r['stop_reason']}; {r['wall_seconds']:.0f} s)")
            print(f"fold {f}: {describe(r['verdict'])}")
            pb = r["verdict"].get("person_baseline") or {}
            print(f"fold {f}: person baseline: " + (describe_baseline(pb) if "method" in pb
                                                     else pb.get("off", "none")))
        mean = summary["mean"]
        print("mean over folds: " + "  ".join(f"{k} {v:.4f}" for k, v in mean.items()
                                              if isinstance(v, (int, float))))
        note = unlike_folds_note(summary)
        if note:
            print(note, file=sys.stderr)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(summary, fh, indent=2, default=str)
    stream = sys.stderr if args.json == "-" else sys.stdout
    learned = summary["folds"][best_fold]["verdict"]["learned"]
    # what held it back: the --epochs count it reached, else the time (or the data)
    more = "more --epochs" if str(summary["folds"][best_fold].get("stop_reason", "")) \
        .startswith("reached") else "a larger --max-minutes"
    if not learned:
        print(f"WARNING: the model did NOT learn (validation CCC does not beat the untrained model "
              f"by {LEARN_MARGIN}); `affedge export` refuses this checkpoint unless --force. Try "
              f"{more} or another --profile / --lr.", file=sys.stderr)
    print(f"wrote {out / 'crossval.json'}, checkpoints {out}/fold*/best, curves "
          f"{out}/fold*/curves.png", file=stream)
    if learned:
        me = log.invoked_as()
        log.status(f"next: {me} export {best_ckpt} -o my_bundle   (then: {me} run 0 "
                   "--bundle my_bundle)")
    else:
        log.status(f"next: train again with {more} (or more data); to look at "
                   f"this model anyway: {log.invoked_as()} export {best_ckpt} -o my_bundle "
                   "--force")
    return 0


#: below this share of --max-minutes per fold, train warns that the folds learn little (a
#: fold's fixed costs were ~10 s of a 15 s share with 6 folds in 1.5 minutes, 2 cores)
MIN_FOLD_SECONDS = 60.0


def check_run_dir(out: Path, resume: bool) -> None:
    """A new run needs a run directory without an earlier run in it (training into one
    replaced its best model, appended to its metrics.csv and left its summaries beside the new
    weights); ``--resume`` needs one with a run to continue."""
    done = sorted(str(p.relative_to(out)) for p in out.glob("fold*/summary.json"))
    started = sorted({str(p.parent.parent.relative_to(out)) for p in
                      [*out.glob("fold*/last/trainer_state.json"),
                       *out.glob("fold*/pretrain/model.safetensors")]})
    if not resume and (done or started or (out / "crossval.json").exists()):
        what = done[0] if done else (f"{started[0]}, stopped" if started else "crossval.json")
        raise FileExistsError(f"{out} already holds a training run ({what}): --resume "
                              f"continues it; to start over, pass another --out or remove {out}")
    if resume and not started:
        raise FileNotFoundError(f"--resume: no run to continue in {out} (no "
                                f"fold*/last/trainer_state.json or fold*/pretrain/); train "
                                f"without --resume to start one")


# a process older than this when run() starts is a long-lived host (a test runner, a notebook)
# calling run() in-process: the budget then counts from the call
STARTUP_GRACE_S = 60.0


def command_start(args: argparse.Namespace) -> float:
    """When the command started: ``args.started`` if set, else the process start time
    (interpreter start-up and imports count against --max-minutes), else now."""
    import time

    from affedge.training.budget import process_start_time

    if getattr(args, "started", None) is not None:
        return float(args.started)
    t = process_start_time()
    return t if time.time() - t <= STARTUP_GRACE_S else time.time()


def _mean_ccc(r: dict) -> float:
    m = r.get("best_metrics", {})
    return (float(m.get("valence_ccc", float("-inf"))) + float(m.get("arousal_ccc", float("-inf")))) / 2
