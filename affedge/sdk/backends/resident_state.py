"""Device-resident streaming state for the step model: two buffer sets, commit = address swap.

The engine's contract (affedge/sdk/engine.py) is: a tick runs the step for every live stream,
and the new states are committed only if the whole tick succeeded, and then only for the
streams whose outputs are finite; otherwise the previous states stay. On the host this costs a
concatenate/copy of every state tensor per tick (24 of them for the default model, each
uploaded and downloaded). :class:`ResidentStep` keeps them on the device instead:

* ``cur[i]`` / ``nxt[i]``: for each state input ``state_i`` two device buffers of
  ``[capacity, C, L]``; row ``r`` of ``cur`` holds the state of stream ``layout[r]``;
* :meth:`ResidentStep.run` ``(keys, inputs)`` arranges that rows ``0..n-1`` of ``cur`` hold
  the ``n`` streams in ``keys`` (no copy when the streams are the same as last tick; a
  device-to-device gather, and zeros for new streams, when they change), binds ``state_i`` to
  ``cur[i]`` and ``state_out_i`` to ``nxt[i]``, uploads only the per-tick inputs (embedding,
  audio) and downloads only the non-state outputs (``va``) plus one finite flag per row;
* :meth:`ResidentStep.commit` ``(ok)`` swaps ``cur`` and ``nxt`` (the next run binds the
  other addresses); rows whose ``ok`` is False first get their previous state copied over, so
  a non-finite stream keeps its old state as the engine requires. Streams not in the committed
  tick are forgotten (the engine steps every live stream each tick; a stream it leaves out has
  ended);
* :meth:`ResidentStep.rollback` (or simply the next ``run``) discards an uncommitted tick:
  ``cur`` was only read, so the committed states are exactly as before;
* :meth:`ResidentStep.states` / :meth:`ResidentStep.load` move one stream's states to/from
  the host (switching backends mid-stream, tests).

Usage (what the engine's ``_step``/``_finish_tick`` become with a backend that has
``resident_step``)::

    rs = backend.resident_step()                       # once
    out = rs.run(stream_ids, {"embedding": e, "audio_mfcc": a, ...})
    va, ok = out["va"], out["finite"]                   # finite: va row and all new states
    ... build the tick's results; on any exception: rs.rollback()
    rs.commit(ok)
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np


class ResidentStep:
    """Step-model runner whose states live on the backend's device (see the module doc)."""

    def __init__(self, backend, capacity: int | None = None):
        self.backend = backend
        self.model = backend._get("step")
        m = self.model
        self.state_in = [n for n in m.inputs if n.startswith("state_")]
        self.state_out = {}
        for n in self.state_in:
            o = "state_out_" + n[len("state_"):]
            if o not in m.outputs:
                raise ValueError(f"step engine: no output {o!r} for state input {n!r}")
            self.state_out[n] = o
        self.feed_names = [n for n in m.inputs if n not in self.state_in]
        self.out_names = [n for n in m.outputs if n not in self.state_out.values()]
        limit = m.max_batch or 1
        self.capacity = int(capacity or limit)
        if not 1 <= self.capacity <= limit:
            raise ValueError(f"capacity must be in [1, {limit}] (the step engine's max batch), "
                             f"got {capacity}")
        d = backend.device
        self.row_shape = {n: tuple(m.max_shape[n][1:]) for n in self.state_in}
        self._bufs = [[d.zeros((self.capacity, *self.row_shape[n]), m.dtype[n])
                       for n in self.state_in] for _ in range(2)]
        self._cur = 0  # index of the committed buffer set
        self.layout: list[Hashable] = []
        self._pending: tuple[list[Hashable], int, np.ndarray] | None = None
        self.swaps = 0

    @property
    def cur(self) -> list:
        return self._bufs[self._cur]

    @property
    def nxt(self) -> list:
        return self._bufs[1 - self._cur]

    def _arrange(self, keys: list[Hashable]) -> None:
        """Rows 0..n-1 of ``cur`` := the states of ``keys`` (zeros for new keys); other
        committed streams follow while there is room. Nothing is lost if the tick fails."""
        n = len(keys)
        if self.layout[:n] == keys:
            return
        d = self.backend.device
        new = keys + [k for k in self.layout if k not in set(keys)][: self.capacity - n]
        where = {k: r for r, k in enumerate(self.layout)}
        dst = [i for i, k in enumerate(new) if k in where]
        src = [where[new[i]] for i in dst]
        fresh = [i for i, k in enumerate(new) if k not in where]
        for c, x in zip(self.cur, self.nxt):
            if dst:
                d.copy_rows(x, dst, c, src)
            if fresh:
                d.zero_rows(x, fresh)
        self._cur = 1 - self._cur
        self.layout = new

    def run(self, keys: Sequence[Hashable], inputs: Mapping[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
        """Step ``keys`` (one stream each, in row order) with per-tick ``inputs`` (the step's
        non-state inputs, ``[n, ...]``). Returns the non-state outputs (``va``) and ``finite``
        (bool[n]: that row's outputs and all its new states are finite). Uncommitted."""
        keys = list(keys)
        n = len(keys)
        if n == 0 or len(set(keys)) != n:
            raise ValueError(f"run: keys must be distinct and non-empty, got {keys}")
        if n > self.capacity:
            raise ValueError(f"tensorrt/step: {n} streams in one tick, but the device state "
                             f"holds {self.capacity} (the engine's max batch): lower "
                             f"max_faces or rebuild with `affedge build-engines BUNDLE "
                             f"--max-faces {n}`")
        missing = [x for x in self.feed_names if x not in inputs]
        extra = [x for x in inputs if x not in self.feed_names]
        if missing or extra:
            raise ValueError(f"tensorrt/step: resident inputs must be {self.feed_names}; "
                             f"missing {missing}, unexpected {extra}")
        feeds = {}
        for x in self.feed_names:
            a = np.ascontiguousarray(inputs[x], np.float32)
            if a.shape[0] != n:
                raise ValueError(f"tensorrt/step: input {x!r} has {a.shape[0]} rows for {n} keys")
            feeds[x] = a
        self._pending = None
        self._arrange(keys)
        d = self.backend.device
        dev_in = {x: (d.ptr(b), (n, *self.row_shape[x])) for x, b in zip(self.state_in, self.cur)}
        dev_out = {self.state_out[x]: d.ptr(b) for x, b in zip(self.state_in, self.nxt)}
        outs = self.backend._execute(self.model, feeds, dev_in, dev_out)
        finite = d.finite_rows(self.nxt, n)
        for y in outs.values():
            finite &= np.isfinite(y.reshape(n, -1)).all(axis=1)
        self._pending = (keys, n, finite.copy())
        return {**outs, "finite": finite}

    def commit(self, ok: Sequence[bool] | np.ndarray | None = None) -> None:
        """Make the last run's states current (address swap). Rows with ``ok`` False (default:
        the run's ``finite``) keep their previous state."""
        if self._pending is None:
            raise RuntimeError("commit: no uncommitted run (run() first; a run is committed "
                               "at most once)")
        keys, n, finite = self._pending
        ok = finite if ok is None else np.asarray(ok, bool)
        if ok.shape != (n,):
            raise ValueError(f"commit: ok must have {n} entries, got shape {ok.shape}")
        keep = [i for i in range(n) if not ok[i]]
        if keep:
            d = self.backend.device
            for c, x in zip(self.cur, self.nxt):
                d.copy_rows(x, keep, c, keep)
        self._cur = 1 - self._cur
        self.swaps += 1
        self.layout = keys
        self._pending = None

    def rollback(self) -> None:
        """Discard the last run: the committed states are unchanged."""
        self._pending = None

    def states(self, key: Hashable) -> list[np.ndarray]:
        """The committed states of one stream, ``[1, C, L]`` float32 each (host copies)."""
        if self._pending is not None:
            raise RuntimeError("states: commit or roll back the pending run first")
        try:
            r = self.layout.index(key)
        except ValueError:
            raise KeyError(f"no committed state for stream {key!r}") from None
        d = self.backend.device
        out = []
        for x, b in zip(self.state_in, self.cur):
            host = np.empty((self.capacity, *self.row_shape[x]), self.model.dtype[x])
            d.download(host, b)
            d.synchronize()
            out.append(host[r:r + 1].astype(np.float32))
        return out

    def load(self, key: Hashable, states: Sequence[np.ndarray]) -> None:
        """Set one stream's committed states from the host (e.g. after a backend switch)."""
        if self._pending is not None:
            raise RuntimeError("load: commit or roll back the pending run first")
        if len(states) != len(self.state_in):
            raise ValueError(f"load: {len(self.state_in)} state arrays needed, got {len(states)}")
        if key in self.layout:
            r = self.layout.index(key)
        elif len(self.layout) < self.capacity:
            r = len(self.layout)
            self.layout.append(key)
        else:
            raise ValueError(f"load: all {self.capacity} state rows are in use")
        d = self.backend.device
        for x, b, s in zip(self.state_in, self.cur, states):
            s = np.asarray(s, self.model.dtype[x]).reshape(1, *self.row_shape[x])
            host = np.empty((self.capacity, *self.row_shape[x]), self.model.dtype[x])
            d.download(host, b)
            d.synchronize()
            host[r] = s[0]
            d.upload(b, host)
        d.synchronize()
