"""VideoSource on real video files (a moving real face photo written by cv2.VideoWriter)."""
from __future__ import annotations

import time

import cv2
import media
import numpy as np
import pytest

from affedge.sdk.sources import SourceError, VideoFrame, VideoSource, open_video
from affedge.sdk.sources.video import _classify


@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
    d = tmp_path_factory.mktemp("video")
    return media.make_face_video(d / "face.mp4", seconds=6.0, fps=25.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def test_file_reads_every_frame_in_order_with_monotone_media_time(face_video):
    reference, _ = media.face_frames(face_video.n_frames, face_video.fps, face_video.size)
    with VideoSource(face_video.path) as src:
        assert not src.is_live and not src.realtime
        assert src.fps == pytest.approx(25.0)
        assert src.size == face_video.size
        assert src.frame_count == face_video.n_frames
        frames = list(src)
    assert len(frames) == face_video.n_frames
    assert [f.index for f in frames] == list(range(face_video.n_frames))
    t = np.array([f.t for f in frames])
    assert np.all(np.diff(t) > 0)
    np.testing.assert_allclose(t, np.arange(len(t)) / 25.0, atol=1e-3)
    for f in frames:
        assert isinstance(f, VideoFrame)
        assert f.image.dtype == np.uint8 and f.image.shape == (240, 320, 3)
    # each decoded frame is the frame written at that index (mp4v is lossy: PSNR, not equality)
    for i in (0, 1, 37, 100, face_video.n_frames - 1):
        assert psnr(frames[i].image, reference[i]) > 28
        assert psnr(frames[i].image, reference[(i + 13) % len(reference)]) < 25


def test_face_video_holds_a_detectable_real_face(face_video):
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    with VideoSource(face_video.path) as src:
        frames = list(src)
    hits = 0
    for i in range(0, face_video.n_frames, 30):
        gray = cv2.cvtColor(frames[i].image, cv2.COLOR_BGR2GRAY)
        faces = cascade.detectMultiScale(gray, 1.1, 4, minSize=(30, 30))
        x, y, w, h = face_video.boxes[i]  # where the face photo was pasted
        hits += any(x <= fx + fw / 2 <= x + w and y <= fy + fh / 2 <= y + h
                    for fx, fy, fw, fh in faces)
    assert hits >= 4  # of 5 sampled frames


def test_read_after_end_and_close(face_video):
    src = open_video(str(face_video.path))
    assert open_video(src) is src
    n = sum(1 for _ in src)
    assert n == face_video.n_frames
    assert src.read() is None
    src.close()
    src.close()  # idempotent
    assert src.read() is None


def test_realtime_file_skips_stale_frames_like_a_camera(face_video):
    with VideoSource(face_video.path, realtime=True) as src:
        first = src.read()
        time.sleep(0.5)  # consumer falls ~12 frames behind the media clock
        nxt = src.read()
    assert first.index == 0
    assert nxt.index >= 5 and src.dropped == nxt.index - 1
    assert nxt.t == pytest.approx(nxt.index / 25.0, abs=1e-3)


def test_missing_file_is_a_clear_error(tmp_path):
    p = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match="not found.*nope.mp4"):
        VideoSource(p)


@pytest.mark.parametrize("content", [b"", b"\x00" * 4096, b"RIFF junk that is no video" * 50])
def test_corrupt_file_is_a_clear_error(tmp_path, content):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(SourceError, match="bad.mp4"):
        VideoSource(p)


def test_truncated_file_is_a_clear_error(tmp_path, face_video):
    data = face_video.path.read_bytes()
    p = tmp_path / "truncated.mp4"
    p.write_bytes(data[: len(data) // 2])  # mp4v writer puts the index (moov) at the end
    with pytest.raises(SourceError, match="truncated.mp4"):
        VideoSource(p)


def test_directory_is_not_a_video(tmp_path):
    with pytest.raises(SourceError, match="not a regular file"):
        VideoSource(tmp_path)


def test_camera_index_that_cannot_be_opened():
    with pytest.raises(SourceError, match="camera index 63"):
        VideoSource(63)
    with pytest.raises(SourceError, match="/dev/video63"):
        VideoSource("/dev/video63")


def test_gstreamer_pipeline_without_gstreamer_support():
    if cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        pytest.skip("this OpenCV has GStreamer; the no-GStreamer message cannot be checked")
    with pytest.raises(SourceError, match="GStreamer"):
        VideoSource("videotestsrc num-buffers=5 ! videoconvert ! appsink")


def test_spec_classification():
    assert _classify(0) == ("camera", 0)
    assert _classify("2") == ("camera", 2)
    assert _classify("/dev/video1") == ("device", "/dev/video1")
    assert _classify("rtsp://10.0.0.2/live")[0] == "url"
    assert _classify("http://x/stream.mjpg")[0] == "url"
    assert _classify("nvarguscamerasrc ! nvvidconv ! appsink")[0] == "gstreamer"
    assert _classify("file:///tmp/a.mp4") == ("file", "/tmp/a.mp4")
    assert _classify("clip.mp4") == ("file", "clip.mp4")
    with pytest.raises(ValueError, match=">= 0"):
        _classify(-1)
    with pytest.raises(TypeError, match="camera index"):
        _classify(1.5)
    with pytest.raises(ValueError, match="empty"):
        _classify("  ")


def test_close_from_another_thread_waits_for_the_read_in_progress():
    """A file source has no capture thread of its own: ``affedge serve`` reads it on its
    capture thread while ``stop()`` closes it from the main thread. OpenCV's capture is not
    thread-safe (a release() during a read() hung inside FFmpeg: serve did not exit on
    SIGTERM in CI); close() now waits for the read in progress, then reads give None."""
    import random
    import threading

    from affedge.sdk.recognizer import DEMO_CLIP

    rng = random.Random(0)
    for _ in range(12):
        src = VideoSource(str(DEMO_CLIP), realtime=True)
        got, done = [], threading.Event()

        def reader(s=src, got=got, done=done):
            while (f := s.read()) is not None:
                got.append(f.index)
            done.set()

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        time.sleep(rng.uniform(0.0, 0.15))
        t0 = time.monotonic()
        src.close()
        assert time.monotonic() - t0 < 5.0
        assert done.wait(5.0), "the reader did not end after close()"
        assert got == list(range(len(got)))


def test_a_broken_file_names_ffmpegs_cause_and_prints_no_native_lines(face_video, tmp_path):
    """Python API, a truncated MP4 (its index is at the end, so FFmpeg finds no moov atom) and
    a camera index with no camera: OpenCV's and FFmpeg's own stderr lines used to reach the
    app's stderr beside our error; now
    FFmpeg's cause is in the error's one line and nothing native is printed. A line another
    thread writes meanwhile still reaches stderr. Run in a fresh process: an in-process CLI
    call elsewhere in the session silences FFmpeg for the whole process."""
    import os
    import subprocess
    import sys

    bad = tmp_path / "cut.mp4"
    bad.write_bytes(face_video.path.read_bytes()[:20_000])
    code = (
        "import os, sys, threading\n"
        "from affedge.sdk.sources import SourceError, open_video\n"
        "from affedge.sdk.sources.native_stderr import captured_stderr\n"
        "with captured_stderr():\n"
        "    os.write(2, b'a line of the app\\n')\n"
        "for spec in (" + repr(str(bad)) + ", 7):  # a broken file, a camera that is not there\n"
        "    try:\n"
        "        open_video(spec)\n"
        "    except SourceError as e:\n"
        "        print(e)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "cannot open video file" in r.stdout and "FFmpeg: moov atom not found" in r.stdout
    assert "cannot open camera index 7" in r.stdout  # (OpenCV's V4L2 warnings went too)
    assert r.stderr.splitlines() == ["a line of the app"], r.stderr


def test_overlapping_captures_on_two_threads_give_stderr_back():
    """A Hub trial: two streams opened at once on two threads, their captures ending in the
    order they began (A in, B in, A out, B out), left descriptor 2 on a deleted temporary file,
    and every later line was lost. One block captures at a time; every line still arrives."""
    import subprocess
    import sys

    code = (
        "import os, sys, threading, time\n"
        "from affedge.sdk.sources.native_stderr import captured_stderr\n"
        "def block(wait, hold, text):\n"
        "    time.sleep(wait)\n"
        "    with captured_stderr():\n"
        "        os.write(2, text)\n"
        "        time.sleep(hold)\n"
        "a = threading.Thread(target=block, args=(0.0, 0.6, b'from a\\n'))\n"
        "b = threading.Thread(target=block, args=(0.2, 0.8, b'from b\\n'))\n"
        "a.start(); b.start(); a.join(); b.join()\n"
        "print('after', file=sys.stderr, flush=True)\n"
        "os.write(2, b'raw after\\n')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stderr.splitlines()) == ["after", "from a", "from b", "raw after"], r.stderr
