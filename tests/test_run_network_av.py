"""``Recognizer.run(URL, audio="video")``: a network stream's video and its own audio track
through one demuxer, as ``affedge serve`` reads it (a real ffmpeg HTTP server on 127.0.0.1)."""
from __future__ import annotations


import pytest

from affedge.sdk.sources import SourceError
from tests.test_serve_helpers import cut_clip, http_stream


def test_run_reads_a_network_stream_with_its_own_audio(tmp_path):
    """Found by a new-user trial: run() and ``affedge run URL --audio video`` refused ("live
    sources have no audio track: use audio='mic'") what serve reads."""
    from affedge import Recognizer

    clip = cut_clip(tmp_path / "c.mp4", 3.0)
    url, server = http_stream(clip)
    preds = []
    try:
        with Recognizer.demo(backend="ort-cpu") as rec:
            with pytest.raises(SourceError, match="ended"):  # a live stream's end is its loss
                for p in rec.run(url, audio="video"):
                    preds.append(p)
            assert rec.stats()["audio_seconds"] > 2.0
    finally:
        server.kill()
        server.wait(10)
    fresh = [p for p in preds if not p.stale]
    assert len(preds) >= 60 and len(fresh) >= 30
    # the stream's own audio reached the timeline, on the stream's clock (PTS)
    later = fresh[10:]
    assert sum(p.audio_present for p in later) >= 0.9 * len(later)
    assert any(p.speech_present for p in later) and all(p.face_present for p in later)
    times = [p.timestamp for p in preds]
    assert times == sorted(times) and 2.0 < times[-1] - times[0] < 3.5
