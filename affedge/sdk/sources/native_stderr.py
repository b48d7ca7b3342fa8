"""What native libraries (OpenCV, its FFmpeg) print to stderr during one call, kept for its error.

OpenCV and FFmpeg write their own lines to file descriptor 2 (``[ WARN:0@0.5] global
cap.cpp:212 open VIDEOIO(FFMPEG): ...``, ``[mov,mp4,... @ 0x55...] moov atom not found``), which
Python cannot catch. Around a video open, :func:`captured_stderr` points descriptor 2 at a
temporary file; a failed open then names FFmpeg's cause in its own one-line error
(:meth:`Captured.cause`), and nothing else is lost: every other line (another thread's, or all
of them when the open succeeds) is written back to stderr afterwards. One block captures at
a time."""
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


#: held by the one block capturing now. A block that starts while another captures does not
#: capture (its lines go to that block's file and are written back at its end): two blocks on
#: two threads, each with a dup2 of its own undone out of order, once left descriptor 2 on a
#: deleted file and every later line was lost (a Hub trial opening several streams at once).
_CAPTURING = threading.Lock()


@contextlib.contextmanager
def captured_stderr():
    """Descriptor 2 into a temporary file for the block; yields a :class:`Captured`. Lines that
    are not native (another thread's) are always written back to stderr afterwards. Without a
    usable descriptor 2, or while another thread's block captures, nothing is captured (the
    caller's error then lacks FFmpeg's cause)."""
    got = Captured()
    if not _CAPTURING.acquire(blocking=False):
        yield got
        return
    try:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield got
            return
        lines: list[str] = []
        try:
            with tempfile.TemporaryFile() as tmp:
                os.dup2(tmp.fileno(), 2)
                try:
                    yield got
                finally:
                    os.dup2(saved, 2)
                    tmp.seek(0)
                    lines = tmp.read().decode("utf-8", "replace").splitlines()
        finally:
            os.close(saved)
            got.native = [ln for ln in lines if _is_native(ln)]
            again = [ln for ln in lines if got.echo_native or not _is_native(ln)]
            if again:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write("\n".join(again) + "\n")
                    sys.stderr.flush()
    finally:
        _CAPTURING.release()
