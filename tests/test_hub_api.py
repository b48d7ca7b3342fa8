"""The ``Hub`` Python API (what ``affedge serve`` is a thin layer over), in-process."""
from __future__ import annotations

import threading

import pytest

from tests.test_serve_helpers import cut_clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("hubclips")
    return [cut_clip(d / "a.mp4", 1.0, start=0.0), cut_clip(d / "b.mp4", 1.5, start=3.0)]


class Collect:
    """A sink that takes the source name (as the zmq:// and ws:// sinks do)."""

    accepts_source = True

    def __init__(self):
        self.got: dict[str, list] = {}
        self.statuses: list[dict] = []
        self.closed = False
        self.lock = threading.Lock()

    def write(self, p, source=None):
        with self.lock:
            self.got.setdefault(source, []).append(p)

    def publish_status(self, status):
        self.statuses.append(status)

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_hub_api_two_files_every_frame_in_order_and_an_ended_status(clips):
    import cv2

    from affedge.serve import Hub

    sink = Collect()
    with Hub(status_every_s=0.2) as hub:
        for name, c in zip(("a", "b"), clips):
            hub.add_source(str(c), audio="video", name=name)
        hub.add_sink(sink)
        hub.start()
        assert hub.wait(timeout=120)
        st = hub.status()
    for name, c in zip(("a", "b"), clips):
        cap = cv2.VideoCapture(str(c))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        preds = sink.got[name]
        assert [p.frame for p in preds] == list(range(n))
        assert all(not p.stale and p.audio_present for p in preds)
        s = st["sources"][name]
        assert s["state"] == "ended" and s["frames"] == n
        # an ended source reports no rate (it used to show its last rate for 2 s more)
        assert s["fps"] == 0.0
    assert st["ticks"] >= max(len(v) for v in sink.got.values())
    assert sink.closed  # leaving the with-block closed the sinks
    assert sink.statuses and "sources" in sink.statuses[0]
