"""``Recognizer``: the public runtime API (``from affedge import Recognizer``).

Two ways to use it:

1. Let affedge own the capture loop::

       with Recognizer("bundle_dir") as rec:
           for p in rec.run(video=0, audio="mic"):      # camera 0 + default microphone
               print(p.frame, p.valence_smoothed, p.arousal_smoothed, p.confidence)

   ``video``: a file path, camera index, ``/dev/videoN``, stream URL or GStreamer pipeline.
   ``audio``: ``"mic"`` (default microphone), ``"mic:<index>"``, a WAV path, ``"video"`` (the
   video file's own audio track) or None (no audio: the model gets the training mean).

2. Own the capture loop and push data (thread-safe: e.g. one audio thread, one video thread)::

       rec = Recognizer.demo()
       rec.push_audio(pcm_int16_or_float, t=t_first_sample, sample_rate=48000)   # any thread
       p = rec.push_frame(frame_bgr, t=t_frame)   # runs the inference tick, returns Prediction
       rec.latest(); for p in rec.predictions(): ...

   Timestamps are seconds on one clock shared by audio and video (e.g. ``time.monotonic()``;
   ``t=None`` uses it).

Every video frame yields exactly one :class:`~affedge.sdk.prediction.Prediction`, passed to the
``on_prediction`` callbacks, stored as ``latest()`` and delivered to ``predictions()``
iterators. Files are processed completely (every frame is inferred). With a live camera, frames
captured while inference was busy are skipped (``stats()["skipped_frames"]``), and each skipped
frame still gets a Prediction with ``stale=True`` carrying the previous values.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from affedge.sdk.frame_checks import push_clock
from affedge.sdk.parity_warning import warn_if_unchecked, warn_other_detector
from affedge.sdk.prediction import Prediction
from affedge.sdk.publishing import delivery, drop_sink
from affedge.sdk.run_feeds import (FileAudioFeeder, FrameReader, check_file_exists,
                                   open_run_video, resolve_audio, run_notes)
from affedge.sdk.sources.live_queue import skipped_times
from affedge.sdk.subscription import END, Subscription

#: where ``Recognizer.demo()`` and ``affedge demo`` look for the built-in demo
DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"
DEMO_BUNDLE = DEMO_DIR / "demo_bundle"
DEMO_CLIP = DEMO_DIR / "demo_clip.mp4"
DEMO_LABELS = DEMO_DIR / "demo_clip_labels.csv"
DEMO_BUILD_HINT = (
    "build them with `bash scripts/build_demo_assets.sh` from an affedge source checkout "
    "(it generates the synthetic data set with `affedge synth`, trains the demo model with "
    "`affedge train`, exports it with `affedge export` into affedge/assets/demo/demo_bundle "
    "and renders demo_clip.mp4 + demo_clip_labels.csv), or pass your own bundle with --bundle"
)

def demo_assets_missing() -> list[Path]:
    """The demo files that are not present (empty when the demo can run)."""
    need = [DEMO_BUNDLE / "manifest.json", DEMO_CLIP, DEMO_LABELS]
    return [p for p in need if not p.exists()]


class Recognizer:
    """Streaming valence/arousal recognition from face video and speech.

    Parameters
    ----------
    bundle_path: a model bundle directory or .zip (or an already loaded ``Bundle``).
    backend: "auto" (best available, in the format table's order: TensorRT engine > ONNX
        Runtime GPU > OpenVINO > ONNX Runtime CPU > TorchScript > torch > AOTInductor), a backend name understood by ``affedge.sdk.backends``, or a
        ready :class:`affedge.sdk.backends.Backend` instance for this bundle (e.g. built with
        your own thread count / precision; any object with ``run(model_name, inputs)`` and
        the Backend interface is accepted, e.g. a wrapper that times calls). A passed-in instance belongs to the caller:
        ``close()`` does not close it.
    smoothing: causal exponential smoothing knob in [0, 1); 0 = raw. Mean lag
        ``smoothing / (1 - smoothing)`` frames (0.8 -> 4 frames); see ``affedge.sdk.smoothing``.
    detector: None (default: the face detector the bundle's training crops came from, its
        front-end record; bundles without one: "haar"), a registry name
        (:func:`affedge.features.detectors.available_detectors`: "blazeface",
        "blazeface-short", "haar", "yunet" with ``yunet_model``), or any object with
        ``detect(frame_bgr)`` returning FaceBoxes, (x, y, w, h[, score]) tuples or objects
        with ``.x .y .w .h`` (``.score``, ``.keypoints``); landmark-aligned bundles need the
        keypoints. Optional: ``detect_region`` (else the region is cropped and detected),
        ``concurrent_safe = True`` (async passes may then join 2 frames later). Faces are
        cropped with the bundle's crop recipe either way; a bundle whose front end this
        install cannot reproduce (unknown detector, recipe or model file) is refused.
    min_face: smallest face side (pixels) a full pass searches for (default: the detector's);
        not a floor on reported boxes (README, "Face options are accuracy settings").
    expect_digest: refuse the bundle unless its digest (the sha256 of its manifest, which lists
        every artifact's sha256) is this ("sha256:..." or the hex digits); ``bundle.digest``.
    trust: public key file(s) (Ed25519, see :mod:`affedge.signing`): refuse the bundle unless
        its ``manifest.sig`` was made by one of them. ``rec.bundle.signature_status`` says which
        identity held ("unpinned", "digest-pinned", "signed:<fingerprint>").
    max_faces: faces tracked at once (each keeps its own temporal state).
    min_hits, max_age, iou_threshold: tracker settings (see ``affedge.sdk.tracking``).
    audio_capacity_s: audio ring buffer capacity in seconds.
    on_prediction: a callback (or list of callbacks) called with every Prediction.
    backend_options: keyword options for ``select_backend`` when ``backend`` is a name, e.g.
        ``{"intra_op_threads": 1, "precision": "int8"}`` (ONNX Runtime threads, int8 encoder).
    detect_every: run the face detector on the whole frame every this many frames (K); in
        between, only a region around each tracked face is searched (``roi_scale`` x the face,
        at the face sizes near the tracked one), with the same detector and parameters, so
        boxes and crops are framed the same way. Trade-off: detection costs about 1/K of a
        full pass per frame on average (the full-pass frames still cost it all), but a face
        that *enters* the frame, or jumps out of its region, is found at the next full pass:
        at most K-1 frames late (K=4 at 30 fps: 100 ms); a tracked face whose region search
        fails is counted as missed for that frame (filler embedding, ``face_present=False``)
        exactly as if the full-frame detector had missed it. 1 = full frame every frame.
        Default :data:`affedge.sdk.engine.DEFAULT_DETECT_EVERY`.
    roi_scale: side of the region searched around a tracked face, relative to the face box.
    async_detect: the full-frame pass on a worker thread, its boxes merged ``lag`` frames later
        (2 for BlazeFace, else 1; :class:`affedge.sdk.tracking.TrackAssistedDetector`):
        ``push_frame``'s p99 loses the every-K-th-frame pass; a new face is found at most
        K + lag - 1 frames late. None (default): on in every API and on any core count (same
        Predictions from ``push_frame`` and :meth:`run`; in the pipeline and on one core the
        pass runs inline, same results). False: each pass on its own frame (:meth:`run` ~15 %
        more frames/s on 2 cores). No effect with ``detect_every=1``.
    pipeline: in :meth:`run`, begin frame n+1 (decode, file audio, audio features, face
        detection, tracking, crops) on a worker thread while frame n's model calls run
        (:mod:`affedge.sdk.frame_pipeline`); the Predictions are the same either way, a frame
        costs about the longer half instead of the sum. None (default): on when this process
        may use two or more cores. The push API (``push_frame``) is not affected.
    fallback: when True, ``backend`` may be a list of candidates (names and/or Backend
        instances, best first; ``"auto"`` means the candidates ``select_backend`` tries, in its
        order). The first that can be created runs; if it raises during a tick, the failure is
        recorded in ``backend_failures`` as ``(frame, backend_name, repr(error))``, the next
        candidate that can be created takes over and the *same* tick is re-run (detection and
        tracking are not repeated, the temporal states are kept), so the predictions equal an
        uninterrupted run. With no candidate left a RuntimeError names every failure. Without
        ``fallback`` a list is a selection order only (the first that can be created).
    person_baseline: apply the bundle's per-person baseline (manifest ``person_baseline``,
        fitted by ``affedge train`` on its validation videos; :mod:`affedge.sdk.person_baseline`):
        each tracked face's running mean is pulled toward the training mean. False gives the
        model's own outputs. Bundles without the record are not affected.
    """

    def __init__(self, bundle_path=None, backend="auto", smoothing: float = 0.0,
                 detector=None, yunet_model: str | os.PathLike | None = None,
                 max_faces: int = 4, *, min_hits: int = 1, max_age: int = 15,
                 iou_threshold: float = 0.3, audio_capacity_s: float = 30.0,
                 on_prediction: Callable[[Prediction], None] | list | None = None,
                 backend_options: dict | None = None, detect_every: int | None = None,
                 roi_scale: float = 1.6, fallback: bool = False,
                 async_detect: bool | None = None, min_face: int | None = None,
                 expect_digest: str | None = None, trust=None, pipeline: bool | None = None,
                 person_baseline: bool = True):
        from affedge.bundle import Bundle, BundleError, load_bundle
        from affedge.sdk.engine import DEFAULT_DETECT_EVERY, StreamingEngine
        from affedge.sdk.tracking import IouTracker

        self._closed = True  # until construction succeeds (close()/__del__ stay harmless)
        self._sources: list = []
        self._owned = []
        if bundle_path is None:
            raise ValueError("Recognizer needs a bundle path (or use Recognizer.demo())")
        if isinstance(bundle_path, Bundle):
            bundle = bundle_path.pinned(expect_digest, trust) if (expect_digest or trust) \
                else bundle_path
        else:
            bundle = load_bundle(bundle_path, expect_digest=expect_digest, trust=trust)
        missing = [m for m in ("encoder", "step") if bundle.find(m) is None]
        if missing:
            raise BundleError(f"bundle {bundle.source}: the runtime needs the {missing} "
                              f"artifact(s); it has {sorted({a['name'] for a in bundle.artifacts})}")
        self.bundle = bundle
        if backend_options is not None and not isinstance(backend_options, dict):
            raise TypeError(f"backend_options must be a dict of select_backend options, got "
                            f"{type(backend_options).__name__}")
        self._backend_options = dict(backend_options or {})
        self._owned: list = []  # backends this Recognizer created (closed by close())
        self.backend_failures: list[tuple[int, str, str]] = []
        self.backend = self._make_backend(backend, bool(fallback))
        warn_if_unchecked(bundle.manifest, self.backend)  # e.g. an int8 that failed parity
        try:
            detector = self._make_detector(detector, yunet_model, min_face)
            tracker = IouTracker(iou_threshold=iou_threshold, max_age=max_age,
                                 min_hits=min_hits, max_tracks=max_faces)
        except BaseException:
            self._close_owned()
            raise
        try:
            self.engine = StreamingEngine(
                bundle, self.backend, detector, smoothing=smoothing, max_faces=max_faces,
                tracker=tracker, audio_capacity_s=audio_capacity_s,
                detect_every=DEFAULT_DETECT_EVERY if detect_every is None else detect_every,
                roi_scale=roi_scale, async_detect=async_detect,
                person_baseline=person_baseline)
        except BaseException:
            self._close_owned()
            raise
        self._callbacks: list[Callable[[Prediction], None]] = []
        if on_prediction is not None:
            for cb in (on_prediction if isinstance(on_prediction, (list, tuple))
                       else [on_prediction]):
                self.on_prediction(cb)
        # re-entrant: a callback (on_prediction) runs while the tick holds it and may call
        # reset(), push_frame() or close() on the same thread
        self._tick_lock = threading.RLock()
        self._sub_lock = threading.Lock()
        self._subscribers: list[queue.Queue] = []
        self._latest: Prediction | None = None
        self._stop = threading.Event()
        self._sources: list = []
        #: held around each frame's front end (stage 1) and by whatever else changes the
        #: stream; ``_epoch`` counts those changes (reset, push_frame): frame_pipeline
        self._front_lock = threading.RLock()
        self._epoch = 0
        self._push_clock = None  # push_frame's clock so far (frame_checks.push_clock)
        from affedge.sdk.backends.threads import usable_cpus

        self.pipeline = usable_cpus() >= 2 if pipeline is None else bool(pipeline)
        self._closed = False
        self.skipped_frames = 0
        #: why a file's audio stopped early in the last run() (a damaged track: the frames
        #: went on without audio), one line each
        self._run_lock = threading.Lock()
        self._running: str | None = None  # the source of the run() in progress
        self.audio_errors: list[str] = []
        #: why a file's video looks incomplete after the last run() (it ended well before the
        #: frame count its container declares: truncated or damaged), one line each
        self.source_notes: list[str] = []
        self.emitted = 0
        self._owned_sinks: list = []  # publish(): flushed and closed by close()

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def demo(cls, **kwargs) -> Recognizer:
        """The Recognizer for the bundled demo model (``affedge/assets/demo/demo_bundle``)."""
        if not (DEMO_BUNDLE / "manifest.json").exists():
            raise FileNotFoundError(f"the demo bundle is missing ({DEMO_BUNDLE}); "
                                    + DEMO_BUILD_HINT)
        return cls(DEMO_BUNDLE, **kwargs)

    def _make_detector(self, detector, yunet_model, min_face):
        """The face detector: from the bundle's front-end record (None), by registry name, or
        the caller's object."""
        from affedge.features.detectors import MIN_FACE_PX, available_detectors, make_detector
        from affedge.features.frontend import detector_from_record

        opts = {}
        if min_face is not None:
            if isinstance(min_face, bool) or not isinstance(min_face, int) or \
                    min_face < MIN_FACE_PX:
                raise ValueError(f"min_face must be an integer >= {MIN_FACE_PX} pixels, got "
                                 f"{min_face!r}")
            opts["min_size"] = min_face
        if yunet_model is not None:
            opts["model_path"] = yunet_model
        if detector is None:
            return detector_from_record(self.bundle.manifest.get("face_frontend"), **opts)
        if isinstance(detector, str):
            if detector not in available_detectors():
                raise ValueError(f"detector must be one of {', '.join(available_detectors())} "
                                 f"or an object with detect(); got {detector!r}")
            self._check_keypoints(detector)
            warn_other_detector(self.bundle.manifest, detector)
            return make_detector(detector, **opts)
        if not hasattr(detector, "detect"):
            raise TypeError(f"detector must be a detector name or have a detect(frame) method; "
                            f"got {type(detector).__name__}")
        return detector

    def _check_keypoints(self, name: str) -> None:
        """Refuse, before the first frame, a detector that cannot feed the bundle's crop recipe
        (a keypoint-less one with a landmark-aligned bundle used to be accepted, then every
        frame with a face was refused)."""
        from affedge.features.frontend import detectors_with_keypoints, frontend_of, keypoints_missing

        rec = frontend_of(self.bundle.manifest.get("face_frontend"))
        if keypoints_missing(rec["crop_recipe"], name):
            with_kp = detectors_with_keypoints()
            raise ValueError(f"detector {name!r} gives no face keypoints, and this bundle's "
                             f"crops ({rec['crop_recipe']!r}, trained with {rec['detector']!r}) "
                             f"are aligned on them: use {', '.join(with_kp)}, or leave the "
                             f"detector out to use the bundle's own")

    @property
    def backend_name(self) -> str:
        return self.engine.backend_name

    def _make_backend(self, backend, fallback: bool):
        """The backend the engine runs: one created from a name or passed in, or (``fallback``)
        a :class:`~affedge.sdk.backends.fallback.FallbackBackend` over the candidates."""
        from affedge.sdk.backends.fallback import FallbackBackend, check_candidate, check_models
        from affedge.sdk.backends.select import ALIASES, select_backend

        opts = self._backend_options
        many = isinstance(backend, (list, tuple))
        candidates = list(backend) if many else [backend]
        if not candidates:
            raise ValueError("backend: the candidate list is empty")
        for c in candidates:
            check_candidate(c)
        if opts and not any(isinstance(c, str) for c in candidates):
            raise ValueError("backend_options apply when backend is a name; a Backend "
                             "instance is used as it is")
        if fallback:
            if not many and isinstance(backend, str):
                candidates = list(ALIASES.get(backend, (backend,)))

            def record(name: str, exc: BaseException) -> None:
                self.backend_failures.append((self.engine.model_frame, name, repr(exc)))

            fb = FallbackBackend(self.bundle, candidates, opts, on_failure=record)
            self._owned.append(fb)
            return fb
        if not many:
            if not isinstance(backend, str):
                check_models(backend)
                return backend
            be = select_backend(self.bundle, backend, **opts)
            self._owned.append(be)
            return be
        # a list without fallback: a selection order (the first that can be created)
        fb = FallbackBackend(self.bundle, candidates, opts)
        if fb.owns(fb.current):
            self._owned.append(fb.current)
        return fb.current

    def _close_owned(self) -> None:
        for be in self._owned:
            _close_quietly(be)
        self._owned = []

    def on_prediction(self, callback: Callable[[Prediction], None]):
        """Register ``callback(prediction)`` for every Prediction (usable as a decorator).
        Callbacks run in registration order on the thread that made the prediction. If one
        raises, the others still get the prediction (it is already the ``latest()`` and in
        ``predictions()``), then the first exception propagates out of ``push_frame`` (the
        next frame is processed normally) or out of ``run()``'s iterator (ending that run).
        Catch inside the callback what must not stop a run."""
        if not callable(callback):
            raise TypeError(f"on_prediction needs a callable, got {type(callback).__name__}")
        self._callbacks.append(callback)
        return callback

    def publish(self, sink, source: str | None = None):
        """Send every Prediction from now on to ``sink`` (a Sink, or an
        :func:`affedge.sdk.sinks.open_sink` target: ``"zmq://127.0.0.1:5556"``, ``"ws://..."``,
        a .csv/.jsonl path, ``"-"``), tagged with ``source`` where the sink takes one; returns
        the sink, which ``close()`` flushes and closes. A sink the app closes itself (a file per
        visitor) is let go at the next Prediction; :meth:`unpublish` lets go and closes."""
        from affedge.sdk.sinks.base import as_sink, check_source_name

        self._check_open()
        if source is not None:
            check_source_name(source)
        sink = as_sink(sink, "Recognizer.publish")
        self.on_prediction(delivery(sink, source, self._let_go))
        self._owned_sinks.append(sink)
        return sink

    def unpublish(self, sink) -> None:
        """Stop sending Predictions to ``sink`` (one :meth:`publish` returned); close it."""
        if not any(s is sink for s in self._owned_sinks):
            raise ValueError(f"unpublish: {getattr(sink, 'target', sink)!r} is not a sink this "
                             f"Recognizer publishes to (publish() returns the one to give)")
        self._let_go(sink)
        if callable(getattr(sink, "close", None)):  # (a sink of the app's may have no close)
            sink.close()

    def _let_go(self, sink) -> None:
        drop_sink(self._callbacks, self._owned_sinks, sink)

    # ------------------------------------------------------------------ push API
    def push_frame(self, frame_bgr: np.ndarray, t: float | None = None) -> Prediction:
        """Run the inference tick for one BGR uint8 frame at time ``t`` (seconds; default
        ``time.monotonic()``); returns its Prediction (also delivered to callbacks etc.).
        Thread-safe; frames must arrive with increasing ``t``. Refused while a ``run()`` of this
        Recognizer is open (its frames own the stream: a pushed frame would take the run's next
        frame index and time). Full face-detection passes run on a worker (``async_detect``)."""
        self._check_open()
        if t is not None:
            from affedge.sdk.audio_timeline import check_time

            check_time(t, "push_frame")
        if self._running is not None:
            raise RuntimeError(f"Recognizer.push_frame: a run() of {self._running} is open on "
                               "this Recognizer; close its iterator first, or push frames to "
                               "a second Recognizer")
        with self._tick_lock:
            now = time.monotonic()
            clock = push_clock(self._push_clock if self.engine.started else None, t, now)
            t = now if t is None else t
            with self._front_lock:
                self._epoch += 1
                tick = self.engine.begin_tick(frame_bgr, float(t), api="push_frame")
            self._push_clock = clock
            p = self.engine.run_models(tick)
            self._emit(p)
        return p

    def push_audio(self, pcm, t: float | None = None, sample_rate: int = 16000) -> None:
        """Add mono PCM (float in [-1, 1] or integer samples) whose first sample was captured at
        time ``t`` (default: ``time.monotonic()`` minus the chunk duration). Thread-safe (one
        producer at a time); cheap: features are computed by the next inference tick."""
        from affedge.sdk.audio_timeline import check_sample_rate

        self._check_open()
        sr = check_sample_rate(sample_rate)  # (t is checked by the timeline's push)
        if pcm is None or not hasattr(pcm, "__len__"):  # (bytes get the timeline's hint)
            raise TypeError(f"push_audio: pcm must be a 1-D array of mono samples, got "
                            f"{type(pcm).__name__}")
        if t is None:
            t = time.monotonic() - len(pcm) / float(sr)
        self.engine.audio.push(pcm, t, sr)

    def latest(self) -> Prediction | None:
        """The most recent Prediction (None before the first frame)."""
        return self._latest

    def predictions(self, timeout: float | None = None) -> Iterator[Prediction]:
        """Iterate over Predictions as they are produced (from ``push_frame`` or ``run`` on any
        thread), starting at this call (not at the first ``next()``: a consumer thread started
        later misses nothing), until ``close()``; with ``timeout`` it also stops after that
        many seconds without a new Prediction. Nothing is dropped (unbounded queue); the
        iterator's ``close()`` (or its garbage collection) ends the subscription."""
        return Subscription(self, timeout)

    def _emit(self, p: Prediction) -> None:
        self._latest = p
        self.emitted += 1
        with self._sub_lock:
            subs = list(self._subscribers)
        for q in subs:
            q.put(p)
        # every callback gets the prediction even when one before it raises; the first
        # exception then propagates (out of push_frame, or out of run()'s iterator)
        error: BaseException | None = None
        for cb in list(self._callbacks):  # (a closed published sink lets go of itself)
            try:
                cb(p)
            except BaseException as exc:  # noqa: BLE001  (re-raised below)
                error = error or exc
        if error is not None:
            raise error

    # ------------------------------------------------------------------ capture loop
    def run(self, video=0, audio=None, *, realtime: bool = False,
            max_frames: int | None = None, with_frames: bool = False) -> Iterator[Prediction]:
        """Capture and infer; yields one Prediction per video frame (``with_frames=True``:
        ``(image_bgr, prediction)`` pairs, image None for stale predictions of skipped frames).

        ``audio``: None (default: none), "video" (a file's or stream's own track), "auto" (a
        file's track if it has one: ``affedge run``'s default), "mic", "mic:N" or a file.
        ``realtime=True`` paces a *file* to its media clock (like a camera, but no frame is
        skipped). Live sources are always real time. Stops at the end of a file, after
        ``max_frames`` frames, or on ``close()``. Each ``run()`` is a new, unrelated stream:
        when frames were processed before (an earlier ``run()`` or ``push_frame``), tracks,
        states and audio are reset first, as by :meth:`reset` (a second file starts at t = 0).
        One ``run()`` at a time: another while an earlier one's iterator is open (neither
        exhausted nor closed: ``it.close()``) raises RuntimeError (or use a second Recognizer).
        """
        # the arguments are checked here, when run() is called, not at the first next()
        self._check_open()
        if max_frames is not None and (isinstance(max_frames, bool) or
                                       not isinstance(max_frames, int) or max_frames < 1):
            raise ValueError(f"max_frames must be a positive integer or None, got "
                             f"{max_frames!r}")
        check_file_exists(video)
        return self._run_stream(video, resolve_audio(video, audio), realtime, max_frames,
                                with_frames)

    def _run_stream(self, video, audio, realtime, max_frames, with_frames):
        self._check_open()  # (closed between run() and the first next())
        with self._run_lock:
            if self._running is not None:
                raise RuntimeError(f"Recognizer.run: a run of {self._running} is still open "
                                   f"(its iterator neither exhausted nor closed); close it "
                                   f"first, or use a second Recognizer for a second stream")
            self._running = str(video)
        try:
            yield from self._run(video, audio, realtime, max_frames, with_frames)
        finally:
            with self._run_lock:
                self._running = None

    def _run(self, video, audio, realtime: bool, max_frames: int | None, with_frames: bool):
        if self.engine.started:
            self.reset()
        self.audio_errors = []  # (this run's own)
        self.source_notes = []
        self._stop.clear()
        # a URL with audio="video": one demuxer for both (run_feeds.open_run_video)
        src = open_run_video(video, audio, self.engine.audio.push)
        self._sources.append(src)
        audio_src = None
        feed = live_audio = None
        try:
            if audio is not None and not getattr(src, "pushes_audio", False):
                audio_src = self._open_audio(audio, video)
            if audio_src is not None:
                self._sources.append(audio_src)
                if getattr(audio_src, "is_live", False):
                    if not getattr(src, "is_live", False):
                        raise ValueError(
                            f"a live audio source ({audio_src.name}) needs a live video source "
                            f"(camera, URL, pipeline); {src.name} is a file: use "
                            f"audio='video' or a WAV file")
                    audio_src.connect(self.engine.audio.push)  # the capture callback feeds
                    audio_src.start()                          # the audio timeline directly
                    live_audio = audio_src
                else:
                    feed = FileAudioFeeder(self.engine.audio, audio_src,
                                            on_error=self.audio_errors.append)
            read = yield from self._loop(src, feed, live_audio, realtime, max_frames,
                                         with_frames)
            self.source_notes += run_notes(self.engine, src, read, max_frames,
                                           self._stop.is_set(), feed, self._latest)
        finally:
            self._stop.set()
            for s in (audio_src, src):  # closing unblocks the capture threads
                if s is not None:
                    _close_quietly(s)
                    if s in self._sources:
                        self._sources.remove(s)

    def _open_audio(self, audio, video):
        from affedge.sdk.sources import open_audio

        if audio == "video" and not isinstance(video, (str, os.PathLike)):
            raise ValueError("audio='video' needs a video file path (a camera has no audio "
                             "track); use audio='mic'")
        return open_audio(audio, video)

    def _loop(self, src, feed, live_audio, realtime: bool, max_frames: int | None,
              with_frames: bool):
        from affedge.sdk.frame_pipeline import FramePipeline

        live = bool(getattr(src, "is_live", False))
        reader = FrameReader(src, live_audio, realtime and not live, max_frames, self._stop)
        audio_offset: list = []  # file audio on a live clock starts with the first frame

        def begin(frame):
            if feed is not None:
                if not audio_offset:
                    audio_offset.append(frame.t if live else 0.0)
                feed.feed_until(frame.t, audio_offset[0])
            return self.engine.begin_tick(frame.image, frame.t, index=frame.index,
                                          read_audio=not self.pipeline)

        search = self.engine.face_search  # (the pipeline's worker runs async passes inline)
        was_inline, search.inline = search.inline, search.inline or self.pipeline
        pipe = FramePipeline(reader.read, begin, lambda: self._epoch, self._front_lock,
                             threaded=self.pipeline)
        prev_index: int | None = None
        prev_t: float | None = None
        try:
            for item in pipe:
                if self._stop.is_set():
                    break
                out: list[Prediction] = []
                with self._tick_lock:
                    item = pipe.current(item)  # begun again if the stream changed meanwhile
                    if item.error is not None:
                        raise item.error
                    frame = item.frame
                    # live: frames the camera captured while we were busy get stale Predictions
                    if prev_index is not None and frame.index > prev_index + 1:
                        gone = range(prev_index + 1, frame.index)
                        for k, tk in zip(gone, skipped_times(prev_index, prev_t, frame.index,
                                                             frame.t, gone)):
                            sp = self.engine.stale_prediction(k, tk, self._latest)
                            self.skipped_frames += 1
                            self._emit(sp)
                            out.append((None, sp) if with_frames else sp)
                    p = self.engine.run_models(item.tick)
                    self._emit(p)
                    out.append((frame.image, p) if with_frames else p)
                yield from out
                prev_index, prev_t = frame.index, frame.t
        finally:
            pipe.close(unblock=src.close if live else None)
            search.inline = was_inline
        return 0 if prev_index is None else prev_index + 1

    # ------------------------------------------------------------------ lifecycle
    def stats(self) -> dict:
        """Counters and latency percentiles (ms) of the inference tick."""
        from affedge.sdk.backends.threads import limit_blas_threads

        s = self.engine.stats()
        s["skipped_frames"] = self.skipped_frames
        s["predictions"] = self.emitted
        s["blas_threads"] = limit_blas_threads()  # what the runtime did (done once, at start)
        return s

    def reset(self) -> None:
        """Forget tracks, temporal states and buffered audio (a new, unrelated stream);
        ``latest()`` is None until the new stream's first Prediction. ``stats()`` counters and
        ``emitted`` go on counting across streams."""
        self._check_open()
        with self._tick_lock, self._front_lock:
            self.engine.reset()
            self._epoch += 1
            self._latest = None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Recognizer is closed")

    def close(self) -> None:
        """Stop capture and face-detection threads, release cameras/microphones/files and end
        ``predictions()`` iterators. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for s in list(self._sources):
            _close_quietly(s)
        self._sources.clear()
        self.engine.close()  # stops the face-detection worker (async_detect)
        with self._tick_lock:  # a tick running on another thread finishes with its backend
            # ... and its prediction reaches predictions() before the end marker (put before
            # the tick's emit, it ended the iterators one prediction early)
            with self._sub_lock:
                for q in self._subscribers:
                    q.put(END)
            self._close_owned()
        for sink in getattr(self, "_owned_sinks", ()):
            _close_quietly(sink)

    def __enter__(self) -> Recognizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            if not self._closed:
                self._stop.set()
                for s in list(self._sources):
                    _close_quietly(s)
        except Exception:
            pass


def _close_quietly(src) -> None:
    try:
        src.close()
    except Exception:
        pass
