"""Audio sources: the common interface, WAV files and the audio track of video files.

Every source delivers :class:`AudioChunk` s of float32 mono PCM at 16 kHz (PAPER.md §1.4; the
model's ``FeatureConfig.sample_rate``) whatever the input's format, channel count and rate.
``AudioChunk.t`` is the time of the chunk's first sample on the same clock as the video frames:
media seconds for files, ``time.monotonic()`` for live sources. Resampling always goes through
:mod:`affedge.features.audio_io` (one resampler for WAVs, video tracks and microphones).

Reading protocol: ``read(timeout=None)`` returns the next chunk, ``None`` at the end of the
stream (or after ``close()``), and -- for live sources only -- an *empty* chunk (``pcm.size ==
0``, ``t`` = time of the next expected sample) when ``timeout`` seconds pass without new audio.
File sources never block and return chunks of exactly ``chunk_ms`` (the last may be shorter).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...features import audio_io
from ._errors import SourceError, SourceFormatError

SAMPLE_RATE = 16000  # PAPER.md §1.4: mono 16 kHz


@dataclass(frozen=True)
class AudioChunk:
    """``pcm``: float32 mono 16 kHz samples; ``t``: time (s) of the first sample."""

    t: float
    pcm: np.ndarray


def chunk_samples(chunk_ms: float) -> int:
    """Samples per chunk at 16 kHz; validates chunk_ms."""
    if not (isinstance(chunk_ms, (int, float)) and 1 <= chunk_ms <= 10000):
        raise ValueError(f"chunk_ms must be a number in [1, 10000] ms, got {chunk_ms!r}")
    return max(1, round(chunk_ms * SAMPLE_RATE / 1000))


class AudioSource:
    """Base class: ``start()``, ``read(timeout)``, iteration, ``close()``, context manager.

    Attributes: ``sample_rate`` (always 16000), ``is_live``, ``overruns`` (audio lost because
    the consumer or the capture could not keep up; always 0 for files), ``name``.
    """

    sample_rate: int = SAMPLE_RATE
    is_live: bool = False

    def __init__(self, name: str, chunk_ms: float = 20):
        self.name = name
        self.chunk_ms = float(chunk_ms)
        self.chunk_size = chunk_samples(chunk_ms)
        self._started = False
        self._closed = False

    @property
    def overruns(self) -> int:
        return 0

    def start(self) -> AudioSource:
        """Begin capture (live sources) / decoding. Idempotent; read() calls it if needed."""
        if self._closed:
            raise SourceError(f"audio source {self.name} is closed")
        if not self._started:
            self._start()
            self._started = True
        return self

    def _start(self):
        pass

    def read(self, timeout: float | None = None) -> AudioChunk | None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[AudioChunk]:
        """Chunks until the end of the stream (live sources: until closed)."""
        self.start()
        while True:
            chunk = self.read()
            if chunk is None:
                return
            if chunk.pcm.size:
                yield chunk

    def close(self):
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


class _FileAudio(AudioSource):
    """A finite source: subclasses yield (t0, pcm16k) pieces from ``_pieces()``; this class
    cuts them into chunk_ms chunks with t = t0 + samples/16000 (continuous sample clock)."""

    is_live = False

    def __init__(self, path, chunk_ms: float = 20):
        path = Path(os.fspath(path))
        if not path.exists():
            raise SourceError(f"audio file not found: {path}")
        if not path.is_file():
            raise SourceError(f"audio source is not a regular file: {path}")
        super().__init__(str(path), chunk_ms)
        self.path = path
        self._buf = np.zeros(0, np.float32)
        self._t_next: float | None = None  # time of _buf[0]
        self._gen = None

    def _pieces(self):
        raise NotImplementedError

    def _start(self):
        self._gen = self._pieces()

    def read(self, timeout: float | None = None) -> AudioChunk | None:
        """The next chunk_ms chunk (never blocks); None at the end of the file."""
        if self._closed:
            return None
        self.start()
        while self._buf.size < self.chunk_size and self._gen is not None:
            try:
                t0, pcm = next(self._gen)
            except StopIteration:
                self._gen = None
                break
            if self._t_next is None:
                self._t_next = float(t0)
            self._buf = np.concatenate([self._buf, pcm]) if self._buf.size else pcm
        if self._buf.size == 0:
            return None
        pcm, self._buf = self._buf[: self.chunk_size], self._buf[self.chunk_size :]
        chunk = AudioChunk(self._t_next, np.ascontiguousarray(pcm, dtype=np.float32))
        self._t_next += pcm.size / SAMPLE_RATE
        return chunk

    def read_all(self) -> np.ndarray:
        """The rest of the stream as one float32 array (convenience for offline use)."""
        parts = []
        while (c := self.read()) is not None:
            parts.append(c.pcm)
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def close(self):
        self._gen = None
        self._buf = np.zeros(0, np.float32)
        super().close()


class WavSource(_FileAudio):
    """A WAV file (PCM 8/16/24/32-bit, float 32/64, any channel count and rate), as 16 kHz
    mono chunks starting at t = 0. Parsing and validation: ``audio_io.read_wav``."""

    def __init__(self, path, chunk_ms: float = 20):
        super().__init__(path, chunk_ms)
        try:
            pcm, sr = audio_io.read_wav(self.path)
        except FileNotFoundError as e:
            raise SourceError(f"audio file not found: {self.path}") from e
        except ValueError as e:  # WavFormatError and friends name the file already
            msg = str(e) if str(self.path) in str(e) else f"{self.path}: {e}"
            raise SourceFormatError(msg) from e
        self.input_rate = int(sr)
        self._pcm = audio_io.resample(pcm, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else pcm
        self.duration = self._pcm.size / SAMPLE_RATE

    def _pieces(self):
        yield 0.0, np.asarray(self._pcm, np.float32)


def _import_av():
    try:
        import av
    except ImportError as e:
        raise SourceError(
            "reading the audio track of a video file needs PyAV: pip install 'affedge[video-audio]'"
        ) from e
    return av


class VideoAudioSource(_FileAudio):
    """The (first) audio track of a video/audio file, decoded by PyAV (FFmpeg libraries, no
    ffmpeg binary), downmixed to mono by the channel mean and resampled to 16 kHz.

    Times are media seconds relative to the start of the *video* stream (the origin OpenCV uses
    for ``CAP_PROP_POS_MSEC``), so audio chunks and :class:`VideoFrame` s share one clock; for
    audio-only files the origin is the audio stream's start."""

    GAP_TOLERANCE_S = 0.005  # timestamp rounding (1 ms in MKV) stays far below this
    MAX_GAP_S = 600.0

    def __init__(self, path, chunk_ms: float = 20):
        super().__init__(path, chunk_ms)
        av = _import_av()
        try:
            self._container = av.open(str(self.path))
        except Exception as e:  # av.error.* (InvalidDataError, ...) are OSError/ValueError subclasses
            raise SourceError(
                f"cannot open {self.path} for audio (corrupt, truncated or unsupported format?): {e}"
            ) from e
        if not self._container.streams.audio:
            self._container.close()
            raise SourceError(
                f"{self.path} has no audio track (as the audio, give a file with one, a WAV "
                f"file, a microphone or no audio)"
            )
        self._stream = self._container.streams.audio[0]
        self.input_rate = int(self._stream.rate or self._stream.codec_context.sample_rate or 0)
        self.channels = int(self._stream.codec_context.channels or 0)
        origin = None
        if self._container.streams.video:
            v = self._container.streams.video[0]
            if v.start_time is not None and v.time_base is not None:
                origin = float(v.start_time * v.time_base)
        if origin is None and self._stream.start_time is not None and self._stream.time_base:
            origin = float(self._stream.start_time * self._stream.time_base)
        self._origin = origin or 0.0

    def _pieces(self):
        """Decoded audio on one continuous 16 kHz sample clock anchored at the first packet's
        presentation time. Every later packet's own time is checked against that clock: a
        hole in the track (the packet starts more than ``GAP_TOLERANCE_S`` after the samples
        so far end) is filled with silence, so the audio after it keeps its media time; a hole
        longer than ``MAX_GAP_S`` is refused as a SourceError (a corrupt timestamp, not a
        pause). Small overlaps (packets starting early) are played as they come."""
        av = _import_av()
        to_fltp = None
        resampler = None
        t0 = None
        rate = 0
        fed = 0  # input-rate samples pushed so far (incl. filled silence)
        try:
            for frame in self._container.decode(self._stream):
                t = float(frame.time) - self._origin if frame.time is not None else None
                if t0 is None:
                    t0 = t if t is not None and math.isfinite(t) else 0.0
                    rate = int(frame.sample_rate)
                    to_fltp = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=rate)
                    resampler = audio_io.StreamResampler(rate, SAMPLE_RATE)
                elif t is not None and math.isfinite(t):
                    gap = t - (t0 + fed / rate)
                    if gap > self.MAX_GAP_S:
                        raise SourceError(
                            f"{self.path}: the audio timestamps jump {gap:.1f} s ahead at "
                            f"{t0 + fed / rate:.3f} s (more than {self.MAX_GAP_S:.0f} s: a "
                            f"corrupt timestamp?)")
                    if gap > self.GAP_TOLERANCE_S:
                        n_fill = round(gap * rate)
                        for y in self._silence(resampler, n_fill, rate):
                            yield t0, y
                        fed += n_fill
                fed += int(frame.samples)
                for f in to_fltp.resample(frame):
                    x = f.to_ndarray()  # [channels, n] planar float32
                    y = resampler.push(x.mean(axis=0) if x.shape[0] > 1 else x[0])
                    if y.size:
                        yield t0, y
        except av.error.FFmpegError as e:
            raise SourceError(f"error decoding the audio of {self.path}: {e}") from e
        if resampler is not None:
            y = resampler.flush()
            if y.size:
                yield t0, y

    @staticmethod
    def _silence(resampler, n: int, rate: int):
        """Push ``n`` zero samples (input rate) through the resampler, one second at a time."""
        while n > 0:
            k = min(n, rate)
            y = resampler.push(np.zeros(k, np.float32))
            n -= k
            if y.size:
                yield y

    def close(self):
        super().close()
        c = getattr(self, "_container", None)
        if c is not None:
            c.close()
            self._container = None
