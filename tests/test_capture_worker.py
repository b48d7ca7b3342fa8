"""The serve hub's capture worker on a real file: read-ahead bound, wake-ups, frame order."""
from __future__ import annotations

import time

from affedge.serve.capture import FILE_QUEUE, FILE_RESUME, SourceWorker
from affedge.sdk.sources.video import VideoSource
from tests.test_serve_helpers import cut_clip


def _settle(worker, expected: int, timeout: float = 10.0) -> int:
    """The worker's captured count once it reached ``expected`` (or the timeout passed) and
    0.3 s more went by: a reader that should wait must not read on meanwhile."""
    end = time.monotonic() + timeout
    while worker.captured < expected and time.monotonic() < end:
        time.sleep(0.02)
    time.sleep(0.3)
    return worker.captured


def test_a_file_reader_stays_a_queue_ahead_and_is_woken_once_the_loop_took_half(tmp_path):
    clip = cut_clip(tmp_path / "clip.mp4", 2.0)
    worker = SourceWorker("f", None, lambda: None,
                          first=VideoSource(str(clip), realtime=False), live=False)
    taken = []
    try:
        worker.start()
        # nobody takes: the reader fills the queue and waits with the next frame in hand
        full = FILE_QUEUE + 1
        assert _settle(worker, full) == full
        # the loop takes frames, the queue stays above FILE_RESUME: the reader is not woken
        for _ in range(FILE_QUEUE - FILE_RESUME - 1):
            taken.append(worker.take()[0].index)
        assert _settle(worker, full) == full
        # one more and the queue is at FILE_RESUME: the reader fills it again
        taken.append(worker.take()[0].index)
        assert _settle(worker, full + FILE_QUEUE - FILE_RESUME) == full + FILE_QUEUE - FILE_RESUME
        while not worker.ended or worker.ready():
            got = worker.take()
            if got is None:
                time.sleep(0.01)
                continue
            taken.append(got[0].index)
    finally:
        worker.stop()
    assert taken == list(range(worker.captured)) and worker.captured >= 40
    assert worker.note is None


def test_a_live_source_that_came_back_starts_its_next_outage_at_the_first_pause(tmp_path):
    """Found by an operator's trial: the retry pauses (0.5, 1, 2, 4, then 8 s) never started
    over after a recovery, so from a process's third outage on, every camera blip cost 8 s.
    Here a "camera" that delivers a short clip and then drops, again and again: each drop
    follows frames, so each is a first failure (0.5 s) and it is back several times in 3.5 s
    (at most 3 before: 0.5 + 1 + 2 s)."""
    from affedge.serve.capture import BACKOFF_S

    clip = cut_clip(tmp_path / "clip.mp4", 0.3)

    class Dropping:  # the real decoder, presented as a live stream that ends: a drop
        is_live = True

        def __init__(self):
            self.src = VideoSource(str(clip), realtime=False)

        def read(self):
            return self.src.read()

        def close(self):
            self.src.close()

    worker = SourceWorker("cam", Dropping, lambda: None, live=True)
    try:
        worker.start()
        time.sleep(3.5)
    finally:
        worker.stop()
    assert BACKOFF_S[0] == 0.5 and worker.reconnects >= 4, worker.reconnects
