"""Console output shared by every ``affedge`` subcommand: verbosity, progress bars, warnings.

One grammar for all commands (affedge/cli.py adds the flags to each subparser):

* ``-q/--quiet``: no progress bars and no status lines; errors and a command's result are still
  printed.
* ``-v/--verbose``: debug detail, third-party warnings and tracebacks of errors.
  ``AFFEDGE_DEBUG=1`` is the deprecated spelling of ``-v``.

Progress bars (tqdm, also those drawn inside the library) appear only when stderr is a terminal
and none of these documented conventions asks for plain output: ``CI`` set to a true value (set by
GitHub Actions, GitLab CI and most CI services), ``TERM=dumb`` (a terminal that cannot move the
cursor), ``NO_COLOR`` (https://no-color.org: no decorations for people who asked for plain
output). When they are off, ``TQDM_DISABLE=1`` is exported so that every tqdm bar in this process
is switched off at its source (tqdm >= 4.66 reads it).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

QUIET, NORMAL, VERBOSE = 0, 1, 2

# Third-party warnings a user of the CLI cannot act on, filtered by (category, module regex)
# unless -v. Module patterns match the module that *issues* the warning (warnings' ``module``).
_NOISE: tuple[tuple[type[Warning], str], ...] = (
    (UserWarning, r"torchvision(\..*)?"),
    (UserWarning, r"torch(\..*)?"),
    (DeprecationWarning, r"torch(\..*)?"),
    (FutureWarning, r"torch(\..*)?"),
    (FutureWarning, r"onnxscript(\..*)?"),
    (DeprecationWarning, r"onnxscript(\..*)?"),
    (UserWarning, r"onnxruntime(\..*)?"),
    (RuntimeWarning, r"av(\..*)?"),
)
# torch's tracer warnings are their own category (imported lazily: torch is optional)
_NOISY_LOGGERS = ("torch", "torch.onnx", "torch._dynamo", "torch._inductor", "torch.export",
                  "onnxscript", "onnx_ir", "onnxruntime")

_level = NORMAL


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


def plain_output_requested(env=None) -> str | None:
    """The convention that asks for plain (no progress bar) output, or None."""
    env = os.environ if env is None else env
    if truthy(env.get("CI")):
        return "CI"
    if env.get("TERM", "") == "dumb":
        return "TERM=dumb"
    if "NO_COLOR" in env and env.get("NO_COLOR", "") != "":
        return "NO_COLOR"
    return None


def progress_enabled(stream=None) -> bool:
    """Progress bars only on an interactive terminal, never under -q or plain-output settings."""
    stream = sys.stderr if stream is None else stream
    if _level == QUIET or plain_output_requested() is not None:
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def level() -> int:
    return _level


def verbose() -> bool:
    return _level >= VERBOSE


def quiet() -> bool:
    return _level == QUIET


def one_line(text: str, heading: bool = True) -> str:
    """A message on one line: its first line, or, when that line ends with a colon (a heading
    for the reasons below it), the reasons joined by "; " (after the heading with
    ``heading=True``)."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    if lines[0].endswith(":") and len(lines) > 1:
        reasons = "; ".join(lines[1:])
        return f"{lines[0]} {reasons}" if heading else reasons
    return lines[0]


def invoked_as() -> str:
    """How to call affedge again in a "next:" hint: ``affedge`` when that name on PATH is this
    program, else the path it was started with (``.venv/bin/affedge`` in a checkout)."""
    import shutil

    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) != "affedge":
        return "affedge"  # python -m affedge.cli, tests, embedding apps
    found = shutil.which("affedge")
    try:
        if found and os.path.samefile(found, argv0):
            return "affedge"
    except OSError:
        pass
    return argv0


def status(msg: str) -> None:
    """A status line on stderr (suppressed by -q; a URL's password hidden, as in every line
    about a source: stderr goes to journals)."""
    if _level > QUIET:
        from affedge.sdk.sources.credentials import hide_credentials

        print(hide_credentials(msg), file=sys.stderr, flush=True)


def warning(msg: str) -> None:
    """A warning on stderr, shown even with -q: something the user should act on (a guessable
    token, a file others can write), not a progress note. A URL's password is hidden."""
    from affedge.sdk.sources.credentials import hide_credentials

    print(hide_credentials(msg), file=sys.stderr, flush=True)


class Ticker:
    """``with Ticker("aoti encoder"):`` shows "aoti encoder ... 12 s" on an interactive stderr,
    updated every second and erased when the step ends (its result line follows): long steps
    that print nothing until they finish (an AOTInductor compile, int8 calibration) show they
    are alive. Nothing at all off a terminal, under -q or plain-output settings."""

    def __init__(self, what: str, stream=None):
        self.what = what
        self.stream = sys.stderr if stream is None else stream
        self._stop = None
        self._thread = None

    def __enter__(self) -> Ticker:
        if not progress_enabled(self.stream):
            return self
        import threading
        import time

        self._stop = threading.Event()
        t0 = time.monotonic()

        def tick():
            while not self._stop.wait(1.0):
                self.stream.write(f"\r{self.what} ... {time.monotonic() - t0:.0f} s\x1b[K")
                self.stream.flush()

        self._thread = threading.Thread(target=tick, name="affedge-ticker", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def debug(msg: str) -> None:
    """Detail shown only with -v."""
    if _level >= VERBOSE:
        print(msg, file=sys.stderr, flush=True)


def filter_third_party_warnings(import_first: tuple[str, ...] = ()) -> None:
    """Ignore the warnings in ``_NOISE`` (by category and issuing module) and quiet the
    third-party loggers; called unless -v. ``import_first``: modules to import before the
    logger levels are set (``import torch`` resets its loggers' levels)."""
    import importlib

    for name in import_first:
        importlib.import_module(name)
    for cat, mod in _NOISE:
        warnings.filterwarnings("ignore", category=cat, module=mod)
    if "torch" in sys.modules:  # torch's own category, only once torch is imported anyway
        with contextlib.suppress(Exception):
            from torch.jit import TracerWarning

            warnings.filterwarnings("ignore", category=TracerWarning)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet_native_logs()


def quiet_native_logs() -> None:
    """OpenCV's and its FFmpeg's own stderr lines (``[ WARN:0] global cap.cpp ...``, ``moov
    atom not found``) for files the caller already refuses with its own message: errors only
    (OpenCV reads the FFmpeg level when its FFmpeg backend starts, so set it before that)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if "cv2" in sys.modules:  # already imported: its level is set through the API
        with contextlib.suppress(Exception):
            cv2 = sys.modules["cv2"]
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def setup(quiet_flag: bool = False, verbose_flag: bool = False, env=None) -> int:
    """Apply -q/-v (and the deprecated ``AFFEDGE_DEBUG``) for this process; returns the level."""
    global _level
    env = os.environ if env is None else env
    if truthy(env.get("AFFEDGE_DEBUG")) and not quiet_flag:
        verbose_flag = True
        print("affedge: AFFEDGE_DEBUG is deprecated; use -v/--verbose", file=sys.stderr)
    _level = VERBOSE if verbose_flag else QUIET if quiet_flag else NORMAL
    logging.basicConfig(level=logging.DEBUG if verbose_flag else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbose_flag:
        warnings.simplefilter("default")
        # websockets' DEBUG is a dump of every frame and handshake, the client's token (its
        # query string or Authorization header) included: its connections and refusals are
        # logged at INFO
        logging.getLogger("websockets").setLevel(logging.INFO)
    else:
        filter_third_party_warnings()
    if not progress_enabled():
        os.environ["TQDM_DISABLE"] = "1"  # every tqdm bar in this process, at its source
    return _level
