"""What native libraries (OpenCV, its FFmpeg) print to stderr during one call, kept for its error.

OpenCV and FFmpeg write their own lines to file descriptor 2 (``[ WARN:0@0.5] global
cap.cpp:212 open VIDEOIO(FFMPEG): ...``, ``[mov,mp4,... @ 0x55...] moov atom not found``), which
Python cannot catch. Around a video open, :func:`captured_stderr` points descriptor 2 at a
temporary file; a failed open then names FFmpeg's cause in its own one-line error
(:meth:`Captured.cause`), and nothing else is lost: every other line (another thread's, or all
of them when the open succeeds) is written back to stderr afterwards. Blocks on several
threads share one redirection, undone when the last of them ends."""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading

#: FFmpeg's log prefix ("[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55e633adb940] ") and OpenCV's
#: ("[ WARN:0@0.497] ", "[ERROR:0@1.2] ")
_FFMPEG = re.compile(r"^\[[^\]@]+ @ 0x[0-9a-f]+\] ")
_OPENCV = re.compile(r"^\[\s*(WARN|ERROR|INFO|DEBUG)[^\]]*\] ")


class Captured:
    """What :func:`captured_stderr` caught: ``native`` (FFmpeg's and OpenCV's lines, filled
    when the block ends); ``echo_native``: write them back to stderr too (set it False when
    the caller reports them in its own error)."""

    def __init__(self) -> None:
        self.native: list[str] = []
        self.echo_native = True

    def cause(self) -> str:
        """FFmpeg's own words ("moov atom not found"), "" when it said nothing."""
        for ln in self.native:
            m = _FFMPEG.match(ln)
            if m:
                return ln[m.end():].strip()
        return ""


def _is_native(line: str) -> bool:
    return bool(_FFMPEG.match(line) or _OPENCV.match(line))


#: the one redirection of descriptor 2 shared by every block in progress (None: none is):
#: ``{"saved": the real stderr's dup, "tmp": the file, "depth": blocks open, "hidden": byte
#: offsets of native lines a block reports in its own error}``. Blocks on several threads
#: (a hub opening several streams at once) overlap: each dup2 of its own, undone out of
#: order, once left descriptor 2 on a deleted file and every later line was lost (a trial).
_SHARED: dict | None = None
_LOCK = threading.Lock()


def _split(data: bytes, base: int) -> list[tuple[int, str]]:
    """(offset of the line in the file, line) for each line of ``data`` read at ``base``."""
    out, pos = [], 0
    for raw in data.splitlines(keepends=True):
        out.append((base + pos, raw.decode("utf-8", "replace").rstrip("\r\n")))
        pos += len(raw)
    return out


@contextlib.contextmanager
def captured_stderr():
    """Descriptor 2 into a temporary file for the block; yields a :class:`Captured`. Lines that
    are not native (another thread's) are always written back to stderr afterwards, when the
    last block in progress ends. Without a usable descriptor 2 nothing is captured."""
    global _SHARED
    got = Captured()
    with _LOCK:
        if _SHARED is None:
            try:
                sys.stderr.flush()
                saved = os.dup(2)
            except (OSError, ValueError, AttributeError):
                saved = None
            if saved is not None:
                tmp = tempfile.TemporaryFile()
                os.dup2(tmp.fileno(), 2)
                _SHARED = {"saved": saved, "tmp": tmp, "depth": 0, "hidden": set()}
        shared = _SHARED
        if shared is not None:
            shared["depth"] += 1
            start = os.fstat(shared["tmp"].fileno()).st_size
    if shared is None:
        yield got
        return
    try:
        yield got
    finally:
        again: list[str] = []
        with _LOCK:
            fd = shared["tmp"].fileno()
            end = os.fstat(fd).st_size
            mine = _split(os.pread(fd, end - start, start), start)
            got.native = [ln for _, ln in mine if _is_native(ln)]
            if not got.echo_native:
                shared["hidden"].update(off for off, ln in mine if _is_native(ln))
            shared["depth"] -= 1
            if shared["depth"] == 0:
                os.dup2(shared["saved"], 2)
                os.close(shared["saved"])
                every = _split(os.pread(fd, end, 0), 0)
                again = [ln for off, ln in every if off not in shared["hidden"]]
                shared["tmp"].close()
                _SHARED = None
        if again:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write("\n".join(again) + "\n")
                sys.stderr.flush()
