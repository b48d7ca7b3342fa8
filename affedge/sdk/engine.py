"""The causal streaming engine: one model step per video frame, cost independent of history.

Data flow (ARCHITECTURE.md §4-§6)::

    push_audio(pcm, t)   [any one producer thread]
        -> 16 kHz mono float32 -> PCM ring (affedge._ringbuf, blocks of gcd(hop, win) samples:
           80 = 5 ms, so blocking never delays a feature row)
    process_frame(frame, t)   [the inference thread]
        1. drain the PCM ring -> IncrementalAudioFeatures (+ VoiceActivity)
           -> one feature ring per audio stream (mfcc 39-d, logmel 64-d) and a VAD ring, all
              timestamped in the *video clock*;
        2. aligned audio features at t: ring.at(t, "previous") (the same rule as
           affedge.features.align.sample_at, which training uses), normalised with the bundle's
           training statistics;
        3. detect faces (a full-frame pass every ``detect_every`` frames, a search of a small
           region around each track in between: TrackAssistedDetector) -> IouTracker ->
           align_crop -> one batched encoder call over all tracked faces detected in this
           frame;
        4. one batched "step" call over every stream (one stream state per track):
           (embedding_t, audio_t, state) -> (valence, arousal, state');
        5. clip, smooth, confidence, primary face -> Prediction.

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
  * Asynchronous full passes (``async_detect=True``; default :data:`DEFAULT_ASYNC_DETECT`
    when ``detect_every > 1``, off for ``detect_every=1``, which means "the full-frame detector
    on every frame"):
    the full-frame pass due at frame n runs on a worker thread while frame n gets region
    searches and its model calls; its boxes join frame n+1's detections (always exactly one
    frame later, waiting for the worker if needed, so predictions do not depend on timing). A
    new face is then found at most K frames late. :meth:`StreamingEngine.close` and
    :meth:`StreamingEngine.reset` stop the worker.
  * No track at all: a "background" stream (filler + audio) produces the top-level values; it
    restarts from the zero state whenever it becomes active again.
  * Missing audio (no audio source, audio not arrived yet, or the newest audio row older than
    ``audio_timeout`` seconds): the model gets zeros for the normalised audio features (the
    training mean) and ``audio_present=False``.
  * Audio clock: the first pushed sample defines the audio origin; a later chunk whose start is
    more than ``gap_tolerance`` seconds after the expected time is preceded by zeros so the clocks
    stay aligned, as long as the gap fits in the PCM ring; a longer gap (e.g. a pause of an hour)
    restarts the audio timeline at the chunk's timestamp instead (nothing is allocated for the
    gap). Both are counted in ``stats()["audio_gaps_filled"]``.
  * Audio discontinuities: every PCM block carries its video-clock timestamp. When the blocks
    drained at a tick start later than the expected next sample (by more than one block: a ring
    overrun dropped audio, or the timeline restarted), the incremental feature extractor and the
    VAD restart from that block's timestamp, so feature rows stay on the video clock; until the
    restarted extractor has produced a row, ``audio_present`` is False. Overruns are counted in
    ``stats()["audio_overruns"]`` and discontinuities in ``stats()["audio_discontinuities"]``.
  * Non-finite values (NaN/Inf from a backend, e.g. an fp16 engine overflowing, or in the
    audio features): never reach a stream's state. A face embedding that is not finite is
    replaced by the filler embedding for the model (the prediction's confidence is 0 for that
    face); an audio feature vector that is not finite is treated as missing audio
    (``audio_present=False``); a stream whose step output (valence/arousal or any new state)
    is not finite keeps its previous state, the frame is left out of its history, and its
    prediction carries the previous values with ``stale=True`` and confidence 0 (NaN when
    there are none yet). All three are counted in ``stats()`` (``nonfinite_embeddings``,
    ``nonfinite_audio``, ``nonfinite_outputs``).
  * Restartable ticks: :meth:`StreamingEngine.process_frame` does the detection/tracking part once;
    if the backend raises during the model part, nothing of the stream state is changed and the
    prepared tick is kept: calling ``process_frame`` again with the same frame and timestamp
    (e.g. after :meth:`StreamingEngine.set_backend` switched to another backend) re-runs only
    the model part, so the detection schedule and the tracker do not advance twice.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from affedge.sdk.prediction import FaceResult, Prediction
from affedge.sdk.smoothing import ExponentialSmoother
from affedge.sdk.tracking import IouTracker, Track, TrackAssistedDetector

#: full-frame face detection every this many frames (region searches around the tracks in
#: between). Measured on the 2-core CPU (320x240, Haar): full pass 24-34 ms, region search
#: ~1 ms per face; see the Recognizer docstring for the trade-off.
DEFAULT_DETECT_EVERY = 4

#: run the full-frame pass on a worker thread, merged one frame later (see the module docstring)
DEFAULT_ASYNC_DETECT = False

#: how many recent tick latencies ``stats()`` keeps for its percentiles (a bounded history)
LATENCY_HISTORY = 2048


def _ringbuf():
    try:
        from affedge import _ringbuf
    except ImportError as exc:  # pragma: no cover - build problem
        raise ImportError(
            "affedge._ringbuf (the C++ ring buffer) is not built; run "
            "`pip install -e . --no-deps --no-build-isolation` in the affedge checkout"
        ) from exc
    return _ringbuf


@dataclass
class _Stream:
    """State of one model stream (a tracked face, or the background stream)."""

    states: list[np.ndarray]
    smoother: ExponentialSmoother
    presence: deque = field(default_factory=lambda: deque(maxlen=30))
    steps: int = 0
    last_va: np.ndarray | None = None
    last_smoothed: np.ndarray | None = None
    last_conf: float = 0.0
    # this stream's face embeddings (the model's input, filler included) with their frame
    # times, in the C++ ring; capacity = the receptive field: exactly the history that the
    # step's conv states summarise (used by `embeddings()` and window-form checks)
    embeddings: object | None = None


@dataclass
class _PendingTick:
    """What a tick prepared once (audio, tracks, crops) for its model part, which may be retried
    on another backend."""

    frame: np.ndarray
    t: float
    index: int
    tick0: float
    audio: dict
    audio_present: bool
    speech: bool
    tracks: list
    confirmed: list
    stream_ids: list
    streams: list
    embs: list
    crops: np.ndarray | None
    enc_slot: list

    def same_frame(self, frame: np.ndarray, t: float, index: int) -> bool:
        if t != self.t or index != self.index:
            return False
        return frame is self.frame or (frame.shape == self.frame.shape
                                       and np.array_equal(frame, self.frame))


#: sample rates push_audio accepts (Hz): telephone-band 1 kHz to the 384 kHz of studio interfaces
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384000


def check_sample_rate(sample_rate) -> int:
    """An integer sample rate in [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] Hz, or ValueError naming it
    (an integral float such as 16000.0 is accepted, 16000.7 is not; TypeError for bools and
    non-numbers)."""
    if isinstance(sample_rate, (bool, np.bool_)) or \
            not isinstance(sample_rate, (int, float, np.integer, np.floating)):
        raise TypeError(f"push_audio: sample_rate must be an integer number of Hz, got "
                        f"{sample_rate!r} ({type(sample_rate).__name__})")
    if not np.isfinite(sample_rate) or float(sample_rate) != int(sample_rate):
        raise ValueError(f"push_audio: sample_rate must be an integer number of Hz, got "
                         f"{sample_rate!r}")
    sr = int(sample_rate)
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise ValueError(f"push_audio: sample_rate must be > 0 and within "
                         f"[{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz, got {sample_rate!r}")
    return sr


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
    async_detect: run each full-frame pass on a worker thread and merge its boxes one frame
        later (see the module docstring); call :meth:`close` when done with the engine.
        None: :data:`DEFAULT_ASYNC_DETECT` if ``detect_every > 1``, else False.
    """

    def __init__(self, bundle, backend, detector, *, smoothing: float = 0.0, max_faces: int = 4,
                 tracker: IouTracker | None = None, audio_capacity_s: float = 30.0,
                 audio_timeout: float = 1.0, gap_tolerance: float = 0.05,
                 presence_window: int = 30, detect_every: int = DEFAULT_DETECT_EVERY,
                 roi_scale: float = 1.6, async_detect: bool | None = None):
        from affedge.features.audio import IncrementalAudioFeatures

        if int(max_faces) < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        if audio_capacity_s <= 0:
            raise ValueError(f"audio_capacity_s must be > 0, got {audio_capacity_s}")
        self.bundle = bundle
        self.backend = backend
        self.backend_name = str(getattr(backend, "name", type(backend).__name__))
        self.detector = detector
        if async_detect is None:
            async_detect = DEFAULT_ASYNC_DETECT and detect_every != 1
        self.face_search = TrackAssistedDetector(detector, detect_every, roi_scale,
                                                 async_detect=async_detect)
        self.smoothing = float(smoothing)
        ExponentialSmoother(self.smoothing)  # validates the knob early
        self.max_faces = int(max_faces)
        self.tracker = tracker or IouTracker(max_tracks=self.max_faces)
        if self.tracker.max_tracks is None or self.tracker.max_tracks > self.max_faces:
            self.tracker.max_tracks = self.max_faces
        self.audio_timeout = float(audio_timeout)
        self.gap_tolerance = float(gap_tolerance)
        self.presence_window = int(presence_window)

        self.model_cfg = bundle.model_config()
        self.feature_cfg = fcfg = bundle.feature_config()
        self.receptive_field = int(bundle.receptive_field)
        self.sample_rate = int(fcfg.sample_rate)
        self._parse_artifacts()

        # audio path
        rb = _ringbuf()
        self._block = math.gcd(int(fcfg.hop_length), int(fcfg.win_length))
        self._pcm_ring = rb.RingBuffer(
            self._block, max(4, int(audio_capacity_s * self.sample_rate / self._block)))
        rows = max(4, int(audio_capacity_s / fcfg.hop_seconds) + 1)
        self._feat_rings = {s: rb.RingBuffer(fcfg.stream_dim(s), rows) for s in self.audio_streams}
        self._vad_ring = rb.RingBuffer(1, rows)
        self._features = IncrementalAudioFeatures(fcfg)
        self._vad = self._make_vad(fcfg)
        self._norm = {}
        norm = bundle.audio_norm
        for s in self.audio_streams:
            if s in norm:
                mean, std = norm[s]
                self._norm[s] = (mean.astype(np.float32), np.maximum(std, 1e-8).astype(np.float32))
        self._producer_lock = threading.Lock()
        self._audio_t0: float | None = None
        self._audio_pushed = 0  # samples pushed at 16 kHz (incl. inserted silence)
        self._pcm_rem = np.zeros(0, np.float32)
        self._resamplers: dict[int, object] = {}
        self._audio_gaps = 0
        self._audio_samples_consumed = 0
        self._block_dt = self._block / self.sample_rate
        self._pcm_capacity_s = self._pcm_ring.capacity * self._block_dt
        self._feat_t0: float | None = None     # video time of the extractor's first sample
        self._next_block_t: float | None = None  # expected timestamp of the next drained block
        self._seg_start: float | None = None   # start of the segment after the last discontinuity
        self._seg_first_row: float | None = None  # time of that segment's first feature row
        self._discontinuities = 0
        self._pending: _PendingTick | None = None  # a prepared tick whose model part failed
        self._nonfinite = {"embeddings": 0, "audio": 0, "outputs": 0}

        # video path
        self._streams: dict[int, _Stream] = {}
        self._background: _Stream | None = None
        self._primary_id: int | None = None
        self._filler_embedding = self._encode_filler()
        self._embed_dim = int(self._filler_embedding.shape[-1])
        self._frame_index = 0
        self._last_t: float | None = None
        self._latencies: deque = deque(maxlen=LATENCY_HISTORY)
        self.frames = 0

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

    def _make_vad(self, fcfg):
        try:
            from affedge.features.vad import VoiceActivity
        except ImportError:  # pragma: no cover - the module is part of the package
            return None
        return VoiceActivity(fcfg)

    def _encode(self, crops_bgr: np.ndarray) -> np.ndarray:
        from affedge.features.faces import to_model_input

        x = to_model_input(crops_bgr, self.feature_cfg)
        if self._enc_fixed_batch == 1 and len(x) > 1:
            return np.concatenate([self._encode(crops_bgr[i:i + 1]) for i in range(len(x))])
        out = self.backend.run("encoder", {self._enc_in: x})[self._enc_out]
        return np.asarray(out, np.float32).reshape(len(x), -1)

    def _encode_filler(self) -> np.ndarray:
        from affedge.features.faces import FILLER_CROP

        return self._encode(np.asarray(FILLER_CROP)[None])[0]

    def _new_stream(self) -> _Stream:
        states = [np.zeros((1, *shape), np.float32) for _, shape in self._state_specs]
        s = _Stream(states=states, smoother=ExponentialSmoother(self.smoothing))
        s.presence = deque(maxlen=self.presence_window)
        s.embeddings = _ringbuf().RingBuffer(self._embed_dim, max(1, int(self.receptive_field)))
        return s

    def embeddings(self, track_id: int | None = None, n: int | None = None):
        """The newest ``n`` face embeddings this stream fed the model, oldest first, with their
        frame times: ``(times float64[n], embeddings float32[n, D])``, read-only zero-copy views
        into the C++ ring (valid until the next ``process_frame``; copy to keep them). At most
        ``receptive_field`` are kept: exactly the history the step's states summarise, so the
        window form over them reproduces the step output. ``track_id=None``: the background
        stream (no face tracked). ``n=None``: all that are stored."""
        st = self._background if track_id is None else self._streams.get(int(track_id))
        if st is None or st.embeddings is None:
            raise KeyError(f"no stream for track {track_id!r}")
        ring = st.embeddings
        return ring.window(ring.size if n is None else int(n))

    # ------------------------------------------------------------------ audio (producer)
    def push_audio(self, pcm, t: float | None = None, sample_rate: int | None = None) -> None:
        """Queue PCM (float or int mono samples) whose first sample is at video-clock time ``t``
        (None: continue right after the previous chunk). Safe to call from one capture thread
        while another thread runs :meth:`process_frame`."""
        from affedge.features.audio_io import StreamResampler, to_float_mono

        sr = self.sample_rate if sample_rate is None else check_sample_rate(sample_rate)
        x = np.asarray(pcm)
        if x.ndim != 1:
            raise ValueError(f"push_audio: pcm must be 1-D mono samples, got shape {x.shape}")
        if x.dtype.kind in "iu":
            x = to_float_mono(x)
        elif x.dtype.kind == "f":
            with np.errstate(over="ignore"):  # beyond the float32 range -> Inf, refused below
                x = x.astype(np.float32, copy=False)
        else:
            raise ValueError(f"push_audio: pcm dtype must be float or integer, got {x.dtype}")
        if not np.all(np.isfinite(x)):
            raise ValueError("push_audio: pcm contains NaN or Inf")
        with self._producer_lock:
            if sr != self.sample_rate:
                rs = self._resamplers.get(sr)
                if rs is None:
                    rs = self._resamplers[sr] = StreamResampler(sr, self.sample_rate)
                x = np.asarray(rs.push(x), np.float32)
            if self._audio_t0 is None:
                if t is None:
                    t = 0.0
                self._audio_t0 = float(t)
            elif t is not None:
                expected = self._audio_t0 + self._audio_pushed / self.sample_rate
                gap = float(t) - expected
                if gap > self.gap_tolerance:
                    self._audio_gaps += 1
                    if gap <= self._pcm_capacity_s:  # short gap: silence keeps the clocks
                        fill = np.zeros(int(round(gap * self.sample_rate)), np.float32)
                        x = np.concatenate([fill, x])
                    else:  # longer than the ring: restart the timeline (the drain sees a jump)
                        self._audio_t0 = float(t)
                        self._audio_pushed = 0
                        self._pcm_rem = np.zeros(0, np.float32)  # < 1 block, before the gap
            self._push_pcm(x)

    def _push_pcm(self, x: np.ndarray) -> None:
        # called with the producer lock held: re-block into self._block-sample ring items
        if self._pcm_rem.size:
            x = np.concatenate([self._pcm_rem, x])
        n = x.size // self._block
        if n:
            blocks = x[: n * self._block].reshape(n, self._block)
            first = self._audio_pushed
            ts = self._audio_t0 + (first + self._block * np.arange(n)) / self.sample_rate
            self._pcm_ring.push_many(ts, np.ascontiguousarray(blocks))
        self._pcm_rem = x[n * self._block:].copy()
        self._audio_pushed += x.size - self._pcm_rem.size

    @property
    def audio_time(self) -> float | None:
        """Video-clock time up to which audio has been pushed (None before any audio)."""
        if self._audio_t0 is None:
            return None
        return self._audio_t0 + (self._audio_pushed + self._pcm_rem.size) / self.sample_rate

    def flush_audio(self) -> None:
        """End of the audio stream: emit what the resamplers still hold. The < self._block
        samples left over are not pushed: every feature row ends on a multiple of the block
        (gcd(hop, window) = 80 samples), so they could not complete a row anyway."""
        with self._producer_lock:
            for rs in self._resamplers.values():
                tail = np.asarray(rs.flush(), np.float32)
                if tail.size:
                    self._push_pcm(tail)

    # ------------------------------------------------------------------ audio (consumer)
    def _drain_audio(self) -> None:
        ts, blocks = self._pcm_ring.read_new()
        if len(ts) == 0:
            return
        # split where a block starts later than the expected next sample by more than one
        # block (a ring overrun dropped audio, or push_audio restarted the timeline)
        expected = np.empty(len(ts))
        expected[0] = ts[0] if self._next_block_t is None else self._next_block_t
        expected[1:] = ts[:-1] + self._block_dt
        jumps = np.flatnonzero(ts - expected > self._block_dt)
        if self._next_block_t is None:
            jumps = np.union1d([0], jumps).astype(int)
        bounds = list(jumps) + [len(ts)]
        fresh = self._next_block_t is None
        start = 0
        for b in bounds:
            if b > start:
                self._consume_pcm(blocks[start:b].reshape(-1))
            if b < len(ts):
                self._restart_features(float(ts[b]), first=fresh and b == 0)
            start = b
        self._next_block_t = float(ts[-1]) + self._block_dt

    def _restart_features(self, t0: float, first: bool) -> None:
        """Start the feature extractor and the VAD afresh at video time ``t0``."""
        from affedge.features.audio import IncrementalAudioFeatures

        self._feat_t0 = t0
        if first:
            return  # the extractor is fresh already; the first segment has no special rule
        self._features = IncrementalAudioFeatures(self.feature_cfg)
        self._vad = self._make_vad(self.feature_cfg)
        self._seg_start, self._seg_first_row = t0, None
        self._discontinuities += 1

    def _consume_pcm(self, pcm: np.ndarray) -> None:
        new = self._features.push(pcm)
        t0 = self._feat_t0
        for s in self.audio_streams:
            times, feats = new[s]
            if len(times):
                self._feat_rings[s].push_many(t0 + times, np.ascontiguousarray(feats))
                if self._seg_start is not None and self._seg_first_row is None:
                    self._seg_first_row = t0 + float(times[0])
        if self._vad is not None:
            vt, flags = self._vad_push(pcm)
            if len(vt):
                self._vad_ring.push_many(t0 + vt,
                                         np.asarray(flags, np.float32).reshape(-1, 1))
        self._audio_samples_consumed += pcm.size

    def _vad_push(self, pcm: np.ndarray):
        out = self._vad.push(pcm)
        if isinstance(out, tuple) and len(out) == 2:
            return np.asarray(out[0], np.float64), np.asarray(out[1])
        raise TypeError(f"VoiceActivity.push returned {type(out).__name__}; "
                        "expected (times, flags)")

    def audio_at(self, t: float) -> tuple[dict[str, np.ndarray], bool, bool]:
        """Normalised audio features at video time ``t`` -> ({stream: float32[D]}, audio_present,
        speech_present). Zeros when audio is missing (see the module docstring)."""
        feats: dict[str, np.ndarray] = {}
        present = bool(self.audio_streams)
        for s in self.audio_streams:
            ring = self._feat_rings[s]
            latest = ring.latest_time
            if latest is None or t - latest > self.audio_timeout:
                present = False
        if present and self._seg_start is not None and t >= self._seg_start and \
                (self._seg_first_row is None or t < self._seg_first_row):
            present = False  # after a discontinuity, before the restarted extractor's first row
        for s in self.audio_streams:
            d = self.feature_cfg.stream_dim(s)
            if not present:
                feats[s] = np.zeros(d, np.float32)
                continue
            v = np.asarray(self._feat_rings[s].at(float(t), "previous"), np.float32)
            if s in self._norm:
                mean, std = self._norm[s]
                with np.errstate(over="ignore", invalid="ignore"):  # checked below
                    v = (v - mean) / std
            feats[s] = v.astype(np.float32)
        if present and not all(np.isfinite(v).all() for v in feats.values()):
            self._nonfinite["audio"] += 1
            present = False
            feats = {s: np.zeros_like(v) for s, v in feats.items()}
        speech = False
        if self._vad is not None and self._vad_ring.latest_time is not None:
            if t - self._vad_ring.latest_time <= self.audio_timeout:
                speech = bool(self._vad_ring.at(float(t), "previous")[0] > 0.5)
        return feats, present, speech

    # ------------------------------------------------------------------ video tick
    def process_frame(self, frame_bgr: np.ndarray, t: float, index: int | None = None,
                      detections=None) -> Prediction:
        """Run one inference tick for a BGR uint8 frame at video-clock time ``t`` (seconds,
        strictly increasing). ``detections`` (optional) replaces the detector's output for this
        frame (a list of FaceBox). Returns the frame's Prediction.

        Bad input raises ``ValueError`` before anything changes. If the backend raises, the
        stream states are untouched and the prepared tick (audio, detections, tracks) is kept:
        calling again with the same frame and ``t`` re-runs only the model part (see
        :meth:`set_backend`); any other call discards it."""
        tick0 = time.perf_counter()
        t = float(t)
        if not np.isfinite(t):
            raise ValueError(f"process_frame: timestamp must be finite, got {t}")
        if self._last_t is not None and t <= self._last_t:
            raise ValueError(f"process_frame: timestamps must increase; got t={t} after "
                             f"{self._last_t}")
        if not isinstance(frame_bgr, np.ndarray) or frame_bgr.dtype != np.uint8 or \
                frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            raise ValueError("process_frame: frame must be a BGR uint8 array [H,W,3], got "
                             f"{getattr(frame_bgr, 'dtype', type(frame_bgr))} "
                             f"{getattr(frame_bgr, 'shape', '')}" + _conversion_hint(frame_bgr))
        if frame_bgr.size == 0:
            raise ValueError(f"process_frame: frame is empty (shape {frame_bgr.shape})")
        index = self._frame_index if index is None else int(index)

        tick = self._pending
        if tick is None or not tick.same_frame(frame_bgr, t, index):
            self._pending = None
            tick = self._prepare_tick(frame_bgr, t, index, detections, tick0)
        try:
            va, new_states, embs, bad_embs = self._infer_tick(tick)
        except Exception:
            self._pending = tick  # restartable: nothing of the stream state changed
            raise
        self._pending = None
        return self._finish_tick(tick, va, new_states, embs, bad_embs)

    @property
    def pending_tick(self) -> bool:
        """True when the last tick failed in the backend and can be re-run (same frame, t)."""
        return self._pending is not None

    def set_backend(self, backend) -> None:
        """Use ``backend`` for the following model calls (and a pending tick's retry)."""
        self.backend = backend
        self.backend_name = str(getattr(backend, "name", type(backend).__name__))

    def _prepare_tick(self, frame_bgr, t: float, index: int, detections, tick0: float):
        """The part of a tick done exactly once: audio, detection, tracking, crops."""
        from affedge.features.faces import FaceBox, align_crop

        self._drain_audio()
        audio, audio_present, speech = self.audio_at(t)

        if detections is None:
            dets = self.face_search.detect(frame_bgr, self.tracker.tracks)
        else:
            dets = list(detections)
            self.face_search.discard_pending()  # a full pass is merged only into the next frame
        dets = sorted(dets, key=lambda b: -(b.w * b.h))[: self.max_faces]
        tracks = self.tracker.update(dets)
        for tid in self.tracker.removed:
            self._streams.pop(tid, None)
            if self._primary_id == tid:
                self._primary_id = None
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
                box = FaceBox(*tr.box, score=tr.score)
                to_encode.append(align_crop(frame_bgr, box, self.feature_cfg.aligned_size))
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
        return _PendingTick(
            frame=frame_bgr, t=t, index=index, tick0=tick0, audio=audio,
            audio_present=audio_present, speech=speech, tracks=tracks, confirmed=confirmed,
            stream_ids=stream_ids, streams=streams, embs=embs,
            crops=np.stack(to_encode) if to_encode else None, enc_slot=enc_slot)

    def _infer_tick(self, tick: _PendingTick):
        """The model part of a tick (may be retried): encoder + step; mutates nothing. Returns
        (va, new states, embeddings fed, slots whose encoder output was not finite)."""
        embs = list(tick.embs)
        bad: set[int] = set()
        if tick.crops is not None:
            enc = self._encode(tick.crops)
            for slot, e in zip(tick.enc_slot, enc):
                if np.isfinite(e).all():
                    embs[slot] = e
                else:  # the model sees a missing face rather than NaN (module docstring)
                    embs[slot] = self._filler_embedding
                    bad.add(slot)
        embs = np.stack(embs).astype(np.float32)
        va, new_states = self._step(tick.streams, embs, tick.audio)
        return va, new_states, embs, bad

    def _finish_tick(self, tick: _PendingTick, va: np.ndarray, new_states,
                     embs: np.ndarray, bad_embs: set[int]) -> Prediction:
        """Commit the new states (and embeddings) and build the Prediction."""
        finite = [bool(np.isfinite(y).all() and all(np.isfinite(x).all() for x in states))
                  for y, states in zip(va, new_states)]
        self._nonfinite["embeddings"] += len(bad_embs)
        self._nonfinite["outputs"] += finite.count(False)
        for st, states, e, ok in zip(tick.streams, new_states, embs, finite):
            if not ok:
                continue  # the frame is left out of this stream's history (module docstring)
            st.states = states
            ring = st.embeddings
            if ring is not None and (ring.latest_time is None or tick.t > ring.latest_time):
                ring.push(float(tick.t), np.ascontiguousarray(e, np.float32))
                ring.consume()  # read through window(); nothing here is a lost item
        track_by_id = {tr.id: tr for tr in tick.tracks}
        af = 1.0 if (tick.audio_present or not self.audio_streams) else 0.5
        results: dict[int, tuple] = {}
        for k, (sid, st, y, ok) in enumerate(zip(tick.stream_ids, tick.streams, va, finite)):
            tr = track_by_id.get(sid)
            detected = bool(tr is not None and tr.detected)
            if not ok:
                nan = np.full(len(y), np.nan, np.float32)
                prev = st.last_va if st.last_va is not None else nan
                prev_sm = st.last_smoothed if st.last_smoothed is not None else nan
                results[sid] = (prev, prev_sm, 0.0, detected, False)
                continue
            y = np.clip(y, -1.0, 1.0)
            sm = np.clip(st.smoother.update(y), -1.0, 1.0)
            st.steps += 1
            st.presence.append(1.0 if detected else 0.0)
            face = float(np.clip(tr.score, 0.0, 1.0)) if detected and k not in bad_embs else 0.0
            presence = float(np.mean(st.presence))
            warm = 0.5 + 0.5 * min(1.0, st.steps / max(1, self.receptive_field))
            conf = float(np.clip(face * presence * af * warm, 0.0, 1.0))
            st.last_va, st.last_smoothed, st.last_conf = y, sm, conf
            results[sid] = (y, sm, conf, detected, True)

        confirmed = tick.confirmed
        primary = self._choose_primary(confirmed, tick.frame.shape)
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
        latency = (time.perf_counter() - tick.tick0) * 1000.0
        self._latencies.append(latency)
        self._last_t = tick.t
        self._frame_index = tick.index + 1
        self.frames += 1
        return Prediction(
            frame=tick.index, timestamp=tick.t, valence=self._o(y, "valence"),
            arousal=self._o(y, "arousal"), valence_smoothed=self._o(sm, "valence"),
            arousal_smoothed=self._o(sm, "arousal"), confidence=conf, face_present=det,
            speech_present=tick.speech, face_box=box, track_id=tid, face_score=score,
            audio_present=tick.audio_present, latency_ms=latency, backend=self.backend_name,
            stale=not ok, faces=tuple(faces))

    def _o(self, y: np.ndarray, name: str) -> float:
        i = self._out_index.get(name)
        return float("nan") if i is None or i >= len(y) else float(y[i])

    def _step(self, streams: list[_Stream], emb: np.ndarray, audio: dict[str, np.ndarray]):
        """One step call -> (va float32[n, K], new states per stream); the streams are not
        changed (the caller commits the states once the whole tick succeeded)."""
        n = len(streams)
        if self._step_fixed_batch == 1 and n > 1:
            parts = [self._step([s], emb[i:i + 1], audio) for i, s in enumerate(streams)]
            return np.concatenate([p[0] for p in parts]), [p[1][0] for p in parts]
        inputs = {self._step_emb: emb}
        for s in self.audio_streams:
            inputs[f"audio_{s}"] = np.repeat(audio[s][None], n, axis=0)
        for k, (name, _) in enumerate(self._state_specs):
            inputs[name] = np.concatenate([st.states[k] for st in streams], axis=0)
        out = self.backend.run("step", inputs)
        new_states: list[list[np.ndarray]] = [[] for _ in streams]
        for name, _ in self._state_specs:
            new = np.asarray(out[self._state_out[name]], np.float32)
            for i in range(n):
                new_states[i].append(new[i:i + 1].copy())
        return np.asarray(out[self._va_out], np.float32).reshape(n, -1), new_states

    def _choose_primary(self, confirmed: list[Track], shape) -> Track | None:
        """Largest and most central confirmed track, with 20 % hysteresis to avoid flicker."""
        if not confirmed:
            self._primary_id = None
            return None
        h, w = shape[:2]
        half_diag = 0.5 * float(np.hypot(w, h))

        def score(tr: Track) -> float:
            x, y, bw, bh = tr.box
            d = float(np.hypot(x + bw / 2 - w / 2, y + bh / 2 - h / 2)) / half_diag
            s = (bw * bh) / float(w * h) * (1.0 - 0.5 * min(d, 1.0))
            return s if tr.detected else 0.5 * s

        best = max(confirmed, key=score)
        current = next((tr for tr in confirmed if tr.id == self._primary_id), None)
        if current is not None and score(best) <= 1.2 * score(current):
            best = current
        self._primary_id = best.id
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
                       stale=True)

    def stats(self) -> dict:
        lat = np.asarray(self._latencies, np.float64)
        return {
            "frames": self.frames,
            "tracks": len(self._streams),
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            "audio_overruns": int(self._pcm_ring.overruns),
            "audio_gaps_filled": self._audio_gaps,
            "audio_discontinuities": self._discontinuities,
            "audio_seconds": self._audio_samples_consumed / self.sample_rate,
            "backend": self.backend_name,
            "detect_every": self.face_search.detect_every,
            "async_detect": self.face_search.async_detect,
            "full_detections": self.face_search.full_passes,
            "region_searches": self.face_search.region_searches,
            **{f"nonfinite_{k}": v for k, v in self._nonfinite.items()},
        }

    def reset(self) -> None:
        """Forget all tracks, states and audio (a new, unrelated stream follows)."""
        from affedge.features.audio import IncrementalAudioFeatures

        with self._producer_lock:
            self._pcm_ring.clear()
            for r in self._feat_rings.values():
                r.clear()
            self._vad_ring.clear()
            self._features = IncrementalAudioFeatures(self.feature_cfg)
            self._vad = self._make_vad(self.feature_cfg)
            self._audio_t0 = None
            self._audio_pushed = 0
            self._pcm_rem = np.zeros(0, np.float32)
            self._resamplers.clear()
            self._feat_t0 = self._next_block_t = None
            self._seg_start = self._seg_first_row = None
        self._pending = None
        self.tracker.reset()
        self.face_search.reset()
        self._streams.clear()
        self._background = None
        self._primary_id = None
        self._last_t = None
        self._frame_index = 0

    def close(self) -> None:
        """Stop the face-detection worker thread (``async_detect``) for good. Idempotent; may
        be called from another thread during a tick; the engine stays usable, with
        synchronous full-frame passes."""
        self.face_search.close()


def _conversion_hint(frame) -> str:
    """How to turn a common wrong frame layout into BGR uint8 (appended to the error)."""
    if not isinstance(frame, np.ndarray):
        return ""
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return " (grayscale: convert with cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))"
    if frame.ndim == 3 and frame.shape[2] == 4:
        return " (BGRA: convert with cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR))"
    if frame.dtype.kind == "f" and frame.ndim == 3 and frame.shape[2] == 3:
        return " (float image: scale to 0-255 and cast, e.g. (frame * 255).clip(0, 255)" \
               ".astype(np.uint8) for values in [0, 1])"
    if frame.dtype == np.uint16 and frame.ndim == 3 and frame.shape[2] == 3:
        return " (16-bit image: e.g. (frame >> 8).astype(np.uint8))"
    return ""


def _fixed_batch(shape) -> int | None:
    """The fixed leading dimension of an artifact input, or None when it is symbolic."""
    if not shape:
        return None
    d = shape[0]
    return int(d) if isinstance(d, int) or (isinstance(d, str) and d.isdigit()) else None
