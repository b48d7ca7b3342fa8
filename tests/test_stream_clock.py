"""One stream, one clock: push_frame refuses a switch between time.monotonic() and a clock of
the caller's own; a closed Recognizer refuses reset(); audio the timeline filled with silence
reads as missing."""
from __future__ import annotations

import time

import numpy as np
import pytest
from test_bad_input import SR, _rec, frames  # noqa: F401  (module fixture)
from test_engine import bundle_dir  # noqa: F401  (session fixture)


def test_frames_without_t_after_media_times_are_refused(bundle_dir, frames):  # noqa: F811
    """Frames stamped with media times (0.0, 0.033, ...) and then one without ``t``: that frame
    would take time.monotonic() (hours of uptime later) and the stream would jump silently.
    Refused in one line, the stream unchanged; reset() starts a new one on either clock."""
    with _rec(bundle_dir) as rec:
        for i in range(3):
            rec.push_frame(frames[i], t=i / 30.0)
        with pytest.raises(ValueError, match=r"push_frame: a frame without t takes "
                                             r"time.monotonic\(\).*give t for every frame"):
            rec.push_frame(frames[3])
        assert rec.latest().frame == 2  # nothing changed: the next media time still fits
        assert rec.push_frame(frames[3], t=0.1).frame == 3
        rec.reset()
        assert rec.push_frame(frames[4]).frame == 0  # a new stream on time.monotonic()


def test_media_time_after_frames_without_t_is_refused(bundle_dir, frames):  # noqa: F811
    """The other way round: frames without ``t`` (time.monotonic()), then one stamped on
    another clock far from it (here an epoch time): refused, naming the clocks."""
    with _rec(bundle_dir) as rec:
        rec.push_frame(frames[0])
        with pytest.raises(ValueError, match=r"t=1\.7e\+09 is not on time.monotonic\(\)"):
            rec.push_frame(frames[1], t=1.7e9)
        assert rec.push_frame(frames[1]).frame == 1


def test_times_on_the_monotonic_clock_mix_with_frames_without_t(bundle_dir, frames):  # noqa: F811
    """Capture times read from time.monotonic() are the clock push_frame uses itself: a
    stream may give them for some frames and leave ``t`` out for others."""
    with _rec(bundle_dir) as rec:
        rec.push_frame(frames[0], t=time.monotonic() - 0.2)  # a capture time 0.2 s old
        rec.push_frame(frames[1])
        rec.push_frame(frames[2], t=time.monotonic())
        assert rec.push_frame(frames[3]).frame == 3
        # a stream that only ever gives its own times is never checked against the clock
        rec.reset()
        for i in range(3):
            rec.push_frame(frames[i], t=1e6 + i / 30.0)
        assert rec.latest().frame == 2


def test_reset_after_close_is_refused(bundle_dir, frames):  # noqa: F811
    rec = _rec(bundle_dir)
    rec.push_frame(frames[0], t=0.0)
    rec.close()
    with pytest.raises(RuntimeError, match="this Recognizer is closed"):
        rec.reset()


def test_audio_inside_a_silence_filled_gap_reads_as_missing(bundle_dir, frames):  # noqa: F811
    """A chunk stamped 2 s after the end of the audio before it leaves a gap the timeline fills
    with silence to keep the clocks aligned; that silence was never heard, so frames inside
    the gap have no audio (present False), and frames on either side have it."""
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(SR // 2) / SR)).astype(np.float32)
    with _rec(bundle_dir) as rec:
        rec.push_audio(tone, t=0.0)  # 0.0-0.5 s
        rec.push_audio(tone, t=2.5)  # 2.5-3.0 s: 0.5-2.5 s filled with silence
        assert rec.stats()["audio_gaps_filled"] == 1
        got = {t: rec.push_frame(frames[i], t=t).audio_present
               for i, t in enumerate((0.3, 0.6, 1.5, 2.4, 2.8))}
        assert got == {0.3: True, 0.6: False, 1.5: False, 2.4: False, 2.8: True}, got
