"""File sources keep the container's time: every video frame carries its own presentation time
(variable frame rate files are not re-timed to index/average fps) and audio after a hole in the
track's timestamps arrives at its media time (the hole is filled with silence). Real media
made with ffmpeg; expected times read back with ffprobe."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from affedge.sdk.sources import SourceError, VideoAudioSource, open_video

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="needs ffmpeg/ffprobe")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=120)


def probe_times(path, stream: str) -> list[float]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries",
                          "frame=pts_time", "-of", "csv=p=0", str(path)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return [float(x.strip().strip(",")) for x in out.split() if x.strip().strip(",")]


def test_variable_frame_rate_video_keeps_every_presentation_time(tmp_path):
    """1 s at 30 fps, then 3 s at 10 fps: the average fps (~12) must not re-time any frame."""
    path = tmp_path / "vfr.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=30:duration=4",
           "-vf", "setpts='if(lt(N,30),N,30+(N-30)*3)/30/TB'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    want = probe_times(path, "v")
    assert want[31] - want[30] > 0.09  # the file really is VFR
    with open_video(path) as src:
        got = [f.t for f in src]
    assert len(got) == len(want)
    assert np.max(np.abs(np.array(got) - np.array(want))) < 1e-3
    assert got[-1] == pytest.approx(want[-1], abs=1e-3) and got[-1] > 9.0


def tone_with_hole(path, shift: float) -> None:
    """A 440 Hz tone, 2 s; samples from t = 1 s on are stamped ``shift`` s later (a hole)."""
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=2",
           "-af", f"asetpts=PTS+{shift}/TB*gte(T\\,1)", "-c:a", "pcm_s16le", str(path))


def test_audio_after_a_hole_arrives_at_its_media_time(tmp_path):
    path = tmp_path / "hole.mkv"
    tone_with_hole(path, 3.0)
    times = probe_times(path, "a")
    assert max(np.diff(times)) > 2.9  # the packets really jump by 3 s
    src = VideoAudioSource(path)
    chunks = []
    while (c := src.read()) is not None:
        chunks.append(c)
    src.close()
    pcm = np.concatenate([c.pcm for c in chunks])
    t = np.array([c.t for c in chunks])
    assert np.allclose(np.diff(t), 0.02, atol=1e-9)  # one continuous clock
    assert len(pcm) / 16000 == pytest.approx(5.0, abs=0.01)
    level = np.abs(pcm[: len(pcm) // 160 * 160]).reshape(-1, 160).max(axis=1)  # per 10 ms
    loud = level > 0.1
    assert loud[:95].all() and not loud[105:395].any()  # tone, then the 3 s hole is silence
    assert loud[405:495].all()  # the tone after the hole sits at 4.0-5.0 s, its media time


def test_an_absurd_timestamp_jump_is_refused(tmp_path):
    path = tmp_path / "jump.mkv"
    tone_with_hole(path, 5000.0)
    src = VideoAudioSource(path)
    with pytest.raises(SourceError, match="jump"):
        while src.read() is not None:
            pass
    src.close()
