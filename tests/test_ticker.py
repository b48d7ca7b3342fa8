"""``affedge.log.Ticker``: a live "still working" line for long steps, on a real terminal only."""
from __future__ import annotations

import io
import os
import pty
import time

import pytest


def test_ticker_on_a_terminal_counts_seconds_and_erases_itself(monkeypatch):
    """On a pseudo-terminal the line shows the step and its elapsed seconds each second and is
    erased at the end (the step's result line follows); elsewhere nothing is written."""
    from affedge import log

    for var in ("CI", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w")
    try:
        with log.Ticker("aoti      encoder ", stream=stream):
            time.sleep(2.3)
        stream.flush()
        out = os.read(master, 4096).decode()
    finally:
        stream.close()
        os.close(master)
    assert "\raoti      encoder  ... 1 s\x1b[K" in out
    assert "\raoti      encoder  ... 2 s\x1b[K" in out
    assert out.endswith("\r\x1b[K")
    plain = io.StringIO()
    with log.Ticker("x", stream=plain):
        time.sleep(1.2)
    assert plain.getvalue() == ""


@pytest.mark.parametrize("env", [{"CI": "true"}, {"TERM": "dumb"}])
def test_ticker_stays_quiet_where_plain_output_is_asked(monkeypatch, env):
    from affedge import log

    for var in ("CI", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w")
    try:
        with log.Ticker("x", stream=stream):
            time.sleep(1.2)
        stream.flush()
        os.set_blocking(master, False)
        try:
            out = os.read(master, 4096)
        except BlockingIOError:
            out = b""
    finally:
        stream.close()
        os.close(master)
    assert out == b""
