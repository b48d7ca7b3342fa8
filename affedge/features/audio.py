"""Audio features for the aural followers: MFCC-39 and log-mel 64, batch and incremental.

Both streams are computed on 16 kHz mono float PCM (``FeatureConfig``) with one shared framing:

* frame ``i`` covers samples ``[i*hop, i*hop + win)`` (no centre padding), hop 160 (10 ms), win
  400 (25 ms), zero-padded to ``n_fft`` = 512 for the FFT;
* ``times[i] = (i*hop + win) / sr`` is the moment row ``i`` becomes available (end of its window),
  in seconds relative to the first sample.

Streams
-------
``"mfcc"`` (39-d): the openSMILE ``MFCC12_0_D_A`` recipe (PAPER.md §1.4), computed our way:

1. pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` on the *signal* (``x[-1] = 0``; the one-sample
   state is carried across incremental chunks);
2. symmetric Hamming window (``np.hamming(400)``, as HTK/openSMILE), power spectrum ``|FFT|^2``;
3. 26 triangular mel filters over 0-8 kHz on the HTK mel scale ``2595 log10(1 + f/700)``,
   triangles linear in Hz with unit peak (= ``librosa.filters.mel(htk=True, norm=None)``);
4. natural log with a floor of 1e-5 (``log(max(mel, 1e-5))``): about 25 dB above the
   mel power of 16-bit quantisation noise, so digital silence, dithered silence and resampler
   noise all give the same rows (no train/serve skew between files and microphones);
5. DCT-II with orthonormal scaling, c0..c12 (openSMILE/HTK scale c0 by sqrt(2) more: a constant
   factor on one dimension, irrelevant for a model trained on these features);
6. HTK cepstral lifter ``1 + (L/2) sin(pi n / L)``, L = 22, n = 0..12 (c0 is unchanged);
7. **causal** deltas and delta-deltas (regression half-width W = 2), see below.

Row layout: ``[c0..c12, d0..d12, dd0..dd12]``.

``"logmel"`` (64-d): the VGGish front-end settings: no pre-emphasis, periodic Hann window of
400 samples, *magnitude* spectrum ``|FFT|`` (512 points), 64 HTK-mel triangles over 125-7500 Hz
(same filter shape as above), ``log(mel + 0.01)``.

Causality and delay (ARCHITECTURE.md §6, PAPER.md §8.2 #2)
------------------------------------------------------------
The reference (openSMILE) uses centred regression deltas, i.e. 2 frames (20 ms) of look-ahead for
deltas and 4 frames (40 ms) for delta-deltas. Here nothing looks ahead: row ``i`` depends only
on samples before ``times[i]``. The regression

    delta(x)[j] = sum_{n=1..W} n * (x[j+n] - x[j-n]) / (2 * sum_{n=1..W} n^2)

is evaluated *centred at row i - W*, using rows ``i-2W .. i`` only; rows before 0 repeat row 0
(edge padding on the left; nothing is needed on the right). So

* ``d[i]  = delta(c)[i - 2]``  -> the deltas carry a fixed group delay of W = 2 rows = **20 ms**;
* ``dd[i] = delta(d)[i - 2] = delta(delta(c))[i - 4]`` -> delta-deltas carry **40 ms**;
* the cepstra and the log-mel rows have no extra delay (beyond the 25 ms analysis window, whose
  centre lies 12.5 ms before ``times[i]``).

Away from the first 2W rows, ``d`` and ``dd`` equal the standard centred deltas (e.g.
``librosa.feature.delta(width=5)``, applied twice for ``dd``) shifted by 2 and 4 rows. This fixed
delay is our stated alternative to the reference's look-ahead; the model is trained on exactly
these features, so training and run time see the same thing.

Exactness: all arithmetic is float64 and rows are computed independently, then cast to float32,
so concatenating :class:`IncrementalAudioFeatures` outputs over any chunking equals
:func:`extract` on the whole signal.
"""
from __future__ import annotations

import numpy as np

from affedge.config import FeatureConfig

__all__ = [
    "FEATURE_KINDS",
    "STREAM_NAMES",
    "FeatureKind",
    "register_feature_kind",
    "FrameBuffer",
    "IncrementalAudioFeatures",
    "causal_delta",
    "check_pcm",
    "extract",
    "frame_times",
    "hz_to_mel",
    "mel_filterbank",
    "mel_to_hz",
]

# floor before the MFCC log. Measured here: white int16 quantisation noise gives mel powers
# of ~4e-8 (median) to ~1.3e-6 (99th pct); speech at -60 dBFS gives ~4e-4. 1e-5 sits between.
_LOG_FLOOR = 1e-5

# Bump when the numbers these functions produce change: caches of features keyed by it rebuild.
FEATURES_VERSION = 2


# --------------------------------------------------------------------------- building blocks
def hz_to_mel(f):
    """HTK mel scale: 2595 * log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filters ``[n_mels, n_fft//2 + 1]`` (float64).

    Band edges are equally spaced on the HTK mel scale between ``fmin`` and ``fmax``; each
    triangle rises linearly in Hz from its lower edge to 1 at its centre and falls to 0 at its
    upper edge (no area normalisation).
    """
    if not 0 <= fmin < fmax <= sr / 2:
        raise ValueError(
            f"mel_filterbank: need 0 <= fmin < fmax <= sr/2, got {fmin}, {fmax}, sr={sr}"
        )
    if n_mels < 1:
        raise ValueError(f"mel_filterbank: n_mels must be >= 1, got {n_mels}")
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.arange(n_fft // 2 + 1, dtype=np.float64) * sr / n_fft
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (bins[None, :] - lo) / (mid - lo)
    fall = (hi - bins[None, :]) / (hi - mid)
    return np.maximum(0.0, np.minimum(rise, fall))


def _dct_ortho(n_in: int, n_out: int) -> np.ndarray:
    """DCT-II matrix ``[n_in, n_out]`` with orthonormal scaling (x @ M gives the cepstra)."""
    n = np.arange(n_in, dtype=np.float64)[:, None]
    k = np.arange(n_out, dtype=np.float64)[None, :]
    m = np.cos(np.pi * k * (2.0 * n + 1.0) / (2.0 * n_in)) * np.sqrt(2.0 / n_in)
    m[:, 0] *= np.sqrt(0.5)
    return m


def _htk_lifter(n_ceps: int, lifter: int) -> np.ndarray:
    n = np.arange(n_ceps, dtype=np.float64)
    if lifter <= 0:
        return np.ones(n_ceps)
    return 1.0 + (lifter / 2.0) * np.sin(np.pi * n / lifter)


def frame_times(n_frames: int, cfg: FeatureConfig, first: int = 0) -> np.ndarray:
    """``times[i] = ((first+i)*hop + win) / sr`` for ``i < n_frames`` (float64 seconds)."""
    idx = np.arange(first, first + n_frames, dtype=np.float64)
    return (idx * cfg.hop_length + cfg.win_length) / cfg.sample_rate


def check_pcm(pcm, what: str) -> np.ndarray:
    arr = np.asarray(pcm)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected 1-D mono PCM, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"{what}: expected float PCM in [-1, 1], got dtype {arr.dtype}; "
            "convert integer samples with affedge.features.audio_io.to_float_mono"
        )
    arr = arr.astype(np.float64, copy=False)
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: PCM contains NaN or Inf")
    return arr


class FrameBuffer:
    """Cuts a sample stream into frames ``[i*hop, i*hop+win)`` across arbitrary chunk sizes.

    ``push(x)`` returns the float64 frames ``[k, win]`` completed by ``x`` (k may be 0);
    ``n_frames`` counts the frames emitted so far.
    """

    def __init__(self, win: int, hop: int):
        if win < 1 or hop < 1:
            raise ValueError(f"FrameBuffer: win and hop must be >= 1, got {win}, {hop}")
        self.win, self.hop = int(win), int(hop)
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0, dtype=np.float64)  # samples from the next frame's start on
        self._skip = 0  # samples still to drop before the next frame start (when hop > win)
        self.n_frames = 0

    def push(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._skip:
            drop = min(self._skip, x.size)
            x = x[drop:]
            self._skip -= drop
        buf = np.concatenate([self._buf, x]) if self._buf.size else x
        if buf.size < self.win:
            self._buf = buf.copy()
            return np.zeros((0, self.win))
        k = 1 + (buf.size - self.win) // self.hop
        frames = np.lib.stride_tricks.sliding_window_view(buf, self.win)[:: self.hop][:k].copy()
        consumed = k * self.hop
        self._buf = buf[consumed:].copy()
        if consumed > buf.size:  # hop > win: part of the gap is still to come
            self._skip = consumed - buf.size
        self.n_frames += k
        return frames


def causal_delta(x: np.ndarray, history: np.ndarray | None, width: int) -> np.ndarray:
    """Causal regression delta of rows ``x [k, D]`` (float64).

    ``history`` holds the ``2*width`` rows that precede ``x`` (``None`` at the stream start: the
    missing rows repeat ``x[0]``). Output row ``i`` is the centred regression delta at input row
    ``i - width``, using only rows up to ``i`` (see the module docstring).
    """
    if x.shape[0] == 0:
        return np.zeros_like(x)
    if history is None:
        history = np.repeat(x[:1], 2 * width, axis=0)
    ext = np.concatenate([history, x], axis=0)  # ext[j + 2W] = row j
    k = x.shape[0]
    denom = 2.0 * sum(n * n for n in range(1, width + 1))
    out = np.zeros_like(x)
    centre = width  # row i (ext index i+2W) -> centre i-W (ext index i+W)
    for n in range(1, width + 1):
        out += n * (ext[centre + n: centre + n + k] - ext[centre - n: centre - n + k])
    return out / denom


# --------------------------------------------------------------------------- the extractor
class FeatureKind:
    """One audio feature kind, incremental: ``push(x) -> (times float64[k], rows float32[k, D])``
    for the rows completed by the samples ``x``; ``reset()`` starts again at t = 0. Subclasses
    register under a name with :func:`register_feature_kind` and give ``dim(cfg)``."""

    name = ""

    def __init__(self, cfg: FeatureConfig):
        self.cfg = cfg
        self.frames = FrameBuffer(cfg.win_length, cfg.hop_length)

    @staticmethod
    def dim(cfg: FeatureConfig) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self) -> None:
        self.frames.reset()

    def push(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first = self.frames.n_frames
        frames = self.frames.push(x)
        return frame_times(len(frames), self.cfg, first), self.rows(frames)

    def rows(self, frames: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


#: feature kind name -> class (the registry; ``FeatureConfig.streams`` names entries of it)
FEATURE_KINDS: dict[str, type[FeatureKind]] = {}


def register_feature_kind(name: str):
    """Class decorator: make a :class:`FeatureKind` available under ``name``."""
    def add(cls):
        cls.name = name
        FEATURE_KINDS[name] = cls
        return cls
    return add


def feature_kind(name: str) -> type[FeatureKind]:
    """The registered class for ``name``; ValueError listing the known kinds."""
    try:
        return FEATURE_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown audio feature kind {name!r}; known: "
                         f"{', '.join(FEATURE_KINDS)}") from None


@register_feature_kind("mfcc")
class MfccFeatures(FeatureKind):
    """MFCC-39 (module docstring): pre-emphasis, Hamming, 26 mel bands, DCT, lifter, causal
    deltas and delta-deltas."""

    def __init__(self, cfg: FeatureConfig):
        super().__init__(cfg)
        self._hamming = np.hamming(cfg.win_length)
        self._fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.mfcc_n_mels, cfg.mfcc_fmin,
                                  cfg.mfcc_fmax).T
        self._dct = _dct_ortho(cfg.mfcc_n_mels, cfg.mfcc_n_ceps)
        self._lifter = _htk_lifter(cfg.mfcc_n_ceps, cfg.mfcc_lifter)
        self.reset()

    @staticmethod
    def dim(cfg: FeatureConfig) -> int:
        return 3 * cfg.mfcc_n_ceps

    def reset(self) -> None:
        super().reset()
        self._last_sample = 0.0  # pre-emphasis state x[-1]
        self._ceps_hist: np.ndarray | None = None  # last 2W cepstra rows
        self._delta_hist: np.ndarray | None = None  # last 2W delta rows

    def push(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if x.size:
            prev = np.concatenate([[self._last_sample], x[:-1]])
            self._last_sample = float(x[-1])
            x = x - self.cfg.preemphasis * prev
        return super().push(x)

    def rows(self, frames: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        if len(frames) == 0:
            return np.zeros((0, self.dim(cfg)), dtype=np.float32)
        spec = np.fft.rfft(frames * self._hamming, n=cfg.n_fft, axis=1)
        power = spec.real**2 + spec.imag**2
        logmel = np.log(np.maximum(power @ self._fb, _LOG_FLOOR))
        ceps = (logmel @ self._dct) * self._lifter
        w = cfg.delta_width
        d = causal_delta(ceps, self._ceps_hist, w)
        dd = causal_delta(d, self._delta_hist, w)
        self._ceps_hist = _tail(self._ceps_hist, ceps, 2 * w)
        self._delta_hist = _tail(self._delta_hist, d, 2 * w)
        return np.concatenate([ceps, d, dd], axis=1).astype(np.float32)


@register_feature_kind("logmel")
class LogMelFeatures(FeatureKind):
    """Log-mel 64 with the VGGish front-end settings (module docstring)."""

    def __init__(self, cfg: FeatureConfig):
        super().__init__(cfg)
        n = np.arange(cfg.win_length)
        self._hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.win_length)  # periodic Hann
        self._fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.logmel_n_mels,
                                  cfg.logmel_fmin, cfg.logmel_fmax).T

    @staticmethod
    def dim(cfg: FeatureConfig) -> int:
        return cfg.logmel_n_mels

    def rows(self, frames: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        if len(frames) == 0:
            return np.zeros((0, cfg.logmel_n_mels), dtype=np.float32)
        mag = np.abs(np.fft.rfft(frames * self._hann, n=cfg.n_fft, axis=1))
        return np.log(mag @ self._fb + cfg.logmel_offset).astype(np.float32)


STREAM_NAMES = tuple(FEATURE_KINDS)  # the registered kinds (name kept for existing callers)


class IncrementalAudioFeatures:
    """Streaming extractor of every feature kind in ``cfg.streams``.

    ``push(chunk)`` accepts any number of float samples (1-D, at ``cfg.sample_rate``) and returns
    ``{kind: (times float64[k], feats float32[k, D])}`` for the ``k`` rows completed by the chunk
    (k may be 0), for every kind in ``cfg.streams``. Concatenating all outputs equals
    :func:`extract` of the concatenated input. ``reset()`` starts a new stream at t = 0.
    """

    def __init__(self, cfg: FeatureConfig | None = None):
        self.cfg = cfg = cfg or FeatureConfig()
        unknown = [s for s in cfg.streams if s not in FEATURE_KINDS]
        if unknown:
            raise ValueError(f"unknown audio stream(s) {unknown}; known: {list(FEATURE_KINDS)}")
        if cfg.win_length > cfg.n_fft:
            raise ValueError(f"win_length {cfg.win_length} > n_fft {cfg.n_fft}")
        self.streams = tuple(cfg.streams)
        self._kinds = {s: FEATURE_KINDS[s](cfg) for s in self.streams}

    def reset(self) -> None:
        for k in self._kinds.values():
            k.reset()

    @property
    def n_rows(self) -> int:
        """Rows emitted so far."""
        return next(iter(self._kinds.values())).frames.n_frames if self._kinds else 0

    def dims(self) -> dict[str, int]:
        return {s: self.cfg.stream_dim(s) for s in self.streams}

    def push(self, chunk) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        x = check_pcm(chunk, "IncrementalAudioFeatures.push")
        return {s: k.push(x) for s, k in self._kinds.items()}


def _tail(hist: np.ndarray | None, new: np.ndarray, n: int) -> np.ndarray:
    """Last ``n`` rows of ``hist ++ new`` (with the start-of-stream edge padding)."""
    if hist is None:
        hist = np.repeat(new[:1], n, axis=0)
    return np.concatenate([hist, new], axis=0)[-n:].copy()


def extract(pcm, cfg: FeatureConfig | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All rows of every stream in ``cfg.streams`` for a whole float PCM signal.

    Returns ``{name: (times float64[m], feats float32[m, D])}`` with ``m = 1 + (n - win)//hop``
    rows (0 if the signal is shorter than one window).
    """
    x = check_pcm(pcm, "extract")
    return IncrementalAudioFeatures(cfg).push(x)
