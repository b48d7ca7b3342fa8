"""WAV reading/writing, sample-format conversion and band-limited resampling.

* :func:`read_wav` parses the RIFF chunks itself. The stdlib ``wave`` module of Python 3.11 only
  reads ``WAVE_FORMAT_PCM`` and refuses IEEE float and ``WAVE_FORMAT_EXTENSIBLE`` files, so one
  small parser handles every supported layout with uniform, file-naming errors: PCM 8-bit
  unsigned, 16/24/32-bit signed, IEEE float 32/64-bit, plain or EXTENSIBLE, any channel count
  (downmixed by the mean). A RIFF/data size of 0xFFFFFFFF (written by streaming encoders that
  cannot seek back) means "to the end of the file".
* :func:`write_wav` writes 16-bit PCM through the stdlib ``wave`` module.
* :func:`to_float_mono` turns raw sample bytes or integer/float arrays into float32 mono in
  [-1, 1] (integers scale by 2^(bits-1); unsigned 8-bit is offset by 128). Microphone sources
  use it for pyaudio's int16 buffers.
* :func:`resample` / :class:`StreamResampler`: libsoxr (the ``soxr`` package, numpy only, wheels
  for x86-64 and aarch64) in its "HQ" recipe: for 48/44.1 kHz -> 16 kHz the stop band is below
  -136 dB (measured) and the pass band flat to 7 kHz; the delay (``latency_s``, 10 ms) is
  compensated, so output sample ``n`` sits at input time ``n * sr_in / sr_out``; the streaming
  form emits each output once its input support has arrived and ``flush()`` the rest. Chunked
  output equals the batch output exactly.
"""
from __future__ import annotations

import functools
import os
import struct
import wave

import numpy as np

__all__ = [
    "StreamResampler",
    "WavFormatError",
    "read_wav",
    "resample",
    "to_float_mono",
    "to_mono_float",
    "write_wav",
]

_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_UNKNOWN_SIZE = 0xFFFFFFFF


class WavFormatError(ValueError):
    """The file is not a readable WAV (corrupt, truncated, empty or an unsupported format)."""


# --------------------------------------------------------------------------- conversion
def to_float_mono(raw, dtype=None, channels: int = 1) -> np.ndarray:
    """Interleaved or ``[n, channels]`` samples -> float32 mono in [-1, 1].

    ``raw``: bytes-like (then ``dtype`` is required: a numpy dtype such as ``"<i2"``, ``"u1"``,
    ``"<f4"``, or the string ``"int24"`` for packed little-endian 24-bit) or a numpy array (1-D
    interleaved with ``channels`` channels, or 2-D ``[n, channels]``). Channels are averaged.
    """
    if channels < 1:
        raise ValueError(f"to_float_mono: channels must be >= 1, got {channels}")
    if isinstance(raw, (bytes, bytearray, memoryview)):
        if dtype is None:
            raise ValueError("to_float_mono: dtype is required for raw bytes (e.g. '<i2', 'int24')")
        if isinstance(dtype, str) and dtype.lower() == "int24":
            b = np.frombuffer(raw, dtype=np.uint8)
            if b.size % 3:
                raise ValueError(f"to_float_mono: {b.size} bytes is not a multiple of 3 (int24)")
            wide = np.zeros((b.size // 3, 4), dtype=np.uint8)
            wide[:, 1:] = b.reshape(-1, 3)  # little endian: low byte 0, then the 3 sample bytes
            arr = wide.view("<i4").reshape(-1) >> 8  # arithmetic shift keeps the sign
            scale = float(2**23)
            return _downmix(arr.astype(np.float64) / scale, channels)
        dt = np.dtype(dtype)
        if len(raw) % dt.itemsize:
            raise ValueError(
                f"to_float_mono: {len(raw)} bytes is not a multiple of the {dt} item size"
            )
        arr = np.frombuffer(raw, dtype=dt)
    else:
        arr = np.asarray(raw)
        if dtype is not None and np.dtype(dtype) != arr.dtype:
            raise TypeError(f"to_float_mono: array dtype {arr.dtype} != declared dtype {dtype}")
    if arr.ndim == 2:
        if arr.shape[1] != channels:
            raise ValueError(
                f"to_float_mono: array shape {arr.shape} does not have {channels} channel column(s)"
            )
        arr = arr.reshape(-1)
    elif arr.ndim != 1:
        raise ValueError(f"to_float_mono: expected 1-D or 2-D samples, got shape {arr.shape}")
    k = arr.dtype
    if np.issubdtype(k, np.unsignedinteger):  # offset binary (WAV's 8-bit, some 16-bit codecs)
        half = float(2 ** (8 * k.itemsize - 1))
        x = (arr.astype(np.float64) - half) / half
    elif np.issubdtype(k, np.signedinteger):
        x = arr.astype(np.float64) / float(2 ** (8 * k.itemsize - 1))
    elif np.issubdtype(k, np.floating):
        x = arr.astype(np.float64)
    else:
        raise TypeError(f"to_float_mono: unsupported sample dtype {k}")
    return _downmix(x, channels)


def to_mono_float(pcm, channels: int = 1, dtype=None) -> np.ndarray:
    """docs/INTERFACES.md spelling (argument order ``pcm, channels``) of :func:`to_float_mono`."""
    return to_float_mono(pcm, dtype=dtype, channels=channels)


def _downmix(x: np.ndarray, channels: int) -> np.ndarray:
    if x.size % channels:
        raise ValueError(
            f"to_float_mono: {x.size} samples is not a multiple of {channels} channels"
        )
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    with np.errstate(over="ignore"):  # float64 beyond the float32 range -> Inf; callers refuse it
        return x.astype(np.float32)


# --------------------------------------------------------------------------- reading
def _parse_fmt(body: bytes, path: str) -> tuple[int, int, int, int, int]:
    if len(body) < 16:
        raise WavFormatError(f"{path}: 'fmt ' chunk too short ({len(body)} bytes)")
    fmt_tag, channels, sr, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", body[:16])
    if fmt_tag == _EXTENSIBLE:
        if len(body) < 40:
            raise WavFormatError(f"{path}: WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk too short")
        fmt_tag = struct.unpack("<H", body[24:26])[0]  # first 2 bytes of the SubFormat GUID
    return fmt_tag, channels, sr, block_align, bits


def read_wav(path) -> tuple[np.ndarray, int]:
    """Read a WAV file -> ``(float32 mono PCM in [-1, 1], sample_rate)``.

    Raises ``FileNotFoundError`` for a missing file and :class:`WavFormatError` (a ValueError)
    naming the file for empty, truncated, corrupt or unsupported files.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such WAV file")
    if os.path.isdir(path):
        raise WavFormatError(f"{path}: is a directory, not a WAV file")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) == 0:
        raise WavFormatError(f"{path}: file is empty")
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX", b"RF64") or data[8:12] != b"WAVE":
        raise WavFormatError(f"{path}: not a RIFF/WAVE file (bad header)")
    if data[:4] != b"RIFF":
        raise WavFormatError(f"{path}: {data[:4].decode()} WAV files are not supported")
    pos, fmt, pcm_bytes = 12, None, None
    while pos + 8 <= len(data):
        cid = data[pos: pos + 4]
        size = struct.unpack("<I", data[pos + 4: pos + 8])[0]
        start = pos + 8
        if cid == b"data":
            if fmt is None:
                raise WavFormatError(f"{path}: 'data' chunk before the 'fmt ' chunk")
            if size == _UNKNOWN_SIZE:
                size = len(data) - start
            if start + size > len(data):
                raise WavFormatError(
                    f"{path}: truncated: 'data' chunk declares {size} bytes, "
                    f"only {len(data) - start} present"
                )
            pcm_bytes = data[start: start + size]
            break
        if start + size > len(data):
            raise WavFormatError(f"{path}: truncated or corrupt {cid!r} chunk")
        if cid == b"fmt ":
            fmt = _parse_fmt(data[start: start + size], path)
        pos = start + size + (size & 1)  # chunks are padded to an even size
    if fmt is None:
        raise WavFormatError(f"{path}: no 'fmt ' chunk (corrupt or truncated)")
    if pcm_bytes is None:
        raise WavFormatError(f"{path}: no 'data' chunk (corrupt or truncated)")
    fmt_tag, channels, sr, block_align, bits = fmt
    if channels < 1 or sr < 1:
        raise WavFormatError(f"{path}: invalid header: {channels} channels, {sr} Hz")
    dtype = None
    if fmt_tag == _PCM:
        dtype = {8: "u1", 16: "<i2", 24: "int24", 32: "<i4"}.get(bits)
    elif fmt_tag == _FLOAT:
        dtype = {32: "<f4", 64: "<f8"}.get(bits)
    if dtype is None:
        raise WavFormatError(
            f"{path}: unsupported WAV format (format tag 0x{fmt_tag:04x}, {bits} bits); "
            "supported: PCM 8/16/24/32-bit, IEEE float 32/64-bit"
        )
    if block_align != channels * bits // 8:
        raise WavFormatError(
            f"{path}: inconsistent header: block_align {block_align} != {channels} ch x {bits} bits"
        )
    if len(pcm_bytes) % block_align:
        raise WavFormatError(
            f"{path}: truncated: {len(pcm_bytes)} data bytes is not a whole number of "
            f"{block_align}-byte frames"
        )
    pcm = to_float_mono(pcm_bytes, dtype, channels)
    if fmt_tag == _FLOAT and not np.all(np.isfinite(pcm)):
        raise WavFormatError(f"{path}: float samples contain NaN or Inf (or values beyond "
                             "the float32 range)")
    return pcm, int(sr)


def write_wav(path, pcm, sr: int) -> None:
    """Write float PCM (``[n]`` mono or ``[n, channels]``, values clipped to [-1, 1]) as 16-bit."""
    x = np.asarray(pcm)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"write_wav: expected float PCM, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"write_wav: expected [n] or [n, channels] PCM, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"write_wav: PCM for {os.fspath(path)} contains NaN or Inf")
    if int(sr) < 1:
        raise ValueError(f"write_wav: sample rate must be positive, got {sr}")
    # scale by 2^15 (the inverse of the reader's scaling), saturate at the int16 range
    ints = np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(int(sr))
        w.writeframes(ints.tobytes())


# --------------------------------------------------------------------------- resampling
#: libsoxr's "HQ" recipe: stop band beyond -140 dB (measured -143 dB for 11 kHz 48k->16k), flat
#: pass band (6 kHz tone within 1e-8 of its level), 160 output samples of delay at 16 kHz
RESAMPLE_QUALITY = "HQ"


def _check_rates(sr_in, sr_out) -> tuple[int, int]:
    for name, v in (("sr_in", sr_in), ("sr_out", sr_out)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"resample: {name} must be a positive integer, got {v!r}")
    return int(sr_in), int(sr_out)


def _check_resample_input(pcm, what: str) -> np.ndarray:
    x = np.asarray(pcm)
    if x.ndim != 1:
        raise ValueError(f"{what}: expected 1-D mono PCM, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{what}: expected float PCM, got dtype {x.dtype}")
    return x.astype(np.float64, copy=False)


def resample(pcm, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling of 1-D float PCM -> float32, ``ceil(n * sr_out / sr_in)`` samples
    (libsoxr; exactly what :class:`StreamResampler` gives for the same signal in any chunks).
    ``sr_in == sr_out`` returns a float32 copy."""
    x = _check_resample_input(pcm, "resample")
    rs = StreamResampler(sr_in, sr_out)
    return np.concatenate([rs.push(x), rs.flush()])


def _soxr():
    """The ``soxr`` module, or ImportError saying how to get it (installs made with
    ``pip install --no-deps``, as docs/JETSON.md's, must add it by hand)."""
    try:
        import soxr  # small, numpy only; a runtime dependency (pyproject)
    except ImportError as exc:
        raise ImportError(f"resampling audio to 16 kHz needs the soxr package ({exc}): pip "
                          "install 'soxr>=0.3.7' (an affedge dependency that a --no-deps "
                          "install leaves out)") from None
    return soxr


@functools.lru_cache(maxsize=64)
def _soxr_delay_s(sr_in: int, sr_out: int) -> float:
    soxr = _soxr()

    probe = soxr.ResampleStream(sr_in, sr_out, 1, dtype="float64", quality=RESAMPLE_QUALITY)
    probe.resample_chunk(np.zeros(sr_in // 10), last=False)
    return float(probe.delay()) / sr_out


class StreamResampler:
    """Chunked resampling through libsoxr's streaming interface (the ``soxr`` package):
    ``push(chunk)`` returns the outputs whose input support is complete, ``flush()`` the rest
    (end-of-stream zeros). ``concat(pushes + flush)`` is the same for any chunking and equals
    :func:`resample` of the whole signal. ``latency_s``: the filter's delay (outputs held back
    until their input support has arrived)."""

    def __init__(self, sr_in: int, sr_out: int):
        self.sr_in, self.sr_out = _check_rates(sr_in, sr_out)
        self.reset()

    def reset(self) -> None:
        # (audio already at the model rate needs no soxr at all)
        self._rs = None if self.sr_in == self.sr_out else _soxr().ResampleStream(
            self.sr_in, self.sr_out, 1, dtype="float64", quality=RESAMPLE_QUALITY)
        self._n_in = 0
        self._n_out = 0
        self._flushed = False

    @property
    def latency_s(self) -> float:
        """Input seconds an output waits for (the filter's delay; measured once per rate pair
        on a probe stream, since libsoxr reports it only after some input)."""
        if self._rs is None:
            return 0.0
        return _soxr_delay_s(self.sr_in, self.sr_out)

    @property
    def pending_s(self) -> float:
        """Input seconds pushed but not yet out (held back by the filter)."""
        return self._n_in / self.sr_in - self._n_out / self.sr_out if self._rs is not None \
            else 0.0

    def push(self, chunk) -> np.ndarray:
        x = _check_resample_input(chunk, "StreamResampler.push")
        if self._flushed:
            raise RuntimeError("StreamResampler.push after flush(); call reset() first")
        if self._rs is None:
            return x.astype(np.float32)
        self._n_in += x.size
        return self._take(self._rs.resample_chunk(x, last=False))

    def flush(self) -> np.ndarray:
        """Emit the remaining outputs (the signal is taken as zero after the last input), up to
        ``ceil(n_in * sr_out / sr_in)`` outputs in all."""
        if self._flushed:
            return np.zeros(0, dtype=np.float32)
        self._flushed = True
        if self._rs is None:
            return np.zeros(0, dtype=np.float32)
        return self._take(self._rs.resample_chunk(np.zeros(0), last=True))

    def _take(self, y: np.ndarray) -> np.ndarray:
        total = -(-self._n_in * self.sr_out // self.sr_in)
        y = y[: max(0, total - self._n_out)]
        self._n_out += y.size
        return y.astype(np.float32)
