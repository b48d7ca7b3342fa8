"""``affedge run`` over several videos (files, folders, globs): one output per video, one model.

The videos run one after another on one Recognizer (``run()`` resets its states for each, so
every output equals that video's own ``affedge run``). A video that fails (missing, corrupt, no
audio track for ``--audio video``) is reported and recorded, and the batch goes on; the exit
code is then 1. ``--out-dir DIR`` gets ``NAME.csv`` (or ``.jsonl``) per video and
``affedge_batch.json``: per video its output, frames, seconds, frames with a face, audio,
notes (a truncated file) or error. SIGTERM/Ctrl-C finish the video in progress (its output
whole), write the summary and exit 128 + the signal.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time
from pathlib import Path

#: what a folder given as a source contributes (by extension, case-insensitive; not recursive)
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                    ".mts", ".wmv", ".flv", ".3gp")
SUMMARY_NAME = "affedge_batch.json"


def expand_sources(specs: list[str]) -> tuple[list[str], bool]:
    """The videos named by ``specs`` -> (paths or the single live source, batch?). A folder
    gives its video files (sorted), a pattern with ``*``/``?``/``[`` that names no file gives
    its matches (a quoted glob the shell did not expand); anything else stays as given (a
    camera, a URL, a file that is checked later). Batch: more than one spec, or a folder or
    pattern. ValueError when a folder or pattern yields no video."""
    out: list[str] = []
    batch = len(specs) > 1
    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(str(p) for p in Path(spec).iterdir()
                           if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise ValueError(f"{spec}: no video files in this folder (looked for "
                                 f"{', '.join(VIDEO_EXTENSIONS)})")
            out += found
            batch = True
        elif any(c in spec for c in "*?[") and not os.path.exists(spec) \
                and "://" not in spec:
            found = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
            if not found:
                raise ValueError(f"{spec}: no file matches this pattern")
            out += found
            batch = True
        else:
            out.append(spec)
    return out, batch


def output_names(videos: list[str], out_dir: Path, ext: str) -> list[Path]:
    """``out_dir/STEM.ext`` per video; a stem that repeats (a/x.mp4, b/x.mp4) gets its
    folder's name too (``x.csv``, ``b_x.csv``), then a number."""
    taken: set[str] = set()
    out = []
    for v in videos:
        p = Path(v)
        for name in (p.stem, f"{p.parent.name}_{p.stem}", *(f"{p.stem}_{k}" for k in
                                                           range(2, 10_000))):
            if name not in taken:
                break
        taken.add(name)
        out.append(out_dir / f"{name}.{ext}")
    return out


def refuse_single_run_options(args) -> None:
    """The options that name one output or one window have no meaning for several videos."""
    if args.out:
        raise ValueError("several videos: --out names one output; use --out-dir DIR (one "
                         "CSV per video, --out-format jsonl for JSONL)")
    if args.plot:
        raise ValueError("several videos: --plot names one picture; plot a video's CSV "
                         "afterwards (README, 'Scoring and plotting saved predictions')")
    if getattr(args, "show", False):
        raise ValueError("several videos: --show is for one source")
    if not args.out_dir:
        raise ValueError("several videos need --out-dir DIR (a CSV per video and "
                         f"{SUMMARY_NAME})")


def run_batch(args, videos: list[str]) -> int:
    from affedge import log
    from affedge.commands.run import (GracefulStop, apply_runtime_args, check_video_file,
                                      default_audio, demo_bundle_note, identity_note,
                                      open_outs, recognizer_options, resolve_bundle,
                                      stream_to_outputs, _signed)
    from affedge.sdk.recognizer import Recognizer
    from affedge.sdk.sources import SourceError
    from affedge.staged_write import replace_path

    refuse_single_run_options(args)
    from affedge.sdk.sources.video import _classify

    for v in videos:  # (a camera or a stream never ends: the videos after it would never run)
        kind = _classify(int(v) if v.isdigit() else v)[0]
        if kind != "file":
            raise ValueError(f"several sources: a batch runs video files, and {v} is a {kind}; "
                             f"several cameras or streams at once: affedge serve")
    out_dir = Path(args.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # (a file by that name: "File exists", said without the flag)
        why = "a file, not a folder" if out_dir.exists() else (exc.strerror or str(exc))
        raise ValueError(f"--out-dir {out_dir}: {why}") from None
    if not os.access(out_dir, os.W_OK):
        raise ValueError(f"--out-dir {out_dir}: not writable")
    outs = output_names(videos, out_dir, args.out_format)
    bundle = resolve_bundle(args.bundle)
    results: list[dict] = []
    n = len(videos)
    t_all = time.monotonic()
    with GracefulStop() as stop, Recognizer(bundle, **recognizer_options(args)) as rec:
        apply_runtime_args(rec, args)
        log.status(f"affedge run: {n} videos -> {out_dir}/, backend {rec.backend_name}, bundle "
                   f"sha256:{rec.bundle.digest[:12]} "
                   f"({identity_note(rec.bundle.signature_status, _signed(rec.bundle))})")
        if args.bundle is None:
            demo_bundle_note("affedge run")
        for i, (video, out) in enumerate(zip(videos, outs), 1):
            entry: dict = {"source": video, "output": str(out)}
            try:
                check_video_file(video)
                audio = args.audio if args.audio is not None else default_audio(video)
                if audio is not None and audio.lower() in ("none", "off", ""):
                    audio = None
                if audio is not None and not rec.engine.audio_streams:
                    audio = None  # a visual-only bundle reads no audio
                entry["audio"] = audio or "none"
                t0 = time.monotonic()
                preds = stream_to_outputs(rec, video, audio, out=open_outs([str(out)]),
                                          realtime=args.realtime, max_frames=args.max_frames,
                                          stop=stop)
                dt = time.monotonic() - t0
                if stop.lost is not None:  # failed after its first frames: those are written
                    lost, stop.lost = stop.lost, None
                    entry["error"] = f"{lost} after {len(preds)} frames (every one is written)"
                entry.update(frames=len(preds), seconds=round(dt, 3),
                             frames_with_face=sum(p.face_present for p in preds),
                             notes=list(rec.source_notes) + list(rec.audio_errors))
                if not preds:
                    entry["output"] = None
                log.status(f"affedge run: [{i}/{n}] {video}: {len(preds)} frames in {dt:.1f} s"
                           f" ({len(preds) / max(dt, 1e-9):.0f} fps), faces in "
                           f"{entry['frames_with_face']}")
                for note in entry["notes"]:  # (said under -q too: damaged input)
                    print(f"affedge run: warning: {note}", file=sys.stderr, flush=True)
                if "error" in entry:
                    print(f"affedge run: [{i}/{n}] {video}: error: {entry['error']}",
                          file=sys.stderr, flush=True)
            except (SourceError, ValueError, OSError) as exc:
                entry.pop("audio", None)
                entry["error"] = str(exc)
                entry["output"] = None
                print(f"affedge run: [{i}/{n}] {video}: error: {exc}", file=sys.stderr,
                      flush=True)
            results.append(entry)
            if stop.stopped:
                break
    failed = [r for r in results if "error" in r]
    summary = {"schema": 1, "videos": results, "done": len(results), "given": n,
               "failed": len(failed), "seconds": round(time.monotonic() - t_all, 3),
               "stopped_by": stop.describe() if stop.stopped else None}
    replace_path(out_dir / SUMMARY_NAME,
                 lambda p: p.write_text(json.dumps(summary, indent=1) + "\n"))
    written = sum(1 for r in results if r.get("output"))
    line = (f"affedge run: {len(results)} of {n} videos, {written} written, {len(failed)} "
            f"failed" + (f" ({', '.join(Path(r['source']).name for r in failed[:5])}"
                         f"{', ...' if len(failed) > 5 else ''})" if failed else "")
            + f"; wrote {out_dir}/ ({written} {args.out_format.upper()}s, {SUMMARY_NAME})")
    if failed:  # (the outcome: said under -q too)
        print(line, file=sys.stderr, flush=True)
    else:
        log.status(line)
    if stop.stopped:
        log.status(f"stopped by {stop.describe()} during video {len(results)} of {n}; its "
                   "output is whole")
        return stop.exit_code
    return 1 if failed else 0
