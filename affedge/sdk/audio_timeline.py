"""The audio clock of one recognizer: PCM in, normalised features and speech flags at any time out.

One producer (a capture callback, a file feeder or the app's own thread) calls :meth:`push`;
the inference thread calls :meth:`at`. Data flow (ARCHITECTURE.md §5)::

    push(pcm, t, sample_rate)            [producer]
        -> checked (dtype, finite samples, finite timestamp) before anything changes
        -> resampled once to the model rate (one resampler per input rate)
        -> gap policy (below) -> blocks of gcd(hop, win) samples (80 = 5 ms, so blocking never
           delays a feature row) -> the PCM ring (affedge._ringbuf), each block timestamped
    at(t)                                [consumer]
        1. drain the PCM ring -> the causal feature extractor (one row per hop for every
           feature kind) and the VAD -> one ring per feature kind and a VAD ring, all on the
           caller's clock;
        2. the newest row that *ended at or before* ``t`` (the same "previous" rule as
           :func:`affedge.features.align.sample_at`, which training uses), normalised with the
           bundle's training statistics (:func:`affedge.preprocess.audio_normaliser`).

Policies
  * Timestamps: ``t`` must be finite and within ``MAX_ABS_TIME`` of zero; a refused call changes
    nothing (the first accepted chunk defines the audio origin).
  * Gaps: a chunk whose start is more than ``gap_tolerance`` after the expected time is preceded
    by silence so the clocks stay aligned, as long as the gap fits in the PCM ring (a frame whose
    feature row is centred in that silence reads it as missing audio: it is no sound that was
    heard); a longer gap restarts the timeline at the chunk's timestamp (nothing is allocated
    for the gap); counted in ``stats()["audio_gaps_filled"]``. A chunk that starts before the
    end of the audio already pushed by more than ``gap_tolerance`` (resent, duplicated or late
    audio) loses the samples that time already has (a chunk wholly in the past is dropped), so
    the audio stays on the caller's clock; counted in ``stats()["audio_overlaps"]``, with one
    RuntimeWarning.
    Within ``gap_tolerance`` (clock jitter) a chunk continues the timeline.
  * Samples: integer arrays are scaled by their dtype's full scale; float samples beyond
    +-MAX_FLOAT_PEAK, Python lists of integers and 64-bit integers are refused (their scale is
    wrong or unknown); int32 samples that all fit in 16 bits draw a RuntimeWarning.
  * Discontinuities: when the drained blocks start later than the expected next sample by more
    than one block (a ring overrun dropped audio, or the timeline restarted), the extractor and
    the VAD restart at that block, so rows stay on the caller's clock; until the restarted
    extractor has produced a row, audio counts as missing.
  * Missing audio (none pushed, none that ended by ``t``, the newest row older than
    ``audio_timeout``, or a non-finite feature row): zeros (the training mean) and
    ``present=False``.
"""
from __future__ import annotations

import math
import numbers
import threading
import warnings
from collections import deque

import numpy as np

#: sample rates push() accepts (Hz): telephone-band 1 kHz to the 384 kHz of studio interfaces
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384000

#: |t| larger than this is refused: ~31.7 years of seconds; float64 still resolves 1 us there
#: (2**53 us ~ 285 years), and epoch clocks (1.7e9 s) fit
MAX_ABS_TIME = 1e12
#: filled gaps remembered (their frames read as missing audio); older ones lie far outside a
#: 30 s ring unless the chunks come in bursts of tiny gaps, all long since drained
MAX_FILLED_GAPS = 64
#: after :meth:`AudioTimeline.end_of_audio`, frames up to this long after the last audio still
#: have it: a file's audio track often ends some ms to tens of ms before its video (AAC priming
#: and padding, container rounding); a frame has 33 ms at 30 fps
END_SLACK_S = 0.1
#: a frame this far (s) outside the span of the audio pushed so far, in a stream none of whose
#: frames has had audio yet, is taken for audio and frames stamped on two different clocks
#: (e.g. media time from 0 for the audio, time.monotonic() for the frames): counted in
#: stats()["audio_clock_mismatch"], with one RuntimeWarning. Far above a microphone starting
#: late or a file's audio track starting after its video (seconds), far below the offset
#: between two clocks (the uptime or the epoch)
CLOCK_MISMATCH_S = 30.0
#: A sample rate stated above the audio's own makes each chunk span less time than its stamps,
#: so silence is filled in every few chunks: at least RATE_GAPS gaps among the last
#: RATE_WINDOW stamped chunks, whose samples fill less than 1 - RATE_FILLED of the time
#: between their stamps, give one RuntimeWarning. A QA trial pushed 16 kHz audio as 48000:
#: 109 gaps filled in 330 chunks (every third), the speech played 3x fast, nothing said so (a
#: rate stated too low already warned, through the overlaps). Network audio that drops now
#: and then stays below it.
RATE_WINDOW, RATE_GAPS, RATE_FILLED = 16, 5, 0.25
#: a frame whose newest audio row ends more than this (s) before the frame's time had its audio
#: arrive late (pushed after the frame, e.g. a microphone delivering 100 ms chunks after they
#: were captured): it used older audio than a file would give, counted in
#: stats()["audio_late_frames"]. Two 25 ms windows: a 10 ms-hop stream pushed as captured in
#: chunks of up to ~50 ms stays under it.
LATE_AUDIO_S = 0.05


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


def check_time(t, what: str) -> float:
    """A finite timestamp within ``MAX_ABS_TIME`` seconds, as float, or ValueError naming it;
    TypeError for what is not a real number (a string such as "0.1", a bool)."""
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise TypeError(f"{what}: t must be a number of seconds (or None), got "
                        f"{type(t).__name__} {t!r}")
    x = float(t)
    if not math.isfinite(x) or abs(x) > MAX_ABS_TIME:
        raise ValueError(f"{what}: timestamp must be finite and within +-{MAX_ABS_TIME:g} s, "
                         f"got {t!r}")
    return x


#: float PCM peaking above this is refused as mis-scaled (12 dB over full scale; integer
#: samples cast to float without dividing by 32768 peak in the thousands)
MAX_FLOAT_PEAK = 4.0
#: int32 chunks whose samples all fit in 16 bits, with some beyond this, draw one warning
#: (16-bit samples in an int32 array play 78+ dB too quietly: int32 full scale is 2**31)
INT32_AS_INT16_MIN_PEAK = 256


def to_pcm_float32(pcm) -> np.ndarray:
    """1-D float32 samples from integer PCM (scaled by the dtype's full scale: int16 / 2**15,
    int32 / 2**31, unsigned types offset-binary) or float PCM in [-1, 1]. ValueError for other
    shapes, for NaN/Inf and for floats beyond +-MAX_FLOAT_PEAK; TypeError for integers whose
    scale is unknown (a Python list of ints, 64-bit integers)."""
    from affedge.features.audio_io import to_float_mono

    if isinstance(pcm, (bytes, bytearray, memoryview)):
        raise TypeError(f"push_audio: pcm is raw {type(pcm).__name__} ({len(pcm)} bytes); "
                        "pass a numpy array: np.frombuffer(data, np.int16) for 16-bit PCM "
                        "(pyaudio's paInt16; average the channels of interleaved stereo)")
    x = np.asarray(pcm)
    if x.ndim != 1:
        raise ValueError(f"push_audio: pcm must be 1-D mono samples, got shape {x.shape}")
    if x.dtype.kind in "iu":
        if not isinstance(pcm, np.ndarray) or x.dtype.itemsize > 4:
            what = "a Python sequence of integers" if not isinstance(pcm, np.ndarray) \
                else f"{x.dtype} samples"
            raise TypeError(f"push_audio: {what} has no known full scale; pass a numpy array "
                            f"of int16 (or int32) samples, or float32 in [-1, 1]")
        if x.dtype == np.int32 and x.size:
            peak = int(np.abs(x.astype(np.int64)).max())
            if INT32_AS_INT16_MIN_PEAK < peak < 2**15:
                warnings.warn(f"push_audio: int32 samples all within the 16-bit range (peak "
                              f"{peak}) play {20 * math.log10(2**31 / peak):.0f} dB below "
                              f"full scale: if they are 16-bit samples, pass them as int16",
                              RuntimeWarning, stacklevel=3)
        x = to_float_mono(x)
    elif x.dtype.kind == "f":
        with np.errstate(over="ignore"):  # beyond the float32 range -> Inf, refused below
            x = x.astype(np.float32, copy=False)
    else:
        raise ValueError(f"push_audio: pcm dtype must be float or integer, got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError("push_audio: pcm contains NaN or Inf")
    peak = float(np.abs(x).max()) if x.size else 0.0  # integers are within [-1, 1] by now
    if peak > MAX_FLOAT_PEAK:
        raise ValueError(f"push_audio: float samples must lie in [-1, 1]; this chunk peaks at "
                         f"{peak:g} (integer samples cast to float? divide int16 values by "
                         f"32768)")
    return x


def _ringbuf():
    try:
        from affedge import _ringbuf
    except ImportError as exc:  # pragma: no cover - build problem
        raise ImportError(
            "affedge._ringbuf (the C++ ring buffer) is not built: reinstall affedge from a "
            "wheel, or in a checkout run `bash scripts/setup.sh` (or `pip install -e .`, which "
            "compiles it; a C++17 compiler is needed)"
        ) from exc
    return _ringbuf


class AudioTimeline:
    """Audio for one recognizer (see the module docstring).

    Parameters
    ----------
    feature_cfg: the bundle's :class:`affedge.config.FeatureConfig`.
    feature_kinds: the audio feature kinds the model consumes, in order (e.g. mfcc, logmel).
    normalise: ``{kind: callable(row) -> row}`` (from :func:`affedge.preprocess.audio_normaliser`).
    capacity_s: seconds of PCM and of feature rows kept.
    audio_timeout: newest row older than this (s) -> audio missing.
    gap_tolerance: a later chunk start beyond this (s) is a gap (silence-filled or restart).
    make_vad: ``make_vad(feature_cfg) -> VAD`` (``push(pcm) -> (times, values)``, value > 0.5
        means speech), or None for no VAD.
    """

    def __init__(self, feature_cfg, feature_kinds, normalise: dict | None = None, *,
                 capacity_s: float = 30.0, audio_timeout: float = 1.0,
                 gap_tolerance: float = 0.05, make_vad=None):
        from affedge.features.audio import IncrementalAudioFeatures
        from affedge.sdk.backends.threads import limit_blas_threads

        limit_blas_threads()  # the features' small products: one BLAS thread (threads.py)
        if not (isinstance(capacity_s, (int, float)) and math.isfinite(capacity_s)
                and 0 < capacity_s <= 3600):
            raise ValueError(f"audio_capacity_s must be in (0, 3600] seconds, got {capacity_s!r}")
        self.cfg = fcfg = feature_cfg
        self.kinds = tuple(feature_kinds)
        self.sample_rate = int(fcfg.sample_rate)
        self.audio_timeout = float(audio_timeout)
        self.gap_tolerance = float(gap_tolerance)
        self._normalise = dict(normalise or {})
        self._make_vad = make_vad
        rb = _ringbuf()
        self._block = math.gcd(int(fcfg.hop_length), int(fcfg.win_length))
        self._block_dt = self._block / self.sample_rate
        self._first_row_slack = fcfg.win_length / self.sample_rate + 1e-9
        self._pcm_ring = rb.RingBuffer(
            self._block, max(4, int(capacity_s * self.sample_rate / self._block)))
        self._pcm_capacity_s = self._pcm_ring.capacity * self._block_dt
        rows = max(4, int(capacity_s / fcfg.hop_seconds) + 1)
        self._rings = {k: rb.RingBuffer(fcfg.stream_dim(k), rows) for k in self.kinds}
        self._vad_ring = rb.RingBuffer(1, rows)
        self._new_extractor = lambda: IncrementalAudioFeatures(fcfg)
        self._lock = threading.Lock()  # producer side (push/flush) against reset
        self._counters = {"gaps": 0, "overlaps": 0, "discontinuities": 0, "consumed": 0,
                          "nonfinite": 0, "clock_mismatch": 0, "late": 0}
        self._overrun_warned = False
        self._rate_warned = False
        self._clear()

    def _clear(self) -> None:
        self._features = self._new_extractor()
        self._vad = self._make_vad(self.cfg) if self._make_vad is not None else None
        self._t0: float | None = None  # caller-clock time of sample 0 of the current timeline
        self._pushed = 0  # samples pushed at the model rate since _t0 (incl. inserted silence)
        self._rem = np.zeros(0, np.float32)  # < one block, waiting for the rest
        self._resamplers: dict[int, object] = {}
        self._feat_t0: float | None = None  # time of the extractor's first sample
        self._next_block_t: float | None = None  # expected time of the next drained block
        self._seg_start: float | None = None  # start of the segment after the last restart
        self._seg_first_row: float | None = None  # that segment's first feature row
        self._ended_at: float | None = None  # end_of_audio(): no audio after this time
        self._had_audio = False  # a frame of this stream has had audio
        self._filled: tuple = ()  # (start, end) of the latest gaps filled with silence
        # (stamp, samples at the stated rate, silence filled before it) of the last stamped
        # chunks (RATE_WINDOW)
        self._recent: deque = deque(maxlen=RATE_WINDOW)

    # ------------------------------------------------------------------ producer
    def push(self, pcm, t: float | None = None, sample_rate: int | None = None) -> None:
        """Add mono PCM whose first sample is at time ``t`` (None: right after the previous
        chunk). Everything is checked before anything changes."""
        from affedge.features.audio_io import StreamResampler

        sr = self.sample_rate if sample_rate is None else check_sample_rate(sample_rate)
        x = to_pcm_float32(pcm)
        n_in = x.size  # (samples at the stated rate)
        if t is not None:
            t = check_time(t, "push_audio")
        with self._lock:
            self._ended_at = None  # audio again after an end_of_audio()
            rs = None
            if sr != self.sample_rate:
                rs = self._resamplers.get(sr)
                if rs is None:
                    rs = self._resamplers[sr] = StreamResampler(sr, self.sample_rate)
                    if sr < self.sample_rate:
                        warn_narrowband(sr, self.sample_rate)
            # audio the resampler holds back (its filter delay) is not a gap
            held = rs.pending_s if rs is not None else 0.0
            if rs is not None:
                x = np.asarray(rs.push(x), np.float32)
            if self._t0 is None:
                self._t0 = 0.0 if t is None else t
            elif t is not None:
                gap = t - (self._t0 + self._pushed / self.sample_rate + held)
                overlap = (self._t0 + (self._pushed + self._rem.size) / self.sample_rate
                           + held) - t
                if overlap > self.gap_tolerance:
                    # stamped before the end of the audio already here (a resent, duplicated
                    # or late chunk): the samples that time already has are dropped, so the
                    # audio stays on the caller's clock
                    x = x[min(x.size, int(round(overlap * self.sample_rate))):]
                    self._count_and_warn_once(
                        "overlaps", f"push_audio: a chunk stamped {overlap:.3f} s before the "
                        f"end of the audio already pushed; its first {overlap:.3f} s were "
                        f"dropped (counted in stats()['audio_overlaps']; if every chunk "
                        f"overlaps, check push_audio's sample_rate: at {sr} Hz this chunk "
                        f"lasts longer than its time stamps allow)", stacklevel=3)
                elif gap > self.gap_tolerance:
                    self._counters["gaps"] += 1
                    if gap <= self._pcm_capacity_s:  # short gap: silence keeps the clocks
                        x = np.concatenate([np.zeros(int(round(gap * self.sample_rate)),
                                                     np.float32), x])
                        # (a new tuple, not a list appended in place: at() reads it unlocked)
                        self._filled = self._filled[-(MAX_FILLED_GAPS - 1):] + ((t - gap, t),)
                    else:  # longer than the ring: restart the timeline (the drain sees a jump)
                        self._t0, self._pushed = t, 0
                        self._rem = np.zeros(0, np.float32)  # < 1 block, before the gap
                self._check_rate(t, n_in, gap > self.gap_tolerance, sr)
            self._push_blocks(x)

    def _check_rate(self, t: float, n: int, gapped: bool, sr: int) -> None:
        """Record a stamped chunk; warn once when the gaps look like a wrong sample rate (see
        :data:`RATE_WINDOW`)."""
        self._recent.append((t, n, gapped))
        if not gapped or self._rate_warned or len(self._recent) < RATE_WINDOW:
            return  # (the sums below only when a gap was filled: audio at its rate never)
        gaps = sum(1 for *_, g in self._recent if g)
        span = self._recent[-1][0] - self._recent[0][0]
        samples = sum(k for _, k, _ in list(self._recent)[:-1])  # (those between the stamps)
        if gaps < RATE_GAPS or span <= 0.0 or samples / sr > (1.0 - RATE_FILLED) * span:
            return
        self._rate_warned = True
        warnings.warn(
            f"push_audio: silence was filled in {gaps} of the last {RATE_WINDOW} chunks "
            f"(stats()['audio_gaps_filled']); if the audio has no real gaps, check push_audio's "
            f"sample_rate: at {sr} Hz these chunks span {samples / sr:.2f} s of their stamps' "
            f"{span:.2f} s, as audio at about {samples / span:.0f} Hz would",
            RuntimeWarning, stacklevel=4)

    def _push_blocks(self, x: np.ndarray) -> None:
        # with the producer lock held: re-block into self._block-sample ring items
        if self._rem.size:
            x = np.concatenate([self._rem, x])
        n = x.size // self._block
        if n:
            ts = self._t0 + (self._pushed + self._block * np.arange(n)) / self.sample_rate
            self._pcm_ring.push_many(ts, np.ascontiguousarray(
                x[: n * self._block].reshape(n, self._block)))
        self._rem = x[n * self._block:].copy()
        self._pushed += x.size - self._rem.size

    def flush(self) -> None:
        """End of the stream: emit what the resamplers still hold. The < one block left over is
        not pushed: every feature row ends on a multiple of the block, so it could not complete
        a row anyway."""
        with self._lock:
            for rs in self._resamplers.values():
                tail = np.asarray(rs.flush(), np.float32)
                if tail.size:
                    self._push_blocks(tail)

    def end_of_audio(self) -> None:
        """No more audio will come (a file's track ended, or could not be decoded further):
        frames later than :data:`END_SLACK_S` after the audio pushed so far have no audio,
        instead of getting the last rows for ``audio_timeout`` more (a clip whose sound stops
        at 3 s showed audio and speech until 4 s). A later :meth:`push` lifts it."""
        with self._lock:
            self._ended_at = self.time

    @property
    def time(self) -> float | None:
        """Time up to which audio has been pushed (None before any audio)."""
        if self._t0 is None:
            return None
        return self._t0 + (self._pushed + self._rem.size) / self.sample_rate

    # ------------------------------------------------------------------ consumer
    def _drain(self) -> None:
        ts, blocks = self._pcm_ring.read_new()
        if len(ts) == 0:
            return
        expected = np.empty(len(ts))
        expected[0] = ts[0] if self._next_block_t is None else self._next_block_t
        expected[1:] = ts[:-1] + self._block_dt
        jumps = np.flatnonzero(ts - expected > self._block_dt)
        fresh = self._next_block_t is None
        if fresh:
            jumps = np.union1d([0], jumps).astype(int)
        start = 0
        for b in list(jumps) + [len(ts)]:
            if b > start:
                self._consume(blocks[start:b].reshape(-1))
            if b < len(ts):
                self._restart(float(ts[b]), first=fresh and b == 0)
            start = b
        self._next_block_t = float(ts[-1]) + self._block_dt

    def _rows_reach(self, t: float) -> bool:
        """True when draining now could not change what a frame at ``t`` gets, so the drain
        can wait for a later frame and then run over more audio at once (the per-call cost of
        the feature and VAD steps is paid per drain; a file read ahead of its video drains
        every few frames instead of every frame). That holds when every ring already has a
        row at or after ``t`` (rows come in time order, so every row up to ``t`` is there, and
        ``min(latest, t)`` is ``t`` either way) and the audio not yet drained starts after
        ``t`` (its restarts, if any, come after the frame too)."""
        nxt = self._next_block_t
        if nxt is None or nxt <= t or not self.kinds:
            return False
        rings = list(self._rings.values())
        if self._vad is not None:
            rings.append(self._vad_ring)
        return all(r.latest_time is not None and r.latest_time >= t for r in rings)

    def _restart(self, t0: float, first: bool) -> None:
        self._feat_t0 = t0
        if first:
            return  # the extractor is fresh already
        self._features = self._new_extractor()
        self._vad = self._make_vad(self.cfg) if self._make_vad is not None else None
        self._seg_start, self._seg_first_row = t0, None
        self._counters["discontinuities"] += 1

    def _consume(self, pcm: np.ndarray) -> None:
        new = self._features.push(pcm)
        t0 = self._feat_t0
        for k in self.kinds:
            times, feats = new[k]
            if len(times):
                self._rings[k].push_many(t0 + times, np.ascontiguousarray(feats))
                if self._seg_start is not None and self._seg_first_row is None:
                    self._seg_first_row = t0 + float(times[0])
        if self._vad is not None:
            out = self._vad.push(pcm)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(f"VAD push returned {type(out).__name__}; expected "
                                "(times, values)")
            vt = np.asarray(out[0], np.float64)
            if len(vt):
                self._vad_ring.push_many(t0 + vt, np.asarray(out[1], np.float32).reshape(-1, 1))
        self._counters["consumed"] += pcm.size

    def _row_present(self, ring, t: float) -> bool:
        """Audio for a frame at ``t``: a row that ended at or before ``t`` (never audio from
        after the frame), at most ``audio_timeout`` old. The one exception is the start of a
        stream: a frame within one analysis window (``win_length``, 25 ms) before the first
        row's end gets that row, as training's alignment gives it (``sample_at``'s "previous"
        rule clamps to row 0), so streaming equals the offline/training computation."""
        oldest, latest = ring.oldest_time, ring.latest_time
        if oldest is None or oldest > t + self._first_row_slack:
            return False  # nothing yet, or only audio from after t
        if self._ended_at is not None and t > self._ended_at + END_SLACK_S:
            return False  # the audio ended before this frame
        return t - min(latest, t) <= self.audio_timeout

    def at(self, t: float) -> tuple[dict[str, np.ndarray], bool, bool]:
        """Normalised features at ``t`` -> ({kind: float32[D]}, present, speech). Zeros and
        ``present=False`` when audio is missing (see the module docstring)."""
        t = float(t)
        if not self._rows_reach(t):
            self._drain()
        present = bool(self.kinds) and all(self._row_present(self._rings[k], t)
                                           for k in self.kinds)
        if present and self._seg_start is not None and t >= self._seg_start and \
                (self._seg_first_row is None or t < self._seg_first_row):
            present = False  # after a restart, before the restarted extractor's first row
        if present and self._filled:  # a row centred in inserted silence is no audio
            mid = t - self._first_row_slack / 2.0
            present = not any(a <= mid < b for a, b in self._filled)
        feats: dict[str, np.ndarray] = {}
        for k in self.kinds:
            if not present:
                feats[k] = np.zeros(self.cfg.stream_dim(k), np.float32)
                continue
            v = np.asarray(self._rings[k].at(t, "previous"), np.float32)
            norm = self._normalise.get(k)
            feats[k] = norm(v) if norm is not None else v
        if present and not all(np.isfinite(v).all() for v in feats.values()):
            self._counters["nonfinite"] += 1
            present = False
            feats = {k: np.zeros_like(v) for k, v in feats.items()}
        if present:
            self._had_audio = True
            latest = self._rings[self.kinds[0]].latest_time
            if latest is not None and t - latest > LATE_AUDIO_S:
                self._counters["late"] += 1
        elif self.kinds:
            self._check_overrun(t)
            if not self._had_audio and not self._pcm_ring.overruns:  # (an overrun says why)
                self._check_clocks(t)
        speech = False
        if self._vad is not None and self._row_present(self._vad_ring, t):
            speech = bool(self._vad_ring.at(t, "previous")[0] > 0.5)
        return feats, present, speech

    def _check_clocks(self, t: float) -> None:
        """Count (and warn once about) a frame far outside the audio's span (CLOCK_MISMATCH_S)."""
        oldest, end = self._rings[self.kinds[0]].oldest_time, self.time
        if oldest is None or end is None:
            return
        if t < oldest - CLOCK_MISMATCH_S or t > end + CLOCK_MISMATCH_S:
            self._count_and_warn_once(
                "clock_mismatch", f"audio and frames look stamped on different clocks: a frame "
                f"at t={t:.3f} s, the audio pushed so far spans {oldest:.3f}-{end:.3f} s, and no "
                f"frame has had audio yet; stamp both with one clock (counted in "
                f"stats()['audio_clock_mismatch'])", stacklevel=2)

    def _check_overrun(self, t: float) -> None:
        """Warn once when a frame finds its audio overwritten: the ring overran (audio pushed
        more than its capacity ahead of the frames, e.g. a file read faster than real time)
        and what is left starts after the frame."""
        oldest = self._rings[self.kinds[0]].oldest_time
        if self._overrun_warned or not self._pcm_ring.overruns or oldest is None or \
                oldest <= t + self._first_row_slack:
            return
        self._overrun_warned = True
        warnings.warn(
            f"push_audio: the audio for a frame at t={t:.3f} s was overwritten before the frame "
            f"came (the oldest audio kept starts at {oldest:.3f} s): audio was pushed more than "
            f"{self._pcm_capacity_s:g} s ahead of the frames (counted in "
            f"stats()['audio_overruns']). Push a file's audio at the pace of its video, or "
            f"raise audio_capacity_s", RuntimeWarning, stacklevel=3)

    def _count_and_warn_once(self, counter: str, message: str, stacklevel: int) -> None:
        """Count one event; its first occurrence in this timeline's life is a RuntimeWarning."""
        self._counters[counter] += 1
        if self._counters[counter] == 1:
            warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget all audio (a new, unrelated stream follows). Counters are kept."""
        with self._lock:
            self._pcm_ring.clear()
            for r in self._rings.values():
                r.clear()
            self._vad_ring.clear()
            self._clear()

    def stats(self) -> dict:
        c = self._counters
        return {"audio_overruns": int(self._pcm_ring.overruns), "audio_gaps_filled": c["gaps"],
                "audio_overlaps": c["overlaps"], "audio_discontinuities": c["discontinuities"],
                "audio_seconds": c["consumed"] / self.sample_rate,
                "nonfinite_audio": c["nonfinite"], "audio_clock_mismatch": c["clock_mismatch"],
                "audio_late_frames": c["late"]}


def warn_narrowband(sr: int, model_sr: int) -> None:
    """One RuntimeWarning for audio below the model's rate: resampling cannot restore the band
    above ``sr / 2`` that the features were trained with (a new-user trial, demo clip, 240
    frames: valence CCC 0.92 at 16 kHz, 0.46 at 8 kHz and 0.46 for 16 kHz band-limited to
    4 kHz, so the band, not the resampler)."""
    warnings.warn(f"push_audio: audio at {sr} Hz holds nothing above {sr / 2000:g} kHz, which the "
                  f"model's features ({model_sr} Hz, up to {model_sr / 2000:g} kHz) were trained "
                  f"with: expect worse predictions (telephone audio and Bluetooth headsets' "
                  f"hands-free mode are 8 kHz; use a wide-band mode where there is one)",
                  RuntimeWarning, stacklevel=4)
