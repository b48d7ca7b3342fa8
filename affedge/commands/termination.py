"""Turn SIGTERM/SIGHUP into an exception while a command holds temporary files, so they are removed."""
from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM/SIGHUP so that ``finally`` blocks and context
    managers (a command's temporary directories) run before the process exits (status
    128 + signal number)."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


@contextlib.contextmanager
def cleanup_on_termination():
    """While a command runs, turn SIGTERM and SIGHUP (whose default action kills the process
    without running any cleanup, leaving /tmp/affedge-export-* or /tmp/affedge-bench-* behind)
    into :class:`Terminated`; SIGINT already raises KeyboardInterrupt. Signals that are ignored or handled elsewhere are left
    alone, as are non-main threads (where handlers cannot be installed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
            previous[sig] = signal.signal(sig, raise_terminated)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
