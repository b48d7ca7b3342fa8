"""Where every millisecond of a frame goes: per-stage timings of the runtime on a bundle.

Stages (each timed on its own, on the same clip, with the same backend and thread count):

``face_detect``       the bundle's detector on the runtime's schedule, synchronously (full
                      passes every ``detect_every`` frames: they set its p90/p99);
``align_preprocess``  ``align_crop`` + ``to_model_input`` of the detected face;
``encoder``           ``backend.run("encoder")`` on one crop (N=1);
``audio_features``    ``IncrementalAudioFeatures.push`` + ``VoiceActivity.push`` of a video frame's
                      PCM (1/fps s; the 10 ms-hop figure: benchmarks/bench_features.py);
``step``              ``backend.run("step")`` with the state carried from call to call;
``whole_frame``       the Recognizer push API: ``push_audio`` of the frame's PCM +
                      ``push_frame`` (the inference tick: all of the above plus tracking,
                      ring buffers, smoothing and the Prediction; the full passes on the
                      detection worker, beside the tick, are timed apart);
``end_to_end``        ``Recognizer.run(video=clip, audio="video")``: the interval between
                      Predictions, with video decoding, audio demuxing and the pipelined capture
                      loop (the next frame's front end on a worker thread: frame_pipeline, the
                      default on two or more cores);
``end_to_end_serial`` the same with ``pipeline=False``, in runs alternating with the above.

Plus the encoder per format/precision (the Ultralytics-style table), and the reference comparison:
affedge's streaming frame (encoder on the new crop + one step) vs the reference approach
(re-encode all W crops and re-run the window form over them every frame), both on ONNX Runtime.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from affedge.benchmarking.harness import LatencyStats, StageTimes, measure
from affedge.sdk.parity_warning import pipeline_parity
from affedge.sdk.tracking import WORKER_THREAD_PREFIX

STAGES = ("face_detect", "align_preprocess", "encoder", "audio_features", "step",
          "whole_frame", "end_to_end", "end_to_end_serial")


# ------------------------------------------------------------------------------ inputs
@dataclasses.dataclass
class Clip:
    """A decoded clip: BGR frames, their times (s), 16 kHz mono PCM and where it came from."""

    path: Path
    frames: list[np.ndarray]
    times: np.ndarray
    pcm: np.ndarray
    sample_rate: int
    source: str
    #: False when the file has no (readable) audio track: ``pcm`` is silence, and the
    #: end-to-end stages feed a silent WAV instead of the file's own track
    has_audio: bool = True

    @property
    def fps(self) -> float:
        if len(self.times) < 2:
            return 30.0
        return float((len(self.times) - 1) / (self.times[-1] - self.times[0]))


def check_clip(path: str | Path) -> Path:
    """Fail fast, with a one-line message, unless ``path`` is a readable file with at least
    one decodable video frame (``affedge bench --clip`` checks this before any measurement)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"clip {p} does not exist")
    if not p.is_file():
        raise ValueError(f"clip {p} is not a file")
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise OSError(f"clip {p} is not readable: {exc.strerror or exc}") from exc
    from affedge.sdk.sources import open_video

    try:
        with contextlib.closing(open_video(str(p))) as src:
            first = next(iter(src), None)
    except Exception as exc:  # any decoder failure: not a usable clip
        raise ValueError(f"clip {p}: cannot decode video ({exc})") from exc
    if first is None:
        raise ValueError(f"clip {p}: no video frames decoded")
    return p


def load_clip(path: str | Path | None = None, workdir: str | Path | None = None,
              seconds: float = 4.0, say: Callable[[str], None] = print) -> Clip:
    """Decode ``path`` (video with an audio track); default: the demo clip, else a short
    synthetic clip rendered by ``affedge.training.data.synthetic`` into ``workdir``."""
    from affedge.sdk.sources import open_audio, open_video

    if path is None:
        from affedge.sdk.recognizer import DEMO_CLIP

        if DEMO_CLIP.exists():
            path, source = DEMO_CLIP, f"demo clip {DEMO_CLIP.name}"
        else:
            from affedge.training.data.synthetic import generate

            if workdir is None:
                raise ValueError("load_clip: no clip given, no demo clip, and no workdir to "
                                 "render a synthetic one into")
            out = Path(workdir) / "synth"
            generate(out, 1, seed=0, seconds=seconds, progress=False)
            path = next((out / "raw_videos").glob("*.mp4"))
            source = f"synthetic clip ({seconds:g} s, affedge synth seed 0)"
            say(f"clip: no demo clip; rendered a {seconds:g} s synthetic clip")
    else:
        source = str(path)
    path = check_clip(path)
    frames, times = [], []
    with contextlib.closing(open_video(str(path))) as src:
        for f in src:
            frames.append(f.image)
            times.append(f.t)
    if not frames:
        raise ValueError(f"clip {path}: no video frames decoded")
    has_audio = True
    try:
        asrc = open_audio("video", str(path))
        chunks = [c.pcm for c in asrc]
        asrc.close()
        pcm = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
        sr = int(asrc.sample_rate)
    except Exception as exc:  # noqa: BLE001 - any demux failure: benchmark with silence
        from affedge.log import one_line

        say(f"clip {path.name}: no audio track ({one_line(str(exc))}); using silence")
        pcm, sr, has_audio = np.zeros(0, np.float32), 16000, False
    if pcm.size < sr:  # at least one second so the audio stages have data
        pcm = np.concatenate([pcm, np.zeros(sr - pcm.size, np.float32)])
    return Clip(path, frames, np.asarray(times, np.float64), pcm, sr, source, has_audio)


def fresh_bundle(out: str | Path, encoder: str = "mobile", int8: bool = True, seed: int = 0,
                 say: Callable[[str], None] = print, onnx_exporter: str = "auto") -> Path:
    """Export a random-weights model of ``encoder`` into the bundle directory ``out`` (ONNX
    fp32 + int8 encoder); needs torch. Timings do not depend on the weights' values.
    ``onnx_exporter``: as :func:`affedge.export.api.export_bundle` (the tests use "legacy",
    several times faster to write)."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError("no bundle given and no demo bundle: exporting a fresh one needs "
                          "torch (pip install 'affedge[train]'); or pass a BUNDLE") from exc
    import logging

    from affedge.config import FeatureConfig, ModelConfig
    from affedge.export.api import export_bundle
    from affedge.training.model import AffectModel, save_checkpoint

    logging.getLogger("torch").setLevel(logging.ERROR)
    out = Path(out)
    torch.manual_seed(seed)
    cfg = ModelConfig(encoder=encoder)
    model = AffectModel(cfg).eval()
    ck = save_checkpoint(out.parent / f"checkpoint_{encoder}", model, cfg, FeatureConfig(), {},
                         {"seed": seed, "data": "random weights (affedge bench)"})
    t0 = time.perf_counter()
    res = export_bundle(ck, out, formats=("onnx",), int8=int8, parity_frames=130,
                        onnx_exporter=onnx_exporter, progress=lambda m: None)
    say(f"bundle: exported a fresh random-weights {encoder} bundle to {out} "
        f"({time.perf_counter() - t0:.0f} s)")
    return res.bundle


def resolve_bundle(path: str | Path | None, workdir: str | Path, encoder: str = "mobile",
                   say: Callable[[str], None] = print):
    """``(Bundle, description)``: ``path``, else the demo bundle, else a fresh export."""
    from affedge.bundle import load_bundle

    if path is not None:
        return load_bundle(path), str(path)
    from affedge.sdk.recognizer import DEMO_BUNDLE

    if (DEMO_BUNDLE / "manifest.json").exists():
        say(f"bundle: the demo bundle ({DEMO_BUNDLE})")
        return load_bundle(DEMO_BUNDLE), f"demo bundle {DEMO_BUNDLE}"
    say("bundle: no BUNDLE given and no demo bundle; exporting random weights "
        f"({encoder} encoder) into a temporary directory")
    p = fresh_bundle(Path(workdir) / f"bundle_{encoder}", encoder, say=say)
    return load_bundle(p), f"fresh random-weights {encoder} bundle (temporary)"


# ------------------------------------------------------------------------------ backends
def make_backend(bundle, backend: str = "auto", precision: str = "fp32", threads: int = 1):
    """A runtime backend with ``threads`` intra-op threads (ONNX Runtime) / torch threads."""
    from affedge.sdk.backends import select_backend

    opts: dict[str, Any] = {"intra_op_threads": int(threads)}
    if precision != "fp32":
        opts["precision"] = precision
    be = select_backend(bundle, backend, **opts)
    if hasattr(be, "torch"):  # torch backends import torch late: apply the thread count now
        be.torch.set_num_threads(int(threads))
    return be


def make_recognizer(bundle, backend_obj, detector=None, detect_every: int | None = None):
    """A :class:`Recognizer` running on ``backend_obj`` (so the thread count and precision we
    chose apply; the Recognizer does not close it). ``detect_every``: the Recognizer's
    tracking-assisted detection period (None: the runtime default)."""
    from affedge.sdk.recognizer import Recognizer

    return Recognizer(bundle, backend=backend_obj, detector=detector,  # None: the bundle's
                      detect_every=detect_every)


def _enc_io(backend) -> tuple[str, str]:
    return backend.input_names("encoder")[0], backend.output_names("encoder")[0]


# ------------------------------------------------------------------------------ stages
class _Cycle:
    """Endless index over ``n`` items."""

    def __init__(self, n: int) -> None:
        self.it = itertools.cycle(range(n))

    def __call__(self) -> int:
        return next(self.it)


class _ScheduledDetection:
    """The runtime's per-frame detection schedule on its own (the ``face_detect`` stage):
    :class:`~affedge.sdk.tracking.TrackAssistedDetector` + :class:`IouTracker`, i.e. a
    full-frame pass every ``detect_every`` frames and region searches around the tracks in
    between, exactly as the engine runs them."""

    def __init__(self, detector, detect_every: int) -> None:
        from affedge.sdk.tracking import IouTracker, TrackAssistedDetector

        self.search = TrackAssistedDetector(detector, detect_every)
        self.tracker = IouTracker(max_tracks=4)

    def detect(self, frame: np.ndarray) -> list:
        dets = self.search.detect(frame, self.tracker.tracks)
        self.tracker.update(dets)
        return dets


def _detections(clip: Clip, detector, limit: int | None = None) -> list:
    """The best face box per frame of the first ``limit`` frames (None where the detector
    finds none)."""
    out = []
    for f in clip.frames[:limit]:
        d = detector.detect(f)
        out.append(d[0] if d else None)
    return out


def stage_benchmarks(bundle, backend, clip: Clip, frames: int = 100, warmup: int = 10,
                     max_seconds: float = 60.0, end_to_end: bool = True,
                     min_face: int | None = None,
                     detect_every: int | None = None) -> dict[str, Any]:
    """Time every stage (see the module docstring); returns ``{stage: LatencyStats}`` plus
    ``"faces_detected"``, the fraction of the timed clip frames (the first ``frames + warmup``)
    with a face. Detection and crops are the
    bundle's front end (its detector and crop recipe). ``min_face``: the detector's smallest face
    side in pixels (None: the detector's default); ``detect_every``:
    the runtime's tracking-assisted detection period K (full-frame pass every K frames,
    region searches around tracked faces in between; None: the runtime default,
    ``affedge.sdk.engine.DEFAULT_DETECT_EVERY``), used by ``face_detect`` and the Recognizer
    stages alike."""
    from affedge.features.audio import IncrementalAudioFeatures
    from affedge.features.crops import crop_face
    from affedge.features.faces import FaceBox, to_model_input
    from affedge.features.frontend import detector_from_record, frontend_of
    from affedge.sdk.engine import _make_vad

    fcfg = bundle.feature_config()
    front = bundle.manifest.get("face_frontend")  # the bundle's own front end (None: haar)
    recipe = frontend_of(front)["crop_recipe"]
    det = detector_from_record(front, **({} if min_face is None else {"min_size": min_face}))
    boxes = _detections(clip, det, frames + warmup)  # the frames the crop stages cycle over
    n_faces = sum(b is not None for b in boxes)
    h, w = clip.frames[0].shape[:2]
    side = 0.5 * min(h, w)
    fallback = FaceBox((w - side) / 2, (h - side) / 2, side, side, 1.0)
    kw = {"iters": frames, "warmup": warmup, "max_seconds": max_seconds}
    res: dict[str, Any] = {}

    if detect_every is None:
        from affedge.sdk.engine import DEFAULT_DETECT_EVERY

        detect_every = DEFAULT_DETECT_EVERY
    nxt = _Cycle(len(clip.frames))
    sched = _ScheduledDetection(det, detect_every)
    res["face_detect"] = measure(lambda: sched.detect(clip.frames[nxt()]), **kw)

    ncrop = _Cycle(len(boxes))

    def crop_of(i):  # a frame without a face: a centred box framed the box-v1 way
        b = boxes[i]
        return crop_face(clip.frames[i], b, recipe, fcfg.aligned_size) if b is not None else \
            crop_face(clip.frames[i], fallback, "box-v1", fcfg.aligned_size)

    def align():
        return to_model_input(crop_of(ncrop())[None], fcfg)
    res["align_preprocess"] = measure(align, **kw)

    i0 = next((i for i, b in enumerate(boxes) if b is not None), 0)
    x = to_model_input(crop_of(i0)[None], fcfg)
    e_in, _ = _enc_io(backend)
    res["encoder"] = measure(lambda: backend.run("encoder", {e_in: x}), **kw)

    per_frame = round(fcfg.sample_rate / clip.fps)
    feats, vad = IncrementalAudioFeatures(fcfg), _make_vad(fcfg)  # the runtime's VAD
    starts = _Cycle(max(1, (clip.pcm.size - per_frame) // per_frame))

    def audio():
        k = starts() * per_frame
        chunk = clip.pcm[k:k + per_frame]
        feats.push(chunk)
        vad.push(chunk)
    res["audio_features"] = measure(audio, **kw)

    step_feed = initial_step_inputs(backend, np.random.default_rng(0))
    state_map = {n: "state_out_" + n[len("state_"):] for n in step_feed if n.startswith("state_")}

    def step():
        out = backend.run("step", step_feed)
        for i_name, o_name in state_map.items():
            step_feed[i_name] = out[o_name]
    res["step"] = measure(step, **kw)

    inside = StageTimes()
    rec = make_recognizer(bundle, _Instrumented(backend, inside), _Instrumented(det, inside),
                          detect_every=detect_every)
    try:
        res["whole_frame"] = LatencyStats.from_samples(
            push_times(rec, clip, frames, warmup, max_seconds, inside))
        res["whole_frame_breakdown"] = _breakdown(res["whole_frame"], inside)
        if end_to_end:
            rec.reset()
            res.update(_end_to_end(rec, clip, frames, warmup, max_seconds))
    finally:
        rec.close()  # the backend was passed in: it stays open (it belongs to the caller)
    res["faces_detected"] = n_faces / len(boxes)
    return res


def initial_step_inputs(backend, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs for one N=1 step: a unit-norm embedding, normalised-scale audio, zero states."""
    feed = {}
    for s in backend.input_specs("step"):
        shape = [1 if isinstance(d, str) else int(d) for d in s["shape"]]
        if s["name"].startswith("state_"):
            feed[s["name"]] = np.zeros(shape, np.float32)
        else:
            v = rng.standard_normal(shape).astype(np.float32)
            if s["name"] == "embedding":
                v /= np.linalg.norm(v, axis=-1, keepdims=True)
            feed[s["name"]] = v
    return feed


class _Instrumented:
    """Times every ``run(model, ...)`` / ``detect(frame)`` of the wrapped backend or detector
    (into ``times`` as "encoder", "step", "detect" (region searches too); full passes on the
    async worker as :data:`WORKER_STAGE`); everything else is passed through."""

    def __init__(self, inner, times: StageTimes) -> None:
        self._inner, self._times = inner, times

    def run(self, model_name, inputs):
        with self._times.time(model_name):
            return self._inner.run(model_name, inputs)

    def detect(self, frame):
        on_worker = threading.current_thread().name.startswith(WORKER_THREAD_PREFIX)
        with self._times.time(WORKER_STAGE if on_worker else "detect"):
            return self._inner.detect(frame)

    def detect_region(self, frame, region, min_size=None, max_size=None):
        with self._times.time("detect"):
            return self._inner.detect_region(frame, region, min_size, max_size)

    def __getattr__(self, name):
        return getattr(self._inner, name)


#: the breakdown's name for full passes on the asynchronous worker (beside the tick, not in it)
WORKER_STAGE = "detect_worker"


def _breakdown(whole: LatencyStats, inside: StageTimes) -> dict[str, Any]:
    """Mean ms per frame spent in detect / encoder / step inside the tick, and the rest; plus
    the latency distribution of those calls (``"calls"``), measured on the same frames as the
    whole-frame figure (so ratios between them are not skewed by load changing between runs)."""
    out: dict[str, Any] = {k: float(np.sum(v)) / whole.n for k, v in inside.samples.items()}
    out["other"] = whole.mean_ms - sum(v for k, v in out.items() if k != WORKER_STAGE)
    out["whole_frame_mean"] = whole.mean_ms
    out["calls"] = inside.stats()
    return out


def push_times(rec, clip: Clip, frames: int, warmup: int, max_seconds: float = float("inf"),
               inside: StageTimes | None = None) -> list[float]:
    """ms of push_audio(one frame of PCM) + push_frame(frame) per timed frame, in order (timed
    frame i is stream frame ``warmup + i``), on a continuing clock (the clip loops). ``inside``
    (the instrumented backend's timer) is cleared after the warm-up frames."""
    fps = clip.fps
    per_frame = round(clip.sample_rate / fps)
    n_audio = max(1, clip.pcm.size // per_frame)
    rec.reset()  # a fresh stream: the clock starts at 0
    samples = []
    start = time.perf_counter()
    for k in range(warmup + frames):
        if k == warmup and inside is not None:
            inside.samples.clear()
        t = k / fps
        a = (k % n_audio) * per_frame
        t0 = time.perf_counter_ns()
        rec.push_audio(clip.pcm[a:a + per_frame], t=t, sample_rate=clip.sample_rate)
        rec.push_frame(clip.frames[k % len(clip.frames)], t=t)
        if k >= warmup:
            samples.append((time.perf_counter_ns() - t0) / 1e6)
            if len(samples) >= 5 and time.perf_counter() - start > max_seconds:
                break
    return samples


#: predictions per run of one variant in the interleaved end-to-end measurement
E2E_CHUNK = 50
#: runs in a row that may time nothing before the end-to-end measurement gives up
E2E_MAX_IDLE_RUNS = 3


@contextlib.contextmanager
def _run_audio(clip: Clip):
    """The ``audio`` argument of ``Recognizer.run`` for the clip: ``"video"`` (its own track),
    or, for a clip without one, a temporary silent 16 kHz WAV at least as long as the video
    (the silence :func:`load_clip` announced, through the whole run)."""
    if clip.has_audio:
        yield "video"
        return
    sr = 16000
    last = float(clip.times[-1]) if len(clip.times) else 0.0
    seconds = max(last, len(clip.frames) / clip.fps) + 1.0
    with tempfile.TemporaryDirectory(prefix="affedge-bench-silence-") as d:
        wav_path = Path(d) / "silence.wav"
        with wave.open(str(wav_path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sr)
            w.writeframes(bytes(2 * round(seconds * sr)))
        yield str(wav_path)


def _end_to_end(rec, clip: Clip, frames: int, warmup: int,
                max_seconds: float) -> dict[str, LatencyStats]:
    """Intervals between Predictions of ``Recognizer.run`` over the clip file (decode included),
    for the pipelined loop (``"end_to_end"``, the runtime default where two cores are usable)
    and the serial one (``"end_to_end_serial"``), in alternating runs of :data:`E2E_CHUNK`
    predictions (after ``min(warmup, 5)`` untimed ones per run), so both see the same load.

    A run yields one Prediction per clip frame, so a short clip skips fewer (at most all but
    one per run; with a one-frame clip each run's single sample includes opening the file).
    Every run must time at least one interval: after :data:`E2E_MAX_IDLE_RUNS` runs in a row
    that time nothing, a RuntimeError says how long the clip must be (never an endless loop)."""
    samples: dict[bool, list[float]] = {True: [], False: []}
    start = time.perf_counter()
    pipelined = True
    skip = min(max(0, warmup), 5, max(0, len(clip.frames) - 1))
    idle_runs = 0
    try:
        with _run_audio(clip) as audio:
            while min(len(v) for v in samples.values()) < frames:
                rec.pipeline = pipelined
                got = samples[pipelined]
                want = min(E2E_CHUNK, frames - len(got))
                taken = want
                seen, last = 0, time.perf_counter_ns()
                for _p in rec.run(video=str(clip.path), audio=audio):
                    now = time.perf_counter_ns()
                    if seen >= skip:
                        got.append((now - last) / 1e6)
                        want -= 1
                    seen, last = seen + 1, now
                    if want <= 0:
                        break
                rec.reset()
                taken -= want
                if taken > 0:
                    idle_runs = 0
                else:  # nothing timed: the clip gave fewer Predictions than the skip
                    idle_runs += 1
                    if seen == 0 or idle_runs >= E2E_MAX_IDLE_RUNS:
                        raise RuntimeError(
                            f"clip {clip.path} is too short for the end-to-end stages: a run "
                            f"gave {seen} prediction(s), and each run needs at least "
                            f"{skip + 1} (warm-up {skip} + 1 timed); use a clip of at least "
                            f"{skip + 1} frames with a face, or a smaller --warmup")
                    skip = max(0, seen - 1)
                if time.perf_counter() - start > max_seconds and \
                        min(len(v) for v in samples.values()) >= 5:
                    break
                pipelined = not pipelined
    finally:
        rec.pipeline = True
    return {"end_to_end": LatencyStats.from_samples(samples[True]),
            "end_to_end_serial": LatencyStats.from_samples(samples[False])}


# ------------------------------------------------------------------------------ encoder table
def encoder_variants() -> tuple[tuple[str, str, str, str], ...]:
    """(label, backend name for select_backend, precision, artifact format) for every runner of
    the format table that runs on a CPU, at each precision it is benchmarked at."""
    from affedge.formats import FORMATS

    return tuple((r.description, r.name, prec,
                  "onnx-int8" if (f.name == "onnx" and prec == "int8") else f.name)
                 for f in FORMATS
                 for r in sorted(f.runners, key=lambda r: r.name != f.cpu_runner)
                 for prec in r.cpu_precisions)


ENCODER_VARIANTS = encoder_variants()


def parity_error(bundle, artifact: str, fmt: str, precision: str) -> float | None:
    """max |exported - eager| over the artifact's outputs, from the manifest's parity records."""
    for r in bundle.manifest.get("parity", []) or []:
        if (r.get("artifact"), r.get("format"), r.get("precision")) == (artifact, fmt, precision):
            vals = [o.get("max_abs") for o in (r.get("outputs") or {}).values()]
            vals = [float(v) for v in vals if v is not None]
            return max(vals) if vals else None
    return None


def unavailable_reason(exc: BaseException | str) -> str:
    """The whole reason of an exception on one line. A message whose first line is a heading
    for the reasons below it ("no backend can run bundle X here:" then "  openvino: CPU does
    not report BF16") puts the specific reasons first and the heading after them in
    parentheses, so a table cell cut to its width still shows why."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{'; '.join(lines[1:])} ({lines[0][:-1].rstrip()})"
    return "; ".join(lines)


def encoder_rows(bundle, threads: int = 1, iters: int = 100, warmup: int = 10, batch: int = 1,
                 max_seconds: float = 20.0, say: Callable[[str], None] = print) -> list[dict]:
    """The face encoder in every format/precision this bundle and machine can run."""
    from affedge.sdk.backends import select_backend

    crop = int(bundle.model_config().crop_size)
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, crop, crop)).astype(np.float32)
    rows = []
    ref_out = None  # the first fp32 row's output (ONNX Runtime): what rows without a manifest
    for label, be_name, prec, fmt in ENCODER_VARIANTS:  # parity record are measured against
        eager = fmt == "safetensors"
        # eager runs the weights file (size: the whole model's weights); others their artifact
        rec = bundle.find("weights", "safetensors") if eager else \
            bundle.find("encoder", fmt, prec if fmt != "onnx" else "fp32")
        row: dict[str, Any] = {"format": label, "precision": prec, "artifact": fmt,
                               "batch": batch}
        if rec is None:
            row.update(status="absent", reason=f"bundle has no {fmt} {prec} encoder")
            rows.append(row)
            continue
        row["size_mb"] = rec["size"] / 1e6
        from affedge.formats import BY_NAME

        measured = prec != rec.get("precision", prec) or be_name != BY_NAME[fmt].cpu_runner
        if not measured:
            row["parity_max_abs"] = 0.0 if eager else parity_error(bundle, "encoder", fmt, prec)
            row["parity_source"] = "reference" if eager else "manifest"
        try:
            be = select_backend(bundle, be_name, intra_op_threads=threads, precision=prec)
        except Exception as exc:  # noqa: BLE001 - backend not usable here: say why, go on
            row.update(status="unavailable", reason=unavailable_reason(exc))
            rows.append(row)
            continue
        try:
            e_in, e_out = _enc_io(be)
            st = measure(lambda be=be, e_in=e_in: be.run("encoder", {e_in: x}), iters=iters,
                         warmup=warmup, max_seconds=max_seconds)
            y = be.run("encoder", {e_in: x})[e_out]
            if ref_out is None and prec == "fp32":
                ref_out = y
            elif measured and ref_out is not None:
                row["parity_max_abs"] = float(np.max(np.abs(y - ref_out)))
                row["parity_source"] = "measured vs the first fp32 row"
            row.update(status="ok", backend=be.name, providers=list(be.providers),
                       stats=st)
            checked = pipeline_parity(bundle.manifest, prec) if prec != "fp32" else {}
            if checked and checked.get("status") != "pass":  # it ran; its export check did not pass
                row["export_parity"] = str(checked.get("status"))
        except Exception as exc:  # noqa: BLE001 - one failing format must not stop the table
            row.update(status="error", reason=f"{type(exc).__name__}: {unavailable_reason(exc)}")
        finally:
            be.close()
        say(f"  encoder {label:18s} {row['precision']:14s} "
            + (f"p50 {row['stats'].p50_ms:8.2f} ms" if row.get("stats") else row["status"]))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ reference
def reference_comparison(bundle, backend, window: int = 300, reps: int = 3, iters: int = 50,
                         warmup: int = 3, max_seconds: float = 60.0) -> dict[str, Any]:
    """affedge streaming per frame (encoder(1 crop) + step) vs the reference approach (encoder
    over all ``window`` crops + the window form over them), both on ``backend``."""
    crop = int(bundle.model_config().crop_size)
    rng = np.random.default_rng(1)
    e_in, e_out = _enc_io(backend)
    one = rng.uniform(-1, 1, (1, 3, crop, crop)).astype(np.float32)
    many = rng.uniform(-1, 1, (window, 3, crop, crop)).astype(np.float32)
    feed = initial_step_inputs(backend, rng)
    state_map = {n: "state_out_" + n[len("state_"):] for n in feed if n.startswith("state_")}

    def stream():
        feed["embedding"] = backend.run("encoder", {e_in: one})[e_out]
        out = backend.run("step", feed)
        for i_name, o_name in state_map.items():
            feed[i_name] = out[o_name]

    win_specs = backend.input_specs("window")
    win_feed = {}
    for s in win_specs:
        d = int(s["shape"][-1])
        win_feed[s["name"]] = rng.standard_normal((1, window, d)).astype(np.float32)

    def reference():
        emb = backend.run("encoder", {e_in: many})[e_out]
        win_feed["embedding"] = emb[None]
        return backend.run("window", win_feed)

    s = measure(stream, iters=iters, warmup=warmup, max_seconds=max_seconds / 2)
    r = measure(reference, iters=reps, warmup=1, max_seconds=max_seconds / 2, min_iters=1)
    return {"window": window, "backend": backend.name, "streaming": s, "reference": r,
            "ratio_p50": r.p50_ms / s.p50_ms, "ratio_mean": r.mean_ms / s.mean_ms}


def workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="affedge-bench-")
