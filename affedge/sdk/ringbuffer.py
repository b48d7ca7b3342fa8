"""Timestamped ring buffers for the streaming runtime (the C++ ``affedge._ringbuf`` extension).

``RingBuffer(dim, capacity, reject_nonfinite=False)`` is a fixed-capacity single-producer /
single-consumer ring of float32 vectors with float64 timestamps (seconds, strictly
increasing). A capture thread pushes (``push``, ``push_many``; the copy runs without the GIL
and never blocks) while an inference thread reads:

* ``window(n)`` -> ``(ts, values)``: the newest ``n`` items as read-only numpy views (no copy).
  With capacity ``C`` they keep showing the same items for ``C - n`` further pushes. With a
  concurrent producer use ``window(n, return_seq=True)`` and check ``intact(start_seq)`` after
  reading the data.
* ``at(t, mode)`` / ``at_many(times, mode)`` / :func:`aligned`: values at given times with the
  same rules as :func:`affedge.features.align.sample_at` (``"previous"``: last item with
  time <= t, the runtime's causal choice; ``"nearest"``; ``"linear"``).
* ``read_new()`` / ``consume()``: a read cursor; items overwritten before being read are counted
  in ``overruns`` (never silently lost).

Vectors must be float32 numpy arrays (``TypeError`` naming the dtype otherwise); timestamps
that are not finite or not strictly increasing raise :class:`TimestampError` (a ValueError).
This module re-exports the extension and adds :class:`AlignedStreams`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

try:
    from affedge._ringbuf import (
        ConcurrencyError,
        OverrunError,
        RingBuffer,
        TimestampError,
        aligned,
    )
except ImportError as exc:  # pragma: no cover - only when the extension was not built
    raise ImportError(
        "affedge._ringbuf (the C++ ring buffer) is not built: run `pip install -e .` in the "
        "repository (needs a C++17 compiler and pybind11), or `bash scripts/setup.sh`"
    ) from exc

__all__ = [
    "AlignedStreams",
    "ConcurrencyError",
    "OverrunError",
    "RingBuffer",
    "TimestampError",
    "aligned",
]


class AlignedStreams:
    """Several named rings read together at the same times (e.g. audio streams at frame times).

    ``dims`` maps stream name -> vector length; ``capacity`` is one int for all streams or a
    mapping name -> int. Each ring keeps its own producer; :meth:`at` queries all of them
    at once (one C++ call, GIL released).
    """

    def __init__(
        self,
        dims: Mapping[str, int],
        capacity: int | Mapping[str, int],
        reject_nonfinite: bool = False,
    ):
        if not dims:
            raise ValueError("AlignedStreams: dims is empty (need at least one stream)")
        caps = capacity if isinstance(capacity, Mapping) else {k: capacity for k in dims}
        missing = [k for k in dims if k not in caps]
        if missing:
            raise ValueError(f"AlignedStreams: no capacity given for streams {missing}")
        self.rings: dict[str, RingBuffer] = {
            name: RingBuffer(int(d), int(caps[name]), reject_nonfinite) for name, d in dims.items()
        }

    @property
    def names(self) -> list[str]:
        return list(self.rings)

    def __getitem__(self, name: str) -> RingBuffer:
        try:
            return self.rings[name]
        except KeyError:
            raise KeyError(f"AlignedStreams: unknown stream {name!r}; have {self.names}") from None

    def ready(self, t: float) -> bool:
        """True when every stream holds an item at or after time ``t`` (so a causal
        "previous" query at ``t`` will not change when more data arrives)."""
        for ring in self.rings.values():
            latest = ring.latest_time
            if latest is None or latest < t:
                return False
        return True

    def at(self, times, mode: str = "previous") -> dict[str, np.ndarray]:
        """Each stream's values at ``times`` -> {name: float32[len(times), dim]}."""
        names = self.names
        for name in names:
            if self.rings[name].size == 0:
                raise ValueError(f"AlignedStreams.at: stream {name!r} is empty")
        outs = aligned([self.rings[n] for n in names], np.asarray(times, np.float64), mode)
        return dict(zip(names, outs))
