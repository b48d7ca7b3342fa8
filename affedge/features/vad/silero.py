"""Silero VAD on ONNX Runtime: causal speech flags per 32 ms window (registry name ``silero``).

The model (``affedge/assets/models/silero_vad/``, extracted from the ``silero-vad`` wheel by
``scripts/build_vad_model.py``; MIT, see the NOTICE there) reads 16 kHz audio in windows of
512 samples, each prefixed with the previous window's last 64 samples (zeros before the
stream start), and carries an LSTM state (``h``, ``c``: 1x1x128 each) from window to window;
per window it gives a speech probability. Facts from silero-vad 6.2.3's ``utils_vad.py`` /
``sequence_vad.py``: window 512 + context 64 at 16 kHz, state 2x1x128, threshold 0.5,
``neg_threshold = threshold - 0.15``, ``min_silence_duration_ms = 100``.

Window ``i`` covers samples ``[i*512, (i+1)*512)``; its decision is available at
``times[i] = (i+1) * 512 / 16000`` s, the end of the samples it depends on (the same
convention as the energy VAD's ``frame_times``). Decisions (hysteresis on the probability):

* onset: ``onset_windows`` consecutive windows with ``p >= threshold``;
* offset: once in speech, a window with ``p < neg_threshold`` starts a silence timer (a window
  with ``p >= threshold`` stops it); speech ends at the first window with
  ``p < neg_threshold`` at least ``min_silence_s`` after the timer started.

``delay_s`` = ``onset_windows * 512 / 16000`` (64 ms by default), computed like the energy
VAD's (35 ms on its 25 ms / 10 ms grid): a window's decision comes at the window's end and an
onset needs ``onset_windows`` windows of speech, so speech that starts at a window boundary is
flagged ``onset_windows`` windows later at the earliest. Speech that starts inside a window is
flagged at least ``onset_windows - 1`` windows after its start. The model's own reaction time
adds to this: ``benchmarks/bench_vad.py`` measured a median onset latency of 85 ms on clean
speech and 100-120 ms in noise and music.

Every window's decision depends only on past and current samples, and the sequence model
gives bit-identical probabilities however many windows one call holds, so any chunking of the
same PCM gives identical output. One ONNX Runtime session per (model, threads) is shared by all
instances (``InferenceSession.run`` is thread-safe); instances keep only their own state.
The CPU execution provider is used on purpose: one window is ~0.1 ms of CPU work, far less than
a device round trip.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from affedge.config import FeatureConfig
from affedge.features.audio import FrameBuffer, check_pcm
from affedge.features.vad.registry import register_vad

__all__ = ["MODEL_PATH", "Hysteresis", "SileroVAD"]

SAMPLE_RATE = 16000
WINDOW = 512  # samples per decision at 16 kHz (silero-vad)
CONTEXT = 64  # previous samples prefixed to each window at 16 kHz (silero-vad)
STATE_SHAPE = (1, 1, 128)  # h and c of the model's LSTM
MAX_WINDOWS_PER_RUN = 512  # bounds one call's input to ~1.2 MB (16 s of audio)
MODEL_PATH = (Path(__file__).resolve().parents[2] / "assets" / "models" / "silero_vad"
              / "silero_vad_16k_sequence.onnx")
BUILD_HINT = "rebuild it with `python scripts/build_vad_model.py`"


@functools.lru_cache(maxsize=8)
def _model(path: str, num_threads: int):
    """(session, sha256) for a model file; one session per (path, threads) per process."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"silero VAD model not found: {p}; {BUILD_HINT}")
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - a hard dependency of affedge
        raise ImportError("the silero VAD needs onnxruntime (pip install onnxruntime)") from e
    data = p.read_bytes()
    so = ort.SessionOptions()
    so.intra_op_num_threads = num_threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # the export leaves unused initializers ORT warns about
    try:
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT's load errors derive from Exception only
        raise ValueError(f"silero VAD model {p} cannot be loaded ({e}); {BUILD_HINT}") from None
    names = [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()]
    if names != (["input", "h", "c"], ["speech_probs", "hn", "cn"]):
        raise ValueError(f"silero VAD model {p}: inputs/outputs {names} are not the 16 kHz "
                         f"sequence model's; {BUILD_HINT}")
    return sess, hashlib.sha256(data).hexdigest()


@register_vad("silero")
class SileroVAD:
    """Incremental silero VAD; ``push(pcm) -> (times float64[k], flags bool[k])``.

    ``probabilities`` holds the model outputs of the last ``push`` (float32[k]) for diagnostics.
    """

    name = "silero"

    def __init__(
        self,
        cfg: FeatureConfig | None = None,
        *,
        threshold: float = 0.5,  # silero-vad's default
        neg_threshold: float | None = None,  # default threshold - 0.15 (silero-vad)
        onset_windows: int = 2,
        min_silence_s: float = 0.1,  # silero-vad's min_silence_duration_ms
        model_path: str | Path | None = None,
        num_threads: int = 1,
    ):
        self.cfg = cfg = cfg or FeatureConfig()
        if cfg.sample_rate != SAMPLE_RATE:
            raise ValueError(f"SileroVAD: the model reads {SAMPLE_RATE} Hz audio, the feature "
                             f"config says {cfg.sample_rate} Hz")
        if num_threads < 1:
            raise ValueError(f"SileroVAD: need num_threads >= 1, got {num_threads}")
        self.window_s = WINDOW / SAMPLE_RATE
        neg = threshold - 0.15 if neg_threshold is None else neg_threshold
        silence = int(np.ceil(min_silence_s / self.window_s - 1e-9)) if min_silence_s >= 0 else -1
        self._hyst = Hysteresis(threshold, neg, onset_windows, silence)
        self.delay_s = self._hyst.onset_windows * self.window_s
        self.model_path = Path(model_path) if model_path is not None else MODEL_PATH
        self._sess, self.model_sha256 = _model(str(self.model_path), int(num_threads))
        self._frames = FrameBuffer(CONTEXT + WINDOW, WINDOW)
        self.reset()

    def reset(self) -> None:
        self._frames.reset()
        self._frames.push(np.zeros(CONTEXT))  # the first window's context is silence
        self._h = np.zeros(STATE_SHAPE, np.float32)
        self._c = np.zeros(STATE_SHAPE, np.float32)
        self._hyst.reset()
        self.probabilities = np.zeros(0, np.float32)

    def push(self, pcm) -> tuple[np.ndarray, np.ndarray]:
        x = check_pcm(pcm, "SileroVAD.push")
        first = self._frames.n_frames
        rows = self._frames.push(x).astype(np.float32)
        probs = np.empty(len(rows), np.float32)
        for s in range(0, len(rows), MAX_WINDOWS_PER_RUN):
            block = np.ascontiguousarray(rows[s:s + MAX_WINDOWS_PER_RUN])
            p, self._h, self._c = self._sess.run(None, {"input": block, "h": self._h,
                                                        "c": self._c})
            probs[s:s + len(block)] = np.asarray(p, np.float32).reshape(-1)
        flags = np.array([self._hyst.step(float(p)) for p in probs], dtype=bool)
        self.probabilities = probs
        times = (np.arange(first, first + len(rows), dtype=np.float64) + 1.0) * self.window_s
        return times, flags


class Hysteresis:
    """Speech on/off from one probability per window (the rules in the module docstring)."""

    def __init__(self, threshold: float, neg_threshold: float, onset_windows: int,
                 min_silence_windows: int):
        if not 0.0 < neg_threshold <= threshold < 1.0:
            raise ValueError(f"SileroVAD: need 0 < neg_threshold <= threshold < 1, got "
                             f"{neg_threshold}, {threshold}")
        if onset_windows < 1 or min_silence_windows < 0:
            raise ValueError("SileroVAD: need onset_windows >= 1 and min_silence_s >= 0")
        self.threshold, self.neg_threshold = float(threshold), float(neg_threshold)
        self.onset_windows, self.min_silence_windows = int(onset_windows), int(min_silence_windows)
        self.reset()

    def reset(self) -> None:
        self.in_speech = False
        self._run = 0  # consecutive windows >= threshold while not in speech
        self._quiet: int | None = None  # windows since the silence timer started (None: off)

    def step(self, p: float) -> bool:
        if not self.in_speech:
            self._run = self._run + 1 if p >= self.threshold else 0
            if self._run >= self.onset_windows:
                self.in_speech, self._quiet = True, None
        elif p >= self.threshold:
            self._quiet = None
        elif self._quiet is not None or p < self.neg_threshold:
            self._quiet = 0 if self._quiet is None else self._quiet + 1
            if p < self.neg_threshold and self._quiet >= self.min_silence_windows:
                self.in_speech, self._run, self._quiet = False, 0, None
        return self.in_speech
