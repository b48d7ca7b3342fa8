"""``affedge run SOURCE``: stream valence/arousal from a video file, camera, URL or pipeline.

Prints a status line about once per second (fps, tick latency p50/p99, V/A), optionally writes
every Prediction to ``--out`` (a sink: .csv, .jsonl or ``-`` for JSONL on stdout, each row
flushed as it is written), a V/A-over-time PNG (``--plot``) and shows an overlay window
(``--show``, when a display and a GUI OpenCV exist; otherwise it says so and carries on).

Outputs are checked before the model loads. SIGTERM (systemd, docker) and SIGINT (Ctrl-C) stop
the same way: the current frame is finished and written, the output is flushed and fsynced, the
plot is written, cameras and microphones are released, and the exit code is 128 + the signal
(143 / 130).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from affedge.commands.argtypes import at_least, positive_int, thread_count
from affedge.commands.live_line import LiveLine
from affedge.features.detectors import MIN_FACE_PX, available_detectors
from affedge.features.detectors.blazeface import FULL_PASS_SLACK
from affedge.formats import backend_help
from affedge.sdk.sinks.base import is_file_target, same_file
from affedge.sdk.run_feeds import default_audio

HELP = "run the recognizer on a video file, camera, URL or GStreamer pipeline"

# the demo's smoothing (affedge/commands/demo.py): mean lag 0.6/0.4 = 1.5 frames
DEFAULT_SMOOTHING = 0.6
PLOT_SUFFIXES = (".png",)


def smoothing_value(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


def add_runtime_arguments(p, smoothing_help: str, show: bool = True) -> None:
    """Options shared by ``run``, ``demo`` and ``serve`` (same names, same defaults; serve has
    no ``--show``: its window is the dashboard page)."""
    p.add_argument("--bundle", default=None,
                   help="model bundle directory or .zip (default: the demo bundle)")
    p.add_argument("--backend", default="auto", help=backend_help())
    p.add_argument("--bundle-digest", default=None, metavar="SHA256",
                   help="refuse the bundle unless its digest (sha256 of its manifest, printed by "
                        "export and doctor) is this")
    p.add_argument("--trust", action="append", default=None, metavar="PUBKEY",
                   help="refuse the bundle unless it is signed by this Ed25519 public key "
                        "(repeatable; affedge export --sign KEY)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="encoder precision (int8: the bundle's ONNX int8 encoder, from "
                        "`affedge export --int8`; refused when the bundle has none; bf16: "
                        "the fp32 encoder run in bf16 by OpenVINO on a CPU with BF16, e.g. "
                        "AVX-512 BF16 / AMX; refused elsewhere)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="intra-op threads of the model sessions (default: 2, or the usable "
                        "CPUs if fewer; more than 4x the usable CPUs is refused; "
                        "benchmarks/README.md 'Thread policy')")
    p.add_argument("--smoothing", type=smoothing_value, default=DEFAULT_SMOOTHING,
                   help=smoothing_help)
    p.add_argument("--detector", default=None, choices=available_detectors(),
                   help="face detector (default: the one the bundle's training crops came "
                        "from, its front-end record; haar for bundles without one); yunet "
                        "needs --yunet-model")
    p.add_argument("--yunet-model", default=None, metavar="ONNX",
                   help="YuNet face detector ONNX file for --detector yunet")
    p.add_argument("--min-face", type=at_least(MIN_FACE_PX), default=None, metavar="PX",
                   help="smallest face side in pixels the detector searches for; larger is "
                        "faster (default: the detector's own, 40). Not a hard floor on the "
                        "reported box: BlazeFace's box is tight (brows to chin), so a full "
                        f"pass keeps boxes down to {FULL_PASS_SLACK:g}x PX")
    p.add_argument("--detect-every", type=positive_int, default=None, metavar="K",
                   help="full-frame face detection every K frames, a search around each "
                        "tracked face in between; 1 = full frame every frame (default: 4)")
    p.add_argument("--sync-detect", dest="async_detect", action="store_false", default=None,
                   help="run each full-frame face pass inside its own frame (no region search "
                        "there) instead of beside the next frames: ~10-15%% more frames/s on "
                        "files and in serve, whose latency p99 drops too, but the Predictions "
                        "differ from the default's (those frames are framed by the full pass), "
                        "which keeps run, serve and push_frame equal")
    p.add_argument("--max-faces", type=positive_int, default=4,
                   help="faces tracked at once, each with its own temporal state")
    p.add_argument("--no-person-baseline", dest="person_baseline", action="store_false",
                   help="the model's own outputs: do not apply the bundle's per-person "
                        "baseline (fitted by affedge train; shown by affedge doctor --bundle; "
                        "default: applied when the bundle has one)")
    if show:
        p.add_argument("--show", action="store_true",
                       help="show an overlay window (needs a display and a GUI OpenCV build)")


def add_arguments(p) -> None:
    p.add_argument("source", nargs="+",
                   help="video file, camera index (0), /dev/videoN, URL or GStreamer pipeline "
                        "string; several video files, a folder of videos or a pattern "
                        "('clips/*.mp4') run one after another (a batch: --out-dir)")
    p.add_argument("--audio", default=None,
                   help="'mic', 'mic:N', an audio file (WAV, or any format PyAV reads), "
                        "'video' (the file's own audio track) or "
                        "'none' (default: 'video' for files that have an audio track, else none)")
    add_runtime_arguments(p, "causal exponential smoothing in [0, 1) of the *_smoothed "
                             "columns (raw values are written too); mean lag s/(1-s) frames; "
                             f"default {DEFAULT_SMOOTHING}, as demo")
    p.add_argument("--out", action="append", default=[], metavar="TARGET",
                   help="write every prediction: a .csv or .jsonl file, '-' for JSONL on "
                        "stdout (rows flushed as they are written), or publish it: "
                        "zmq://HOST:PORT (ZeroMQ PUB), ws://HOST:PORT (WebSocket); repeat "
                        "for several")
    p.add_argument("--out-dir", default=None, metavar="DIR",
                   help="batch (several videos): a CSV per video, DIR/NAME.csv, and "
                        "DIR/affedge_batch.json (frames, time, faces, notes or error per video)")
    p.add_argument("--out-format", choices=("csv", "jsonl"), default="csv",
                   help="batch: what --out-dir gets per video (default csv)")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="write a PNG plot of V/A over time at the end (also after SIGTERM/"
                        "Ctrl-C)")
    p.add_argument("--realtime", action="store_true",
                   help="pace a video file to its frame rate (live sources always are)")
    p.add_argument("--max-frames", type=positive_int, default=None,
                   help="stop after this many frames (default: the whole source)")


# --------------------------------------------------------------------------- outputs, checks
def check_plot_path(path) -> None:
    """Refuse a --plot target that cannot be written, before anything runs."""
    path = os.fspath(path)
    if os.path.splitext(path)[1].lower() not in PLOT_SUFFIXES:
        raise ValueError(f"--plot {path}: the plot is a PNG; use a name ending in .png")
    _check_writable(path, "--plot")


def _check_writable(path: str, option: str) -> None:
    if os.path.isdir(path):
        raise ValueError(f"{option} {path}: is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    probe = parent
    while not os.path.exists(probe):  # the first existing ancestor must be a writable dir
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ValueError(f"{option} {path}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {probe} is not writable")
    existed = os.path.exists(path)
    made = probe != parent  # missing folders are created, and said (a typo shows)
    try:  # the real test (root passes os.access on read-only mounts): create and remove
        os.makedirs(parent, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot write here ({exc.strerror or exc})") from None
    if not existed:
        os.remove(path)
    if made:
        from affedge import log

        log.status(f"{option} {path}: created the folder {parent}")


def check_video_file(video) -> None:
    """A source that names a file must be a readable, non-empty file (the video source's own
    SourceError, raised before anything is loaded)."""
    from affedge.sdk.sources.video import _classify, check_video_path

    kind, spec = _classify(video)
    if kind == "file":
        check_video_path(spec)


def check_out_file(target) -> None:
    """A file ``--out`` of a known kind whose place is writable, checked without truncating an
    existing file (ValueError with the reason)."""
    from affedge.sdk.sinks.base import known_target, unknown_kind

    t = os.fspath(target)
    if not known_target(t):
        raise ValueError(f"--out {t!r}: {unknown_kind(t)}")
    _check_writable(t, "--out")


def open_out(target):
    """The sink for ``--out`` (a file truncated, a port bound), or ValueError with the reason.
    ``run`` opens a file only at its first row (see :func:`open_outs`)."""
    from affedge.sdk.sinks import open_sink

    try:
        return open_sink(target)
    except OSError as exc:
        raise ValueError(f"--out {target}: cannot write here ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ValueError(f"--out {exc}") from None


class GracefulStop:
    """SIGINT and SIGTERM handled alike while active: the first one asks the frame loop to
    stop after the current frame (``signum`` is set); a second one interrupts at once, unless
    it is the same signal within :attr:`DUPLICATE_S` of the first: ``timeout`` forwards a
    signal to its child *and* to its process group, and ``kill -INT -PGID`` or a terminal's
    Ctrl-C under some wrappers also deliver one signal twice, which used to abort the run
    (no summary, no plot) instead of stopping it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    #: a repeat of the first signal this soon (s) is the same request delivered twice
    DUPLICATE_S = 0.5

    def __init__(self):
        self.signum: int | None = None
        self._at = 0.0
        self._old: dict = {}
        #: the source's error when it failed after its first frame (a camera or stream that
        #: disconnected): the loop ended there and the outputs were finished, as for a signal
        self.lost: Exception | None = None

    def raise_if_lost(self, frames: int) -> None:
        """The source's error (see :attr:`lost`), naming how many frames came before it; called
        once the outputs are finished, so that it is the last line."""
        if self.lost is not None:
            raise type(self.lost)(f"{self.lost} after {frames} frames (every one is written)")

    def _handle(self, signum, frame):
        if self.signum is not None:
            if signum == self.signum and time.monotonic() - self._at < self.DUPLICATE_S:
                return
            raise KeyboardInterrupt
        self.signum, self._at = signum, time.monotonic()

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._old and self.signum is not None:
            # a duplicate copy of the first signal may still be on its way: swallow it here
            # rather than let the restored handler kill a run that already stopped cleanly
            # (a fast stop wrote everything within 0.1 s and then died of the second copy)
            wait = self.DUPLICATE_S - (time.monotonic() - self._at)
            if wait > 0:
                time.sleep(wait)
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    @property
    def stopped(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 0 if self.signum is None else 128 + int(self.signum)

    def describe(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


def have_pyav() -> bool:
    """PyAV (the optional ``av`` package, which reads a file's audio track) is importable."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


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


def open_window(show: bool):
    """The overlay window, created *before* PyAV is imported (a PyAV/OpenCV-Qt clash hangs
    ``cv2.namedWindow`` otherwise), or None with a note when there is no display."""
    if not show:
        return None
    from affedge.sdk.overlay import OverlayWindow, display_available

    ok, why = display_available()
    if not ok:
        print(f"--show: {why}; continuing without a window", file=sys.stderr)
        return None
    return OverlayWindow("affedge")


def stream_to_outputs(rec, video, audio, *, out=None, plot=None, show=False, realtime=False,
                      max_frames=None, quiet=False, labels_fn=None, title="", stop=None,
                      window=None):
    """Shared by ``run`` and ``demo``: iterate ``rec.run``, write/print/show; returns the list
    of Predictions. ``out``: a target or an open Sink (closed here); ``stop``: a
    :class:`GracefulStop` whose signal ends the loop after the current frame; ``window``: an
    overlay window opened earlier (else one is opened when ``show``)."""
    from affedge import log
    from affedge.sdk.overlay import draw_overlay
    from affedge.sdk.sinks import Sink, open_sink
    from affedge.sdk.sinks.combine import abandon

    if window is None and show:
        window = open_window(True)
    sink = out if isinstance(out, Sink) or out is None else open_sink(out)
    live = LiveLine(rec, enabled=not (quiet or log.quiet()),
                    total=_file_frames(video, max_frames)).watch()
    preds = []
    frames = rec.run(video=video, audio=audio, realtime=realtime, max_frames=max_frames,
                     with_frames=True)
    try:
        for image, p in _until_lost(frames, preds, stop):
            preds.append(p)
            if sink is not None:
                try:
                    sink.write(p)
                except BrokenPipeError:  # `affedge run ... --out - | head`: reader left (the
                    sink = _without_stdout(sink)  # stdout sink pointed stdout at /dev/null)
                    break
                except OSError as exc:
                    raise ValueError(f"--out {sink.target}: {exc.strerror or exc} after "
                                     f"{sink.rows} rows") from None
            live.update(p)
            if window is not None and image is not None \
                    and not window.show(draw_overlay(image, p, live.fps)):
                break
            if stop is not None and stop.stopped:
                break
    finally:
        live.close()
        frames.close()  # releases the camera/microphone now, not at garbage collection
        try:
            if sink is not None:
                if sys.exc_info()[0] is not None:  # failed (a source that did not open): an
                    abandon(sink)  # earlier file at an --out path not yet written stays whole
                else:
                    sink.close()
        except OSError as exc:
            if sys.exc_info()[0] is None:  # not while another error is on its way out
                raise ValueError(f"--out {sink.target}: {exc.strerror or exc}") from None
        if window is not None:
            window.close()
    if plot and preds:
        plot_predictions(plot, preds, labels_fn(preds) if labels_fn else None, title)
    return preds


def _file_frames(video, max_frames) -> int | None:
    """The frames a video file should give (for the status line's progress), else None."""
    if not isinstance(video, str) or not os.path.isfile(video):
        return None
    import cv2

    cap = cv2.VideoCapture(video)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    n = min(n, max_frames) if max_frames else n
    return n if n > 0 else None


def _until_lost(frames, preds, stop):
    """``frames``, ending quietly when the source fails after its first prediction (a camera
    or a stream that disconnected, ``SourceError``) while a ``stop`` can carry the error: the
    caller then finishes the outputs (file, plot, summary) as for a signal and reports it."""
    from affedge.sdk.sources import SourceError

    it = iter(frames)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except SourceError as exc:
            if stop is None or not preds:
                raise
            stop.lost = exc
            return
        yield item


def _without_stdout(sink):
    """What is left of ``sink`` once stdout's reader has gone (None when nothing)."""
    from affedge.sdk.sinks.combine import SinkGroup

    if isinstance(sink, SinkGroup):
        rest = [s for s in sink.sinks if s.target != "-"]
        return SinkGroup(rest) if rest else None
    return None


def refuse_overwriting_inputs(inputs, outputs) -> None:
    """ValueError when an output ``(flag, path)`` is one of the ``inputs`` (a QA trial's
    ``--plot still.png`` on the input ``still.png`` replaced the photo)."""
    files = [i for i in inputs if isinstance(i, str) and os.path.isfile(i)]
    for flag, out in outputs:
        if out and os.path.exists(out) and any(same_file(out, f) for f in files):
            raise ValueError(f"{flag} {out}: that is an input of this run; choose another "
                             f"name")


def open_outs(targets: list[str]):
    """The sink for every ``--out`` (None, one sink, or a SinkGroup), or ValueError with the
    reason. Files are checked now but created (truncated) only at the first row
    (:class:`~affedge.sdk.sinks.combine.DeferredSink`): a run refused before its first frame
    (no backend, a wrong --bundle-digest, a source that does not open, a missing microphone)
    leaves an earlier output whole. stdout and network sinks open now (a port in use fails
    early)."""
    from affedge.sdk.sinks.combine import DeferredSink, SinkGroup, abandon

    seen = set()
    for t in targets:
        key = t if not is_file_target(t) else os.path.realpath(t)
        if key in seen:
            raise ValueError(f"--out {t}: given twice")
        seen.add(key)
        if is_file_target(t):
            check_out_file(t)
        elif t.startswith("ws://"):
            from affedge.sdk.sinks.zmq import is_loopback, parse_host_port

            try:
                host = parse_host_port(t, "ws")[0]
            except ValueError:
                continue  # (open_out reports the bad address)
            if not is_loopback(host):
                raise ValueError(f"--out {t}: affedge run publishes WebSocket on loopback "
                                 f"only (a LAN address needs a token: affedge serve --token)")
    sinks = []
    try:
        for t in targets:
            sinks.append(DeferredSink(t, open_out) if is_file_target(t) else open_out(t))
    except BaseException:
        for s in sinks:
            abandon(s)
        raise
    if not sinks:
        return None
    return sinks[0] if len(sinks) == 1 else SinkGroup(sinks)


def summary_line(rec, preds, seconds: float | None = None) -> str:
    """The closing status line; ``seconds``: the run's wall time (adds the frames per second)."""
    s = rec.stats()
    n_face = sum(p.face_present for p in preds)
    rate = f" in {seconds:.1f} s ({len(preds) / seconds:.0f} fps)" if seconds else ""
    k = s["skipped_frames"]
    skipped = "none skipped" if k == 0 else \
        f"{k} skipped, {'each' if k > 1 else 'it'} given a stale prediction"
    return (f"{len(preds)} frames{rate} ({skipped}), faces in {n_face}, "
            f"backend {s['backend']}{_precision_note(s)}, latency p50 {s['latency_ms_p50']:.1f} ms "
            f"p99 {s['latency_ms_p99']:.1f} ms, audio overruns {s['audio_overruns']}"
            + (", the bundle's person baseline applied" if s.get("person_baseline") else "")
            + _nonfinite_note(s))


def _precision_note(s: dict) -> str:
    """' (encoder int8)' when the encoder does not run in fp32 (else empty)."""
    p = s.get("encoder_precision")
    return f" (encoder {p})" if p not in (None, "fp32") else ""


def _nonfinite_note(s: dict) -> str:
    """', non-finite values left out: ...' when the backend produced NaN/Inf (else empty)."""
    parts = [f"{s.get(f'nonfinite_{k}', 0)} {k}" for k in ("outputs", "embeddings", "audio")
             if s.get(f"nonfinite_{k}", 0)]
    return f", non-finite values left out: {', '.join(parts)}" if parts else ""


def check_detector_args(args) -> None:
    """--detector/--yunet-model mistakes, found before the model loads."""
    if args.detector == "yunet":
        if not args.yunet_model:
            raise ValueError("--detector yunet needs --yunet-model ONNX_FILE")
        if not os.path.isfile(args.yunet_model):
            raise ValueError(f"--yunet-model {args.yunet_model}: no such file")
        import cv2

        from affedge.features.detectors import make_detector

        try:
            make_detector("yunet", model_path=args.yunet_model)
        except (cv2.error, ValueError):
            raise ValueError(f"--yunet-model {args.yunet_model}: OpenCV cannot load it as a "
                             f"YuNet ONNX face detector model") from None


def identity_note(status: str, has_signature: bool = False) -> str:
    """The run header's words for a bundle's ``signature_status`` (``has_signature``: it
    carries a manifest.sig, which only --trust checks)."""
    if status == "unpinned" and has_signature:
        return "unpinned: it carries a signature, not checked; check it with --trust PUBKEY"
    if status == "unpinned":
        return "unpinned: checksums only; pin it with --bundle-digest or --trust"
    if status == "digest-pinned":
        return "digest-pinned: matches --bundle-digest"
    return status.replace("signed:", "signed by ", 1) if status.startswith("signed:") else status


def _signed(bundle) -> bool:
    from affedge.bundle_limits import SIGNATURE

    return (bundle.root / SIGNATURE).is_file()


def recognizer_options(args) -> dict:
    """Recognizer keyword arguments from the shared runtime options."""
    check_detector_args(args)
    opts: dict = {"backend": args.backend, "smoothing": args.smoothing,
                  "detector": args.detector, "yunet_model": args.yunet_model,
                  "min_face": args.min_face, "max_faces": args.max_faces,
                  "detect_every": args.detect_every, "async_detect": args.async_detect,
                  "expect_digest": args.bundle_digest,
                  "trust": args.trust,
                  "person_baseline": getattr(args, "person_baseline", True)}
    bo: dict = {}
    if args.precision != "fp32":
        bo["precision"] = args.precision
    if args.threads is not None:
        bo["intra_op_threads"] = args.threads
    if bo:
        opts["backend_options"] = bo
    return opts


def apply_runtime_args(rec, args) -> None:
    """What the shared runtime options need once the recognizer exists: torch backends take
    their thread count from torch, not from a session option (``--precision int8`` without
    the bundle's int8 encoder was refused when the backend was made: select.check_precision)."""
    warning = (rec.bundle.manifest.get("training") or {}).get("warning")
    if warning:  # an export --force of a model that did not learn: say so on every run
        print(f"WARNING: bundle {args.bundle or '(the demo)'}: {warning}", file=sys.stderr)
    torch = getattr(rec.backend, "torch", None)
    if args.threads is not None and torch is not None:
        torch.set_num_threads(int(args.threads))


def resolve_bundle(bundle):
    from affedge.sdk.recognizer import DEMO_BUILD_HINT, DEMO_BUNDLE

    if bundle is not None:
        return bundle
    if not (DEMO_BUNDLE / "manifest.json").exists():
        raise FileNotFoundError("no --bundle given and the demo bundle is missing "
                                f"({DEMO_BUNDLE}); " + DEMO_BUILD_HINT)
    return DEMO_BUNDLE


def demo_bundle_note(who: str) -> None:
    """The status line said when a command runs the demo bundle (no --bundle given)."""
    from affedge import log

    log.status(f"{who}: no --bundle: the demo bundle, trained on synthetic faces only; on real "
               "people its valence and arousal mean nothing (train your own: README, "
               "\"Training your own model\")")


def run(args) -> int:
    from affedge import log
    from affedge.commands.run_batch import expand_sources, run_batch

    videos, batch = expand_sources(args.source)
    if batch or args.out_dir:
        return run_batch(args, videos)
    window = open_window(args.show)  # before anything imports PyAV
    if args.plot:
        check_plot_path(args.plot)
    bundle = resolve_bundle(args.bundle)
    source = videos[0]
    video = int(source) if source.isdigit() else source
    check_video_file(video)  # before the model loads (seconds) and its status line
    audio = args.audio if args.audio is not None else default_audio(source)
    if audio is not None and audio.lower() in ("none", "off", ""):
        audio = None
    if audio == "video" and os.path.isfile(source) and have_pyav() and \
            default_audio(source) is None:  # before the model loads and its status line
        raise ValueError(f"{source} has no audio track (--audio video needs one; use --audio "
                         f"mic, a WAV file or --audio none)")
    if audio and os.path.isfile(audio) and not audio.lower().endswith(".wav") and have_pyav():
        from affedge.sdk.sources.audio import VideoAudioSource

        VideoAudioSource(audio).close()  # (opens the container: no track is said now)
    if args.audio is None and audio is None and os.path.isfile(source) and not have_pyav():
        log.status("affedge run: warning: no audio: reading a video file's audio track needs "
                   "PyAV (pip install 'affedge[video-audio]'); running on the face alone "
                   "(--audio none silences this)")
    opts = recognizer_options(args)
    outs = list(args.out or [])
    refuse_overwriting_inputs([source, audio], [*(("--out", o) for o in outs),
                                                ("--plot", args.plot)])
    sink = open_outs(outs)  # files only at the first row (see open_outs)
    from affedge.sdk.recognizer import Recognizer
    from affedge.sdk.sinks.combine import abandon

    try:
        with GracefulStop() as stop, Recognizer(bundle, **opts) as rec:
            apply_runtime_args(rec, args)
            heard = audio or "none"
            if audio is not None and not rec.engine.audio_streams:
                audio, heard = None, "none: a visual-only bundle"  # (not read at all)
            log.status(f"affedge run: {source} (audio: {heard}), backend "
                       f"{rec.backend_name}, bundle sha256:{rec.bundle.digest[:12]} "
                       f"({identity_note(rec.bundle.signature_status, _signed(rec.bundle))})")
            if args.bundle is None:
                demo_bundle_note("affedge run")
            t0 = time.monotonic()
            preds = stream_to_outputs(rec, video, audio, out=sink, plot=args.plot,
                                      realtime=args.realtime, max_frames=args.max_frames,
                                      title=f"affedge run {source}", stop=stop, window=window)
            sink = None
            # (damaged input is part of the result: said under -q too, which keeps only errors
            # and the result)
            for err in rec.audio_errors:
                print(f"affedge run: audio: {err}", file=sys.stderr, flush=True)
            for note in rec.source_notes:
                print(f"affedge run: warning: {note}", file=sys.stderr, flush=True)
            log.status(summary_line(rec, preds, time.monotonic() - t0))
    finally:
        if sink is not None:  # the model failed to load: keep no half-made output
            abandon(sink)
    wrote = [t for t in outs if t != "-"] + ([args.plot] if args.plot and preds else [])
    if stop.stopped:
        log.status(f"stopped by {stop.describe()} after {len(preds)} frames; every one is "
                   "written")
    if wrote:
        log.status("wrote " + ", ".join(wrote))
    stop.raise_if_lost(len(preds))  # after the outputs: the error is the last line, exit 1
    return stop.exit_code
