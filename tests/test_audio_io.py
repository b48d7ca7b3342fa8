"""WAV reading (all PCM/float layouts, errors), conversion, band-limited + streaming resampling."""
from __future__ import annotations

import shutil
import struct
import subprocess
import wave

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affedge.features.audio_io import (
    StreamResampler,
    WavFormatError,
    read_wav,
    resample,
    to_float_mono,
    to_mono_float,
    write_wav,
)


def _riff(path, fmt_tag, channels, sr, bits, payload: bytes, extensible=False, extra_chunk=True):
    """Minimal RIFF/WAVE writer for formats the stdlib wave module cannot write."""
    block = channels * bits // 8
    if extensible:
        fmt = struct.pack("<HHIIHH", 0xFFFE, channels, sr, sr * block, block, bits)
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", fmt_tag) + guid_tail
    else:
        fmt = struct.pack("<HHIIHH", fmt_tag, channels, sr, sr * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if extra_chunk:  # an odd-sized chunk before 'data' exercises chunk skipping + padding
        body += b"LIST" + struct.pack("<I", 3) + b"abc" + b"\x00"
    body += b"data" + struct.pack("<I", len(payload)) + payload
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def _stdlib_wav(path, ints: np.ndarray, width: int, sr: int, channels: int):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(sr)
        w.writeframes(ints.tobytes())


REF = np.array([0.0, 0.5, -0.5, 0.25, -1.0, 0.999])


# ---------------------------------------------------------------------------- formats
@pytest.mark.parametrize("bits", [8, 16, 24, 32])
def test_pcm_integer_formats(tmp_path, bits):
    path = tmp_path / f"pcm{bits}.wav"
    full = 2 ** (bits - 1)
    ints = np.round(REF * full).clip(-full, full - 1).astype(np.int64)
    if bits == 8:
        raw = (ints + 128).astype(np.uint8).tobytes()  # 8-bit WAV is unsigned
    elif bits == 24:
        raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    else:
        raw = ints.astype(f"<i{bits // 8}").tobytes()
    with wave.open(str(path), "wb") as w:  # the stdlib writes any integer width
        w.setnchannels(1)
        w.setsampwidth(bits // 8)
        w.setframerate(16000)
        w.writeframes(raw)
    pcm, sr = read_wav(path)
    assert sr == 16000 and pcm.dtype == np.float32 and pcm.shape == (6,)
    np.testing.assert_allclose(pcm, REF, atol=1.0 / full + 1e-7)


@pytest.mark.parametrize("extensible", [False, True])
@pytest.mark.parametrize("bits", [32, 64])
def test_ieee_float_formats(tmp_path, bits, extensible):
    path = tmp_path / "f.wav"
    _riff(path, 3, 1, 22050, bits, REF.astype(f"<f{bits // 8}").tobytes(), extensible=extensible)
    pcm, sr = read_wav(path)
    assert sr == 22050
    np.testing.assert_allclose(pcm, REF, atol=1e-7)


def test_extensible_pcm_24bit_stereo(tmp_path):
    left, right = REF, -REF / 2
    inter = np.stack([left, right], axis=1).reshape(-1)
    ints = np.round(inter * 2**23).clip(-(2**23), 2**23 - 1).astype(np.int64)
    raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    path = tmp_path / "ext24.wav"
    _riff(path, 1, 2, 48000, 24, raw, extensible=True)
    pcm, sr = read_wav(path)
    assert sr == 48000
    np.testing.assert_allclose(pcm, (left + right) / 2, atol=2e-7)


def test_multichannel_downmix_by_mean(tmp_path):
    # 3 frames x 4 channels
    ch = np.array([[0.5, -0.5, 0.25, 0.0], [0.1, 0.1, 0.1, 0.1], [-1.0, 0.0, 0.5, 0.5]])
    ints = np.round(ch * 32767).astype("<i2")
    path = tmp_path / "quad.wav"
    _stdlib_wav(path, ints, 2, 8000, 4)
    pcm, _sr = read_wav(path)
    # int16 quantisation of each channel: the mean is off by at most 0.5/32767 (measured 7.6e-6)
    np.testing.assert_allclose(pcm, ch.mean(axis=1), atol=0.5 / 32767 + 1e-7)


def test_write_read_roundtrip(tmp_path):
    x = (0.8 * np.sin(np.linspace(0, 40, 1000))).astype(np.float32)
    write_wav(tmp_path / "r.wav", x, 16000)
    y, sr = read_wav(tmp_path / "r.wav")
    assert sr == 16000 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1.0 / 32767)
    with wave.open(str(tmp_path / "r.wav")) as w:  # a standard 16-bit file
        assert w.getsampwidth() == 2 and w.getnchannels() == 1


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
def test_reads_float_wav_written_by_sox(tmp_path):
    path = tmp_path / "sox.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "2", "-e", "floating-point", "-b", "32",
                    str(path), "synth", "0.1", "sine", "1000", "vol", "0.5"], check=True)
    pcm, sr = read_wav(path)
    assert sr == 16000 and pcm.size == 1600
    assert 0.45 < np.abs(pcm).max() < 0.55


# ---------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.wav"):
        read_wav(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(WavFormatError, match=r"e\.wav: file is empty"):
        read_wav(tmp_path / "e.wav")


def test_corrupt_header(tmp_path):
    (tmp_path / "c.wav").write_bytes(b"this is not a wav file at all")
    with pytest.raises(WavFormatError, match=r"c\.wav: not a RIFF/WAVE"):
        read_wav(tmp_path / "c.wav")


def test_truncated_files(tmp_path):
    good = tmp_path / "g.wav"
    write_wav(good, np.zeros(100, dtype=np.float32), 16000)
    data = good.read_bytes()
    (tmp_path / "t1.wav").write_bytes(data[:-11])  # data chunk cut short
    with pytest.raises(WavFormatError, match=r"t1\.wav: truncated"):
        read_wav(tmp_path / "t1.wav")
    (tmp_path / "t2.wav").write_bytes(data[:30])  # cut inside the fmt chunk
    with pytest.raises(WavFormatError, match=r"t2\.wav: truncated"):
        read_wav(tmp_path / "t2.wav")
    (tmp_path / "t3.wav").write_bytes(data[:36])  # header only, no data chunk
    with pytest.raises(WavFormatError, match=r"t3\.wav: no 'data' chunk"):
        read_wav(tmp_path / "t3.wav")


def test_unsupported_formats(tmp_path):
    _riff(tmp_path / "adpcm.wav", 2, 1, 16000, 4, b"\x00" * 8)
    msg = r"adpcm\.wav: unsupported WAV format \(format tag 0x0002"
    with pytest.raises(WavFormatError, match=msg):
        read_wav(tmp_path / "adpcm.wav")
    _riff(tmp_path / "f16.wav", 3, 1, 16000, 16, b"\x00" * 8)
    with pytest.raises(WavFormatError, match="unsupported"):
        read_wav(tmp_path / "f16.wav")


def test_nonfinite_float_samples(tmp_path):
    _riff(tmp_path / "nan.wav", 3, 1, 16000, 32, np.array([0.0, np.nan], "<f4").tobytes())
    with pytest.raises(WavFormatError, match=r"nan\.wav: float samples contain NaN"):
        read_wav(tmp_path / "nan.wav")


# ---------------------------------------------------------------------------- conversion
def test_to_float_mono_conversions():
    np.testing.assert_allclose(to_float_mono(np.array([0, 16384, -32768], "<i2").tobytes(), "<i2"),
                               [0.0, 0.5, -1.0])
    np.testing.assert_allclose(to_float_mono(bytes([128, 192, 0]), "u1"), [0.0, 0.5, -1.0])
    b24 = b"".join(v.to_bytes(3, "little", signed=True) for v in (-(2**23), 2**22, -1))
    np.testing.assert_allclose(to_float_mono(b24, "int24"), [-1.0, 0.5, -(2.0**-23)])
    stereo = np.array([[1000, -1000], [32767, 32767]], dtype=np.int16)
    np.testing.assert_allclose(to_float_mono(stereo, channels=2), [0.0, 32767 / 32768], atol=1e-7)
    np.testing.assert_allclose(to_float_mono(stereo.reshape(-1), channels=2),
                               [0.0, 32767 / 32768], atol=1e-7)
    np.testing.assert_allclose(to_mono_float(stereo, 2), [0.0, 32767 / 32768], atol=1e-7)
    with pytest.raises(ValueError, match="dtype is required"):
        to_float_mono(b"\x00\x00")
    with pytest.raises(ValueError, match="multiple"):
        to_float_mono(b"\x00\x00\x00", "<i2")
    with pytest.raises(ValueError, match="channel"):
        to_float_mono(stereo, channels=3)


# ---------------------------------------------------------------------------- resampling
def _tone(f, sr, seconds=0.5):
    return np.sin(2 * np.pi * f * np.arange(int(sr * seconds)) / sr)


def _peak_hz(y, sr):
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return np.argmax(spec) * sr / y.size


@pytest.mark.parametrize(
    "sr_in,sr_out", [(48000, 16000), (44100, 16000), (16000, 48000), (22050, 16000)]
)
def test_resample_preserves_a_sine(sr_in, sr_out):
    x = _tone(440.0, sr_in)
    y = resample(x, sr_in, sr_out)
    assert y.dtype == np.float32 and y.size == -(-x.size * sr_out // sr_in)
    ref = np.sin(2 * np.pi * 440.0 * np.arange(y.size) / sr_out)
    inner = slice(sr_out // 50, y.size - sr_out // 50)  # away from the zero-padded ends
    assert np.abs(y[inner] - ref[inner]).max() < 1e-3  # measured ~3e-5
    assert abs(_peak_hz(y, sr_out) - 440.0) < sr_out / y.size


@pytest.mark.parametrize("sr_in", [48000, 44100])
def test_resample_suppresses_aliasing(sr_in):
    # 11 kHz is above the new 8 kHz Nyquist: naive decimation would fold it to 5 kHz
    y = resample(_tone(11000.0, sr_in), sr_in, 16000)
    inner = y[400:-400]
    atten_db = 20 * np.log10(np.sqrt(np.mean(inner**2)) / np.sqrt(0.5))
    assert atten_db < -60  # measured about -97 dB
    near = resample(_tone(8500.0, sr_in), sr_in, 16000)[400:-400]  # just above the new Nyquist
    assert 20 * np.log10(np.sqrt(np.mean(near**2)) / np.sqrt(0.5)) < -60  # measured about -92 dB
    kept = resample(_tone(6000.0, sr_in), sr_in, 16000)[400:-400]  # passband: flat to ~6.5 kHz
    assert abs(np.sqrt(np.mean(kept**2)) - np.sqrt(0.5)) < 0.005


def test_resample_same_rate_and_errors():
    x = np.linspace(-1, 1, 10)
    np.testing.assert_allclose(resample(x, 16000, 16000), x, atol=1e-7)
    with pytest.raises(ValueError, match="sr_out"):
        resample(x, 16000, 0)
    with pytest.raises(ValueError, match="1-D"):
        resample(np.zeros((2, 2)), 16000, 8000)
    with pytest.raises(TypeError, match="float"):
        resample(np.zeros(4, dtype=np.int16), 16000, 8000)


def _stream(x, sr_in, sr_out, sizes):
    rs = StreamResampler(sr_in, sr_out)
    out, i, k = [], 0, 0
    while i < x.size:
        n = sizes[k % len(sizes)]
        out.append(rs.push(x[i: i + n]))
        i, k = i + n, k + 1
    out.append(rs.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("sizes", [[1], [7], [441], [480, 13, 2000]])
@pytest.mark.parametrize("sr_in,sr_out", [(44100, 16000), (48000, 16000), (16000, 48000)])
def test_stream_resampler_equals_batch(sr_in, sr_out, sizes):
    x = np.random.default_rng(0).standard_normal(sr_in // 40 if sizes == [1] else sr_in // 5)
    np.testing.assert_array_equal(_stream(x, sr_in, sr_out, sizes), resample(x, sr_in, sr_out))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=12))
def test_stream_resampler_any_chunking(sizes):
    x = np.random.default_rng(1).standard_normal(4410)
    np.testing.assert_array_equal(_stream(x, 44100, 16000, sizes), resample(x, 44100, 16000))


def test_stream_resampler_latency_and_state():
    rs = StreamResampler(48000, 16000)
    assert 0 < rs.latency_s <= 0.011  # libsoxr HQ: 10 ms (the polyphase filter before: 2.2 ms)
    first = rs.push(np.zeros(480))  # 10 ms in -> 10 ms out minus the look-ahead
    # no output before its input support: at most 10 ms minus the filter delay (libsoxr holds a
    # little more back while it starts)
    assert first.size <= -(-(480 - round(rs.latency_s * 48000)) // 3)
    rs.flush()
    with pytest.raises(RuntimeError, match="after flush"):
        rs.push(np.zeros(10))
    rs.reset()
    assert rs.push(np.zeros(480)).size == first.size
