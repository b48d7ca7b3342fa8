"""Recognizer.run's inputs: frames paced to the media clock and a file's audio fed in step.

A network stream with ``audio="video"`` is opened as one demuxer for both (``open_run_video``).

Also the checks that a run's video file exists and that a file ended well before the frame
count its container declares, and ``audio="auto"`` (a file's own track when it has one)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from affedge.sdk.sources._errors import SourceError

__all__ = ["SHORT_FILE_FRACTION", "FileAudioFeeder", "FrameReader", "open_run_video",
           "run_notes", "short_file_note"]


def default_audio(source) -> str | None:
    """'video' when ``source`` is a file with an audio track (read with PyAV, the optional
    ``av`` package), else None: what ``affedge run`` and ``audio="auto"`` use."""
    if not isinstance(source, (str, os.PathLike)) or not os.path.isfile(source):
        return None
    try:
        import av
    except ImportError:  # PyAV reads the track; optional dependency
        return None
    try:
        with av.open(str(source)) as c:
            return "video" if c.streams.audio else None
    except Exception:  # noqa: BLE001 - unreadable container: let the video source report it
        return None


def resolve_audio(video, audio):
    """``audio="auto"`` -> :func:`default_audio` of ``video`` (a folder of videos with and
    without a track runs with one call); any other value as given. Without PyAV a file's track
    cannot be read: said with a RuntimeWarning (the demo's arousal CCC fell from 0.92 to 0.46
    without its audio, and a trial's script had no sign of it)."""
    if isinstance(audio, str) and audio.strip().lower() == "auto":
        found = default_audio(video)
        if found is None and isinstance(video, (str, os.PathLike)) and os.path.isfile(video):
            try:
                import av  # noqa: F401
            except ImportError:
                import warnings

                warnings.warn(f"audio='auto': {video}'s audio track cannot be read without "
                              f"PyAV; running on the face alone (pip install "
                              f"'affedge[video-audio]')", RuntimeWarning, stacklevel=3)
        return found
    return audio


def open_run_video(video, audio, push_audio):
    """``run()``'s video source. A URL with ``audio="video"``: one PyAV demuxer for the
    stream's video and its own audio track, both on the stream's clock, the audio going to
    ``push_audio(pcm, t, sample_rate)`` (:class:`~affedge.sdk.sources.network.NetworkAVSource`,
    as ``affedge serve`` reads it; its ``pushes_audio`` is True); anything else: ``open_video``.
    """
    from affedge.sdk.sources import open_video
    from affedge.sdk.sources.video import _classify

    if isinstance(audio, str) and audio.strip().lower() == "video" and \
            isinstance(video, str) and _classify(video)[0] == "url":
        from affedge.sdk.sources.network import NetworkAVSource

        return NetworkAVSource(video.strip(), on_audio=push_audio)
    return open_video(video)


class MediaPacer:
    """Paces a file to its media clock: :meth:`delay` is how long to hold a frame at media time
    ``t`` so that it is handed over no earlier than ``t`` after the first frame, in wall time
    (negative: late; a late frame is never skipped, the later ones just come sooner)."""

    def __init__(self):
        self.wall0 = self.t0 = None

    def delay(self, t: float) -> float:
        if self.wall0 is None:
            self.wall0, self.t0 = time.monotonic(), t
        return (t - self.t0) - (time.monotonic() - self.wall0)


class FrameReader:
    """The capture loop's frame supply: checks live audio capture, paces a file to its media
    clock (``pace``), stops after ``max_frames`` frames or when ``stop`` is set."""

    def __init__(self, src, live_audio, pace: bool, max_frames: int | None, stop):
        self.src, self.live_audio, self.pace = src, live_audio, pace
        self.max_frames, self.stop = max_frames, stop
        self.n = 0
        self.pacer = MediaPacer()

    def read(self):
        if self.stop.is_set() or (self.max_frames is not None and self.n >= self.max_frames):
            return None
        if self.live_audio is not None:
            try:
                self.live_audio.check()
            except Exception as err:
                raise RuntimeError(f"audio capture failed: {err}") from err
        frame = self.src.read()
        if frame is None:
            return None
        self.n += 1
        if self.pace:
            delay = self.pacer.delay(frame.t)
            if delay > 0:
                time.sleep(delay)
        return frame


class FileAudioFeeder:
    """Feeds a finite audio source (WAV, a video's audio track) synchronously, reading ahead of
    the video so that the features at each frame time exist before the frame is inferred.

    It reads in bursts: when less than :attr:`LOOKAHEAD_S` of audio is ahead of the frame, it
    reads until :attr:`REFILL_S` is. The timeline then drains that audio in one go a few
    frames later (``AudioTimeline._rows_reach``) instead of a frame's worth per frame: the
    features are the same (they never depend on audio after the frame), and the per-call cost
    of decoding, resampling, feature and VAD steps is paid once per burst."""

    LOOKAHEAD_S = 0.1
    #: seconds of audio a burst reads ahead of the frame (well inside the timeline's ring)
    REFILL_S = 0.5

    def __init__(self, timeline, source, on_error=None):
        self.timeline = timeline
        self.source = source
        self.it = iter(source)
        self.done = False
        self.error: str | None = None
        self.on_error = on_error

    def feed_until(self, t: float, offset: float = 0.0) -> None:
        at = self.timeline.time
        if at is not None and at >= t + self.LOOKAHEAD_S:
            return
        while not self.done:
            at = self.timeline.time
            if at is not None and at >= t + self.REFILL_S:
                return
            try:
                chunk = next(self.it)
            except StopIteration:
                self._end()
                return
            except SourceError as exc:
                # a damaged or truncated recording: the frames go on without audio (flagged
                # audio_present=False) instead of the whole run stopping
                at = self.timeline.time
                self.error = (f"{exc}; the frames after {0.0 if at is None else at:.2f} s "
                              "have no audio")
                self._end()
                if self.on_error is not None:
                    self.on_error(self.error)
                return
            if chunk.pcm.size:
                self.timeline.push(chunk.pcm, chunk.t + offset,
                                   getattr(self.source, "sample_rate", None))

    def _end(self) -> None:
        self.done = True
        self.timeline.flush()
        self.timeline.end_of_audio()


def run_notes(engine, src, frames_read: int, max_frames, stopped: bool, feed, latest) -> list:
    """What a finished ``Recognizer.run`` says about its sources (``source_notes``; the CLI
    prints them as warnings): a file that ended early (:func:`short_file_note`), frames
    smaller than the smallest face searched for (a QA trial's 16x16 video ran with no face
    and no word), and the file audio's (:func:`audio_notes`, unless its read failed: said in
    ``audio_errors``). ``feed``: the run's FileAudioFeeder or None; ``latest``: the last
    Prediction or None."""
    notes = [n for n in [short_file_note(src, frames_read, max_frames, stopped)] if n]
    lo = getattr(getattr(engine.face_search, "detector", None), "min_size", None)
    size = getattr(src, "size", None)
    if isinstance(lo, int) and size and min(size) < lo:
        notes.append(f"{src.name}: its frames are {size[0]}x{size[1]}, smaller than the "
                     f"smallest face searched for ({lo} px, min_face): no face can be found")
    if feed is not None and feed.error is None:
        notes += audio_notes(feed.source, engine.audio,
                             None if latest is None else latest.timestamp,
                             stopped or max_frames is not None)
    return notes


#: a file's audio that ends this many seconds or more before its video is reported
AUDIO_SHORT_S = 1.0


def audio_notes(audio_src, timeline, last_frame_t: float | None, stopped: bool) -> list[str]:
    """Notes on a finite audio source after a run (a QA trial found both silent): audio below
    the model's rate (what ``push_audio``'s RuntimeWarning says: resampling cannot bring back
    the band the features were trained with; valence CCC 0.92 -> 0.46 at 8 kHz, see
    ``audio_timeline.warn_narrowband``), and audio that holds nothing or ends
    :data:`AUDIO_SHORT_S` or more before the video's last frame (those frames ran without
    audio; not said for a run stopped early)."""
    notes = []
    name = getattr(audio_src, "name", "the audio")
    sr = getattr(audio_src, "input_rate", None)
    if sr and sr < timeline.sample_rate:
        notes.append(f"{name}: audio at {sr} Hz holds nothing above {sr / 2000:g} kHz; the "
                     f"model's features were trained up to {timeline.sample_rate / 2000:g} "
                     f"kHz: expect worse predictions")
    if stopped or last_frame_t is None:
        return notes
    end = timeline.time
    if end is None or end <= 0.0:
        notes.append(f"{name}: the audio holds no samples; every frame ran without audio")
    elif end < last_frame_t - AUDIO_SHORT_S:
        notes.append(f"{name}: the audio ends at {end:.1f} s, the video at {last_frame_t:.1f} "
                     f"s; the frames after {end:.1f} s ran without audio")
    return notes


#: a file that ends before this fraction of the frame count its container declares is
#: reported (containers round and estimate the count: a few frames short is normal)
SHORT_FILE_FRACTION = 0.95


def short_file_note(src, frames_read: int, max_frames: int | None, stopped: bool) -> str | None:
    """The note for a file source that ended well before its declared frame count (None for
    live sources, runs stopped early or by ``max_frames``, and files without a count)."""
    declared = getattr(src, "frame_count", None)
    if stopped or max_frames is not None or getattr(src, "is_live", False) or not declared:
        return None
    if frames_read >= SHORT_FILE_FRACTION * declared:
        return None
    declared = _playable_frames(src, declared)
    if frames_read >= SHORT_FILE_FRACTION * declared:
        return None
    return (f"{src.name}: ended after {frames_read} of the {declared} frames its container "
            f"declares (a truncated or damaged file?)")


def _playable_frames(src, declared: int) -> int:
    """The frames a file should give, where OpenCV's count (``declared``) holds frames it never
    shows, read with PyAV when it is installed (``declared`` otherwise):

    * a container that starts late: an MKV cut with a 10 s timestamp offset declared 452
      frames for its 150 (a new-user trial): minus the start time times the frame rate;
    * an MP4 cut by stream copy (``ffmpeg -ss 5 -t 5 -c copy``): its count includes the
      frames before the cut that its edit list hides (300 for the 150 it plays, another
      trial): at most the stream's duration times the frame rate."""
    fps = float(getattr(src, "fps", 0) or 0)
    try:
        import av

        with av.open(str(src.name)) as c:
            start = (c.start_time or 0) / 1e6  # (microseconds: av.time_base)
            v = c.streams.video[0] if c.streams.video else None
            length = float(v.duration * v.time_base) if v is not None and v.duration \
                and v.time_base else None
    except Exception:  # noqa: BLE001  (no PyAV, or a container it cannot read: no correction)
        return declared
    declared -= max(0, int(round(start * fps)))
    if length is not None and fps > 0:
        declared = min(declared, int(round(length * fps)))
    return declared


def check_file_exists(video) -> None:
    """SourceError now for a video file that does not exist (``open_video``'s message)."""
    from affedge.sdk.sources.video import VideoSource, _classify

    if isinstance(video, VideoSource):
        return
    try:
        kind, path = _classify(video)
    except Exception:  # noqa: BLE001 - anything else is open_video's to report, as before
        return
    if kind == "file" and not Path(path).exists():
        from affedge.sdk.sources import open_video

        open_video(video)  # raises SourceError("video file not found: ...")
