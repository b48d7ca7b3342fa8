"""One inference tick over several engines that share a backend: one encoder call, one step call.

Each engine (one per source) runs its own stage 1 (checks, audio, face detection and tracking;
:meth:`~affedge.sdk.engine.StreamingEngine.begin_tick`). Then the crops of every source go
through the encoder as one batch, the streams of every source through the step model as one
batch (the step graph takes any N; a bundle whose step has a fixed batch of 1 gets one call per
source), and each engine commits its own rows (stage 3). The results equal per-source
``process_frame`` calls: the models are row-wise, and each engine's rows are its own.
"""
from __future__ import annotations

from concurrent.futures import Future

import numpy as np


def tick_many(items, pool=None):
    """``items``: ``(engine, frame_bgr, t, index, prepare)`` per source with a new frame, every
    engine on the same backend; ``prepare`` (or None) runs first in the same task (e.g. feeding
    the file audio up to ``t``). Stage 1 runs on ``pool`` (a ``concurrent.futures`` executor)
    when given: the engines are independent there, and face detection and audio features
    release the GIL, so the sources' stage 1 overlap on several cores like independent
    recognizers would. Returns one entry per item: its Prediction, or the exception that
    stopped that item's stage 1 (a refused input, a detector crash: the other sources go on).
    A backend error propagates with every engine's stream states unchanged."""
    return models_many(items, collect(begin_many(items, pool)))


def _begin(item):
    eng, frame, t, index, prepare = item
    try:
        if prepare is not None:
            prepare()
        return eng.begin_tick(frame, t, index)
    except Exception as exc:  # noqa: BLE001  (this source's frame only: the others go on)
        return exc


def begin_many(items, pool=None, after=None) -> list:
    """Stage 1 of every item: futures on ``pool`` (None: done now, on this thread). Collect
    them with :func:`collect`. The hub runs the next tick's stage 1 this way while this tick's
    models run; each engine's stages stay in frame order (an engine's Tick keeps its own
    copy of the tracks, so the next frame's stage 1 may come before this frame's stage 3).
    ``after``: per item, the future of the same engine's previous stage 1 if it may still run
    (or None): the item's stage 1 starts when that one is done, so an engine's stage 1 never
    overlaps its own previous one while other engines' work fills the pool."""
    after = after or [None] * len(items)
    if pool is None:
        return [_begin(it) if prev is None else _begin_after(prev, it)
                for it, prev in zip(items, after)]
    if len(items) < 2 and after[0] is None:
        return [_begin(items[0])] if items else []
    return [_submit_after(pool, prev, it) for it, prev in zip(items, after)]


def _begin_after(prev, item):
    prev.exception()  # wait (its outcome is its own tick's business)
    return _begin(item)


def _submit_after(pool, prev, item):
    """``item``'s stage 1 on ``pool`` once the future ``prev`` (or None) is done -> a future."""
    if prev is None or prev.done():
        return pool.submit(_begin, item)
    out = Future()

    def start(_):
        try:
            inner = pool.submit(_begin, item)
        except RuntimeError as exc:  # the pool was shut down meanwhile (a stop that gave up)
            out.set_result(exc)
            return
        inner.add_done_callback(lambda f: _pass_on(f, out))

    prev.add_done_callback(start)
    return out


def _pass_on(done, out) -> None:
    try:
        out.set_result(done.result())
    except BaseException as exc:  # noqa: BLE001  (cancelled: collect() raises it)
        out.set_exception(exc)


def collect(began: list) -> list:
    """The Ticks (or the ValueErrors that refused an input) of :func:`begin_many`."""
    return [b.result() if hasattr(b, "result") else b for b in began]


def encode_many(items, began) -> None:
    """Stage 2 for the items whose stage 1 gave a Tick: one encoder call over every crop of
    every source, each tick's embeddings set. Touches only the ticks (a backend error leaves
    every engine as it was), so it may run on another thread than stage 3, ahead of it."""
    with_crops = [(item[0], tk) for item, tk in zip(items, began)
                  if not isinstance(tk, Exception) and tk.crops is not None]
    if not with_crops:
        return
    emb = with_crops[0][0].encode(np.concatenate([tk.crops for _, tk in with_crops]))
    start = 0
    for eng, tk in with_crops:
        eng.set_embeddings(tk, emb[start:start + len(tk.crops)])
        start += len(tk.crops)


def models_many(items, began, encoded: bool = False) -> list:
    """Stages 2 and 3 for the items whose stage 1 gave a Tick (``began``, from
    :func:`collect`): one encoder call over every crop (unless ``encoded``: :func:`encode_many`
    ran already), one step call over every stream, each engine commits its rows. Returns one
    entry per item: its Prediction or its exception."""
    results: list = [None] * len(items)
    ticks = []
    for k, (item, tk) in enumerate(zip(items, began)):
        if isinstance(tk, Exception):
            results[k] = tk
        else:
            ticks.append((k, item[0], tk))
    if not ticks:
        return results
    for _, eng, tk in ticks:
        eng.model_frame = tk.index
    if not encoded:
        encode_many(items, began)
    outs = _step_all(ticks)
    for (k, eng, tk), step in zip(ticks, outs):
        results[k] = eng.finish_tick(tk, *step)
    return results


def _step_all(ticks):
    """(va, new states, finite flags) per tick from one step call over every tick's streams
    (one concatenation per input over all of them)."""
    if len(ticks) == 1 or not all(eng.step_batchable for _, eng, _ in ticks):
        return [eng._step(tk.streams, tk.embeddings(), tk.audio) for _, eng, tk in ticks]
    first = ticks[0][1]
    out = first.backend.run("step", first.step_inputs(
        [(tk.streams, tk.embeddings(), tk.audio) for _, _, tk in ticks]))
    res, start = [], 0
    for _, eng, tk in ticks:
        n = len(tk.streams)
        res.append(eng.split_step(out, n, start))
        start += n
    return res


def finished(tick) -> bool:
    """Whether an in-flight tick (from ``Hub._begin``) can go to the models without waiting."""
    _, _, _, began, encoding = tick
    if encoding is not None:
        return encoding.done()
    return all(b.done() for b in began if hasattr(b, "done"))


def stage2(items, began):
    """The encoder thread's task for one tick: wait for its stage 1, then one encoder call ->
    (ticks or errors, True), or (..., the backend's exception) (stage 1's own failure
    propagates). Ticks reach it in order, so it never waits behind a later tick."""
    ticks = collect(began)
    try:
        encode_many(items, ticks)
    except Exception as exc:  # noqa: BLE001  (reported by the inference thread)
        return ticks, exc
    return ticks, True
