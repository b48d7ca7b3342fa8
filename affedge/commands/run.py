"""``affedge run SOURCE``: stream valence/arousal from a video file, camera, URL or pipeline.

Prints a status line about once per second (fps, tick latency p50/p99, V/A), optionally writes
every Prediction to ``--out`` (.csv or .jsonl), a V/A-over-time PNG (``--plot``) and shows an
overlay window (``--show``, when a display and a GUI OpenCV exist; otherwise it says so and
carries on).
"""
from __future__ import annotations

import sys
import time

HELP = "run the recognizer on a video file, camera, URL or GStreamer pipeline"


def add_arguments(p) -> None:
    p.add_argument("source", help="video file, camera index (0), /dev/videoN, URL or GStreamer "
                                  "pipeline string")
    p.add_argument("--audio", default=None,
                   help="'mic', 'mic:N', a WAV file, 'video' (the file's own audio track) or "
                        "'none' (default: 'video' for files that have an audio track, else none)")
    p.add_argument("--bundle", default=None, help="model bundle dir or .zip (default: the demo "
                                                  "bundle)")
    p.add_argument("--backend", default="auto", help="auto (default), onnxruntime, ort-cpu, "
                                                     "ort-cuda, ort-tensorrt, tensorrt, "
                                                     "torchscript, torch")
    p.add_argument("--smoothing", type=float, default=0.0,
                   help="causal exponential smoothing in [0, 1); 0 = raw; lag = s/(1-s) frames")
    p.add_argument("--detector", default="haar", choices=("haar", "yunet"))
    p.add_argument("--yunet-model", default=None, help="YuNet ONNX file for --detector yunet")
    p.add_argument("--max-faces", type=int, default=4)
    p.add_argument("--out", default=None, help="write predictions to a .csv or .jsonl file")
    p.add_argument("--plot", default=None, help="write a PNG plot of V/A over time")
    p.add_argument("--show", action="store_true", help="show an overlay window")
    p.add_argument("--realtime", action="store_true",
                   help="pace a video file to its frame rate (live sources always are)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--quiet", action="store_true", help="no per-second status line")


class LiveLine:
    """Prints ``fps, latency p50/p99, V/A`` about once per second (to stderr by default)."""

    def __init__(self, rec, stream=None, every_s: float = 1.0, enabled: bool = True):
        self.rec = rec
        self.stream = stream or sys.stderr
        self.every = every_s
        self.enabled = enabled
        self.t0 = self.t_last = time.monotonic()
        self.n_last = 0
        self.n = 0
        self.fps = 0.0

    def update(self, p) -> None:
        self.n += 1
        now = time.monotonic()
        if now - self.t_last < self.every:
            return
        self.fps = (self.n - self.n_last) / (now - self.t_last)
        self.t_last, self.n_last = now, self.n
        if self.enabled:
            s = self.rec.stats()
            print(f"[{now - self.t0:6.1f}s] frame {p.frame:6d}  {self.fps:5.1f} fps  latency "
                  f"p50 {s['latency_ms_p50']:.1f} ms p99 {s['latency_ms_p99']:.1f} ms  "
                  f"V {p.valence_smoothed:+.2f} A {p.arousal_smoothed:+.2f}  conf "
                  f"{p.confidence:.2f}  face {'Y' if p.face_present else 'N'} speech "
                  f"{'Y' if p.speech_present else 'N'}", file=self.stream, flush=True)


def default_audio(source: str) -> str | None:
    """'video' when ``source`` is a file with an audio track, else None."""
    import os

    if not os.path.isfile(source):
        return None
    try:
        import av  # noqa: F401  (PyAV reads the track; optional dependency)
    except ImportError:
        return None
    try:
        import av

        with av.open(source) as c:
            return "video" if c.streams.audio else None
    except Exception:  # noqa: BLE001 - unreadable container: let the video source report it
        return None


def plot_predictions(path, preds, labels=None, title: str = "") -> None:
    """PNG of smoothed V/A over time (and ground truth ``labels`` (valence[T], arousal[T]))."""
    import numpy as np

    from affedge.plotting import plot_va

    t = np.array([p.timestamp for p in preds], np.float64)
    series = {}
    if labels is not None:
        series["labels"] = labels
    series["prediction"] = (np.array([p.valence_smoothed for p in preds]),
                            np.array([p.arousal_smoothed for p in preds]))
    masks = {"no face": ~np.array([p.face_present for p in preds], bool)}
    plot_va(path, t, series, title=title, masks=masks)


def stream_to_outputs(rec, video, audio, *, out=None, plot=None, show=False, realtime=False,
                      max_frames=None, quiet=False, labels_fn=None, title=""):
    """Shared by ``run`` and ``demo``: iterate ``rec.run``, write/print/show; returns the list
    of Predictions."""
    from affedge.sdk.overlay import OverlayWindow, display_available, draw_overlay
    from affedge.sdk.prediction import PredictionWriter

    window = None
    if show:
        ok, why = display_available()
        if ok:
            window = OverlayWindow("affedge")
        else:
            print(f"--show: {why}; continuing without a window", file=sys.stderr)
    writer = PredictionWriter(out) if out else None
    live = LiveLine(rec, enabled=not quiet)
    preds = []
    try:
        for image, p in rec.run(video=video, audio=audio, realtime=realtime,
                                max_frames=max_frames, with_frames=True):
            preds.append(p)
            if writer is not None:
                writer.write(p)
            live.update(p)
            if window is not None and image is not None:
                if not window.show(draw_overlay(image, p, live.fps)):
                    break
    finally:
        if writer is not None:
            writer.close()
        if window is not None:
            window.close()
    if plot and preds:
        plot_predictions(plot, preds, labels_fn(preds) if labels_fn else None, title)
    return preds


def summary_line(rec, preds) -> str:
    s = rec.stats()
    n_face = sum(p.face_present for p in preds)
    return (f"{len(preds)} frames ({s['skipped_frames']} skipped, stale), faces in {n_face}, "
            f"backend {s['backend']}, latency p50 {s['latency_ms_p50']:.1f} ms "
            f"p99 {s['latency_ms_p99']:.1f} ms, audio overruns {s['audio_overruns']}"
            + _nonfinite_note(s))


def _nonfinite_note(s: dict) -> str:
    """', non-finite values left out: ...' when the backend produced NaN/Inf (else empty)."""
    parts = [f"{s.get(f'nonfinite_{k}', 0)} {k}" for k in ("outputs", "embeddings", "audio")
             if s.get(f"nonfinite_{k}", 0)]
    return f", non-finite values left out: {', '.join(parts)}" if parts else ""


def run(args) -> int:
    from affedge.sdk.recognizer import DEMO_BUILD_HINT, DEMO_BUNDLE, Recognizer

    bundle = args.bundle
    if bundle is None:
        if not (DEMO_BUNDLE / "manifest.json").exists():
            raise FileNotFoundError("no --bundle given and the demo bundle is missing "
                                    f"({DEMO_BUNDLE}); " + DEMO_BUILD_HINT)
        bundle = DEMO_BUNDLE
    source = args.source
    video = int(source) if source.isdigit() else source
    audio = args.audio if args.audio is not None else default_audio(source)
    if audio is not None and audio.lower() in ("none", "off", ""):
        audio = None
    with Recognizer(bundle, backend=args.backend, smoothing=args.smoothing,
                    detector=args.detector, yunet_model=args.yunet_model,
                    max_faces=args.max_faces) as rec:
        print(f"affedge run: {source} (audio: {audio or 'none'}), backend {rec.backend_name}",
              file=sys.stderr)
        preds = stream_to_outputs(rec, video, audio, out=args.out, plot=args.plot,
                                  show=args.show, realtime=args.realtime,
                                  max_frames=args.max_frames, quiet=args.quiet,
                                  title=f"affedge run {source}")
        print(summary_line(rec, preds), file=sys.stderr)
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
    if args.plot and preds:
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
