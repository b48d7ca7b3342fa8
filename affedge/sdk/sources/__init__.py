"""Capture sources for the runtime (ARCHITECTURE.md §6).

Video (OpenCV): camera index, ``/dev/videoN``, video file, stream URL (rtsp/http MJPEG/...),
GStreamer pipeline string (Jetson CSI cameras) -> :class:`VideoSource` yielding
:class:`VideoFrame` (index, t, BGR image).

Audio -> :class:`AudioSource` yielding :class:`AudioChunk` (t, float32 mono 16 kHz pcm):
:class:`MicrophoneSource` (pyaudio), :class:`WavSource`, :class:`VideoAudioSource` (the audio
track of a video file, PyAV).

Clocks: files use media time (seconds from the start of the video stream); live sources use
``time.monotonic()``. Video and audio of one run therefore share a clock when both come from
the same file or both are live. Only numpy and OpenCV are imported here; pyaudio, PyAV and the
C++ ring buffer are imported when a source needs them.
"""
from __future__ import annotations

import os

from ._errors import SourceError, SourceFormatError
from .audio import SAMPLE_RATE, AudioChunk, AudioSource, VideoAudioSource, WavSource
from .microphone import MicrophoneSource, list_microphones
from .video import VideoFrame, VideoSource, list_cameras, open_video

__all__ = [
    "SAMPLE_RATE",
    "AudioChunk",
    "AudioSource",
    "MicrophoneSource",
    "SourceError",
    "SourceFormatError",
    "VideoAudioSource",
    "VideoFrame",
    "VideoSource",
    "WavSource",
    "list_cameras",
    "list_microphones",
    "open_audio",
    "open_video",
]

_AUDIO_SPECS = "'mic', 'mic:N' / 'mic:NAME', a .wav path, 'video' (the video file's audio track), a media file path, or 'none' (None in Python)"


def open_audio(spec: str | None, video_spec=None, *, chunk_ms: float = 20) -> AudioSource | None:
    """An :class:`AudioSource` for ``spec``, or None for no audio.

    spec: None / "" / "none" -> None; "mic" -> default microphone; "mic:N" -> device index N;
    "mic:NAME" -> device whose name contains NAME; "video" -> the audio track of ``video_spec``
    (must be a video file); a ``.wav`` path -> :class:`WavSource`; any other existing file ->
    :class:`VideoAudioSource` (any container/codec FFmpeg reads). An AudioSource is returned
    unchanged."""
    if spec is None or isinstance(spec, AudioSource):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"audio spec must be a str or None, got {type(spec).__name__}")
    s = os.fspath(spec).strip()
    low = s.lower()
    if low in ("", "none", "off"):
        return None
    if low == "mic":
        return MicrophoneSource(None, chunk_ms=chunk_ms)
    if low.startswith("mic:"):
        dev = s[4:].strip()
        if not dev:
            raise ValueError(f"audio spec {spec!r}: give a device index or name after 'mic:'")
        return MicrophoneSource(int(dev) if dev.isdigit() else dev, chunk_ms=chunk_ms)
    if low == "video":
        if video_spec is None:
            raise ValueError("audio='video' needs a video file to take the audio track from")
        if isinstance(video_spec, VideoSource):
            if video_spec.kind != "file":
                raise ValueError(
                    f"audio='video' needs a video file, but the video source is {video_spec.name} "
                    f"(live sources have no audio track; use audio='mic')"
                )
            path = video_spec._spec
        else:
            from .video import _classify

            kind, path = _classify(video_spec)
            if kind != "file":
                raise ValueError(
                    f"audio='video' needs a video file, but the video source is {video_spec!r} "
                    f"({kind}); live sources have no audio track: use audio='mic'"
                )
        return VideoAudioSource(path, chunk_ms=chunk_ms)
    if low.endswith(".wav"):
        return WavSource(s, chunk_ms=chunk_ms)
    if os.path.exists(s):
        return VideoAudioSource(s, chunk_ms=chunk_ms)
    raise ValueError(f"unknown audio source {spec!r} (no such file); expected {_AUDIO_SPECS}")
