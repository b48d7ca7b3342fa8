"""Bad input at the public runtime API: every case gets a clear exception naming the problem, or,
where the stream can go on, a Prediction that flags it (``audio_present`` / ``face_present``).

Real pieces only: the exported bundle of ``test_engine`` (ONNX Runtime CPU), real media written
by ``tests/media.py`` (OpenCV video of a real face photo, espeak-ng speech WAVs in many sample
formats), a real MJPEG-over-HTTP server on 127.0.0.1 that the test stops mid-run.
A rejected call must leave the stream untouched: the predictions that follow equal those of a
run that never saw the bad call.
"""
from __future__ import annotations

import re
import struct
import threading
import time
import warnings

import cv2
import numpy as np
import pytest

import media
from test_engine import FPS, bundle_dir, media_dir  # noqa: F401  (shared session fixtures)

SR = 16000


def _rec(bundle, **kw):
    from affedge.sdk.recognizer import Recognizer

    return Recognizer(bundle, backend="onnxruntime", **kw)


@pytest.fixture(scope="module")
def frames():
    """Small frames with the face photo large enough for Haar on every frame."""
    face = cv2.resize(media.face_photo_bgr(), (80, 90), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(12):
        img = np.full((120, 160, 3), (90, 110, 120), np.uint8)
        x, y = 30 + 3 * i, 12 + (i % 3)
        img[y:y + 90, x:x + 80] = face
        out.append(img)
    return out


def _va(preds):
    return np.array([(p.valence, p.arousal) for p in preds])


# ------------------------------------------------------------------------------ video files
def test_corrupt_or_truncated_video_files(bundle_dir, media_dir, tmp_path):  # noqa: F811
    from affedge.sdk.sources import SourceError

    good = (media_dir / "face.mp4").read_bytes()
    contents = {
        "random": np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes(),
        "zeros": b"\0" * 4096,
        "empty": b"",
        "truncated": good[: len(good) // 2],  # mp4v puts the moov index at the end
        "header_only": good[:64],
    }
    with _rec(bundle_dir) as rec:
        for kind, content in contents.items():
            p = tmp_path / f"{kind}.mp4"
            p.write_bytes(content)
            with pytest.raises(SourceError, match=f"{kind}.mp4"):
                list(rec.run(str(p)))
        assert rec.emitted == 0
        # the recognizer survives the refused sources
        assert rec.push_frame(np.zeros((48, 64, 3), np.uint8), t=0.0).frame == 0


def test_one_frame_and_zero_frame_videos(bundle_dir, tmp_path):  # noqa: F811
    from affedge.sdk.sources import SourceError

    one = media.make_face_video(tmp_path / "one.mp4", seconds=1 / FPS, fps=FPS)
    assert one.n_frames == 1
    with _rec(bundle_dir) as rec:
        preds = list(rec.run(str(one.path)))
    assert [p.frame for p in preds] == [0]
    assert np.isfinite(_va(preds)).all()
    w = cv2.VideoWriter(str(tmp_path / "zero.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (64, 48))
    w.release()  # a container with no frame
    if (tmp_path / "zero.mp4").exists():
        with _rec(bundle_dir) as rec:
            with pytest.raises(SourceError, match="zero.mp4"):
                list(rec.run(str(tmp_path / "zero.mp4")))


# ------------------------------------------------------------------------------- WAV files
def _bad_wav(kind: str, good: bytes, p) -> None:
    if kind == "random":
        p.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, np.uint8).tobytes())
    elif kind == "truncated_data":
        p.write_bytes(good[: len(good) // 3])
    elif kind == "no_fmt":
        p.write_bytes(b"RIFF" + good[4:12] + b"data" + good[40:44] + good[44:2000])
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "alaw":
        media.write_wav(p, np.zeros(1600), SR, "alaw")
    elif kind in ("f32_nan", "f64_beyond_f32"):  # IEEE float WAVs with unusable samples
        x = np.zeros(1600)
        x[800] = np.nan if kind == "f32_nan" else 1e300
        bits = 32 if kind == "f32_nan" else 64
        data = x.astype("<f4" if bits == 32 else "<f8").tobytes()
        fmt = struct.pack("<HHIIHH", 3, 1, SR, SR * bits // 8, bits // 8, bits)
        body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + \
            struct.pack("<I", len(data)) + data
        p.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    else:  # a 16-bit file whose data chunk ends mid-sample
        data = bytearray(good[:44]) + good[44:1045]
        data[40:44] = (1001).to_bytes(4, "little")
        p.write_bytes(bytes(data))


def test_corrupt_wavs_are_clear_errors(bundle_dir, media_dir, tmp_path):  # noqa: F811
    from affedge.sdk.sources import SourceError

    good = (media_dir / "speech.wav").read_bytes()
    with _rec(bundle_dir) as rec:
        for kind in ("random", "truncated_data", "no_fmt", "empty", "alaw", "odd_bytes",
                     "f32_nan", "f64_beyond_f32"):
            p = tmp_path / f"{kind}.wav"
            _bad_wav(kind, good, p)
            with pytest.raises(SourceError, match=f"{kind}.wav"):
                list(rec.run(str(media_dir / "face.mp4"), audio=str(p)))
        assert rec.emitted == 0


@pytest.mark.parametrize("n_samples", [0, 1, 300])
def test_zero_and_too_short_wav_flags_missing_audio(bundle_dir, media_dir, tmp_path,  # noqa: F811
                                                     n_samples):
    """A valid WAV with no (or less than one 25 ms window of) audio: the stream goes on and every
    Prediction says ``audio_present=False``."""
    p = tmp_path / "short.wav"
    media.write_wav(p, np.full(n_samples, 0.1), SR, "s16")
    with _rec(bundle_dir) as rec:
        preds = list(rec.run(str(media_dir / "face.mp4"), audio=str(p), max_frames=6))
    assert len(preds) == 6
    assert not any(pr.audio_present for pr in preds)
    assert np.isfinite(_va(preds)).all()


_DECODE = {  # what a WAV written by media.write_wav holds, decoded independently of affedge
    "u8": lambda x: (np.round(x * 127 + 128) - 128) / 128,
    "s16": lambda x: np.round(x * 32767) / 32768,
    "s24": lambda x: np.round(x * (2**23 - 1)) / 2**23,
    "f32": lambda x: x.astype(np.float32),
    "f64": lambda x: x,
}


@pytest.mark.parametrize("fmt,rate,channels", [("u8", 16000, 1), ("s16", 44100, 2),
                                               ("f32", 48000, 2), ("s24", 8000, 1),
                                               ("f64", 16000, 3)])
def test_wav_formats_rates_and_channels_through_run(bundle_dir, media_dir, tmp_path,  # noqa: F811
                                                    fmt, rate, channels):
    """8-bit, 24-bit, float, stereo/3-channel WAVs at 8-48 kHz: ``run`` gives exactly the
    predictions of pushing the (independently decoded) samples with their sample rate."""
    from affedge.features.audio_io import read_wav
    from test_engine import read_frames

    pcm16, _ = read_wav(media_dir / "speech.wav")
    x = pcm16[int(0.7 * SR):]  # speech starts 0.1 s in
    x = np.asarray(x if rate == SR else _resample_ref(x, rate), np.float64)
    p = tmp_path / f"s_{fmt}_{rate}_{channels}.wav"
    media.write_wav(p, np.repeat(x[:, None], channels, axis=1), rate, fmt)
    n = 12
    with _rec(bundle_dir) as rec:
        got = list(rec.run(str(media_dir / "face.mp4"), audio=str(p), max_frames=n))
    video = read_frames(media_dir / "face.mp4")[:n]
    with _rec(bundle_dir) as rec:
        rec.push_audio(_DECODE[fmt](np.clip(x, -1, 1)).astype(np.float32), t=0.0,
                       sample_rate=rate)
        rec.engine.audio.flush()
        ref = [rec.push_frame(f, t=i / FPS) for i, f in enumerate(video)]
    assert all(pr.audio_present for pr in got[2:])
    # measured 2026-11-30: max |diff| 0.0 in every case (the same samples reach the same code)
    np.testing.assert_array_equal(_va(got), _va(ref))


def _resample_ref(x, rate):
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(SR, rate)
    return resample_poly(x, rate // g, SR // g).astype(np.float32)


# ----------------------------------------------------------------------------- push API: audio
BAD_PCM = [
    (np.zeros((1600, 2), np.float32), SR, ValueError, "1-D mono"),           # stereo array
    (np.full(160, np.nan, np.float32), SR, ValueError, "NaN or Inf"),
    (np.r_[np.zeros(100), np.inf], SR, ValueError, "NaN or Inf"),
    (np.full(160, 1e300), SR, ValueError, "NaN or Inf"),                      # overflows float32
    (np.zeros(160, bool), SR, ValueError, "dtype"),
    (np.zeros(160, np.complex64), SR, ValueError, "dtype"),
    (np.array(["x"] * 10, object), SR, ValueError, "dtype"),
    (np.zeros(160, np.int64), SR, TypeError, "int64"),                        # no known scale
    (np.full(160, 20000.0, np.float32), SR, ValueError, r"\[-1, 1\]"),       # int16 as float
    (np.zeros(160, np.float32), 0, ValueError, "sample_rate"),
    (np.zeros(160, np.float32), -8000, ValueError, "sample_rate"),
    (np.zeros(160, np.float32), 16000.7, ValueError, "integer"),       # not truncated to 16000
    (np.zeros(160, np.float32), float("nan"), ValueError, "integer"),
    (np.zeros(160, np.float32), 1, ValueError, "sample_rate"),         # below 1 kHz
    (np.zeros(160, np.float32), 10**9, ValueError, "sample_rate"),     # above 384 kHz
    (np.zeros(160, np.float32), "16000", TypeError, "sample_rate"),
]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_bad_pcm_is_refused_and_stream_continues(bundle_dir, frames):  # noqa: F811
    """Each bad chunk is refused naming the problem; the stream that saw them all predicts
    exactly like the one that never did."""
    speech = np.sin(2 * np.pi * 220 * np.arange(SR) / SR).astype(np.float32) * 0.3
    with _rec(bundle_dir) as clean, _rec(bundle_dir) as rec:
        for r in (clean, rec):
            r.push_audio(speech[:8000], t=0.0)
        for pcm, sample_rate, err, match in BAD_PCM:
            with pytest.raises(err, match=match):
                rec.push_audio(pcm, t=0.5, sample_rate=sample_rate)
        for r in (clean, rec):
            r.push_audio(speech[8000:], t=0.5)
        a = [clean.push_frame(f, t=0.1 + i / FPS) for i, f in enumerate(frames[:6])]
        b = [rec.push_frame(f, t=0.1 + i / FPS) for i, f in enumerate(frames[:6])]
    np.testing.assert_array_equal(_va(a), _va(b))
    assert all(p.audio_present for p in b)


@pytest.mark.parametrize("dtypes", [(np.uint8, np.int8, np.int16, np.uint16),
                                    (np.int32, np.float16, np.float64)])
def test_integer_and_float_sample_formats(bundle_dir, frames, dtypes):  # noqa: F811
    """8/16/32-bit integer and 16/64-bit float PCM give exactly the predictions of the same
    sample values as float32 (integers scale by 2^(bits-1); unsigned types are offset binary:
    8-bit by 128, 16-bit by 32768)."""
    for dtype in dtypes:
        _check_sample_format(bundle_dir, frames, dtype)


def _check_sample_format(bundle_dir, frames, dtype):  # noqa: F811
    x = np.sin(2 * np.pi * 300 * np.arange(SR) / SR) * 0.4
    if np.issubdtype(dtype, np.unsignedinteger):
        half = float(np.iinfo(dtype).max // 2 + 1)
        raw = np.round(x * (half - 1) + half).astype(dtype)
        ref_pcm = (raw.astype(np.float64) - half) / half
    elif np.issubdtype(dtype, np.integer):
        full = float(np.iinfo(dtype).max) + 1
        raw = np.round(x * (full - 1)).astype(dtype)
        ref_pcm = raw.astype(np.float64) / full
    else:
        raw = x.astype(dtype)
        ref_pcm = raw.astype(np.float64)
    with _rec(bundle_dir) as ref, _rec(bundle_dir) as rec:
        ref.push_audio(ref_pcm.astype(np.float32), t=0.0)
        rec.push_audio(raw, t=0.0)
        a = [ref.push_frame(f, t=0.2 + i / FPS) for i, f in enumerate(frames[:3])]
        b = [rec.push_frame(f, t=0.2 + i / FPS) for i, f in enumerate(frames[:3])]
    assert all(p.audio_present for p in b), dtype
    # "exactly": measured max |diff| 0.0 for every dtype (2026-11-30)
    np.testing.assert_array_equal(_va(a), _va(b), err_msg=str(dtype))


def test_wrong_sample_rate_is_resampled(bundle_dir, frames):  # noqa: F811
    """48 kHz and 8 kHz PCM pushed with their rate give (nearly) the 16 kHz result."""
    x16 = (np.sin(2 * np.pi * 300 * np.arange(SR) / SR) * 0.4).astype(np.float32)
    import warnings

    outs, warned = {}, {}
    for rate in (SR, 48000, 8000):
        x = x16 if rate == SR else _resample_ref(x16, rate)
        with _rec(bundle_dir) as rec, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for k in range(0, len(x), rate // 50):  # 20 ms chunks, contiguous timestamps
                rec.push_audio(x[k:k + rate // 50], t=k / rate, sample_rate=rate)
            outs[rate] = [rec.push_frame(f, t=0.3 + i / FPS) for i, f in enumerate(frames[:4])]
        warned[rate] = [str(w.message) for w in caught if "holds nothing above" in str(w.message)]
    # narrow-band audio is said once (a trial: 8 kHz speech halved the demo's valence CCC)
    assert warned[SR] == warned[48000] == [] and len(warned[8000]) == 1
    assert "audio at 8000 Hz holds nothing above 4 kHz" in warned[8000][0]
    assert all(p.audio_present for ps in outs.values() for p in ps)
    # measured 2026-11-30 (2-core x86 CPU): 48 kHz 8.0e-6, 8 kHz 1.7e-5 (the 300 Hz tone lies
    # well inside both bands); bounds ~12x the measurement
    assert np.abs(_va(outs[48000]) - _va(outs[SR])).max() < 1e-4
    assert np.abs(_va(outs[8000]) - _va(outs[SR])).max() < 2e-4


def test_silent_and_extreme_but_finite_audio_give_finite_predictions(bundle_dir, frames):  # noqa: F811
    for pcm in (np.zeros(SR, np.float32), np.full(SR, 4.0, np.float32),
                np.tile(np.float32([1, -1]), SR // 2)):
        with _rec(bundle_dir) as rec:
            rec.push_audio(pcm, t=0.0)
            preds = [rec.push_frame(f, t=0.5 + i / FPS) for i, f in enumerate(frames[:3])]
        assert np.isfinite(_va(preds)).all()
        assert all(p.audio_present and 0 <= p.confidence <= 1 for p in preds)


def test_audio_timestamps_jumping_back_or_forward(bundle_dir, frames):  # noqa: F811
    """Audio stays on the caller's clock: a chunk stamped earlier than the end of the audio
    already pushed loses the part that time already has (counted in
    ``stats()["audio_overlaps"]``, one RuntimeWarning); a chunk stamped later leaves a gap that
    is filled with silence and counted (``stats()["audio_gaps_filled"]``)."""
    x = np.zeros(SR // 2, np.float32)
    with _rec(bundle_dir) as rec:
        rec.push_audio(x, t=0.0)
        with pytest.warns(RuntimeWarning, match="0.400 s before the end"):
            rec.push_audio(x, t=0.1)  # back in time: 0.1-0.5 s is already here
        assert rec.engine.audio.time == pytest.approx(0.6)
        assert rec.stats()["audio_overlaps"] == 1
        rec.push_audio(x, t=0.0)  # wholly in the past: dropped
        assert rec.engine.audio.time == pytest.approx(0.6)
        assert rec.stats()["audio_overlaps"] == 2
        rec.push_audio(x, t=0.62)  # 20 ms late: clock jitter, continues the timeline
        assert rec.engine.audio.time == pytest.approx(1.1)
        rec.push_audio(x, t=1.08)  # 20 ms early: jitter as well
        assert rec.engine.audio.time == pytest.approx(1.6)
        assert rec.stats()["audio_overlaps"] == 2 and rec.stats()["audio_gaps_filled"] == 0
        rec.push_audio(x, t=3.6)  # 2 s gap
        assert rec.stats()["audio_gaps_filled"] == 1
        assert rec.engine.audio.time == pytest.approx(4.1)
        p = rec.push_frame(frames[0], t=3.8)
        assert p.audio_present and np.isfinite(p.valence)
        assert rec.stats()["audio_overruns"] == 0


def test_audio_at_44k_pushed_as_16k_points_to_the_sample_rate(bundle_dir):  # noqa: F811
    """Found by a new-user trial: 44.1 kHz chunks pushed without ``sample_rate=`` (read as
    16 kHz, so each lasts 2.76x its stamps) warned only about overlapping chunks."""
    chunk = np.zeros(4410, np.int16)  # 100 ms at 44.1 kHz, stamped 100 ms apart
    with _rec(bundle_dir) as rec:
        with pytest.warns(RuntimeWarning, match=r"check push_audio's sample_rate: at 16000 Hz "
                                                r"this chunk lasts longer"):
            for k in range(3):
                rec.push_audio(chunk, t=0.1 * k)
        assert rec.stats()["audio_overlaps"] == 2


def test_audio_stated_faster_than_it_is_points_to_the_sample_rate(bundle_dir):  # noqa: F811
    """A QA trial: 16 kHz chunks pushed with ``sample_rate=48000`` (each spans a third of its
    stamps) were padded with silence between chunks, 109 gaps in 11 s, with no warning. Five
    chunks of 16 with silence filled in now warn once, with the rate the chunks look like;
    real gaps now and then, with the rate stated right, do not."""
    import warnings

    chunk = (np.sin(np.arange(533) / 5.0) * 8000).astype(np.int16)  # 1/30 s at 16 kHz
    with _rec(bundle_dir) as rec:
        with pytest.warns(RuntimeWarning, match=r"check push_audio's sample_rate: at 48000 Hz "
                                                r"these chunks span 0.17 s of their stamps' "
                                                r"0.50 s, as audio at about 15990 Hz would"
                                                ) as got:
            for k in range(30):
                rec.push_audio(chunk, t=k / 30.0, sample_rate=48000)
        assert len([w for w in got if "sample_rate" in str(w.message)]) == 1
        assert rec.stats()["audio_gaps_filled"] >= 5
    with _rec(bundle_dir) as rec, warnings.catch_warnings():
        warnings.simplefilter("error")
        for k in range(60):  # stated right, with a real 0.5 s gap every 6th chunk
            rec.push_audio(chunk, t=k / 30.0 + 0.5 * (k // 6), sample_rate=16000)
        assert rec.stats()["audio_gaps_filled"] == 9


OVERRUN_BUG = (
    "engine bug (reported): after the PCM ring overruns, feature rows are timed by the count of "
    "samples consumed, not by the surviving blocks' timestamps, so audio features lag the video "
    "clock by the lost duration for the rest of the stream (audio_present stays False)")


def test_audio_overrun_is_counted_and_stream_continues(bundle_dir, frames):  # noqa: F811
    """A producer that runs far ahead of the inference ticks overruns the PCM ring: the loss is
    counted in stats()["audio_overruns"], never silent, and the stream goes on."""
    with _rec(bundle_dir, audio_capacity_s=1.0) as rec:
        rec.push_audio(np.zeros(4 * SR, np.float32), t=0.0)  # 4 s into a 1 s ring
        assert rec.stats()["audio_overruns"] > 0
        p = rec.push_frame(frames[0], t=3.9)
        assert np.isfinite(p.valence)
        for k in range(4):  # the consumer keeps up again: audio must be present again
            rec.push_audio(np.zeros(SR // 2, np.float32), t=4.0 + 0.5 * k)
            p = rec.push_frame(frames[1 + k], t=4.4 + 0.5 * k)
        assert p.audio_present


def test_overrun_mid_stream_restarts_features_on_the_video_clock(bundle_dir, frames):  # noqa: F811
    """An overrun after audio already flowed: the surviving blocks are a discontinuity; the
    features restart at their timestamp, so afterwards the audio features at each frame equal
    those of a stream that only ever received the surviving audio."""
    rng = np.random.default_rng(3)
    tone = (np.sin(2 * np.pi * 300 * np.arange(6 * SR) / SR) * 0.3
            + 0.01 * rng.standard_normal(6 * SR)).astype(np.float32)
    with _rec(bundle_dir, audio_capacity_s=1.0) as rec, \
            _rec(bundle_dir, audio_capacity_s=1.0) as ref:
        rec.push_audio(tone[:SR], t=0.0)
        assert rec.push_frame(frames[0], t=0.9).audio_present
        rec.push_audio(tone[SR:5 * SR], t=1.0)  # 4 s into a 1 s ring: ~3 s lost
        assert rec.stats()["audio_overruns"] > 0
        # the surviving audio: the ring's newest 1 s (whole blocks), stamped on the video clock
        ts, _ = rec.engine.audio._pcm_ring.window(rec.engine.audio._pcm_ring.capacity)
        start = float(ts[0])
        k = round(start * SR)
        ref.push_audio(tone[k:5 * SR], t=start)
        ref.push_frame(frames[0], t=0.9)
        for j, t in enumerate([4.5, 4.8, 4.95]):
            p = rec.push_frame(frames[1 + j], t=t)
            q = ref.push_frame(frames[1 + j], t=t)
            assert p.audio_present and q.audio_present
            fa, _, _ = rec.engine.audio.at(t)
            fb, _, _ = ref.engine.audio.at(t)
            for s in fa:  # measured max |diff| 0.0 (2026-11-30): the same rows
                np.testing.assert_array_equal(fa[s], fb[s])
        assert rec.stats()["audio_discontinuities"] == 1


def test_long_gap_restarts_the_audio_timeline_without_allocating_it(bundle_dir, frames):  # noqa: F811
    """A day-long gap in audio timestamps is not filled (it would be 1.4e9 samples): the
    timeline restarts at the new chunk; it is counted, and audio is present again at once."""
    with _rec(bundle_dir) as rec:
        rec.push_audio(np.zeros(SR // 2, np.float32), t=0.0)
        rec.push_frame(frames[0], t=0.4)
        rec.push_audio(np.zeros(SR // 2, np.float32), t=86400.0)
        assert rec.engine.audio.time == pytest.approx(86400.5)
        assert rec.stats()["audio_gaps_filled"] == 1
        p = rec.push_frame(frames[1], t=86400.3)
        assert p.audio_present and np.isfinite(p.valence)
        assert rec.stats()["audio_overruns"] == 0


# ----------------------------------------------------------------------------- push API: frames
BAD_FRAMES = [
    # the error names the problem and, for common layouts, the conversion that fixes it
    (np.zeros((120, 160), np.uint8), "BGR uint8.*COLOR_GRAY2BGR"),          # grayscale
    (np.zeros((120, 160, 1), np.uint8), "BGR uint8.*COLOR_GRAY2BGR"),
    (np.zeros((120, 160, 4), np.uint8), "BGR uint8.*COLOR_BGRA2BGR"),       # BGRA
    (np.zeros((120, 160, 3), np.float32), "float32.*scale to 0-255"),
    (np.zeros((120, 160, 3), np.uint16), "uint16.*>> 8"),
    (np.zeros((120, 160, 3), np.int8), r"int8.*frame\.view\(np\.uint8\)"),  # a new user's
    (np.zeros((120, 160, 3), bool), "bool"),
    (np.zeros((3, 120, 160), np.uint8), r"channels first.*transpose\(1, 2, 0\)"),  # a trial's
    ([[0, 0, 0]], "BGR uint8"),
    (None, "BGR uint8"),
]
BAD_TIMES = [(0.12, "increase"), (0.08, "increase"), (-1.0, "increase"),
             (float("nan"), "finite"), (float("inf"), "finite")]


def test_bad_frames_and_timestamps_are_refused_without_touching_the_stream(bundle_dir,  # noqa: F811
                                                                           frames):
    """Grayscale, BGRA, float/uint16/bool, empty and non-array frames; a timestamp that stalls
    (0.12 was already seen), jumps back (0.08, -1) or is not finite: each is refused naming the
    problem, and the stream goes on exactly as if it never happened."""
    with _rec(bundle_dir) as clean, _rec(bundle_dir) as rec:
        a = [clean.push_frame(f, t=i * 0.04) for i, f in enumerate(frames[:6])]
        b = []
        for i, f in enumerate(frames[:6]):
            if i == 2:
                for frame, match in BAD_FRAMES:
                    with pytest.raises(ValueError, match=match):
                        rec.push_frame(frame, t=i * 0.04)
            if i == 4:
                for bad_t, match in BAD_TIMES:
                    with pytest.raises(ValueError, match=match):
                        rec.push_frame(frames[3], t=bad_t)
            b.append(rec.push_frame(f, t=i * 0.04))
    np.testing.assert_array_equal(_va(a), _va(b))
    assert [p.frame for p in b] == list(range(6))


def test_empty_frame_is_refused_without_touching_the_stream(bundle_dir, frames):  # noqa: F811
    with _rec(bundle_dir) as clean, _rec(bundle_dir) as rec:
        a = [clean.push_frame(f, t=i * 0.04) for i, f in enumerate(frames[:6])]
        b = []
        for i, f in enumerate(frames[:6]):
            if i == 2:
                with pytest.raises(ValueError, match="empty"):
                    rec.push_frame(np.zeros((0, 0, 3), np.uint8), t=i * 0.04)
            b.append(rec.push_frame(f, t=i * 0.04))
    np.testing.assert_array_equal(_va(a), _va(b))


def test_tiny_and_odd_frame_sizes_give_flagged_predictions(bundle_dir):  # noqa: F811
    preds = []
    with _rec(bundle_dir) as rec:
        for k, shape in enumerate([(1, 1, 3), (7, 5, 3), (33, 17, 3), (2, 1000, 3)]):
            img = np.random.default_rng(k).integers(0, 256, shape, np.uint8)
            preds.append(rec.push_frame(img, t=0.08 * k))
            preds.append(rec.push_frame(np.ascontiguousarray(img[::-1, ::-1]), t=0.08 * k + 0.04))
    for x in preds:
        assert not x.face_present and x.face_box is None
        assert np.isfinite([x.valence, x.arousal]).all() and x.confidence == 0.0


def test_non_contiguous_frame_view_equals_its_copy(bundle_dir, frames):  # noqa: F811
    view = [f[:, ::-1] for f in frames[:4]]  # negative strides
    with _rec(bundle_dir) as a, _rec(bundle_dir) as b:
        pa = [a.push_frame(v, t=i / FPS) for i, v in enumerate(view)]
        pb = [b.push_frame(np.ascontiguousarray(v), t=i / FPS) for i, v in enumerate(view)]
    np.testing.assert_array_equal(_va(pa), _va(pb))
    assert all(p.face_present for p in pa)


def test_a_long_pause_marks_audio_missing_then_recovers(bundle_dir, frames):  # noqa: F811
    with _rec(bundle_dir) as rec:
        rec.push_audio(np.zeros(SR, np.float32), t=0.0)
        assert rec.push_frame(frames[0], t=0.5).audio_present
        p = rec.push_frame(frames[1], t=3600.0)  # an hour later, no audio since
        assert not p.audio_present and np.isfinite(p.valence)
        rec.push_audio(np.zeros(SR // 2, np.float32), t=3600.0)
        assert rec.push_frame(frames[2], t=3600.4).audio_present


# ------------------------------------------------------------------- camera that disappears
def test_camera_disappearing_mid_run_raises_and_cleans_up(bundle_dir, frames):  # noqa: F811
    from affedge.sdk.sources import SourceError, VideoSource

    base = threading.active_count()
    server = media.MjpegServer(frames, fps=25.0).start()
    got = []
    try:
        with _rec(bundle_dir) as rec:
            cam = VideoSource(server.url, reconnect=0, timeout=3.0)
            with pytest.raises(SourceError, match="127.0.0.1"):
                for p in rec.run(cam):
                    got.append(p)
                    if len(got) == 8:
                        server.stop()  # the camera goes away
            assert cam._closed  # run() released the device on the way out
            # predictions delivered before the loss are intact and ordered
            assert len(got) >= 8
            assert [p.frame for p in got] == list(range(got[0].frame, got[0].frame + len(got)))
            # the recognizer still works with another source afterwards
            assert rec.push_frame(frames[0], t=time.monotonic() + 1.0) is not None
    finally:
        server.stop()
    deadline = time.monotonic() + 10
    while threading.active_count() > base and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == base, [t.name for t in threading.enumerate()]


# ------------------------------------------------------------------------ long-running clocks
@pytest.mark.parametrize("t0", [3.0e6, 1.7e9])  # 35 days of uptime; a Unix-epoch wall clock
def test_large_clock_offsets_give_identical_predictions(bundle_dir, frames, t0):  # noqa: F811
    """A kiosk's clock after days of uptime (time.monotonic()) or an epoch wall clock: the same
    stream shifted by ``t0`` seconds gives the same predictions and the same audio alignment as
    one starting at 0 (no float32 time anywhere, no rounding flip in "previous" look-ups)."""
    n = len(frames)
    rng = np.random.default_rng(3)
    k = np.arange(int(SR * (n / FPS + 0.5)))
    pcm = (0.3 * np.sin(2 * np.pi * 180 * k / SR) * (1 + np.sin(2 * np.pi * 3 * k / SR))
           + 0.01 * rng.standard_normal(k.size)).astype(np.float32)
    chunk = SR // 50  # 20 ms, pushed just ahead of the frames like a live microphone

    def stream(offset):
        out = []
        with _rec(bundle_dir) as rec:
            pushed = 0
            for i, f in enumerate(frames):
                while pushed < min(k.size, int((i / FPS + 0.1) * SR)):
                    rec.push_audio(pcm[pushed:pushed + chunk], t=offset + pushed / SR,
                                   sample_rate=SR)
                    pushed += chunk
                out.append(rec.push_frame(f, t=offset + i / FPS))
            stats = rec.stats()
        return out, stats

    ref, ref_stats = stream(0.0)
    got, stats = stream(t0)
    assert [p.audio_present for p in got] == [p.audio_present for p in ref]
    assert [p.speech_present for p in got] == [p.speech_present for p in ref]
    assert sum(p.audio_present for p in ref) >= n - 1
    np.testing.assert_array_equal(_va(got), _va(ref))  # measured max |diff| 0.0 (2026-11-30)
    # timestamps: t0 + t rounds at t0's float64 resolution; measured 1.1e-7 at 1.7e9 s, bound 9x
    np.testing.assert_allclose([p.timestamp - t0 for p in got], [p.timestamp for p in ref],
                               atol=1e-6)
    assert stats["audio_gaps_filled"] == ref_stats["audio_gaps_filled"] == 0
    assert stats["audio_discontinuities"] == ref_stats["audio_discontinuities"] == 0


@pytest.mark.parametrize("case", ["overlap", "duplicate", "late"])
def test_resent_or_late_audio_chunks_keep_the_clean_stream(bundle_dir, frames, case):  # noqa: F811
    """Chunks that repeat audio already pushed (an overlapping resend, an exact duplicate) give
    exactly the predictions of the clean stream; a chunk that arrives after later audio is
    dropped, and what follows stays on the caller's clock."""
    rng = np.random.default_rng(3)
    x = (0.3 * np.sin(2 * np.pi * 180 * np.arange(2 * SR) / SR)
         * (1 + 0.5 * rng.standard_normal(2 * SR))).astype(np.float32)
    times = [0.3 + i / FPS for i in range(len(frames))] + [1.5, 1.8, 1.95]
    imgs = list(frames) + list(frames[:3])
    with _rec(bundle_dir) as ref, _rec(bundle_dir) as rec:
        ref.push_audio(x[:SR], t=0.0)
        ref.push_audio(x[SR:], t=1.0)
        want = [ref.push_frame(f, t=t) for f, t in zip(imgs, times)]
        with pytest.warns(RuntimeWarning, match="before the end of the audio"):
            if case == "overlap":
                rec.push_audio(x[:SR], t=0.0)
                rec.push_audio(x[SR // 2:], t=0.5)
            elif case == "duplicate":
                rec.push_audio(x[:SR], t=0.0)
                rec.push_audio(x[:SR], t=0.0)
                rec.push_audio(x[SR:], t=1.0)
            else:  # the 1-2 s chunk first, then the late 0-1 s one
                rec.push_audio(x[:SR // 2], t=0.0)
                rec.push_audio(x[SR:], t=1.0)  # 0.5-1 s becomes silence (a counted gap)
                rec.push_audio(x[SR // 2:SR], t=0.5)  # late: wholly in the past
        got = [rec.push_frame(f, t=t) for f, t in zip(imgs, times)]
        assert rec.stats()["audio_overlaps"] == 1
        assert rec.engine.audio.time == pytest.approx(2.0)
    if case == "late":
        # after 1 s both streams hold the same audio at the same times; the model's receptive
        # field (121 frames) still remembers the silent 0.5-1 s, so compare the speech flags
        assert [p.speech_present for p in got[-3:]] == [p.speech_present for p in want[-3:]]
        # the frames whose audio is the silence that filled the gap have none; the others do
        assert [p.audio_present for p in got] == [not 0.5 < t < 1.0 for t in times]
    else:
        np.testing.assert_array_equal(_va(got), _va(want))


def test_audio_and_frames_on_two_clocks_are_flagged(bundle_dir, frames):  # noqa: F811
    """Audio stamped from 0 (media time) and frames stamped with a monotonic clock never meet:
    every frame is without audio. That used to be silent; now each such frame is counted and
    one RuntimeWarning says why. Frames on the audio's clock draw nothing, and a stream whose
    frames once had audio is not flagged when its audio stops (a microphone unplugged)."""
    x = (0.3 * np.sin(2 * np.pi * 180 * np.arange(2 * SR) / SR)).astype(np.float32)
    with _rec(bundle_dir) as rec:
        rec.push_audio(x, t=0.0)
        with pytest.warns(RuntimeWarning, match="different clocks.*t=5000.000"):
            got = [rec.push_frame(f, t=5000.0 + i / FPS) for i, f in enumerate(frames)]
        assert not any(p.audio_present for p in got)
        assert rec.stats()["audio_clock_mismatch"] == len(frames)
    with _rec(bundle_dir) as rec, warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all on one clock
        rec.push_audio(x, t=0.0)
        got = [rec.push_frame(f, t=0.5 + i / FPS) for i, f in enumerate(frames)]
        assert all(p.audio_present for p in got)
        late = rec.push_frame(frames[0], t=100.0)  # the audio stopped long ago
        assert not late.audio_present and rec.stats()["audio_clock_mismatch"] == 0


def test_frame_times_in_milliseconds_draw_a_warning(bundle_dir, frames):  # noqa: F811
    """Frames stamped in milliseconds (OpenCV's CAP_PROP_POS_MSEC) advance by 33 "seconds" per
    frame: the stream's first frames say so once; frames stamped in seconds draw nothing."""
    with _rec(bundle_dir) as rec:
        with pytest.warns(RuntimeWarning, match=r"advance by 33\.3+ s per frame.*milliseconds"):
            for i in range(12):
                rec.push_frame(frames[i % len(frames)], t=i * 1000.0 / 30)
    with _rec(bundle_dir) as rec, warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(12):
            rec.push_frame(frames[i % len(frames)], t=i / 30)


def test_audio_pushed_too_far_ahead_warns_when_a_frame_finds_it_gone(bundle_dir,  # noqa: F811
                                                                        frames):
    """A file's audio pushed all at once, further ahead than the ring holds (here 2 s), loses
    its oldest part: the frames that needed it have no audio, and one RuntimeWarning says
    why and what to do (it used to be only a counter)."""
    x = (0.3 * np.sin(2 * np.pi * 180 * np.arange(5 * SR) / SR)).astype(np.float32)
    with _rec(bundle_dir, audio_capacity_s=2.0) as rec:
        for k in range(40):  # 40 s at once: more than CLOCK_MISMATCH_S past the frames
            rec.push_audio(x[k % 5 * SR:(k % 5 + 1) * SR], t=float(k))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = [rec.push_frame(f, t=0.2 + i / FPS) for i, f in enumerate(frames[:3])]
        # one warning, the overrun's (found by a new-user trial: "audio and frames look
        # stamped on different clocks" came too, although both were on one clock)
        said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(said) == 1 and re.search(r"overwritten before the frame came.*pace of its "
                                            r"video", said[0]), said
        assert not any(p.audio_present for p in got)
        assert rec.stats()["audio_overruns"] > 0
    with _rec(bundle_dir, audio_capacity_s=2.0) as rec, warnings.catch_warnings():
        warnings.simplefilter("error")  # paced: nothing lost, no warning
        for k, f in enumerate(frames[:3]):
            rec.push_audio(x[k * SR:(k + 1) * SR], t=float(k))
            assert rec.push_frame(f, t=k + 0.9).audio_present


def test_mis_scaled_samples_are_refused_or_flagged(bundle_dir):  # noqa: F811
    """Samples whose scale is wrong or unknown are refused before anything changes: int16
    values cast to float (peaks in the thousands), a Python list of ints, 64-bit integers.
    16-bit values in an int32 array (int32 full scale is 2**31) draw a RuntimeWarning."""
    x16 = (np.sin(2 * np.pi * 300 * np.arange(SR // 4) / SR) * 12000).astype(np.int16)
    with _rec(bundle_dir) as rec:
        with pytest.raises(ValueError, match=r"\[-1, 1\].*peaks at 1200"):
            rec.push_audio(x16.astype(np.float32), t=0.0)
        with pytest.raises(TypeError, match="Python sequence of integers"):
            rec.push_audio(x16.tolist(), t=0.0)
        with pytest.raises(TypeError, match="int64 samples has no known full scale"):
            rec.push_audio(x16.astype(np.int64), t=0.0)
        for raw in (x16.tobytes(), bytearray(x16.tobytes()), memoryview(x16.tobytes())):
            # what a pyaudio callback hands over
            with pytest.raises(TypeError, match=r"raw .*np\.frombuffer\(data, np\.int16\)"):
                rec.push_audio(raw, t=0.0)
        assert rec.engine.audio.time is None  # nothing was taken
        with pytest.warns(RuntimeWarning, match="pass them as int16"):
            rec.push_audio(x16.astype(np.int32), t=0.0)
        rec.push_audio((x16 / 32768.0).tolist(), t=0.25)  # a list of floats is fine
        assert rec.engine.audio.time == pytest.approx(0.5)


def test_audio_pushed_after_its_frames_is_counted_as_late(bundle_dir, frames):  # noqa: F811
    """A live microphone delivering 200 ms chunks after capture: frames find only older audio
    (a new-user trial measured mean |dV/A| 0.05-0.18 against the same audio pushed first), which
    used to leave no trace. Such frames are counted; audio pushed first counts none."""
    x = (0.3 * np.sin(2 * np.pi * 180 * np.arange(2 * SR) / SR)).astype(np.float32)
    chunk = SR // 5
    with _rec(bundle_dir) as rec:
        rec.push_audio(x, t=0.0)
        for i, f in enumerate(frames):
            rec.push_frame(f, t=0.3 + i / FPS)
        assert rec.stats()["audio_late_frames"] == 0
    with _rec(bundle_dir) as rec:
        rec.push_audio(x[:chunk], t=0.0)
        pushed = chunk
        for i, f in enumerate(frames):
            t = 0.3 + i / FPS
            rec.push_frame(f, t=t)
            while (pushed + chunk) / SR <= t:  # a chunk arrives once it has been captured
                rec.push_audio(x[pushed:pushed + chunk], t=pushed / SR)
                pushed += chunk
        assert rec.stats()["audio_late_frames"] >= len(frames) // 3
