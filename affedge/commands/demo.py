"""``affedge demo``: the built-in demo, end to end.

Runs the full streaming pipeline (faces, audio features, ring buffers, step model) on the bundled
clip with its own audio track, paced in real time by default (``--fast``: as fast as possible),
prints a status line per second, and at the end the CCC of the predictions against the clip's
ground truth; writes the predictions CSV, a PNG of V/A over time (predictions vs labels) and a
metrics JSON into ``--out-dir``.
"""
from __future__ import annotations

import time
from pathlib import Path

from affedge.labels import coverage_note, read_labels  # both label formats

HELP = "run the built-in demo clip through the streaming pipeline and score it"


def add_arguments(p) -> None:
    from affedge.commands.run import add_runtime_arguments

    p.add_argument("--fast", action="store_true", help="as fast as possible (default: real time)")
    p.add_argument("--out-dir", default="affedge_demo_out",
                   help="directory for the predictions CSV, the V/A PNG and the metrics JSON")
    p.add_argument("--clip", default=None, help="another clip (with --labels; default: the "
                                                "bundled demo clip)")
    p.add_argument("--labels", default=None,
                   help="labels of --clip: an Aff-Wild2 annotation file (header "
                        "'valence,arousal', a row per frame, -5 = unlabelled; what affedge "
                        "synth writes) or a frame,valence,arousal CSV")
    add_runtime_arguments(p, "causal smoothing knob in [0, 1) (0 = raw; mean lag a/(1-a) "
                             "frames; 0.6 = 1.5 frames); raw values are reported too")


def check_out_dir(path: Path) -> None:
    """The output directory exists or can be made, and is a directory (checked up front)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"--out-dir {path}: {probe} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out-dir {path}: cannot create it ({exc.strerror or exc})") from None


def score(preds, labels: dict[int, tuple[float, float]]) -> dict:
    """CCC (and PCC, RMSE) of raw and smoothed predictions on the labelled frames."""
    import numpy as np

    from affedge.metrics import summarize

    rows = [(p, labels[p.frame]) for p in preds if p.frame in labels and not p.stale]
    if len(rows) < 2:
        raise ValueError(f"only {len(rows)} predicted frames have labels; cannot score")
    y = np.array([lab for _, lab in rows], np.float64)
    raw = np.array([(p.valence, p.arousal) for p, _ in rows], np.float64)
    sm = np.array([(p.valence_smoothed, p.arousal_smoothed) for p, _ in rows], np.float64)
    return {"frames_scored": len(rows), "raw": summarize(y, raw), "smoothed": summarize(y, sm)}


def run(args) -> int:
    import json

    import numpy as np

    from affedge import log
    from affedge.commands.run import (
        GracefulStop,
        apply_runtime_args,
        default_audio,
        have_pyav,
        open_window,
        recognizer_options,
        stream_to_outputs,
        summary_line,
    )

    window = open_window(args.show)  # before anything imports PyAV
    from affedge.sdk.recognizer import (
        DEMO_BUILD_HINT,
        DEMO_BUNDLE,
        DEMO_CLIP,
        DEMO_LABELS,
        Recognizer,
        demo_assets_missing,
    )

    bundle = Path(args.bundle) if args.bundle else DEMO_BUNDLE
    clip = Path(args.clip) if args.clip else DEMO_CLIP
    labels_path = Path(args.labels) if args.labels else (DEMO_LABELS if not args.clip else None)
    if not args.bundle or not args.clip:
        missing = [p for p in demo_assets_missing()
                   if not (args.bundle and DEMO_BUNDLE in p.parents)
                   and not (args.clip and p in (DEMO_CLIP, DEMO_LABELS))]
        if missing:
            raise FileNotFoundError("demo assets missing: " + ", ".join(map(str, missing))
                                    + "; " + DEMO_BUILD_HINT)
    try:
        labels = read_labels(labels_path) if labels_path else None
    except (OSError, ValueError) as exc:
        raise ValueError(f"--labels: {exc}") from None
    audio, no_audio = "video", ""
    if not have_pyav():  # (a minimal install: the README's first command still runs)
        audio, no_audio = None, "without audio (reading its track needs PyAV: pip install " \
            "'affedge[video-audio]')"
    elif args.clip and default_audio(str(clip)) is None:  # no track: the face alone
        audio, no_audio = None, "without audio (it has no track)"
    out_dir = Path(args.out_dir)
    check_out_dir(out_dir)
    csv_path = out_dir / "demo_predictions.csv"
    png_path = out_dir / "demo_va.png"
    metrics_path = out_dir / "demo_metrics.json"

    def labels_for(preds):
        if labels is None:
            return None
        v = np.array([labels.get(p.frame, (np.nan, np.nan))[0] for p in preds])
        a = np.array([labels.get(p.frame, (np.nan, np.nan))[1] for p in preds])
        return (v, a)

    with GracefulStop() as stop, Recognizer(bundle, **recognizer_options(args)) as rec:
        apply_runtime_args(rec, args)
        log.status(f"affedge demo: {clip} "
                   f"{'with its audio track' if audio else no_audio}"
                   f", backend {rec.backend_name}, "
                   f"{'as fast as possible' if args.fast else 'real time (use --fast to skip pacing)'}")
        t0 = time.monotonic()
        preds = stream_to_outputs(rec, str(clip), audio, out=csv_path, plot=png_path,
                                  realtime=not args.fast, labels_fn=labels_for,
                                  title="affedge demo: prediction vs labels", stop=stop,
                                  window=window)
        log.status(summary_line(rec, preds, time.monotonic() - t0))
        cut = stop.stopped or getattr(stop, "lost", None)  # (the clip was not read to its end)
        note = None if cut or labels is None else coverage_note(labels, len(preds))
        if note:
            log.status(f"affedge demo: warning: --labels {labels_path}: {note}")
        stats = rec.stats()
    result = {"clip": str(clip), "bundle": str(bundle), "frames": len(preds), "stats": stats}
    if labels is not None and len(preds) >= 2:
        result["metrics"] = score(preds, labels)
        m = result["metrics"]
        against = "ground truth" if labels_path == DEMO_LABELS else labels_path.name
        print(f"CCC vs {against} ({m['frames_scored']} frames): "
              f"valence {m['raw']['valence_ccc']:.3f}  arousal {m['raw']['arousal_ccc']:.3f}  "
              f"(smoothed: {m['smoothed']['valence_ccc']:.3f} / "
              f"{m['smoothed']['arousal_ccc']:.3f})")
    with open(metrics_path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2, default=float)
    if stop.stopped:
        log.status(f"stopped by {stop.describe()} after {len(preds)} frames")
    log.status(f"wrote {csv_path}, {png_path}, {metrics_path}")
    stop.raise_if_lost(len(preds))  # the clip failed part-way: what came is written, then this
    if bundle.resolve() == DEMO_BUNDLE.resolve():
        log.status(f"next: {log.invoked_as()} run 0 --bundle {bundle}   (your camera, to try "
                   "the pipeline: this demo model learned synthetic faces and means nothing "
                   "on real people; train your own: README, Researcher)")
    else:
        log.status(f"next: {log.invoked_as()} run 0 --bundle {bundle}   (your camera)")
    return stop.exit_code
