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
