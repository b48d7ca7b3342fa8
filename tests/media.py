"""Build real test media in temporary directories: a video of a real face photo moving about,
real synthesized speech with known speech intervals, the two muxed into an mp4, WAV files in
many sample formats, and a small MJPEG-over-HTTP server that serves frames like an IP camera.

Nothing here is downloaded: the face is scikit-image's bundled ``astronaut()`` photo, speech
comes from the ``espeak-ng`` binary, muxing uses the ``ffmpeg`` binary (PyAV as a fallback).
These helpers deliberately do not use affedge's own I/O code (e.g. resampling goes through
scipy), so tests that read the media back check affedge against independent tooling.
"""
from __future__ import annotations

import http.server
import shutil
import socketserver
import struct
import subprocess
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SPEECH_SR = 16000
# astronaut() face box found by OpenCV's frontal Haar cascade: x=177, y=66, w=95, h=95; the
# crop adds a margin so a detector still sees a whole head.
_FACE_CROP = (140, 25, 310, 215)  # x0, y0, x1, y1 in the 512x512 photo


@dataclass(frozen=True)
class VideoMeta:
    path: Path
    n_frames: int
    fps: float
    size: tuple[int, int]  # (width, height)
    boxes: np.ndarray  # float32[n_frames, 4]: x, y, w, h of the pasted face crop per frame


def face_photo_bgr() -> np.ndarray:
    """The face region of scikit-image's astronaut photo, BGR uint8."""
    from skimage import data

    rgb = data.astronaut()
    x0, y0, x1, y1 = _FACE_CROP
    return np.ascontiguousarray(rgb[y0:y1, x0:x1, ::-1])


def face_frames(n_frames: int, fps: float = 25.0, size=(320, 240)) -> tuple[list, np.ndarray]:
    """Frames with the face pasted at smoothly varying positions and scales."""
    w, h = size
    face = face_photo_bgr()
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack(
        [60 + 40 * xx / w, 80 + 30 * yy / h, 100 + 20 * (xx + yy) / (w + h)], axis=-1
    ).astype(np.uint8)
    frames, boxes = [], []
    for i in range(n_frames):
        s = i / fps
        scale = 0.55 + 0.15 * np.sin(2 * np.pi * s / 4.0)
        fw = round(face.shape[1] * scale)
        fh = round(face.shape[0] * scale)
        cx = w / 2 + (w - fw) / 2 * 0.8 * np.sin(2 * np.pi * s / 3.0)
        cy = h / 2 + (h - fh) / 2 * 0.8 * np.sin(2 * np.pi * s / 5.0 + 1.0)
        x, y = round(cx - fw / 2), round(cy - fh / 2)
        frame = background.copy()
        frame[y : y + fh, x : x + fw] = cv2.resize(face, (fw, fh), interpolation=cv2.INTER_AREA)
        cv2.putText(frame, str(i), (4, h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        frames.append(frame)
        boxes.append((x, y, fw, fh))
    return frames, np.asarray(boxes, np.float32)


def make_face_video(path, seconds: float = 6.0, fps: float = 25.0, size=(320, 240)) -> VideoMeta:
    """Write the moving-face video with cv2.VideoWriter (mp4v) and return its metadata."""
    path = Path(path)
    n = round(seconds * fps)
    frames, boxes = face_frames(n, fps, size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {path}")
    for f in frames:
        writer.write(f)
    writer.release()
    return VideoMeta(path, n, float(fps), tuple(size), boxes)


# --------------------------------------------------------------------------------- audio


def _espeak(text: str, workdir: Path) -> tuple[np.ndarray, int]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    out = workdir / f"espeak_{PHRASES.index(text) if text in PHRASES else 'x'}.wav"
    subprocess.run([exe, "-s", "160", "-w", str(out), text], check=True, capture_output=True)
    with wave.open(str(out), "rb") as w:
        sr, nch = w.getframerate(), w.getnchannels()
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
    return x.reshape(-1, nch).mean(axis=1), sr


def _trim(x: np.ndarray, sr: int, rel: float = 0.02) -> np.ndarray:
    """Cut espeak's own leading/trailing near-silence so intervals are exact."""
    frame = sr // 100
    n = len(x) // frame
    rms = np.sqrt((x[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    on = np.nonzero(rms > rel * rms.max())[0]
    return x[on[0] * frame : (on[-1] + 1) * frame]


def to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    """Independent reference resampler (scipy polyphase), used only to build test data."""
    from math import gcd

    from scipy.signal import resample_poly

    if sr == SPEECH_SR:
        return x.astype(np.float32)
    g = gcd(SPEECH_SR, sr)
    return resample_poly(x, SPEECH_SR // g, sr // g).astype(np.float32)


PHRASES = ("Hello, how are you today?", "I am really happy to see you.")


def speech_signal(workdir, silences=(0.8, 1.0, 0.8), total: float | None = 6.0):
    """16 kHz mono float32 speech: silence, phrase, silence, phrase, silence (padded to total s).

    Returns (pcm, intervals) with intervals [(start_s, end_s), ...] of the two phrases."""
    workdir = Path(workdir)
    parts, intervals, t = [], [], 0.0
    for i, text in enumerate(PHRASES):
        pad = np.zeros(int(silences[i] * SPEECH_SR), np.float32)
        parts.append(pad)
        t += len(pad) / SPEECH_SR
        x, sr = _espeak(text, workdir)
        sp = to_16k(_trim(x, sr), sr)
        sp = 0.5 * sp / np.abs(sp).max()
        parts.append(sp)
        intervals.append((t, t + len(sp) / SPEECH_SR))
        t += len(sp) / SPEECH_SR
    parts.append(np.zeros(int(silences[-1] * SPEECH_SR), np.float32))
    pcm = np.concatenate(parts)
    if total is not None and len(pcm) < int(total * SPEECH_SR):
        pcm = np.concatenate([pcm, np.zeros(int(total * SPEECH_SR) - len(pcm), np.float32)])
    return pcm, intervals


def make_speech_wav(path, total: float | None = 6.0) -> list[tuple[float, float]]:
    """Write real espeak-ng speech with silences to a 16 kHz 16-bit mono WAV; return intervals."""
    path = Path(path)
    pcm, intervals = speech_signal(path.parent, total=total)
    write_wav(path, pcm, SPEECH_SR, "s16")
    return intervals


def write_wav(path, pcm: np.ndarray, sr: int, fmt: str = "s16", extensible: bool = False):
    """Write float pcm ([n] or [n, ch], range [-1, 1]) as WAV in fmt: u8, s16, s24, s32, f32, f64.

    Headers are written by hand (the stdlib wave module cannot write float WAVs)."""
    x = np.asarray(pcm, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    nch = x.shape[1]
    x = np.clip(x, -1.0, 1.0)
    if fmt == "u8":
        data, bits, tag = np.round(x * 127 + 128).astype(np.uint8).tobytes(), 8, 1
    elif fmt == "s16":
        data, bits, tag = np.round(x * 32767).astype("<i2").tobytes(), 16, 1
    elif fmt == "s24":
        v = np.round(x * (2**23 - 1)).astype("<i4").reshape(-1)
        b = v.view(np.uint8).reshape(-1, 4)[:, :3]
        data, bits, tag = b.tobytes(), 24, 1
    elif fmt == "s32":
        data, bits, tag = np.round(x * (2**31 - 1)).astype("<i4").tobytes(), 32, 1
    elif fmt == "f32":
        data, bits, tag = x.astype("<f4").tobytes(), 32, 3
    elif fmt == "f64":
        data, bits, tag = x.astype("<f8").tobytes(), 64, 3
    elif fmt == "alaw":  # an unsupported format, for error tests (bytes need not be real A-law)
        data, bits, tag = np.zeros(x.size, np.uint8).tobytes(), 8, 6
    else:
        raise ValueError(f"unknown WAV format {fmt!r}")
    block = nch * bits // 8
    if extensible:
        guid = struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt_chunk = struct.pack(
            "<HHIIHHHHI", 0xFFFE, nch, sr, sr * block, block, bits, 22, bits, 0
        ) + guid
    else:
        fmt_chunk = struct.pack("<HHIIHH", tag, nch, sr, sr * block, block, bits)
    pad = b"\x00" if len(data) % 2 else b""
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt_chunk))
        + fmt_chunk
        + b"data"
        + struct.pack("<I", len(data))
        + data
        + pad
    )
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def mux(video, wav, out, rate: int | None = None, channels: int | None = None) -> Path:
    """Mux a video file and a WAV into an mp4 (video copied, audio AAC, optionally converted
    to ``rate`` Hz / ``channels`` channels; the conversion needs the ffmpeg binary)."""
    out = Path(out)
    exe = shutil.which("ffmpeg")
    if exe is not None:
        cmd = [exe, "-y", "-loglevel", "error", "-i", str(video), "-i", str(wav)]
        cmd += ["-c:v", "copy", "-c:a", "aac", "-shortest", str(out)]
        if rate:
            cmd[-1:-1] = ["-ar", str(rate)]
        if channels:
            cmd[-1:-1] = ["-ac", str(channels)]
        subprocess.run(cmd, check=True, capture_output=True)
        return out
    if rate or channels:
        raise RuntimeError("mux with rate/channels conversion needs the ffmpeg binary")
    return _mux_pyav(video, wav, out)


def _mux_pyav(video, wav, out) -> Path:
    import av

    with wave.open(str(wav), "rb") as w:
        sr = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(1, -1)
    with av.open(str(video)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        aout = dst.add_stream("aac", rate=sr, layout="mono")
        for packet in src.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            dst.mux(packet)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = sr
        for packet in aout.encode(frame):
            dst.mux(packet)
        for packet in aout.encode(None):
            dst.mux(packet)
    return out


def envelope(pcm: np.ndarray, sr: int = SPEECH_SR, frame_s: float = 0.02) -> np.ndarray:
    """RMS energy per frame_s frame."""
    n = round(sr * frame_s)
    m = len(pcm) // n
    return np.sqrt((np.asarray(pcm[: m * n], np.float64).reshape(m, n) ** 2).mean(axis=1))


def best_lag_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """Max Pearson correlation of envelopes a and b over lags in [-max_lag, max_lag].

    Lag L > 0 means b is delayed by L frames relative to a (b[i + L] ~ a[i])."""
    best = (-1.0, 0)
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            x, y = a[: len(b) - lag], b[lag:]
        else:
            x, y = a[-lag:], b[: len(b) + lag]
        n = min(len(x), len(y))
        if n < 10:
            continue
        x, y = x[:n], y[:n]
        if x.std() == 0 or y.std() == 0:
            continue
        r = float(np.corrcoef(x, y)[0, 1])
        if r > best[0]:
            best = (r, lag)
    return best


# --------------------------------------------------------------------------------- MJPEG


class MjpegServer:
    """Serve frames as multipart/x-mixed-replace JPEG (like an IP camera) on 127.0.0.1.

    ``url`` is ``http://127.0.0.1:PORT/stream.mjpg``; frames loop forever at ``fps``, sent
    ``burst`` at a time back to back (a network camera's bursty delivery; 1: evenly). Use as a
    context manager; ``stop()`` ends the streams and the server thread."""

    def __init__(self, frames: list[np.ndarray], fps: float = 25.0, port: int = 0,
                 burst: int = 1):
        self.jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for f in frames]
        self.fps = fps
        self.burst = int(burst)
        self._stop = threading.Event()
        self.frames_sent = 0
        server_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                if self.path != "/stream.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                i, t0 = 0, time.monotonic()
                try:
                    while not server_self._stop.is_set():
                        jpg = server_self.jpegs[i % len(server_self.jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                        self.wfile.write(b"Content-Length: %d\r\n\r\n" % len(jpg))
                        self.wfile.write(jpg + b"\r\n")
                        self.wfile.flush()
                        server_self.frames_sent += 1
                        i += 1
                        if i % server_self.burst:
                            continue  # the rest of the burst goes at once
                        delay = t0 + i / server_self.fps - time.monotonic()
                        if delay > 0:
                            server_self._stop.wait(delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> MjpegServer:
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
