"""``affedge.log.Ticker``: a live "still working" line for long steps, on a real terminal only."""
from __future__ import annotations

import io
import os
import pty
import select
import time

import pytest


def _read_all(fd: int, wait: float = 0.5) -> bytes:
    """Everything the terminal has now (never blocks longer than ``wait``)."""
    out = b""
    while select.select([fd], [], [], wait)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        out += chunk
        wait = 0.05
    return out


@pytest.fixture
def terminal(monkeypatch):
    """A pseudo-terminal as stderr would be one, with normal verbosity and no plain-output
    setting (CI sets CI=true; an earlier test may have left -q on)."""
    from affedge import log

    for var in ("CI", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(log, "_level", log.NORMAL)
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w")
    yield master, stream
    stream.close()
    os.close(master)


def test_ticker_on_a_terminal_counts_seconds_and_erases_itself(terminal):
    """On a pseudo-terminal the line shows the step and its elapsed seconds each second and is
    erased at the end (the step's result line follows); elsewhere nothing is written."""
    from affedge import log

    master, stream = terminal
    with log.Ticker("aoti      encoder ", stream=stream):
        time.sleep(2.3)
    out = _read_all(master).decode()
    assert "\raoti      encoder  ... 1 s\x1b[K" in out
    assert "\raoti      encoder  ... 2 s\x1b[K" in out
    assert out.endswith("\r\x1b[K")
    plain = io.StringIO()
    with log.Ticker("x", stream=plain):
        time.sleep(1.2)
    assert plain.getvalue() == ""


@pytest.mark.parametrize("setting", ["CI=true", "TERM=dumb", "-q"])
def test_ticker_stays_quiet_where_plain_output_is_asked(terminal, monkeypatch, setting):
    from affedge import log

    master, stream = terminal
    if setting == "-q":
        monkeypatch.setattr(log, "_level", log.QUIET)
    else:
        monkeypatch.setenv(*setting.split("="))
    with log.Ticker("x", stream=stream):
        time.sleep(1.2)
    assert _read_all(master, wait=0.2) == b""
