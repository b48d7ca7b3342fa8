"""The causal streaming engine: faces, one model step per video frame, and the Predictions.

Data flow (ARCHITECTURE.md §4-§6)::

    process_frame(frame, t)   [the inference thread]
        1. audio at t from the AudioTimeline (affedge.sdk.audio_timeline: its own clock, rings,
           features and VAD; producers push into it directly);
        2. detect faces (a full-frame pass every ``detect_every`` frames, a search of a small
           region around each track in between: TrackAssistedDetector) -> IouTracker -> crops
           -> one batched encoder call over all tracked faces detected in this frame;
        3. one batched "step" call over every stream (one TrackState per track):
           (embedding_t, audio_t, state) -> (valence, arousal, state');
        4. clip, smooth, confidence, primary face -> Prediction.

Policies (documented in affedge/sdk/prediction.py as well)
  * Missing face: the stream gets the embedding of the training filler (the black crop,
    PAPER.md §1.3; computed once at start-up) and the Prediction says ``face_present=False``.
    A track that is briefly not detected (occlusion gap, up to the tracker's ``max_age``
    frames) keeps its state and is stepped with the filler, exactly like training sequences
    with missing frames. A new track starts from the zero state (like a training window start).
  * Tracking-assisted detection (``detect_every=K``, default :data:`DEFAULT_DETECT_EVERY`):
    a track whose region search fails this frame is missed for this frame (the policy above);
    a face entering the frame is found by the next full-frame pass, at most K-1 frames late.
    ``detect_every=1`` runs the full-frame detector on every frame.
  * Asynchronous full passes (``async_detect``, default :data:`DEFAULT_ASYNC_DETECT`; none
    with ``detect_every=1``): the full-frame pass due at frame n
    runs on a worker thread while frame n gets region searches and its model calls; its boxes
    join frame n+lag's detections (always exactly lag frames later, waiting for the worker if
    needed, so predictions do not depend on timing; lag 2 for BlazeFace, else 1). A new face
    is found at most K+lag-1 frames late. ``close()`` and ``reset()`` stop the worker.
  * No track at all: a "background" stream (filler + audio) produces the top-level values; it
    restarts from the zero state whenever it becomes active again.
  * Audio: see :mod:`affedge.sdk.audio_timeline` (gaps, restarts, missing audio -> zeros and
    ``audio_present=False``).
  * Non-finite values (NaN/Inf from a backend, e.g. an fp16 engine overflowing, or in the
    audio features): never reach a stream's state. A face embedding that is not finite is
    replaced by the filler embedding for the model (the prediction's confidence is 0 for that
    face); an audio feature vector that is not finite is treated as missing audio; a stream
    whose step output (valence/arousal or any new state) is not finite keeps its previous
    state, the frame is left out of its history, and its prediction carries the previous values
    with ``stale=True`` and confidence 0 (NaN when there are none yet). All three are counted
    in ``stats()`` (``nonfinite_embeddings``, ``nonfinite_audio``, ``nonfinite_outputs``).
  * Backend errors: the model calls change nothing, and the stream states are committed only
    after both succeeded, so a backend error leaves every TrackState as it was (the detector
    and tracker have seen the frame). To go on with another backend on the same tick, give the
    engine an :class:`affedge.sdk.backends.fallback.FallbackBackend`: it re-runs the failed call on the
    next candidate, inside the tick.
"""
from __future__ import annotations

import copy
import time
import warnings
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from affedge.sdk.audio_timeline import AudioTimeline, check_time
from affedge.sdk.frame_checks import check_boxes, conversion_hint
from affedge.sdk.person_baseline import PersonBaselines, check_record
from affedge.sdk.prediction import FaceResult, Prediction
from affedge.sdk.smoothing import ExponentialSmoother
from affedge.sdk.tracking import (IouTracker, Track, TrackAssistedDetector, choose_primary,
                                   select_detections)

#: full-frame face detection every this many frames (region searches around the tracks in
#: between). Measured on the 2-core CPU (320x240, Haar): full pass 24-34 ms, region search
#: ~1 ms per face; see the Recognizer docstring for the trade-off.
DEFAULT_DETECT_EVERY = 4

#: full-frame passes on a worker thread, merged ``lag`` frames later (inline, same results,
#: where a worker would only compete for the cores): push_frame's p99 / p50 1.73 -> 1.28
#: (benchmarks/README.md, "Asynchronous full passes")
DEFAULT_ASYNC_DETECT = True

#: how many recent tick latencies ``stats()`` keeps for its percentiles (a bounded history)
LATENCY_HISTORY = 2048
#: the first this-many frame intervals of a stream are checked for a time unit mix-up: a median
#: of at least SLOW_FRAMES_S seconds per frame draws one RuntimeWarning (a 30 fps camera stamped
#: in milliseconds advances by 33 "seconds" per frame; audio stamped in seconds then never
#: meets the frames)
UNIT_CHECK_FRAMES = 9
SLOW_FRAMES_S = 5.0


@dataclass
class TrackState:
    """The model state of one stream (a tracked face, or the background stream)."""

    states: list[np.ndarray]
    smoother: ExponentialSmoother
    presence: deque = field(default_factory=lambda: deque(maxlen=30))
    steps: int = 0
    last_va: np.ndarray | None = None
    last_smoothed: np.ndarray | None = None
    last_conf: float = 0.0


@dataclass
class Tick:
    """One frame between the stages of a tick (see :meth:`StreamingEngine.process_frame`)."""

    shape: tuple
    t: float
    index: int
    tick0: float
    audio: dict
    audio_present: bool
    speech: bool
    tracks: list
    confirmed: list
    stream_ids: list[int]
    streams: list[TrackState]
    embs: list  # one embedding per stream; None where a crop awaits the encoder
    crops: np.ndarray | None
    enc_slot: list[int]
    bad_embs: set = field(default_factory=set)

    def embeddings(self) -> np.ndarray:
        """The step's ``embedding`` input (call after the encoder filled every slot)."""
        return np.stack(self.embs).astype(np.float32, copy=False)


class StreamingEngine:
    """Per-frame causal inference over a bundle's ``encoder`` and ``step`` artifacts.

    Parameters
    ----------
    bundle: an :class:`affedge.bundle.Bundle`.
    backend: an :class:`affedge.sdk.backends.Backend` (``run(model_name, inputs) -> outputs``).
    detector: object with ``detect(frame_bgr) -> list[FaceBox]`` (``affedge.features.faces``).
    smoothing: the exponential smoothing knob in [0, 1) (see :mod:`affedge.sdk.smoothing`).
    max_faces: at most this many tracked faces (largest first), each with its own state.
    tracker: an :class:`IouTracker` (default: iou 0.3, max_age 15 frames, min_hits 1).
    audio_capacity_s: capacity of the PCM ring and feature rings in seconds.
    presence_window: frames over which the face-presence factor of the confidence is computed.
    detect_every: full-frame face detection every this many frames; in between only a region
        of ``roi_scale`` x the face around each track is searched (see
        :class:`affedge.sdk.tracking.TrackAssistedDetector`). 1: full frame every frame.
    roi_scale: side of the searched region relative to the tracked face's side.
    async_detect: run each full-frame pass on a worker thread and merge its boxes ``lag``
        frames later (see the module docstring); call :meth:`close` when done with the engine.
        None: :data:`DEFAULT_ASYNC_DETECT`. No effect with ``detect_every=1``.
    """

    def __init__(self, bundle, backend, detector, *, smoothing: float = 0.0, max_faces: int = 4,
                 tracker: IouTracker | None = None, audio_capacity_s: float = 30.0,
                 audio_timeout: float = 1.0, gap_tolerance: float = 0.05,
                 presence_window: int = 30, detect_every: int = DEFAULT_DETECT_EVERY,
                 roi_scale: float = 1.6, async_detect: bool | None = None,
                 crop_recipe: str | None = None, person_baseline: bool = True):
        from affedge.features.crops import get_recipe
        from affedge.features.frontend import frontend_of
        from affedge.preprocess import audio_normaliser, crop_normaliser

        if int(max_faces) < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        self.bundle = bundle
        self.backend = backend
        self.detector = detector
        from affedge.sdk.backends.threads import usable_cpus

        self.face_search = TrackAssistedDetector(
            detector, detect_every, roi_scale,
            async_detect=DEFAULT_ASYNC_DETECT if async_detect is None else async_detect)
        self.face_search.inline = usable_cpus() < 2  # (a worker would share the one core)
        self.smoothing = float(smoothing)
        ExponentialSmoother(self.smoothing)  # validates the knob early
        self.max_faces = int(max_faces)
        self.tracker = tracker or IouTracker(max_tracks=self.max_faces)
        if self.tracker.max_tracks is None or self.tracker.max_tracks > self.max_faces:
            self.tracker.max_tracks = self.max_faces
        self.presence_window = int(presence_window)
        #: the bundle's per-person baseline record (affedge.sdk.person_baseline); None: off
        self.person_baseline = bundle.manifest.get("person_baseline") if person_baseline else None
        if self.person_baseline is not None:
            try:
                check_record(self.person_baseline)
            except ValueError as exc:
                raise ValueError(f"bundle {bundle.source}: person_baseline: {exc}") from None
        # a fitted strength of 0 for every output changes nothing: not applied, not reported
        self._baselines = PersonBaselines.from_record(self.person_baseline) if \
            self.person_baseline and any(self.person_baseline["alpha"]) else None

        self.model_cfg = bundle.model_config()
        self.feature_cfg = fcfg = bundle.feature_config()
        self.receptive_field = int(bundle.receptive_field)
        #: how detected faces become crops: the bundle's front-end record (training's recipe)
        self.crop_recipe = get_recipe(crop_recipe or frontend_of(
            bundle.manifest.get("face_frontend"))["crop_recipe"]).name
        self._crop_norm = crop_normaliser(bundle.manifest.get("crop"))
        self._parse_artifacts()
        self.audio = AudioTimeline(
            fcfg, self.audio_streams, audio_normaliser(bundle.manifest.get("audio_norm")),
            capacity_s=audio_capacity_s, audio_timeout=audio_timeout,
            gap_tolerance=gap_tolerance, make_vad=_make_vad)
        self._nonfinite = {"embeddings": 0, "outputs": 0}

        # video path
        self._streams: dict[int, TrackState] = {}
        self._background: TrackState | None = None
        self._primary_id: int | None = None
        self._filler_embedding = self._encode_filler()
        self._frame_index = 0
        #: the frame whose model calls run now (or ran last)
        self.model_frame = 0
        self._last_t: float | None = None
        self._frame_shape: tuple[int, int] | None = None  # the previous frame's (h, w)
        self._intervals: list[float] | None = []  # for the time unit check (then None)
        self._latencies: deque = deque(maxlen=LATENCY_HISTORY)
        self.frames = 0

    @property
    def backend_name(self) -> str:
        """The name of the backend that runs the model calls (for a FallbackBackend: the
        candidate in use now)."""
        return str(getattr(self.backend, "name", type(self.backend).__name__))

    @property
    def encoder_precision(self) -> str | None:
        """The precision the encoder runs in now ("fp32", "int8", "bf16", "fp16"; for a
        FallbackBackend: its candidate in use), or None for a backend that does not say."""
        try:
            return str(self.backend.precision("encoder"))
        except Exception:  # noqa: BLE001  (a caller's backend object without precision())
            return None

    @property
    def started(self) -> bool:
        """True once a frame was processed since construction or the last reset()."""
        return self._last_t is not None

    @property
    def step_batchable(self) -> bool:
        """True when the step artifact takes any batch size (several engines' streams can go
        through one call)."""
        return self._step_fixed_batch is None

    @property
    def frame_index(self) -> int:
        """The index of the frame being processed now (or the next one, between ticks)."""
        return self._frame_index

    # ------------------------------------------------------------------ setup helpers
    def _parse_artifacts(self) -> None:
        b = self.bundle
        enc = b.find("encoder")
        step = b.find("step")
        if enc is None or step is None:
            raise ValueError(f"bundle {b.source}: needs 'encoder' and 'step' artifacts "
                             f"(has {[a['name'] for a in b.artifacts]})")
        self._enc_in = enc["inputs"][0]["name"]
        self._enc_out = enc["outputs"][0]["name"]
        self._enc_fixed_batch = _fixed_batch(enc["inputs"][0]["shape"])
        self.audio_streams = tuple(s for s, _ in self.model_cfg.audio_streams) \
            if self.model_cfg.fusion else ()
        names = {i["name"]: i for i in step["inputs"]}
        self._step_emb = "embedding"
        if "embedding" not in names:
            raise ValueError(f"bundle {b.source}: step artifact has no 'embedding' input "
                             f"(inputs {sorted(names)})")
        for s in self.audio_streams:
            if f"audio_{s}" not in names:
                raise ValueError(f"bundle {b.source}: step artifact lacks input 'audio_{s}'")
        self._state_specs = [(i["name"], tuple(int(d) for d in i["shape"][1:]))
                             for i in step["inputs"] if i["name"].startswith("state_")]
        out_names = {o["name"] for o in step["outputs"]}
        self._state_out = {}
        for name, _ in self._state_specs:
            o = "state_out_" + name[len("state_"):]
            if o not in out_names:
                raise ValueError(f"bundle {b.source}: step artifact has input {name!r} but no "
                                 f"output {o!r}")
            self._state_out[name] = o
        self._va_out = "va" if "va" in out_names else step["outputs"][0]["name"]
        self._step_fixed_batch = _fixed_batch(step["inputs"][0]["shape"])
        self._out_index = {n: i for i, n in enumerate(b.outputs)}

    def encode(self, crops_bgr: np.ndarray) -> np.ndarray:
        """Embeddings float32[n, D] of BGR crops [n, S, S, 3] (one encoder call, or one per
        crop when the artifact's batch is fixed at 1)."""
        return self._encode(crops_bgr)

    def _encode(self, crops_bgr: np.ndarray) -> np.ndarray:
        from affedge.features.faces import to_model_input

        x = to_model_input(crops_bgr, self.feature_cfg, self._crop_norm)
        if self._enc_fixed_batch == 1 and len(x) > 1:
            return np.concatenate([self._encode(crops_bgr[i:i + 1]) for i in range(len(x))])
        out = self.backend.run("encoder", {self._enc_in: x})[self._enc_out]
        return np.asarray(out, np.float32).reshape(len(x), -1)

    def _encode_filler(self) -> np.ndarray:
        from affedge.features.faces import FILLER_CROP

        return self._encode(np.asarray(FILLER_CROP)[None])[0]

    def _new_stream(self) -> TrackState:
        states = [np.zeros((1, *shape), np.float32) for _, shape in self._state_specs]
        s = TrackState(states=states, smoother=ExponentialSmoother(self.smoothing))
        s.presence = deque(maxlen=self.presence_window)
        return s

    # ------------------------------------------------------------------ video tick
    def process_frame(self, frame_bgr: np.ndarray, t: float, index: int | None = None,
                      detections=None) -> Prediction:
        """Run one inference tick for a BGR uint8 frame at time ``t`` (seconds, strictly
        increasing, on the clock the audio was pushed with). ``detections`` (optional) replaces
        the detector's output for this frame (a list of FaceBox). Returns the frame's Prediction.

        Bad input raises ``ValueError`` before anything changes. A backend error propagates
        with every stream state unchanged (see the module docstring).

        The tick runs in three stages, public so that a caller can batch the model calls of
        several engines sharing one backend (:mod:`affedge.serve.batching`):
        :meth:`begin_tick` (checks, audio, faces) -> the encoder over ``tick.crops`` and
        :meth:`set_embeddings` -> one step call over :meth:`step_inputs` -> :meth:`finish_tick`
        with :meth:`split_step` of its outputs."""
        return self.run_models(self.begin_tick(frame_bgr, t, index, detections))

    def run_models(self, tick: Tick) -> Prediction:
        """Stages 2 and 3 for one engine: the encoder over the tick's crops, the step over its
        streams, and the Prediction. The frame's stage 1 may have run on another thread (the
        stages of later frames too: :mod:`affedge.sdk.frame_pipeline`)."""
        self.model_frame = tick.index
        if tick.audio is None:
            tick.audio, tick.audio_present, tick.speech = self.audio.at(tick.t)
        if tick.crops is not None:
            self.set_embeddings(tick, self._encode(tick.crops))
        return self.finish_tick(tick, *self._step(tick.streams, tick.embeddings(), tick.audio))

    def begin_tick(self, frame_bgr: np.ndarray, t: float, index: int | None = None,
                   detections=None, read_audio: bool = True,
                   api: str = "process_frame") -> Tick:
        """Stage 1: check the input, read the audio at ``t``, detect/track faces and cut the
        crops to encode (``tick.crops``, None when no face was detected). Changes only the
        detector and tracker (as a backend error in a later stage would leave them).
        ``read_audio=False`` leaves the audio to :meth:`run_models` (a pipelined loop puts
        it on the model's side, the lighter one; the features at ``t`` never depend on audio
        pushed after ``t``, so the result is the same). ``api``: the public call that error
        messages name (``push_frame`` when the Recognizer's push API called)."""
        tick0 = time.perf_counter()
        t = check_time(t, api)
        if self._last_t is not None and t <= self._last_t:
            raise ValueError(f"{api}: timestamps must increase; got t={t} after "
                             f"{self._last_t} (this stream's last frame; for a new, unrelated "
                             f"stream call reset() first)")
        if not isinstance(frame_bgr, np.ndarray) or frame_bgr.dtype != np.uint8 or \
                frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            raise ValueError(f"{api}: frame must be a BGR uint8 array [H,W,3], got "
                             f"{getattr(frame_bgr, 'dtype', type(frame_bgr))} "
                             f"{getattr(frame_bgr, 'shape', '')}" + conversion_hint(frame_bgr))
        if frame_bgr.size == 0:
            raise ValueError(f"{api}: frame is empty (shape {frame_bgr.shape})")
        index = self._frame_index if index is None else int(index)
        self._frame_index = index
        shape = frame_bgr.shape[:2]
        if self._frame_shape is not None and shape != self._frame_shape:
            # the camera changed its resolution: the tracks move to the new pixel grid (ids and
            # temporal states stay) and this frame gets a full-frame pass (a region search
            # around a box of the old grid found nothing for several frames)
            (h0, w0), (h1, w1) = self._frame_shape, shape
            self.tracker.rescale(w1 / w0, h1 / h0)
            self.face_search.reset()
        self._frame_shape = shape
        audio, audio_present, speech = self.audio.at(t) if read_audio else (None, False, False)
        tracks, confirmed, stream_ids, streams, embs, crops, enc_slot = \
            self._faces(frame_bgr, detections)
        # the tick keeps its own copy of the tracks: the next frame's tracker update may run
        # before this frame's Prediction is built (a pipelined capture loop)
        tracks = [copy.copy(tr) for tr in tracks]
        confirmed = [tr for tr in tracks if tr.confirmed]
        return Tick(frame_bgr.shape, t, index, tick0, audio, audio_present, speech, tracks,
                    confirmed, stream_ids, streams, embs, crops, enc_slot)

    def set_embeddings(self, tick: Tick, encoded: np.ndarray) -> None:
        """Stage 2: the encoder's outputs for ``tick.crops`` (a non-finite one becomes the
        filler embedding: the model sees a missing face rather than NaN; module docstring)."""
        for slot, e in zip(tick.enc_slot, encoded):
            if np.isfinite(e).all():
                tick.embs[slot] = e
            else:
                tick.embs[slot] = self._filler_embedding
                tick.bad_embs.add(slot)

    def finish_tick(self, tick: Tick, va: np.ndarray, new_states, finite) -> Prediction:
        """Stage 3: commit the step's outputs (:meth:`split_step`; nothing can fail in a
        backend from here on) and build the frame's Prediction."""
        streams = tick.streams
        self._nonfinite["embeddings"] += len(tick.bad_embs)
        self._nonfinite["outputs"] += finite.count(False)
        for st, states, ok in zip(streams, new_states, finite):
            if ok:  # else the frame is left out of this stream's history (module docstring)
                st.states = states
        track_by_id = {tr.id: tr for tr in tick.tracks}
        af = 1.0 if (tick.audio_present or not self.audio_streams) else 0.5
        results: dict[int, tuple] = {}
        in_view = {tr.id for tr in tick.tracks if tr.detected} \
            if self._baselines is not None else set()
        for k, (sid, st, y, ok) in enumerate(zip(tick.stream_ids, streams, va, finite)):
            tr = track_by_id.get(sid)
            detected = bool(tr is not None and tr.detected)
            if not ok:
                nan = np.full(len(y), np.nan, np.float32)
                prev = st.last_va if st.last_va is not None else nan
                prev_sm = st.last_smoothed if st.last_smoothed is not None else nan
                results[sid] = (prev, prev_sm, 0.0, detected, False)
                continue
            y = np.clip(y, -1.0, 1.0)
            if self._baselines is not None and sid != -1:
                y = self._baselines.update(sid, y, tick.t, detected, in_view)
            sm = np.clip(st.smoother.update(y), -1.0, 1.0)
            st.steps += 1
            st.presence.append(1.0 if detected else 0.0)
            face = float(np.clip(tr.score, 0.0, 1.0)) \
                if detected and k not in tick.bad_embs else 0.0
            presence = float(np.mean(st.presence))
            warm = 0.5 + 0.5 * min(1.0, st.steps / max(1, self.receptive_field))
            conf = float(np.clip(face * presence * af * warm, 0.0, 1.0))
            st.last_va, st.last_smoothed, st.last_conf = y, sm, conf
            results[sid] = (y, sm, conf, detected, True)
        return self._prediction(tick.shape, tick.t, tick.index, tick.tick0, tick.confirmed,
                                results, tick.audio_present, tick.speech)

    def _faces(self, frame_bgr, detections):
        """Detection, tracking and crops for one frame -> (tracks, confirmed tracks, stream
        ids, TrackStates, embeddings with None where a crop is to be encoded, crops, slots)."""
        from affedge.features.crops import crop_face

        try:
            if detections is None:
                dets = self.face_search.detect(frame_bgr, self.tracker.tracks)
            else:
                dets = list(detections)
                self.face_search.discard_pending()  # a full pass joins only a later frame
            dets = select_detections(dets, self.tracker.tracks, self.max_faces)
            check_boxes(dets, frame_bgr.shape)
        except ValueError as exc:  # a broken detector: refuse the frame, change nothing
            if detections is None:
                self.face_search.unschedule()
            name = getattr(self.detector, "name", type(self.detector).__name__)
            raise ValueError(f"face detector {name!r}: {exc}") from None
        tracks = self.tracker.update(dets)
        for tid in self.tracker.removed:  # (a removed primary id matches no track again:
            self._streams.pop(tid, None)  # ids are never reused, see choose_primary)
        # streams to step this frame: every live track, plus the background when no confirmed
        confirmed = [tr for tr in tracks if tr.confirmed]
        stream_ids: list[int] = []
        embs: list[np.ndarray | None] = []
        to_encode: list[np.ndarray] = []
        enc_slot: list[int] = []
        for tr in tracks:
            if tr.id not in self._streams:
                self._streams[tr.id] = self._new_stream()
            stream_ids.append(tr.id)
            if tr.detected:
                to_encode.append(crop_face(frame_bgr, tr.face, self.crop_recipe,
                                           self.feature_cfg.aligned_size))
                enc_slot.append(len(embs))
                embs.append(None)
            else:
                embs.append(self._filler_embedding)
        if not confirmed:
            if self._background is None:
                self._background = self._new_stream()
            stream_ids.append(-1)
            embs.append(self._filler_embedding)
        else:
            self._background = None  # restarts from zero when next needed
        streams = [self._background if sid == -1 else self._streams[sid] for sid in stream_ids]
        crops = np.stack(to_encode) if to_encode else None
        return tracks, confirmed, stream_ids, streams, embs, crops, enc_slot

    def _prediction(self, shape, t: float, index: int, tick0: float, confirmed, results,
                    audio_present: bool, speech: bool) -> Prediction:
        """The frame's Prediction from the per-stream results (primary face first)."""
        primary = self._choose_primary(confirmed, shape)
        faces = []
        order = ([primary] if primary is not None else []) + \
            [tr for tr in confirmed if tr is not primary]
        for tr in order:
            y, sm, conf, det, _ = results[tr.id]
            faces.append(FaceResult(
                track_id=tr.id, box=tuple(float(v) for v in tr.box), detected=det,
                score=float(tr.score) if det else 0.0, valence=self._o(y, "valence"),
                arousal=self._o(y, "arousal"), valence_smoothed=self._o(sm, "valence"),
                arousal_smoothed=self._o(sm, "arousal"), confidence=conf))
        if primary is not None:
            y, sm, conf, det, ok = results[primary.id]
            box = tuple(float(v) for v in primary.box)
            tid: int | None = primary.id
            score = float(primary.score) if det else 0.0
        else:
            y, sm, conf, det, ok = results[-1]
            box, tid, score = None, None, 0.0
        latency = (time.perf_counter() - tick0) * 1000.0
        self._latencies.append(latency)
        if self._last_t is not None and self._intervals is not None:
            self._check_time_unit(t - self._last_t)
        self._last_t = t
        self._frame_index = index + 1
        self.frames += 1
        return Prediction(
            frame=index, timestamp=t, valence=self._o(y, "valence"),
            arousal=self._o(y, "arousal"), valence_smoothed=self._o(sm, "valence"),
            arousal_smoothed=self._o(sm, "arousal"), confidence=conf, face_present=det,
            speech_present=speech, face_box=box, track_id=tid, face_score=score,
            audio_present=audio_present, latency_ms=latency, backend=self.backend_name,
            stale=not ok, faces=tuple(faces))

    def _o(self, y: np.ndarray, name: str) -> float:
        i = self._out_index.get(name)
        return float("nan") if i is None or i >= len(y) else float(y[i])

    def _step(self, streams: list[TrackState], emb: np.ndarray, audio: dict[str, np.ndarray]):
        """One step call -> :meth:`split_step`'s triple (the tick commits the states later)."""
        n = len(streams)
        if self._step_fixed_batch == 1 and n > 1:
            parts = [self._step([s], emb[i:i + 1], audio) for i, s in enumerate(streams)]
            return (np.concatenate([p[0] for p in parts]), [p[1][0] for p in parts],
                    [p[2][0] for p in parts])
        out = self.backend.run("step", self.step_inputs([(streams, emb, audio)]))
        return self.split_step(out, n)

    def step_inputs(self, groups) -> dict[str, np.ndarray]:
        """The step's inputs for ``groups`` of ``(streams, embeddings, audio)`` stacked in order
        (one row per stream; the hub's engines share one model: one engine's names serve)."""
        everyone = [st for streams, _, _ in groups for st in streams]
        embs = [emb for _, emb, _ in groups]
        inputs = {self._step_emb: embs[0] if len(embs) == 1 else np.concatenate(embs)}
        for s in self.audio_streams:
            rows = [np.repeat(audio[s][None], len(streams), axis=0)
                    for streams, _, audio in groups]
            inputs[f"audio_{s}"] = rows[0] if len(rows) == 1 else np.concatenate(rows)
        for k, (name, _) in enumerate(self._state_specs):
            parts = [st.states[k] for st in everyone]
            inputs[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return inputs

    def split_step(self, out: dict, n: int, start: int = 0):
        """(va float32[n, K], new states per stream, finite flag per stream) from rows
        ``start:start+n`` of a step call's outputs: the states are row views of the outputs,
        which are the caller's (``Backend.run``); one finiteness check per output."""
        va = np.asarray(out[self._va_out], np.float32)
        va = va.reshape(len(va), -1)[start:start + n]
        finite = np.isfinite(va).all(axis=1)
        new = [np.asarray(out[self._state_out[name]], np.float32)[start:start + n]
               for name, _ in self._state_specs]
        for x in new:
            finite &= np.isfinite(x.reshape(n, -1)).all(axis=1)
        new_states = [[x[i:i + 1] for x in new] for i in range(n)]
        return va, new_states, finite.tolist()

    def _check_time_unit(self, interval: float) -> None:
        """Warn once per stream when its first frames are SLOW_FRAMES_S or more apart."""
        self._intervals.append(interval)
        if len(self._intervals) < UNIT_CHECK_FRAMES:
            return
        median = float(np.median(self._intervals))
        self._intervals = None
        if median >= SLOW_FRAMES_S:
            warnings.warn(f"frame timestamps advance by {median:g} s per frame (median of the "
                          f"first {UNIT_CHECK_FRAMES + 1} frames): timestamps are seconds; "
                          f"milliseconds look like this (pass t / 1000). Audio stamped in "
                          f"seconds never meets such frames", RuntimeWarning, stacklevel=2)

    def _choose_primary(self, confirmed: list[Track], shape) -> Track | None:
        """The primary face (score, track age and size, with hysteresis: see
        :func:`affedge.sdk.tracking.choose_primary`)."""
        best = choose_primary(confirmed, shape, self._primary_id)
        self._primary_id = None if best is None else best.id
        return best

    # ------------------------------------------------------------------ bookkeeping
    def stale_prediction(self, index: int, t: float, previous: Prediction | None) -> Prediction:
        """A Prediction for a frame skipped in live mode: the previous values, ``stale=True``."""
        if previous is None:
            nan = float("nan")
            return Prediction(frame=int(index), timestamp=float(t), valence=nan, arousal=nan,
                              valence_smoothed=nan, arousal_smoothed=nan, confidence=0.0,
                              face_present=False, speech_present=False,
                              backend=self.backend_name, stale=True)
        from dataclasses import replace

        return replace(previous, frame=int(index), timestamp=float(t), latency_ms=0.0,
                       stale=True, wall_time=time.time())

    def stats(self) -> dict:
        lat = np.asarray(self._latencies, np.float64)
        audio = self.audio.stats()
        return {
            "frames": self.frames,
            "tracks": len(self._streams),
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            **{k: v for k, v in audio.items() if k != "nonfinite_audio"},
            "backend": self.backend_name,
            "encoder_precision": self.encoder_precision,
            "detect_every": self.face_search.detect_every,
            "async_detect": self.face_search.async_detect, "async_lag": self.face_search.lag,
            "full_detections": self.face_search.full_passes,
            "region_searches": self.face_search.region_searches,
            "nonfinite_embeddings": self._nonfinite["embeddings"],
            "nonfinite_audio": audio["nonfinite_audio"],
            "nonfinite_outputs": self._nonfinite["outputs"],
            "person_baseline": self._baselines is not None,  # the bundle's, applied
        }

    def reset(self) -> None:
        """Forget all tracks, states and audio (a new, unrelated stream follows)."""
        self.audio.reset()
        self.tracker.reset()
        self.face_search.reset()
        self._streams.clear()
        self._background = None
        if self._baselines is not None:
            self._baselines.reset()
        self._primary_id = None
        self._last_t = None
        self._intervals = []
        self._frame_index = 0
        self._frame_shape = None

    def close(self) -> None:
        """Stop the face-detection worker thread (``async_detect``) for good. Idempotent; may
        be called from another thread during a tick; the engine stays usable, with
        synchronous full-frame passes."""
        self.face_search.close()


def _fixed_batch(shape) -> int | None:
    """The fixed leading dimension of an artifact input, or None when it is symbolic."""
    if not shape:
        return None
    d = shape[0]
    return int(d) if isinstance(d, int) or (isinstance(d, str) and d.isdigit()) else None


def _make_vad(feature_cfg):
    """The runtime's voice-activity detector for the audio timeline: the registry's default
    (silero, chosen by benchmarks/bench_vad.py: 2 % false alarms in music at 5 dB vs 37 % for
    the energy VAD) where the model's audio is at the rate silero reads (16 kHz, PAPER.md §1.4),
    the energy VAD (any rate) otherwise."""
    from affedge.features.vad import DEFAULT_VAD, make_vad
    from affedge.features.vad.silero import SAMPLE_RATE as SILERO_RATE

    if DEFAULT_VAD == "silero" and int(feature_cfg.sample_rate) != SILERO_RATE:
        return make_vad("energy", feature_cfg)
    return make_vad(DEFAULT_VAD, feature_cfg)
