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
