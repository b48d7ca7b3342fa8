"""Live microphone capture through pyaudio (PortAudio), lock-free hand-off via the C++ ring.

Data path (ARCHITECTURE.md §5-§6): PortAudio's callback thread receives float32 blocks at the
device rate and averages the channels. Then, either

* connected (``connect(push)``, what ``Recognizer.run`` does): the callback hands each block at
  the device rate with its timestamp straight to ``push(pcm, t, sample_rate)`` -- the
  recognizer's :class:`affedge.sdk.audio_timeline.AudioTimeline`, which resamples once and
  keeps the one audio clock; no ring, no thread in between; capture errors are raised by
  :meth:`MicrophoneSource.check`;
* or read (``read()``, for apps that take the audio themselves): the callback resamples to
  16 kHz with ``audio_io.StreamResampler`` and pushes fixed ``chunk_ms`` blocks with their
  timestamps into an ``affedge._ringbuf.RingBuffer`` (capacity ``capacity_s`` seconds), which
  ``read()`` empties in order.

Audio is never dropped silently: blocks overwritten before they were read (consumer too slow for
``capacity_s``) and PortAudio input-overflow flags (capture too slow) are both counted in
``overruns``.

Timestamps: ``time.monotonic()`` of each block's first sample, from the device's sample
count and a clock anchor (the monotonic time of input sample 0). Each callback gives a
candidate anchor ``arrival - samples_so_far / rate`` (its last sample cannot have been captured
after the callback arrived); the anchor follows the *lower envelope* of the candidates, since
scheduling delays only ever make callbacks late. After the settling period, moves down to an
earlier candidate are slew-limited (``MAX_SLEW``, 0.5 ms per 20 ms) so consecutive chunk
times stay within a few percent of the chunk length. The anchor may rise by at most
``MAX_DRIFT`` (500 ppm, above any sound card crystal's error) of the elapsed audio time, which
follows clock drift without letting a late callback shift the timeline; if every candidate of
the last ``REANCHOR_WINDOW_S`` is later than the anchor by more than ``REANCHOR_S`` (input was
lost), it jumps forward. The first ``SETTLE_S`` of audio is held back until the anchor has
seen several callbacks. Timestamps are strictly increasing and spaced by exactly the sample
count otherwise. PortAudio's ``input_buffer_adc_time`` is deliberately not used: with ALSA's
pulse plugin it reported a 340 ms capture latency that decayed to 9 ms within seconds while the
callbacks stayed perfectly regular (measured in the test container), which would bend the
timeline; the lower envelope of arrivals is within one buffer (``chunk_ms``) of the true
capture time plus the driver's fixed latency.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import time

import numpy as np

from ...features import audio_io
from ._errors import SourceError
from .audio import SAMPLE_RATE, AudioChunk, AudioSource

_INSTALL_HINT = "microphone capture needs pyaudio: pip install 'affedge[audio]' (and PortAudio)"
MAX_DRIFT = 500e-6  # anchor may rise by this fraction of elapsed audio time (crystals: <100 ppm)
MAX_SLEW = 0.025  # downward corrections: at most 2.5 % of elapsed audio time (0.5 ms/20 ms)
REANCHOR_S = 0.1  # all recent callbacks this much later than the anchor: input was lost
REANCHOR_WINDOW_S = 0.5
SETTLE_S = 0.2  # hold the first blocks until the anchor has seen this much audio


def _import_pyaudio():
    try:
        import pyaudio  # lazy: optional runtime dependency
    except ImportError as e:
        raise SourceError(_INSTALL_HINT) from e
    return pyaudio


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the C-level stderr chatter ALSA/JACK print while PortAudio probes devices.

    Set AFFEDGE_AUDIO_DEBUG=1 to see it."""
    if os.environ.get("AFFEDGE_AUDIO_DEBUG"):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _new_pyaudio():
    pyaudio = _import_pyaudio()
    with _quiet_stderr():
        return pyaudio, pyaudio.PyAudio()


def _input_devices(pa) -> list[dict]:
    out = []
    try:
        default = pa.get_default_input_device_info()["index"]
    except OSError:
        default = None
    for i in range(pa.get_device_count()):
        d = pa.get_device_info_by_index(i)
        if d.get("maxInputChannels", 0) < 1:
            continue
        out.append(
            {
                "index": int(d["index"]),
                "name": str(d["name"]),
                "channels": int(d["maxInputChannels"]),
                "default_sample_rate": float(d["defaultSampleRate"]),
                "host_api": str(pa.get_host_api_info_by_index(d["hostApi"])["name"]),
                "default": int(d["index"]) == default,
            }
        )
    return out


def list_microphones() -> list[dict]:
    """Input devices as dicts (index, name, channels, default_sample_rate, host_api, default).

    Raises SourceError with the install hint when pyaudio is missing."""
    _, pa = _new_pyaudio()
    try:
        return _input_devices(pa)
    finally:
        pa.terminate()


def _resolve_device(pa, device) -> dict:
    devices = _input_devices(pa)
    if device is None:
        for d in devices:
            if d["default"]:
                return d
        raise SourceError(
            "no default audio input device (no microphone, or no sound server running?); "
            f"input devices: {[d['name'] for d in devices] or 'none'}"
        )
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    if isinstance(device, int):
        for d in devices:
            if d["index"] == device:
                return d
        raise SourceError(
            f"audio input device {device} does not exist or has no input channels; input "
            f"devices: {[(d['index'], d['name']) for d in devices] or 'none'}"
        )
    if isinstance(device, str):
        exact = [d for d in devices if d["name"] == device]
        part = [d for d in devices if device.lower() in d["name"].lower()]
        hits = exact or part
        if len(hits) == 1:
            return hits[0]
        what = "matches several" if hits else "matches no"
        raise SourceError(
            f"microphone name {device!r} {what} input device(s): "
            f"{[(d['index'], d['name']) for d in (hits or devices)]}"
        )
    raise TypeError(f"device must be None, an int index or a name, got {type(device).__name__}")


class MicrophoneSource(AudioSource):
    """A live microphone (see module doc).

    Args:
        device: None (default input), a device index, or a (part of a) device name.
        chunk_ms: length of each delivered chunk.
        input_rate: capture rate; default 16000 when the device accepts it, else its default.
        capacity_s: seconds of audio the ring holds for a slow consumer before overrunning.
    """

    is_live = True

    def __init__(self, device=None, chunk_ms: float = 20, input_rate: int | None = None,
                 capacity_s: float = 10.0):
        super().__init__(f"microphone {device if device is not None else '(default)'}", chunk_ms)
        if not capacity_s > 0:
            raise ValueError(f"capacity_s must be > 0, got {capacity_s}")
        from ... import _ringbuf  # C++ extension (built with the package)

        self._pyaudio, self._pa = _new_pyaudio()
        try:
            self.device = _resolve_device(self._pa, device)
            self.name = f"microphone {self.device['index']} ({self.device['name']})"
            mono = self._supported(SAMPLE_RATE, 1) or self._supported(None, 1)
            self.channels = 1 if mono else min(2, self.device["channels"])
            if input_rate is None:
                native = round(self.device["default_sample_rate"])
                input_rate = SAMPLE_RATE if self._supported(SAMPLE_RATE, self.channels) else native
            elif not self._supported(int(input_rate), self.channels):
                raise SourceError(
                    f"{self.name} does not support {input_rate} Hz x {self.channels} channel(s)"
                )
            self.input_rate = int(input_rate)
        except BaseException:
            self._pa.terminate()
            raise
        n_blocks = max(2, math.ceil(capacity_s * 1000.0 / self.chunk_ms))
        self._ring = _ringbuf.RingBuffer(self.chunk_size, n_blocks)
        self._resampler = audio_io.StreamResampler(self.input_rate, SAMPLE_RATE)
        self._pending = np.zeros(0, np.float32)
        self._anchor: float | None = None  # monotonic time of input sample 0 (drift-corrected)
        self._n_in = 0  # input samples received
        self._recent: list[float] = []  # recent anchor candidates (re-anchoring)
        self._n_out = 0  # 16 kHz samples pushed into the ring
        self._last_t = -math.inf
        self._pa_overflows = 0
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        # serialises start() and close() (e.g. Recognizer.close() on one thread while run()'s
        # cleanup closes the same source on another): PortAudio must not be terminated twice
        # nor have a stream opened after termination (both abort the process)
        self._life_lock = threading.Lock()
        self._stream = None
        self._push = None  # connect(push): the callback delivers to push() instead of the ring
        self._held: list[np.ndarray] = []  # connected: audio held during the settling period

    def connect(self, push) -> None:
        """Deliver every captured block to ``push(pcm_float32, t, sample_rate)`` from the
        capture callback (device rate; ``t`` = time of its first sample) instead of the ring.
        Call before :meth:`start`."""
        if self._started:
            raise SourceError(f"{self.name}: connect() must come before start()")
        if not callable(push):
            raise TypeError(f"connect needs a callable push(pcm, t, sample_rate), got "
                            f"{type(push).__name__}")
        self._push = push

    def check(self) -> None:
        """Raise SourceError if the capture failed or the device stopped delivering audio."""
        if self._error is not None:
            raise SourceError(f"{self.name} capture failed: {self._error}") from self._error
        stream = self._stream  # close() on another thread may clear it
        if stream is not None and not self._closed and not stream.is_active():
            raise SourceError(f"{self.name} stopped delivering audio (disconnected?)")

    def _supported(self, rate, channels) -> bool:
        rate = rate or round(self.device["default_sample_rate"])
        try:
            return bool(
                self._pa.is_format_supported(
                    rate,
                    input_device=self.device["index"],
                    input_channels=channels,
                    input_format=self._pyaudio.paFloat32,
                )
            )
        except ValueError:
            return False

    # ------------------------------------------------------------------ producer (callback)

    def _callback(self, in_data, frame_count, time_info, status):
        arrival = time.monotonic()
        try:
            if status & self._pyaudio.paInputOverflow:
                self._pa_overflows += 1
            x = audio_io.to_float_mono(np.frombuffer(in_data, np.float32), channels=self.channels)
            self._produce(x, arrival)
        except BaseException as e:  # noqa: BLE001  (reported by read(); stop capturing)
            with self._cond:
                self._error = e
                self._cond.notify_all()
            return (None, self._pyaudio.paAbort)
        return (None, self._pyaudio.paContinue)

    def _update_anchor(self, n_new: int, arrival: float):
        """Lower-envelope clock anchor (see module doc)."""
        self._n_in += n_new
        candidate = arrival - self._n_in / self.input_rate
        dt = n_new / self.input_rate
        if self._anchor is None or self._n_in - n_new < SETTLE_S * self.input_rate:
            self._anchor = candidate if self._anchor is None else min(self._anchor, candidate)
        elif candidate < self._anchor:  # an earlier-arriving callback: move down, slew-limited
            self._anchor = max(candidate, self._anchor - MAX_SLEW * dt)
        else:  # drift: rise at most MAX_DRIFT
            self._anchor = min(candidate, self._anchor + MAX_DRIFT * dt)
        recent = self._recent
        recent.append(candidate)
        if len(recent) > max(3, int(REANCHOR_WINDOW_S / max(dt, 1e-6))):
            recent.pop(0)
            if min(recent) - self._anchor > REANCHOR_S:
                self._anchor = min(recent)

    def _produce(self, x: np.ndarray, arrival: float):
        self._update_anchor(x.size, arrival)
        if self._push is not None:
            self._deliver(x)
            return
        y = self._resampler.push(x)
        self._pending = np.concatenate([self._pending, y]) if self._pending.size else y
        b = self.chunk_size
        pushed = False
        if self._n_in < SETTLE_S * self.input_rate:
            return
        while self._pending.size >= b:
            block, self._pending = self._pending[:b], self._pending[b:]
            t = max(self._anchor + self._n_out / SAMPLE_RATE, self._last_t + 1e-6)
            self._ring.push(t, block)
            self._last_t = t
            self._n_out += b
            pushed = True
        if pushed:
            with self._cond:
                self._cond.notify_all()

    def _deliver(self, x: np.ndarray):
        """Connected mode: hand the block (device rate) to push() with its timestamp, once the
        anchor has settled (the blocks of the settling period go out together, then)."""
        self._held.append(x)
        if self._n_in < SETTLE_S * self.input_rate:
            return
        pcm = np.concatenate(self._held) if len(self._held) > 1 else self._held[0]
        self._held = []
        first = self._n_in - pcm.size  # input sample index of pcm[0]
        t = max(self._anchor + first / self.input_rate, self._last_t + 1e-6)
        self._last_t = t
        self._push(pcm, t, self.input_rate)

    # ------------------------------------------------------------------ consumer

    def _start(self):
        with self._life_lock:
            if self._closed:
                raise SourceError(f"audio source {self.name} is closed")
            self._open_stream()

    def _open_stream(self):
        pyaudio = self._pyaudio
        frames = max(1, round(self.input_rate * self.chunk_ms / 1000.0))
        try:
            with _quiet_stderr():
                self._stream = self._pa.open(
                    format=pyaudio.paFloat32,
                    channels=self.channels,
                    rate=self.input_rate,
                    input=True,
                    input_device_index=self.device["index"],
                    frames_per_buffer=frames,
                    stream_callback=self._callback,
                    start=True,
                )
        except (OSError, ValueError) as e:
            raise SourceError(f"cannot open {self.name} at {self.input_rate} Hz: {e}") from e

    @property
    def overruns(self) -> int:
        """Blocks lost in the ring (consumer too slow) + PortAudio input overflows."""
        return int(self._ring.overruns) + self._pa_overflows

    def _take(self) -> AudioChunk | None:
        if self._ring.unread:
            ts, vals = self._ring.read_new(1)
            if ts.size:
                return AudioChunk(float(ts[0]), vals[0])
        return None

    def read(self, timeout: float | None = None) -> AudioChunk | None:
        """The next chunk (oldest first). Blocks up to ``timeout`` s (None: until audio comes);
        on timeout returns an empty chunk. None after close() once the unread audio is out.
        Raises SourceError if the device stops (disconnected) or the capture failed."""
        if not self._started and not self._closed:
            self.start()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            chunk = self._take()
            if chunk is not None:
                return chunk
            if self._closed:
                return None
            self.check()
            wait = 0.25
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return AudioChunk(self._next_time(), np.zeros(0, np.float32))
                wait = min(wait, left)
            with self._cond:
                if not self._ring.unread and self._error is None:
                    self._cond.wait(wait)

    def _next_time(self) -> float:
        if self._anchor is None:
            return time.monotonic()
        return self._anchor + self._n_out / SAMPLE_RATE

    def close(self):
        """Stop the stream (joins PortAudio's callback thread), terminate PyAudio. Idempotent.
        Chunks already captured can still be read; then read() returns None. Thread-safe."""
        with self._life_lock:
            if self._closed:
                return
            super().close()  # marks closed first: a concurrent read() now ends
            stream, self._stream = self._stream, None
            try:
                if stream is not None:
                    try:
                        stream.stop_stream()
                    finally:
                        stream.close()
            finally:
                self._pa.terminate()
        with self._cond:
            self._cond.notify_all()
