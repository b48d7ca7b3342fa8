"""Video capture through OpenCV: camera indices, /dev/videoN, files, stream URLs, GStreamer.

One class, :class:`VideoSource`, covers every kind of video input (ARCHITECTURE.md §6):

=================  ==========================================  =========  =====================
spec               example                                     live       timestamps ``t``
=================  ==========================================  =========  =====================
camera index       ``0``, ``"0"``                              yes        ``time.monotonic()``
device node        ``"/dev/video0"``                           yes        ``time.monotonic()``
stream URL         ``"rtsp://cam/live"``, ``"http://.../mjpg"``  yes (1)    ``time.monotonic()``
GStreamer          ``"nvarguscamerasrc ! ... ! appsink"``      yes (2)    ``time.monotonic()``
video file         ``"clip.mp4"``                              no         media time (s)
=================  ==========================================  =========  =====================

(1) http(s) URLs that report a finite frame count (a plain file served over HTTP) are treated as
files. (2) Pipelines that start from ``filesrc`` are treated as files.

Live sources with ``realtime=True`` (their default) run a capture thread that queues frames
while the consumer keeps up (a network camera's burst is kept whole) and skips to the newest
once it falls behind (:mod:`affedge.sdk.sources.live_queue`: a frame waited 0.1 s), counted in
``dropped`` (``VideoFrame.index`` counts every captured frame, so gaps are visible), instead of
queueing up latency (ARCHITECTURE.md §5: stale video frames may be skipped). Files are read
frame by frame; ``realtime=True`` on a file paces delivery to the media clock and skips frames
the consumer is too slow for, which simulates a camera from a recording.
"""
from __future__ import annotations

import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ._errors import SourceError
from .credentials import hide_credentials
from .live_queue import LiveQueue
from .native_stderr import captured_stderr

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_LIVE_SCHEMES = {"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "udp", "tcp", "srt", "mms", "mmsh"}
DEFAULT_LIVE_FPS = 30.0  # used when a live source does not report a frame rate
DEFAULT_FILE_FPS = 25.0  # used when a file reports no (or a nonsensical) frame rate


@dataclass(frozen=True)
class VideoFrame:
    """One captured frame: running index, timestamp in seconds and the BGR uint8 HxWx3 image."""

    index: int
    t: float
    image: np.ndarray


def _classify(source) -> tuple[str, int | str]:
    """-> (kind, normalised spec); kind in camera, device, url, gstreamer, file."""
    if isinstance(source, (bool, np.bool_)):
        raise TypeError(f"video source must be a camera index, path, URL or pipeline, got {source!r}")
    if isinstance(source, (int, np.integer)):
        if source < 0:
            raise ValueError(f"camera index must be >= 0, got {source}")
        return "camera", int(source)
    if isinstance(source, os.PathLike):
        return "file", os.fspath(source)
    if not isinstance(source, str):
        raise TypeError(
            f"video source must be an int camera index or a str (path, URL, /dev/videoN, "
            f"GStreamer pipeline), got {type(source).__name__}"
        )
    s = source.strip()
    if not s:
        raise ValueError("video source is an empty string")
    if s.isdigit():
        return "camera", int(s)
    if "!" in s:
        return "gstreamer", s
    if s.startswith("file://"):
        return "file", s[len("file://") :]
    if _URL_RE.match(s):
        return "url", s
    if re.fullmatch(r"/dev/video\d+", s):
        return "device", s
    return "file", s


def _finite_positive(x) -> bool:
    return x is not None and math.isfinite(x) and x > 0


def check_video_path(spec) -> None:
    """SourceError with the reason unless ``spec`` is a readable, non-empty regular file
    (OpenCV itself says only that it cannot open it: "corrupt, truncated, ...?")."""
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"video file not found: {path}")
    if not path.is_file():
        raise SourceError(f"video source is not a regular file: {path}")
    if path.stat().st_size == 0:
        raise SourceError(f"video file is empty: {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise SourceError(f"cannot read video file {path}: {exc.strerror or exc}") from None


class VideoSource:
    """Frames from a camera, device node, file, stream URL or GStreamer pipeline (see module doc).

    Args:
        source: camera index, ``/dev/videoN``, file path, URL or GStreamer pipeline string.
        api: OpenCV backend (``cv2.CAP_*``); default: FFmpeg for URLs and files, GStreamer for
            pipelines, OpenCV's choice for cameras.
        realtime: deliver the newest frame and skip stale ones (default: True for live sources,
            False for files; True on a file paces it to the media clock).
        reconnect: how many times to reopen a live source that stops delivering before
            ``read()`` raises :class:`SourceError`.
        timeout: seconds to wait when opening a URL or for a live frame before giving up.

    Attributes: ``fps``, ``is_live``, ``size`` (width, height), ``frame_count`` (files, else
    None), ``dropped`` (frames skipped in realtime mode), ``kind``, ``name``.
    """

    def __init__(
        self,
        source: int | str,
        *,
        api: int | None = None,
        realtime: bool | None = None,
        reconnect: int = 0,
        timeout: float = 10.0,
    ):
        self.kind, self._spec = _classify(source)
        self.name = self._describe()
        if reconnect < 0:
            raise ValueError(f"reconnect must be >= 0, got {reconnect}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.reconnect = int(reconnect)
        self.timeout = float(timeout)
        self._api = api
        self._cap: cv2.VideoCapture | None = None
        self._closed = False
        self._lock = threading.Condition()
        self._cap_lock = threading.RLock()  # a file's read() vs close() from another thread
        self._thread: threading.Thread | None = None
        self._queue = LiveQueue()  # a live source's frames (live_queue: bursts kept whole)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._skipped_files = 0  # frames a realtime file skipped

        if self.kind == "file":
            check_video_path(self._spec)
        if self.kind == "gstreamer":
            self._check_gstreamer()

        self._cap = self._open()
        self.is_live = self._decide_live()
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        fps_ok = _finite_positive(fps) and fps <= 1000
        self.fps = float(fps) if fps_ok else (DEFAULT_LIVE_FPS if self.is_live else DEFAULT_FILE_FPS)
        n = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(n) if (not self.is_live and _finite_positive(n)) else None
        self.realtime = self.is_live if realtime is None else bool(realtime)

        self._index = 0  # index of the next frame to capture
        self._last_t = -math.inf
        self._wall0: float | None = None  # realtime file pacing: wall time of media time 0
        # Read one frame now: validates the source (a corrupt file or a silent camera fails
        # here, with its name) and gives `size`.
        first = self._capture_next()
        if first is None:
            self._release()
            what = "video file" if not self.is_live else "video source"
            raise SourceError(
                f"{what} {self.name} opened but no frame could be decoded "
                f"(corrupt, truncated or unsupported format?)"
            )
        self._pending: VideoFrame | None = first
        h, w = first.image.shape[:2]
        self.size = (int(w), int(h))
        if self.is_live and self.realtime:
            self._thread = threading.Thread(
                target=self._capture_loop, name=f"affedge-video-{self.kind}", daemon=True
            )
            self._thread.start()

    # ------------------------------------------------------------------ opening

    def _describe(self) -> str:
        if self.kind == "camera":
            return f"camera {self._spec}"
        if self.kind == "gstreamer":
            return f"GStreamer pipeline {self._spec!r}"
        return hide_credentials(str(self._spec))

    @staticmethod
    def _check_gstreamer():
        has = getattr(cv2, "videoio_registry", None)
        if has is not None and not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
            raise SourceError(
                "this OpenCV build has no GStreamer support (cv2.getBuildInformation() shows "
                "'GStreamer: NO'), so pipeline strings cannot be opened; use an OpenCV built "
                "with GStreamer (e.g. the one JetPack ships on Jetson) or a camera index/URL"
            )

    def _open(self) -> cv2.VideoCapture:
        api = self._api
        params: list[int] = []
        if api is None:
            if self.kind in ("url", "file"):
                api = cv2.CAP_FFMPEG
            elif self.kind == "gstreamer":
                api = cv2.CAP_GSTREAMER
            else:
                api = cv2.CAP_ANY
        if api == cv2.CAP_FFMPEG and self.kind == "url":
            ms = int(self.timeout * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        spec = self._spec
        if self.kind == "file" and not os.path.isabs(spec):
            spec = os.path.abspath(spec)
        # OpenCV's and FFmpeg's own stderr lines about a source it cannot open ("can't open
        # camera by index", "moov atom not found") give way to the error below, which names
        # FFmpeg's cause (native_stderr); they are written as before when the source opens
        with captured_stderr() as noise:
            cap = cv2.VideoCapture(spec, api, params) if params else cv2.VideoCapture(spec, api)
            opened = noise.echo_native = cap.isOpened()
        if not opened:
            cap.release()
            cause = noise.cause()
            raise SourceError(self._open_failure_message() + (f"; FFmpeg: {cause}" if cause
                                                              else ""))
        return cap

    def _open_failure_message(self) -> str:
        if self.kind == "camera":
            hint = ""
            if os.name == "posix" and not os.path.exists(f"/dev/video{self._spec}"):
                hint = f" (/dev/video{self._spec} does not exist)"
            return f"cannot open camera index {self._spec}{hint}; `affedge doctor` lists cameras"
        if self.kind == "device":
            exists = os.path.exists(self._spec)
            return f"cannot open camera device {self._spec}" + ("" if exists else " (no such device)")
        if self.kind == "url":
            return (
                f"cannot open stream URL {self._spec} (no answer within {self.timeout:g} s, "
                f"refused, or not a video stream)"
            )
        if self.kind == "gstreamer":
            hint = "" if "appsink" in self._spec else " (a pipeline must end in appsink)"
            return f"cannot open {self.name}{hint}"
        if _audio_only(self._spec):
            return (f"{self._spec} has no video stream (an audio-only file: give it as the "
                    f"audio, e.g. --audio {self._spec})")
        return f"cannot open video file {self._spec} (corrupt, truncated or unsupported format?)"

    def _decide_live(self) -> bool:
        if self.kind in ("camera", "device"):
            return True
        if self.kind == "file":
            return False
        if self.kind == "gstreamer":
            return "filesrc" not in self._spec
        scheme = self._spec.split("://", 1)[0].lower()
        if scheme in _LIVE_SCHEMES:
            return True
        # http(s)/ftp: a served file has a frame count; an MJPEG/HLS live stream has none.
        return not _finite_positive(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))

    def _release(self):
        with self._cap_lock:  # never under a read on another thread (see _capture_next)
            if self._cap is not None:
                self._cap.release()
                self._cap = None

    # ------------------------------------------------------------------ capture

    def _capture_next(self) -> VideoFrame | None:
        """Capture one frame (None at the end of a file); live failures raise SourceError."""
        if self.is_live:
            return self._capture_live()
        # A file has no capture thread of its own: its reader (e.g. affedge serve's capture
        # thread) calls this while close() may come from another thread. OpenCV's capture is
        # not thread-safe: a release() during a read() deadlocked inside FFmpeg (serve then
        # hung at SIGTERM). The lock makes close() wait for the read in progress (one frame).
        with self._cap_lock:
            if self._cap is None:
                return None  # closed meanwhile
            if self.realtime:
                self._pace_file()
            ok, image = self._cap.read()
            if not ok or image is None:
                return None
            pos = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        return self._make_frame(image, self._file_time(pos))

    def _file_time(self, pos: float) -> float:
        """Media time: the container's presentation time of this frame (OpenCV's position
        after the read, in s from the video stream's start) whenever it is finite and later
        than the previous frame's, so variable-frame-rate files keep their true times (never
        replaced by index/average fps). A repeated or backwards time becomes the previous
        time + 1 us (strictly increasing); a frame without a usable time gets index/fps."""
        if math.isfinite(pos) and pos > self._last_t:
            return pos
        if math.isfinite(pos) and math.isfinite(self._last_t):
            return self._last_t + 1e-6
        return max(self._index / self.fps, self._last_t + 1e-6)

    def _pace_file(self):
        now = time.monotonic()
        if self._wall0 is None:
            self._wall0 = now - self._index / self.fps
        due = self._wall0 + self._index / self.fps
        if due > now:
            time.sleep(due - now)
            return
        # Behind: skip (grab without decoding) frames whose time has passed, like a camera.
        while now - (self._wall0 + (self._index + 1) / self.fps) >= 0:
            if not self._cap.grab():
                return
            self._index += 1
            self._skipped_files += 1

    def _make_frame(self, image: np.ndarray, t: float) -> VideoFrame:
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        frame = VideoFrame(self._index, float(t), image)
        self._index += 1
        self._last_t = frame.t
        return frame

    def _capture_live(self) -> VideoFrame:
        failures = 0
        while True:
            if self._cap is not None and self._cap.grab():
                t = time.monotonic()
                ok, image = self._cap.retrieve()
                if ok and image is not None:
                    return self._make_frame(image, max(t, self._last_t + 1e-6))
            if self._stop.is_set():
                raise SourceError(f"{self.name} was closed")
            if failures >= self.reconnect:
                raise SourceError(
                    f"{self.name} stopped delivering frames (disconnected?)"
                    + (f"; {failures} reconnect attempt(s) failed" if failures else "")
                )
            failures += 1
            self._stop.wait(min(0.5 * failures, 2.0))
            self._release()
            try:
                self._cap = self._open()
            except SourceError:
                self._cap = None

    def _capture_loop(self):
        try:
            while not self._stop.is_set():
                frame = self._capture_live()
                with self._lock:
                    self._queue.put(frame)
                    self._lock.notify_all()
        except BaseException as e:  # noqa: BLE001  (handed to the consumer by read())
            with self._lock:
                self._error = e
                self._lock.notify_all()

    # ------------------------------------------------------------------ public API

    @property
    def dropped(self) -> int:
        """Frames skipped: a live source's while its reader was behind (live_queue), a realtime
        file's whose time had passed."""
        return self._queue.dropped + self._skipped_files

    def read(self) -> VideoFrame | None:
        """The next frame; None at the end of a file (or after close()).

        Raises SourceError when a live source stops delivering (after ``reconnect`` tries) or
        gives no frame for ``timeout`` seconds."""
        if self._closed:
            return None
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._thread is None:
            if self._cap is None:
                return None
            return self._capture_next()
        deadline = time.monotonic() + self.timeout
        with self._lock:
            while not self._queue and self._error is None and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SourceError(f"no frame from {self.name} for {self.timeout:g} s")
                self._lock.wait(left)
            frame = self._queue.pop()
            if frame is not None:
                return frame
            if self._closed:
                return None
            raise SourceError(str(self._error)) from self._error

    def __iter__(self):
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def close(self):
        """Stop the capture thread (if any) and release the device/file. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            # grab() returns within the backend's read timeout; release only after the join
            self._thread.join(timeout=self.timeout + 2.0)
            if self._thread.is_alive():
                return  # the daemon thread still owns the capture; leave it to exit
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110  (never raise from a finalizer)
            pass

    def __repr__(self):
        return (
            f"VideoSource({self.name}, live={getattr(self, 'is_live', None)}, "
            f"fps={getattr(self, 'fps', None)}, size={getattr(self, 'size', None)})"
        )


def open_video(spec) -> VideoSource:
    """A :class:`VideoSource` for ``spec`` (returned unchanged if it already is one)."""
    if isinstance(spec, VideoSource):
        return spec
    return VideoSource(spec)


def _camera_name(index: int) -> str | None:
    p = Path(f"/sys/class/video4linux/video{index}/name")
    try:
        return p.read_text().strip()
    except OSError:
        return None


def list_cameras(max_index: int = 4) -> list[dict]:
    """Cameras that open and deliver a frame, as dicts (index, name, device, width, height, fps,
    backend). On Linux only indices with a /dev/videoN node are probed (fast and quiet)."""
    found = []
    for i in range(max_index):
        device = f"/dev/video{i}"
        if os.name == "posix" and os.path.isdir("/dev") and not os.path.exists(device):
            continue
        cap = cv2.VideoCapture(i)
        try:
            if not cap.isOpened():
                continue
            ok, image = cap.read()
            if not ok or image is None:
                continue
            fps = cap.get(cv2.CAP_PROP_FPS)
            found.append(
                {
                    "index": i,
                    "name": _camera_name(i) or f"camera {i}",
                    "device": device if os.path.exists(device) else None,
                    "width": int(image.shape[1]),
                    "height": int(image.shape[0]),
                    "fps": float(fps) if _finite_positive(fps) else None,
                    "backend": cap.getBackendName(),
                }
            )
        finally:
            cap.release()
    return found


def _audio_only(path: str) -> bool:
    """The file opens as media with audio but no video stream (PyAV; False without it)."""
    try:
        import av
    except ImportError:
        return False
    try:
        with av.open(path) as c:
            return not c.streams.video and bool(c.streams.audio)
    except Exception:  # noqa: BLE001  (not media at all: the generic message fits)
        return False
