"""``affedge synth OUT --videos N``: write a synthetic data set in the Aff-Wild2 VA layout."""
from __future__ import annotations

from affedge.features.detectors import DEFAULT_DETECTOR

HELP = "write a synthetic audio-visual valence/arousal data set (Aff-Wild2 layout)"


def add_arguments(p) -> None:
    p.add_argument("out", help="output directory (must not hold a data set already)")
    p.add_argument("--videos", type=int, default=10, help="number of videos (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each video (default 30)")
    p.add_argument("--fps", type=float, default=30.0, help="video frame rate (default 30)")
    p.add_argument("--occlusion", type=float, default=0.0,
                   help="fraction of frames with the face occluded, in long stretches (default 0)")
    p.add_argument("--identity-offset", type=int, default=0,
                   help="first identity index; use a disjoint range for a held-out test set "
                        "(default 0)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="fraction of videos in Validation_Set (default 0.2)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR,
                   help="face detector the training crops are made with (a registry name: "
                        "blazeface, blazeface-short, haar, yunet); recorded in the data set and, "
                        "through training and export, in the bundle, whose runtime then uses it "
                        f"(default: {DEFAULT_DETECTOR})")
    p.add_argument("--crop-recipe", default=None,
                   help="how a detected face becomes a crop: landmarks5-v1 (similarity "
                        "transform of eyes/nose/mouth to the 112x112 five-point template, as "
                        "Aff-Wild2's aligned crops) or box-v1 (the detector's box, enlarged) "
                        "(default: landmarks5-v1 for detectors with keypoints, else box-v1)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it is also off with -q, when stderr is not a "
                        "terminal, and under CI=true, TERM=dumb or NO_COLOR)")


def run(args) -> int:
    from pathlib import Path

    from affedge import log

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; synth writes a data set directory: choose a new path")
    probe = out.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{out}: {probe} is a file, not a directory")
    from affedge.commands.run import have_pyav

    if not have_pyav():  # (checked before any folder is made: it writes every video)
        raise ImportError("affedge synth writes its MP4 videos with PyAV: "
                          "pip install 'affedge[video-audio]'")
    from affedge.features.detectors import DETECTORS, available_detectors
    from affedge.training.data.synthetic import generate

    if args.detector not in available_detectors():
        raise ValueError(f"--detector {args.detector!r}: choose one of "
                         f"{', '.join(available_detectors())}")
    recipe = args.crop_recipe or ("landmarks5-v1" if DETECTORS[args.detector].has_keypoints
                                  else "box-v1")
    try:
        rec = generate(args.out, args.videos, seed=args.seed, seconds=args.seconds,
                       fps=args.fps, occlusion=args.occlusion,
                       identity_offset=args.identity_offset, val_fraction=args.val_fraction,
                       progress=not args.no_progress and log.progress_enabled(),
                       detector=args.detector, crop_recipe=recipe)
    except FileExistsError as exc:
        raise ValueError(str(exc)) from None
    n_train = sum(v["partition"] == "Train_Set" for v in rec["videos"])
    rate = rec["visible_detect_rate"]
    videos = f"{rec['n_videos']} video{'s' if rec['n_videos'] != 1 else ''}"
    print(f"wrote {videos} to {args.out} ({n_train} Train_Set, "
          f"{rec['n_videos'] - n_train} Validation_Set); face detected in "
          f"{100 * rate:.1f}% of visible frames; {rec['frames_per_second_generated']:.0f} frames/s"
          if rate is not None else f"wrote {videos} to {args.out}")
    from affedge.training.data.folds import PAPER_CHUNKS

    n_val = rec["n_videos"] - n_train
    if n_train < len(PAPER_CHUNKS) or n_val < 1:  # affedge train's check_dataset_size
        log.status(f"note: affedge train needs >= {len(PAPER_CHUNKS)} Train_Set and >= 1 "
                   f"Validation_Set videos for its 6-fold cross-validation; this set has "
                   f"{n_train} and {n_val}: to train on it, make a larger one (e.g. --videos "
                   f"{len(PAPER_CHUNKS) + 1}); as a held-out set (affedge run, demo "
                   f"--labels) it is fine")
        return 0
    log.status(f"next: {log.invoked_as()} train {args.out} --encoder mobile --max-minutes 5 "
               "--out runs/m")
    return 0
