"""WAV and video-track audio sources on real media (espeak-ng speech, ffmpeg-muxed mp4)."""
from __future__ import annotations

import shutil

import media
import numpy as np
import pytest

from affedge.features.audio_io import read_wav
from affedge.sdk.sources import (
    AudioChunk,
    SourceError,
    SourceFormatError,
    VideoAudioSource,
    WavSource,
    open_audio,
)

SR = 16000


@pytest.fixture(scope="module")
def av_media(tmp_path_factory):
    d = tmp_path_factory.mktemp("av")
    video = media.make_face_video(d / "face.mp4", seconds=6.0, fps=25.0)
    intervals = media.make_speech_wav(d / "speech.wav", total=6.0)
    out = media.mux(video.path, d / "speech.wav", d / "face_speech.mp4")
    return {
        "dir": d,
        "video": video.path,
        "wav": d / "speech.wav",
        "muxed": out,
        "intervals": intervals,
        "pcm": read_wav(d / "speech.wav")[0],
    }


def collect(src) -> tuple[list[AudioChunk], np.ndarray]:
    chunks = []
    while (c := src.read()) is not None:
        chunks.append(c)
    return chunks, np.concatenate([c.pcm for c in chunks])


def speech_mask(intervals, n_frames, frame_s=0.02, margin=0.06):
    """Frames clearly inside (1) / clearly outside (0) speech; -1 near the edges."""
    t = (np.arange(n_frames) + 0.5) * frame_s
    mask = np.zeros(n_frames, int)
    for a, b in intervals:
        mask[(t > a - margin) & (t < b + margin)] = -1
    for a, b in intervals:
        mask[(t > a + margin) & (t < b - margin)] = 1
    return mask


def test_wav_source_chunks_and_times(av_media):
    with WavSource(av_media["wav"], chunk_ms=20) as src:
        assert src.sample_rate == SR and not src.is_live and src.overruns == 0
        chunks, pcm = collect(src)
    assert all(c.pcm.dtype == np.float32 and c.pcm.ndim == 1 for c in chunks)
    assert all(c.pcm.size == 320 for c in chunks[:-1])
    np.testing.assert_allclose([c.t for c in chunks], np.arange(len(chunks)) * 0.02, atol=1e-9)
    np.testing.assert_array_equal(pcm, av_media["pcm"])  # 16 kHz input passes through exactly


def test_video_audio_track_matches_the_wav(av_media):
    with VideoAudioSource(av_media["muxed"]) as src:
        assert src.sample_rate == SR and src.input_rate == 16000
        chunks, pcm = collect(src)
    t = np.array([c.t for c in chunks])
    assert t[0] == pytest.approx(0.0, abs=0.03)
    np.testing.assert_allclose(np.diff(t), 0.02, atol=1e-6)  # continuous sample clock
    ref_env = media.envelope(av_media["pcm"])
    env = media.envelope(pcm)
    r, lag = media.best_lag_correlation(ref_env, env, max_lag=10)
    assert r > 0.95
    assert abs(lag) <= (0 if shutil.which("ffmpeg") else 4)  # PyAV fallback: AAC priming
    # speech where the espeak phrases were placed, silence elsewhere
    mask = speech_mask(av_media["intervals"], len(env))
    loud = env[mask == 1]
    quiet = env[mask == 0]
    assert np.median(loud) > 0.05
    assert np.percentile(quiet, 95) < 0.05 * np.median(loud)


def test_video_audio_resampled_and_downmixed(av_media):
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs the ffmpeg binary to encode a 44.1 kHz stereo track")
    stereo = av_media["dir"] / "left_only.wav"  # left: the speech, right: silence
    pcm16 = av_media["pcm"]
    media.write_wav(stereo, np.stack([pcm16, np.zeros_like(pcm16)], axis=1), SR, "s16")
    out = media.mux(av_media["video"], stereo, av_media["dir"] / "st44.mp4", rate=44100)
    src = open_audio(str(out))
    assert isinstance(src, VideoAudioSource)
    assert src.input_rate == 44100 and src.channels == 2
    _chunks, pcm = collect(src)
    src.close()
    assert abs(pcm.size - av_media["pcm"].size) < 0.05 * SR
    r, lag = media.best_lag_correlation(media.envelope(av_media["pcm"]), media.envelope(pcm), 10)
    assert r > 0.95 and abs(lag) <= 1
    ratio = np.sqrt(np.mean(pcm**2) / np.mean(av_media["pcm"] ** 2))
    assert 0.4 < ratio < 0.6  # mono = mean of the channels: half the left channel


def test_open_audio_video_uses_the_video_file_track(av_media):
    src = open_audio("video", video_spec=str(av_media["muxed"]))
    assert isinstance(src, VideoAudioSource)
    _, pcm = collect(src)
    src.close()
    assert pcm.size > 5 * SR


def test_video_without_audio_track_is_a_clear_error(av_media):
    with pytest.raises(SourceError, match="no audio track") as e:
        open_audio("video", video_spec=str(av_media["video"]))
    assert "face.mp4" in str(e.value)


def test_open_audio_specs(av_media, tmp_path):
    assert open_audio(None) is None
    assert open_audio("none") is None
    src = open_audio(str(av_media["wav"]))
    assert isinstance(src, WavSource)
    assert open_audio(src) is src
    with pytest.raises(ValueError, match="needs a video file"):
        open_audio("video", video_spec=0)
    with pytest.raises(ValueError, match="needs a video file"):
        open_audio("video")
    with pytest.raises(SourceError, match="not found.*missing.wav"):
        open_audio(str(tmp_path / "missing.wav"))
    with pytest.raises(ValueError, match="unknown audio source"):
        open_audio("microphone-please")
    with pytest.raises(SourceError, match="missing.mp4"):
        VideoAudioSource(tmp_path / "missing.mp4")


def test_corrupt_media_for_audio(tmp_path):
    p = tmp_path / "junk.mp4"
    p.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(SourceError, match="junk.mp4"):
        VideoAudioSource(p)


# ------------------------------------------------------------------ WAV sample formats


@pytest.fixture(scope="module")
def speech16(tmp_path_factory):
    d = tmp_path_factory.mktemp("speech")
    pcm, _intervals = media.speech_signal(d, total=None)
    return pcm[: int(3.2 * SR)]  # first phrase: enough for every format


def _resample_ref(x, sr):
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(sr, SR)
    return resample_poly(x, sr // g, SR // g)


@pytest.mark.parametrize(
    "fmt,rate,channels,extensible",
    [
        ("u8", 16000, 1, False),
        ("s16", 16000, 1, False),
        ("s24", 16000, 1, False),
        ("s32", 16000, 1, False),
        ("f32", 16000, 1, False),
        ("f64", 16000, 1, False),
        ("s16", 16000, 2, False),
        ("s24", 48000, 2, True),
        ("f32", 44100, 1, True),
        ("s16", 48000, 1, False),
        ("s16", 44100, 2, False),
        ("u8", 8000, 1, False),
    ],
)
def test_wav_formats_all_give_16k_mono(tmp_path, speech16, fmt, rate, channels, extensible):
    x = _resample_ref(speech16, rate) if rate != SR else speech16  # speech at the file's rate
    data = np.stack([x, np.zeros_like(x)], axis=1) if channels == 2 else x  # right channel silent
    path = tmp_path / f"speech_{fmt}_{rate}_{channels}.wav"
    media.write_wav(path, data, rate, fmt, extensible=extensible)
    with WavSource(path) as src:
        assert src.input_rate == rate
        chunks, pcm = collect(src)
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    assert abs(pcm.size - speech16.size) <= 2 + SR // rate
    expected = speech16 * (0.5 if channels == 2 else 1.0)  # mono = mean of the channels
    n = min(pcm.size, expected.size)
    err = pcm[:n] - expected[:n]
    snr = 10 * np.log10(np.sum(expected[:n] ** 2) / max(np.sum(err**2), 1e-20))
    # 8-bit quantisation bounds the SNR; resampling loses the speech above the filter's cut-off
    # (0.94 x 8 kHz); 8 kHz files lose everything above 4 kHz
    min_snr = 15 if rate == 8000 else (25 if fmt == "u8" else (30 if rate != SR else 60))
    assert snr > min_snr, f"{fmt} {rate} Hz x{channels}: SNR {snr:.1f} dB"
    np.testing.assert_allclose([c.t for c in chunks], np.arange(len(chunks)) * 0.02, atol=1e-9)


def test_unsupported_wav_format_is_a_clear_error(tmp_path):
    p = tmp_path / "alaw.wav"
    media.write_wav(p, np.zeros(1600), 8000, "alaw")
    with pytest.raises(SourceFormatError, match="alaw.wav") as e:
        WavSource(p)
    assert isinstance(e.value, ValueError)


def test_corrupt_wav_is_a_clear_error(tmp_path):
    p = tmp_path / "broken.wav"
    p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    with pytest.raises(SourceFormatError, match="broken.wav"):
        WavSource(p)
