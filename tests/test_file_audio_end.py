"""A file whose audio track ends before its video: the frames after the end have no audio."""
from __future__ import annotations

import shutil
import subprocess

import pytest


@pytest.fixture(scope="module")
def short_audio(tmp_path_factory):
    """3 s of the demo clip whose audio track is cut at 1.0 s."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed to make the clip")
    from affedge.sdk.recognizer import DEMO_CLIP

    out = tmp_path_factory.mktemp("shorta") / "shorta.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(DEMO_CLIP), "-t", "3",
                    "-filter_complex", "[0:a]atrim=0:1[a]", "-map", "0:v", "-map", "[a]",
                    "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(out)],
                   check=True, timeout=120)
    return out


def test_audio_flags_end_with_the_track(short_audio):
    """Before the fix, the last audio rows were reused for ``audio_timeout`` (1 s) after the
    track ended: audio_present (and speech) stayed on until 2.0 s."""
    from affedge.sdk.audio_timeline import END_SLACK_S
    from affedge.sdk.recognizer import Recognizer

    with Recognizer.demo() as rec:
        preds = list(rec.run(str(short_audio), audio="video"))
    assert len(preds) == 90
    with_audio = [p.timestamp for p in preds if p.audio_present]
    assert with_audio and min(with_audio) < 0.1
    assert 0.9 <= max(with_audio) <= 1.0 + END_SLACK_S + 1e-6
    later = [p for p in preds if p.timestamp > 1.0 + END_SLACK_S]
    assert later and not any(p.audio_present or p.speech_present for p in later)
    assert rec.audio_errors == []  # a normal end is not an error
    # ... but it is said (a QA trial: a WAV 2 s shorter than the video passed in silence)
    assert rec.source_notes == [f"{short_audio}: the audio ends at 1.0 s, the video at 3.0 s; "
                                "the frames after 1.0 s ran without audio"]


def _wav(path, rate: int, seconds: float):
    subprocess.run(["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(path), "synth",
                    str(seconds), "sine", "300"] if seconds else
                   ["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(path), "trim",
                    "0", "0"], check=True, timeout=60)
    return path


def test_narrowband_empty_and_full_length_audio_notes(short_audio, tmp_path):
    """A QA trial: an 8 kHz WAV moved valence from -0.46 to +0.18 without a word (push_audio
    warns, run() did not), and an empty WAV ran every frame without audio in silence. A WAV
    as long as the video gets no note."""
    if shutil.which("sox") is None:
        pytest.skip("sox is needed to make the WAVs")
    from affedge.sdk.recognizer import Recognizer

    cases = {"a8k.wav": (8000, 3.0), "empty.wav": (16000, 0), "full.wav": (16000, 3.0)}
    notes = {}
    with Recognizer.demo() as rec:
        for name, (rate, seconds) in cases.items():
            wav = _wav(tmp_path / name, rate, seconds)
            assert len(list(rec.run(str(short_audio), audio=str(wav)))) == 90
            notes[name] = list(rec.source_notes)
    assert notes["a8k.wav"] == [f"{tmp_path / 'a8k.wav'}: audio at 8000 Hz holds nothing above "
                                "4 kHz; the model's features were trained up to 8 kHz: expect "
                                "worse predictions"]
    assert notes["empty.wav"] == [f"{tmp_path / 'empty.wav'}: the audio holds no samples; "
                                  "every frame ran without audio"]
    assert notes["full.wav"] == []


def test_frames_smaller_than_the_smallest_face_are_said(tmp_path):
    """A QA trial: a 16x16 video ran with no face in any row and no word why."""
    from affedge.sdk.recognizer import Recognizer

    tiny = tmp_path / "tiny.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=16x16:rate=30", "-t", "0.5", "-c:v", "libx264", "-preset",
                    "ultrafast", "-pix_fmt", "yuv420p", str(tiny)], check=True, timeout=120)
    with Recognizer.demo() as rec:
        preds = list(rec.run(str(tiny), audio=None))
        assert preds and not any(p.face_present for p in preds)
        assert rec.source_notes == [f"{tiny}: its frames are 16x16, smaller than the smallest "
                                    "face searched for (40 px, min_face): no face can be found"]
