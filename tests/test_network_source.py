"""NetworkAVSource against a real ffmpeg serving MPEG-TS over HTTP on 127.0.0.1."""
from __future__ import annotations

import gc
import os
import time

import pytest

from tests.test_serve_helpers import cut_clip, http_stream


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return cut_clip(tmp_path_factory.mktemp("netav") / "one.mp4", 1.0)


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_a_closed_stream_releases_its_decoders_at_once(clip):
    """A camera that reconnects opens a new demuxer each time; close() must free the old one's
    decoders and their threads itself. The stored "ended" error's traceback held the source
    in a cycle, so each connection kept a native thread until a garbage collection (a serve
    reconnecting every 2 s went from 24 to 44 threads between collections)."""
    from affedge.sdk.sources._errors import SourceError
    from affedge.sdk.sources.network import NetworkAVSource

    counts = []
    gc.collect()
    gc.disable()  # what a collection would free is not what close() frees
    try:
        for _ in range(4):
            url, ff = http_stream(clip)
            try:
                time.sleep(0.3)
                src = NetworkAVSource(url, on_audio=lambda *a: None)
                frames = 0
                with pytest.raises(SourceError, match="ended"):
                    while src.read() is not None:
                        frames += 1
                assert frames >= 1
                src.close()
                del src
            finally:
                ff.kill()
                ff.wait(10)
            counts.append(_threads())
    finally:
        gc.enable()
    # (+3 threads per connection before; one thread of slack for the rest of the process,
    # which in a full-suite run may start one of its own meanwhile)
    assert counts[-1] <= counts[0] + 1, counts
