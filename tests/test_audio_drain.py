"""The audio timeline drains audio pushed ahead of the frames in bursts, with the same results.

A file's audio is read ahead of its video (``FileAudioFeeder``); the timeline runs its feature
and VAD steps over the new audio only when a frame needs rows it does not have yet
(``AudioTimeline._rows_reach``), so the per-call cost is paid once per burst. What every frame
gets must equal draining at every frame: checked on the demo clip's real audio, through
``Recognizer.run`` and on a timeline fed with gaps, a restart and an end.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from affedge.sdk.recognizer import DEMO_CLIP, demo_assets_missing

pytestmark = pytest.mark.skipif(bool(demo_assets_missing()),
                                reason=f"demo assets missing: {demo_assets_missing()}")


def _count_drains(monkeypatch, eager: bool) -> list:
    from affedge.sdk.audio_timeline import AudioTimeline

    drains = []
    drain = AudioTimeline._drain

    def counted(self):
        drains.append(1)
        return drain(self)
    monkeypatch.setattr(AudioTimeline, "_drain", counted)
    if eager:
        monkeypatch.setattr(AudioTimeline, "_rows_reach", lambda self, t: False)
    return drains


def _fields(p):
    return (p.frame, p.timestamp, p.audio_present, p.speech_present, p.valence, p.arousal,
            p.confidence, [(f.track_id, f.valence, f.arousal) for f in p.faces])


def test_a_files_audio_drains_in_bursts_and_every_frame_gets_what_it_did(monkeypatch):
    from affedge.sdk.recognizer import Recognizer

    runs = {}
    for eager in (True, False):
        with monkeypatch.context() as m:
            drains = _count_drains(m, eager)
            with Recognizer.demo() as rec:
                preds = list(rec.run(str(DEMO_CLIP), audio="video", max_frames=150))
            runs[eager] = (preds, len(drains))
    (eager_preds, eager_drains), (lazy_preds, lazy_drains) = runs[True], runs[False]
    assert len(lazy_preds) == len(eager_preds) == 150
    assert any(p.audio_present for p in lazy_preds) and any(p.speech_present for p in lazy_preds)
    for a, b in zip(eager_preds, lazy_preds):
        assert _fields(a) == _fields(b), a.frame
    assert eager_drains >= 150  # one per frame (plus none skipped)
    # the feeder reads 0.4-0.5 s at a time: about one drain per 12-15 frames of 30 fps
    assert lazy_drains <= 150 // 8, lazy_drains


@pytest.fixture(scope="module")
def speech16k(tmp_path_factory):
    """The demo clip's audio track as 16 kHz mono float32 (real speech and room sound)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed to decode the clip's audio")
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(DEMO_CLIP), "-vn", "-ac", "1",
                          "-ar", "16000", "-f", "f32le", "-"], capture_output=True, check=True,
                         timeout=120).stdout
    return np.frombuffer(out, np.float32).copy()


def test_bursts_with_gaps_a_restart_and_an_end_give_every_frame_the_same(monkeypatch,
                                                                         speech16k):
    """Audio pushed in 0.6 s bursts ahead of 30 fps frames, with a 0.2 s hole (silence-filled),
    a jump beyond the ring (the extractor restarts) and an end of audio: the features, the
    presence and speech flags at every frame equal a timeline that drains at every frame."""
    from affedge.sdk.recognizer import Recognizer

    pcm = speech16k[: 16000 * 8]
    # (audio time, samples) pieces: 0-3 s, a 0.2 s hole, 3.2-5 s, then a jump to 40 s
    pieces = [(0.0, pcm[:48000]), (3.2, pcm[48000:80000]), (40.0, pcm[80000:])]
    frame_times = [k / 30 for k in range(150)] + [40.0 + k / 30 for k in range(100)]
    got = {}
    for eager in (True, False):
        with monkeypatch.context() as m:
            drains = _count_drains(m, eager)
            with Recognizer.demo(audio_capacity_s=10.0) as rec:
                tl = rec.engine.audio
                queue = [(t0 + i / 16000, x[i:i + 9600]) for t0, x in pieces
                         for i in range(0, len(x), 9600)]  # 0.6 s bursts
                out = []
                for t in frame_times:
                    while queue and queue[0][0] <= t + 0.1:
                        t_chunk, x = queue.pop(0)
                        tl.push(x, t_chunk)
                    if not queue and t > 44.0:
                        tl.end_of_audio()
                    feats, present, speech = tl.at(t)
                    out.append((np.concatenate([feats[k] for k in sorted(feats)]), present,
                                speech))
                stats = tl.stats()
            got[eager] = (out, len(drains), stats)
    (eager_out, eager_n, eager_stats), (lazy_out, lazy_n, lazy_stats) = got[True], got[False]
    for t, a, b in zip(frame_times, eager_out, lazy_out):
        assert a[1:] == b[1:], t
        np.testing.assert_array_equal(a[0], b[0], err_msg=f"t={t}")
    presence = [o[1] for o in lazy_out]
    assert any(presence) and not all(presence)  # the end (and the hole's edges) show
    assert eager_stats["audio_gaps_filled"] == lazy_stats["audio_gaps_filled"] >= 1
    assert eager_stats["audio_discontinuities"] == lazy_stats["audio_discontinuities"] >= 1
    assert lazy_n < eager_n // 3, (lazy_n, eager_n)
