"""A network stream's video and its own audio through one PyAV demuxer, on the stream's clock.

IP cameras send audio in the same RTSP/HTTP/MPEG-TS stream as the video. :class:`NetworkAVSource`
opens the URL once (FFmpeg's demuxer, via PyAV), decodes both streams on one thread, and stamps
frames and audio with the stream's own presentation times (PTS), so lips and voice keep the
alignment the camera sent. Video frames are delivered like a live :class:`VideoSource`'s
(:mod:`~affedge.sdk.sources.live_queue`: a burst kept whole, skipped to the newest frame when
the reader falls behind, ``dropped``; indices count every decoded frame). Audio goes
straight to ``on_audio(pcm, t, sample_rate)`` (e.g. a recognizer's
``engine.audio.push``; the audio timeline resamples it), as float32 mono (the channel mean,
as :class:`~affedge.sdk.sources.audio.VideoAudioSource` downmixes files).

Reconnecting: when the stream ends or fails, ``read()`` raises :class:`SourceError`; the caller
opens a new source with the same :class:`StreamClock`, which keeps times increasing across
connections (a new connection's first PTS continues from the last time delivered).
"""
from __future__ import annotations

import math
import threading
import time

import numpy as np

from ._errors import SourceError
from .credentials import hide_credentials
from .live_queue import LiveQueue
from .video import VideoFrame

#: FFmpeg open / read timeouts (s)
OPEN_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 5.0


class StreamClock:
    """Media time across reconnects: ``t = pts + offset``; a new connection's offset makes its
    first time follow the previous connection's last one by one frame period."""

    def __init__(self, period: float = 1 / 30):
        self.offset = 0.0
        self.last_t: float | None = None
        self.period = period
        self.next_index = 0
        self._lock = threading.Lock()
        self._connection = 0

    def new_connection(self) -> int:
        with self._lock:
            self._connection += 1
            return self._connection

    def time(self, pts: float, connection: int, anchored: list) -> float:
        with self._lock:
            if not anchored:  # first packet of this connection (audio or video)
                anchored.append(True)
                if self.last_t is not None and pts + self.offset <= self.last_t:
                    self.offset = self.last_t + self.period - pts
            t = pts + self.offset
            if self.last_t is None or t > self.last_t:
                self.last_t = t
            return t


class NetworkAVSource:
    """Video + audio of one network stream (see the module docstring). ``is_live`` is True."""

    is_live = True
    kind = "url"

    def __init__(self, url: str, *, on_audio=None, clock: StreamClock | None = None,
                 timeout: float = READ_TIMEOUT_S):
        try:
            import av
        except ImportError as exc:
            raise SourceError("reading a network stream's audio needs PyAV: pip install av") \
                from exc
        self.url = url
        self.name = hide_credentials(url)  # (in messages, status and logs)
        self.timeout = float(timeout)
        self.clock = clock or StreamClock()
        self._on_audio = on_audio
        #: its audio goes to ``on_audio`` itself (run() then opens no audio source of its own)
        self.pushes_audio = on_audio is not None
        self.audio_chunks = 0
        self._cond = threading.Condition()
        self._queue = LiveQueue()
        self._error: BaseException | None = None
        self._closed = False
        try:
            self._container = av.open(url, timeout=(OPEN_TIMEOUT_S, self.timeout))
        except Exception as exc:  # noqa: BLE001  (av.error.* are OSError subclasses)
            raise SourceError(f"cannot open stream {url}: {exc}") from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"stream {url} has no video")
        self._video = self._container.streams.video[0]
        self._audio = self._container.streams.audio[0] if self._container.streams.audio \
            else None
        if self._audio is None:
            self._container.close()
            raise SourceError(f"stream {url} has no audio track (use --audio none or a mic)")
        rate = self._video.average_rate
        self.fps = float(rate) if rate else 30.0
        self.clock.period = 1.0 / self.fps if self.fps > 0 else self.clock.period
        self.size = (int(self._video.codec_context.width or 0),
                     int(self._video.codec_context.height or 0))
        self._connection = self.clock.new_connection()
        self._thread = threading.Thread(target=self._demux, name="affedge-netav", daemon=True)
        self._thread.start()

    def _demux(self) -> None:
        import av

        anchored: list = []
        to_fltp = None
        try:
            for packet in self._container.demux(self._video, self._audio):
                if self._closed:
                    return
                for frame in packet.decode():
                    if frame.time is None or not math.isfinite(frame.time):
                        continue
                    t = self.clock.time(float(frame.time), self._connection, anchored)
                    if packet.stream is self._video:
                        self._deliver(frame.to_ndarray(format="bgr24"), t)
                    elif self._on_audio is not None:
                        if to_fltp is None:
                            to_fltp = av.AudioResampler(format="fltp", layout=frame.layout.name,
                                                        rate=frame.sample_rate)
                        for f in to_fltp.resample(frame):
                            x = f.to_ndarray()
                            pcm = x.mean(axis=0) if x.shape[0] > 1 else x[0]
                            self._on_audio(np.ascontiguousarray(pcm, np.float32), t,
                                           int(f.sample_rate))
                            self.audio_chunks += 1
            raise SourceError(f"stream {self.url} ended")
        except BaseException as exc:  # noqa: BLE001  (handed to read())
            with self._cond:
                self._error = exc if isinstance(exc, SourceError) else \
                    SourceError(f"stream {self.url} failed: {exc}")
                self._cond.notify_all()

    def _deliver(self, image: np.ndarray, t: float) -> None:
        with self._cond:
            self._queue.put(VideoFrame(self.clock.next_index, t, image))
            self.clock.next_index += 1
            self._cond.notify_all()

    @property
    def dropped(self) -> int:
        """Frames skipped while the reader was behind."""
        return self._queue.dropped

    def read(self) -> VideoFrame | None:
        """The next frame (waits up to ``timeout`` s; see the module docstring for skipping);
        None after close(); SourceError when the stream ended or failed."""
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while not self._queue and self._error is None and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SourceError(f"no frame from {self.url} for {self.timeout:g} s")
                self._cond.wait(left)
            if self._closed:
                return None
            frame = self._queue.pop()
            if frame is not None:
                return frame
            raise self._error

    def close(self) -> None:
        """Stop the demuxer thread and close the connection. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(self.timeout + 2.0)
        try:
            self._container.close()
        except Exception:  # noqa: BLE001, S110
            pass
        # the decoders (and their threads) go now, not at a later garbage collection: the
        # stored error's traceback holds read()'s frame, which holds this source (a cycle),
        # and the streams hold the decoders. A serve whose camera reconnected every 2 s had
        # 1 native thread more per reconnect until a collection (24 -> 44 threads)
        if self._thread.is_alive():  # (a read stuck past its timeout: left to the collector)
            return
        if self._error is not None:
            self._error.__traceback__ = None
        self._video = self._audio = self._container = None
        self._queue = LiveQueue()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
