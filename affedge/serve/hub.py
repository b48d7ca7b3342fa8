"""``Hub``: several sources, one shared backend, batched inference, every Prediction to sinks.

::

    from affedge.serve import Hub
    with Hub("bundle_dir") as hub:                        # or Hub() for the demo bundle
        hub.add_source("clip.mp4", audio="video", name="clip")
        hub.add_source(0, audio="mic", name="front")
        hub.add_source("http://cam/live.ts", audio="video")   # one demuxer for both
        hub.add_sink("zmq://127.0.0.1:5556")
        hub.add_sink("ws://127.0.0.1:8765")                    # + the dashboard page
        hub.start()
        hub.wait()                                            # until every source ended

Each source has its own :class:`~affedge.sdk.recognizer.Recognizer` (tracks, temporal states,
audio timeline) on the hub's one backend, and a capture thread
(:class:`~affedge.serve.capture.SourceWorker`). One inference thread loops: every source with a
new frame joins the tick: their stage 1 (file audio, face detection, tracking, crops) runs on
a thread pool of one thread per core, then one encoder call over all their faces and one step
call over all their streams (:func:`affedge.serve.batching.tick_many`); a source with no new
frame (slow, reconnecting, dead) is simply not in the tick, so it never holds the others up.
The loop is pipelined: up to :data:`PIPELINE_DEPTH` ticks' stage 1 run on the pool while the
oldest tick's model calls run on the inference thread; a source's stage 1 starts when its own
previous one is done, not when the whole previous tick is, so no core waits for the slowest
source of a tick (each source's stages stay in frame order, so the Predictions are those of
serial ticks). File sources are unpaced unless ``realtime=True`` paces them to their
media clock (a loop that falls behind delays them): every file frame gets a Prediction. Frames
a live source captured while the loop was busy get stale Predictions,
as in ``Recognizer.run``.

Sinks receive ``write(prediction, source=name)`` when they take a source (``zmq://``,
``ws://``), else ``write(prediction)``; sinks with ``publish_status(dict)`` get
:meth:`Hub.status` about once a second. A sink that raises is reported and dropped.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque

from affedge.sdk.sources.credentials import hide_credentials
from affedge.sdk.sources.live_queue import skipped_times
from affedge.serve.batching import finished, stage2
from affedge.serve.capture import SourceWorker, report

#: seconds between status messages to the sinks that take them
STATUS_EVERY_S = 1.0
#: window of the fps figure (s)
FPS_WINDOW_S = 2.0
#: a live source with no frame for this long reads "stalled" in the status (until its read
#: gives up and it is "retrying": 5 s for a network stream, READ_TIMEOUT_S)
STALLED_S = 1.0
#: ticks whose stage 1 may be in flight at once (see ``Hub._loop``)
PIPELINE_DEPTH = 3
#: stop() waits this long in all for the sources' reader threads (a stream still opening
#: cannot be interrupted: its thread, a daemon, ends when OpenCV's open times out)
WORKER_STOP_S = 5.0


class _Source:
    """A source's parts: recognizer, capture worker, audio, and its counters."""

    def __init__(self, name, rec, worker, video, audio_desc, feeder=None, live_audio=None):
        self.name = name
        self.rec = rec
        self.worker = worker
        self.video = str(video)
        self.audio = audio_desc
        self.feeder = feeder
        self.live_audio = live_audio
        self.wall: deque = deque(maxlen=256)
        self.errors = 0
        self.callback_errors = 0
        self.last = None
        self.first_at = 0.0
        self.auto_name = False  # its name was given by the hub (srcN)

    def record(self, p) -> None:
        self.last = p
        if not p.stale:
            now = time.monotonic()
            self.first_at = self.first_at or now
            self.wall.append(now)

    def fps(self) -> float:
        """Fresh predictions per second over the last FPS_WINDOW_S. Frames counted over the
        whole window once the source has run that long, so that a burst (a stream back after
        an outage: 20 frames within 50 ms) is not read as a rate of hundreds; over their own
        span before that, or when more than the deque holds arrived within the window."""
        now = time.monotonic()
        ts = [t for t in self.wall if now - t <= FPS_WINDOW_S]
        if len(ts) < 2 or ts[-1] <= ts[0]:
            return 0.0
        if now - self.first_at >= FPS_WINDOW_S and len(ts) < (self.wall.maxlen or 0):
            return len(ts) / FPS_WINDOW_S
        return (len(ts) - 1) / (ts[-1] - ts[0])


class Hub:
    """Sources + sinks + one backend (see the module docstring).

    bundle: bundle path or Bundle (default: the demo bundle). backend: a backend name
    (``select_backend``) or a ready Backend instance (then the caller closes it).
    backend_options: ``select_backend`` options when ``backend`` is a name.
    recognizer_options: the per-source :class:`Recognizer` keywords (smoothing, detector,
    detect_every, max_faces, min_face, ...). A sink that raises is reported and dropped;
    ``stop_without_outputs=True`` (what ``affedge serve`` uses) also stops the hub once every
    sink is gone (``stopped_reason`` = "no output left"); by default it goes on (the
    recognizers' callbacks, ``latest()`` and ``predictions()`` still get every Prediction).
    """

    def __init__(self, bundle=None, backend="auto", *, backend_options: dict | None = None,
                 status_every_s: float = STATUS_EVERY_S, stop_without_outputs: bool = False,
                 **recognizer_options):
        from affedge.bundle import Bundle, load_bundle
        from affedge.sdk.backends.select import select_backend
        from affedge.sdk.recognizer import DEMO_BUILD_HINT, DEMO_BUNDLE, Recognizer

        if not float(status_every_s) > 0.0:  # (0, negative and NaN were taken)
            raise ValueError(f"Hub: status_every_s must be > 0, got {status_every_s!r}")
        if bundle is None:
            if not (DEMO_BUNDLE / "manifest.json").exists():
                raise FileNotFoundError(f"the demo bundle is missing ({DEMO_BUNDLE}); "
                                        + DEMO_BUILD_HINT)
            bundle = DEMO_BUNDLE
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self._own_backend = isinstance(backend, str)
        self.backend = select_backend(self.bundle, backend, **(backend_options or {})) \
            if self._own_backend else backend
        try:
            for key in ("backend", "backend_options", "fallback", "on_prediction"):
                if key in recognizer_options:
                    raise ValueError(f"Hub: {key} is set on the Hub itself, not per source")
            _check_recognizer_options(recognizer_options)
            # the options' values too, now rather than at the first add_source: one
            # Recognizer on the shared backend, closed at once (~20 ms)
            try:
                Recognizer(self.bundle, backend=self.backend, **recognizer_options).close()
            except (ValueError, TypeError, FileNotFoundError) as exc:
                raise type(exc)(f"Hub: {exc}") from None
        except BaseException:
            if self._own_backend:
                self.backend.close()
            raise
        det = recognizer_options.get("detector")
        if det is not None and not isinstance(det, str) and \
                not getattr(det, "concurrent_safe", False):
            # one object for every source, whose stage 1 runs on the pool's threads at once: a
            # detector that does not say it is safe there is called by one thread at a time
            recognizer_options = {**recognizer_options, "detector": OneAtATime(det)}
        self._rec_opts = recognizer_options
        self.status_every_s = float(status_every_s)
        self.stop_without_outputs = bool(stop_without_outputs)
        self._sources: dict[str, _Source] = {}
        self._sinks: list = []
        self._takes_source: dict[int, bool] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = None
        self._encoder = None
        self._stage1: dict = {}  # source name -> the future of its newest stage 1
        self._status_failures: set = set()  # (sink id, error) said already
        self._closed = False
        #: why the hub stopped by itself (None: it did not): "no output left" once every
        #: sink failed or was closed by its reader
        self.stopped_reason: str | None = None
        #: the exception that stopped the inference loop (None: it did not fail)
        self.loop_error: BaseException | None = None
        #: outputs dropped because they failed (a full disk), "name: error" each
        self.failed_outputs: list[str] = []
        self.ticks = 0
        self.batched_frames = 0
        self.tick_errors = 0
        self.started_at: float | None = None
        self.last_emit_at: float | None = None

    # ------------------------------------------------------------------ building
    def add_source(self, video, audio=None, *, name: str | None = None,
                   realtime: bool = False) -> str:
        """Add a source (camera index, /dev/videoN, file, URL, pipeline) with its audio (None,
        ``"mic"``, ``"mic:N"``, a WAV/media file, or ``"video"``: a file's own track, or a
        network stream's own audio read by the same demuxer; None reads no audio, unlike
        ``affedge serve``, where a file takes its own track). Returns its name (default
        ``src<N>``). Files are checked now; live sources open (and retry) on their thread."""
        from affedge.sdk.recognizer import Recognizer
        from affedge.sdk.run_feeds import FileAudioFeeder
        from affedge.sdk.sources import open_audio
        from affedge.sdk.sources.video import VideoSource, _classify

        if self._closed:
            raise RuntimeError("Hub: closed")
        if self._thread is not None:
            raise RuntimeError("Hub: add sources before start()")
        from affedge.sdk.sinks.base import check_source_name

        auto = name is None
        if auto:  # the first free srcN (a user's own "src1" is not taken again)
            name = next(f"src{i}" for i in range(len(self._sources) + 1)
                        if f"src{i}" not in self._sources)
        name = check_source_name(name)
        if name in self._sources:
            raise ValueError(f"source name {name!r} is used twice" + (
                " (it is an earlier source's automatic name: name that one too)"
                if self._sources[name].auto_name else ""))
        if isinstance(video, str) and video.strip().isdigit():
            video = int(video)
        kind, spec = _classify(video)
        audio = None if audio is None or str(audio).lower() in ("", "none", "off") else audio
        rec = Recognizer(self.bundle, backend=self.backend, **self._rec_opts)
        # its stage 1 runs on the hub's pool, beside the batched model calls: asynchronous
        # full passes run there (same results as on a worker thread)
        rec.engine.face_search.inline = True
        feeder = live_audio = first = None
        try:
            if kind == "url" and audio == "video":
                from affedge.sdk.sources.network import NetworkAVSource, StreamClock

                push, clock = rec.engine.audio.push, StreamClock()

                def opener():  # one clock for every connection: times keep increasing
                    return NetworkAVSource(spec, on_audio=push, clock=clock)
                live = True
            elif kind == "file":
                # paced by the capture worker (never skipping), not by the source (which
                # skips frames it is late for, like a camera)
                first = VideoSource(spec, realtime=False)
                opener, live = None, False
            else:
                def opener():
                    return VideoSource(video)
                live = True
            if audio is not None and not (kind == "url" and audio == "video"):
                asrc = open_audio(audio, spec if kind == "file" else video)
                if getattr(asrc, "is_live", False):
                    if not live:
                        raise ValueError(f"source {name}: a live audio source ({asrc.name}) "
                                         f"needs a live video source; {spec} is a file")
                    asrc.connect(rec.engine.audio.push)
                    live_audio = asrc
                else:
                    def audio_failed(msg, n=name, r=rec):
                        r.audio_errors.append(msg)
                        report(f"affedge serve: source {n}: {msg}")

                    feeder = FileAudioFeeder(rec.engine.audio, asrc, on_error=audio_failed)
        except BaseException:
            if first is not None:
                first.close()
            rec.close()
            raise
        worker = SourceWorker(name, opener, self._wake, first=first, live=live,
                              pace=bool(realtime) and kind == "file")
        self._sources[name] = _Source(name, rec, worker, video, audio, feeder, live_audio)
        self._sources[name].auto_name = auto
        return name

    def add_sink(self, sink):
        """Add a Sink (or a target for :func:`affedge.sdk.sinks.open_sink`); returns it."""
        from affedge.sdk.sinks.base import as_sink, refuse_same_file, takes_source

        if self._closed:
            raise RuntimeError("Hub: closed")
        if any(x is sink for x in self._sinks):
            raise ValueError("Hub.add_sink: this sink was added already (it would get every "
                             "prediction twice)")
        refuse_same_file(getattr(sink, "target", sink), self._sinks)  # (before it opens)
        sink = as_sink(sink, "Hub.add_sink")
        self._takes_source[id(sink)] = takes_source(sink)
        self._sinks.append(sink)
        return sink

    @property
    def sinks(self) -> list:
        return list(self._sinks)

    @property
    def sources(self) -> list[str]:
        return list(self._sources)

    def audio_of(self, name: str):
        """The audio source ``name`` was added with (None: no audio)."""
        return self._sources[name].audio

    def recognizer(self, name: str):
        """The Recognizer of source ``name`` (its ``latest()``, ``stats()``, callbacks)."""
        return self._sources[name].rec

    # ------------------------------------------------------------------ running
    def start(self) -> Hub:
        if self._closed:
            raise RuntimeError("Hub: closed")
        if self._thread is not None:
            return self
        if not self._sources:
            raise ValueError("Hub: add at least one source before start()")
        self.started_at = time.monotonic()
        for s in self._sources.values():
            if s.live_audio is not None:
                s.live_audio.start()
            s.worker.start()
        from concurrent.futures import ThreadPoolExecutor

        workers = min(len(self._sources), os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="affedge-stage1") \
            if workers > 1 else None
        # stage 2 (the batched encoder call) of tick n+1 runs on its own thread while the
        # inference thread runs tick n's step: the encoder does not need the streams' states
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="affedge-encoder") \
            if workers > 1 else None
        self._thread = threading.Thread(target=self._loop, name="affedge-hub", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every source has ended (files at their end; live sources never) or
        ``stop()``; True when they all ended (False when the inference loop failed:
        :attr:`loop_error`). RuntimeError before :meth:`start` (nothing would ever end)."""
        if self._thread is None and not self._closed:
            raise RuntimeError("Hub.wait(): call start() first")
        end = None if timeout is None else time.monotonic() + timeout
        while not self._done.is_set() and not self._stop.is_set():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            self._done.wait(0.2 if left is None else min(0.2, left))
        return self._done.is_set() and self.loop_error is None

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _loop(self) -> None:
        next_status = time.monotonic()
        inflight: deque = deque()  # ticks whose stage 1 runs on the pool, oldest first
        try:
            while not self._stop.is_set():
                with self._cond:
                    ready = [s for s in self._sources.values() if s.worker.ready()]
                    room = len(inflight) < PIPELINE_DEPTH
                    if not ready and not inflight:
                        if all(s.worker.ended for s in self._sources.values()):
                            self._done.set()
                        self._cond.wait(0.05)
                    elif not ready and room and not finished(inflight[0]):
                        # nothing to start and the oldest tick still in stage 1: a new frame
                        # or the end of that tick's stage 1 wakes the loop (both notify)
                        self._cond.wait(0.05)
                        ready = [s for s in self._sources.values() if s.worker.ready()]
                # pipelined: up to PIPELINE_DEPTH ticks' stage 1 (detection per source, on the
                # pool; then the batched encoder on its thread) run while the oldest tick's
                # step runs here. A source's stage 1 starts after its own previous one
                # (chained), so the next tick's work fills the pool while the last source of
                # the previous tick finishes. A frame is started as soon as it is ready and
                # there is room, and the loop blocks on the oldest tick only when the
                # pipeline is full: the pool never idles while this thread waits. Waiting for
                # frames never holds a tick back: the oldest tick goes to the models when done.
                if ready and len(inflight) < PIPELINE_DEPTH:
                    batch = self._gather(ready)
                    if batch is not None:
                        inflight.append(self._begin(batch))
                        continue
                if inflight and (len(inflight) >= PIPELINE_DEPTH or finished(inflight[0])):
                    done = self._settle(inflight.popleft())
                    if done is not None:
                        self._models(*done)
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + self.status_every_s
                    self._publish_status()
            while inflight:  # stop(): finish the ticks in progress
                done = self._settle(inflight.popleft())
                if done is not None:
                    self._models(*done)
        except BaseException as exc:
            report(f"affedge serve: the inference loop stopped: {exc!r}")
            self.loop_error = exc  # (affedge serve exits 1: a supervisor restarts it)
            self.stopped_reason = f"the inference loop stopped ({type(exc).__name__})"
            self._done.set()
            raise

    def _gather(self, ready: list[_Source]):
        """The new frame of every ready source -> (stage-1 items, their sources, the indices
        of the frames each source skipped before it)."""
        items, owners, skips = [], [], []
        for s in ready:
            got = s.worker.take()
            if got is None:
                continue
            frame, skipped = got
            prepare = None if s.feeder is None else \
                (lambda f=s.feeder, t=frame.t: f.feed_until(t, 0.0))
            items.append((s.rec.engine, frame.image, frame.t, frame.index, prepare))
            owners.append(s)
            skips.append(list(skipped))
        return (items, owners, skips) if items else None

    def _begin(self, batch):
        from affedge.serve.batching import begin_many

        items, owners, skips = batch
        after = [self._stage1.get(s.name) for s in owners]
        began = begin_many(items, self._pool, after)
        for s, b in zip(owners, began):
            self._stage1[s.name] = b if hasattr(b, "done") else None
        encoding = None if self._encoder is None else \
            self._encoder.submit(stage2, items, began)
        for f in [encoding] if encoding is not None else began:
            if hasattr(f, "add_done_callback"):
                f.add_done_callback(lambda _: self._wake())
        return items, owners, skips, began, encoding

    def _settle(self, inflight):
        """Wait for a tick's stage 1 (and stage 2 when it runs on the encoder thread) ->
        (items, owners, skips, ticks or errors, encoded: True, False or the encoder's
        exception), or None."""
        from affedge.serve.batching import collect

        if inflight is None:
            return None
        items, owners, skips, began, encoding = inflight
        try:
            if encoding is None:
                return items, owners, skips, collect(began), False
            return items, owners, skips, *encoding.result()
        except Exception as exc:  # noqa: BLE001  (a detector crash: this tick is lost)
            self.tick_errors += 1
            report(f"affedge serve: face detection failed for {len(items)} frame(s): {exc}")
            return None

    def _models(self, items, owners, skips, began, encoded) -> None:
        """One encoder (unless ``encoded``) and one step call over the tick, then every
        Prediction to the sinks (the stale ones of frames a live source skipped first, in
        frame order). ``encoded`` an exception: the encoder thread's backend error."""
        from affedge.serve.batching import models_many

        try:
            if isinstance(encoded, Exception):
                raise encoded
            results = models_many(items, began, encoded)
        except Exception as exc:  # noqa: BLE001  (a backend error: states unchanged)
            self.tick_errors += 1
            report(f"affedge serve: inference failed for {len(items)} frame(s): {exc}")
            return
        self.ticks += 1
        self.batched_frames += len(items)
        for (_, _, t, index, _), s, skipped, r in zip(items, owners, skips, results):
            prev = s.last
            times = skipped_times(None if prev is None else prev.frame,
                                  None if prev is None else prev.timestamp, index, t, skipped)
            for idx, tk in zip(skipped, times):
                s.rec.skipped_frames += 1
                self._emit(s, s.rec.engine.stale_prediction(idx, tk, s.last))
            if isinstance(r, Exception):
                s.errors += 1
                what = "frame refused" if isinstance(r, ValueError) else \
                    f"frame {index} failed ({type(r).__name__})"
                report(f"affedge serve: source {s.name}: {what}: {r}")
                continue
            self._emit(s, r)

    def _emit(self, s: _Source, p) -> None:
        self.last_emit_at = time.monotonic()
        try:  # latest(), predictions(), the recognizer's callbacks and publish()
            s.rec._emit(p)
        except Exception as exc:  # noqa: BLE001  (a trial's raising callback stopped the hub)
            s.callback_errors += 1
            if s.callback_errors == 1 or s.callback_errors % 1000 == 0:
                report(f"affedge serve: source {s.name}: a callback raised {exc!r} "
                       f"(frame {p.frame}; the hub goes on: {s.callback_errors} so far)")
        s.record(p)
        for sink in list(self._sinks):
            try:
                if self._takes_source[id(sink)]:
                    sink.write(p, source=s.name)
                else:
                    sink.write(p)
            except Exception as exc:  # noqa: BLE001
                gone = isinstance(exc, BrokenPipeError)
                report(f"affedge serve: output {_sink_name(sink)} "
                       + ("was closed by its reader" if gone else f"failed: {exc!r}")
                       + "; it is dropped")
                if not gone:  # (in the status, and serve's exit code when none is left)
                    self.failed_outputs.append(f"{_sink_name(sink)}: {exc!r}")
                self._sinks.remove(sink)
                _quietly(getattr(sink, "close", None))
                if not self._sinks and self.stop_without_outputs:
                    # nothing left to serve to (`affedge serve --out - | head`)
                    report("affedge serve: no output left; stopping")
                    self.stopped_reason = "no output left"
                    self._stop.set()
                    self._wake()

    def _publish_status(self) -> None:
        st = None
        for sink in list(self._sinks):
            if hasattr(sink, "publish_status"):
                st = st or self.status()
                try:
                    sink.publish_status(st)
                except Exception as exc:  # noqa: BLE001  (said once: it was every second)
                    if (id(sink), type(exc)) not in self._status_failures:
                        self._status_failures.add((id(sink), type(exc)))
                        report(f"affedge serve: status to {_sink_name(sink)} failed: {exc!r} "
                               f"(said once; its predictions go on)")

    def status(self) -> dict:
        """Per source: state, fps, latency p50/p99 (ms), frames, skipped, reconnects, error,
        face/speech flags of the newest prediction; and the hub's tick counters."""
        out = {}
        for s in self._sources.values():
            es = s.rec.engine.stats()
            w = s.worker
            last = s.last
            out[s.name] = {
                "state": "failed" if self.loop_error is not None and w.state != "ended" else
                "stalled" if w.state == "running" and w.live and w.captured_at and
                time.monotonic() - w.captured_at > STALLED_S else w.state,
                # (what every ws:// client and the dashboard see: no camera password)
                "video": hide_credentials(s.video),
                "audio": s.audio and hide_credentials(str(s.audio)),
                "frames": s.rec.emitted, "skipped": w.skipped,
                # an ended source has no rate (its window of recent frames would show the
                # last one for FPS_WINDOW_S more)
                "fps": 0.0 if w.ended and not w.ready() else round(s.fps(), 2),
                "latency_ms_p50": _ms(es["latency_ms_p50"]),
                "latency_ms_p99": _ms(es["latency_ms_p99"]),
                "reconnects": w.reconnects, "error": hide_credentials(w.error),
                "note": hide_credentials(w.note),
                "errors": s.errors,
                "face_present": bool(last.face_present) if last else False,
                "speech_present": bool(last.speech_present) if last else False,
                "faces": len(last.faces) if last else 0,  # tracked now (a kiosk trial)
            }
        return {"schema": 1, "sources": out, "ticks": self.ticks,
                "mean_batch": (self.batched_frames / self.ticks) if self.ticks else float("nan"),
                "tick_errors": self.tick_errors, "failed_outputs": list(self.failed_outputs),
                "backend": str(getattr(
                    self.backend, "name", type(self.backend).__name__)),
                "uptime_s": (time.monotonic() - self.started_at) if self.started_at else 0.0,
                # from start() to the newest prediction (the work, without an idle tail)
                "active_s": (self.last_emit_at - self.started_at)
                if self.started_at and self.last_emit_at else 0.0}

    # ------------------------------------------------------------------ shutdown
    def stop(self) -> None:
        """Stop every source, finish the tick in progress, flush and close every sink, release
        cameras, microphones and streams, close the recognizers (and the backend the hub
        made). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake()
        for s in self._sources.values():
            s.worker._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(30.0)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._encoder is not None:
            self._encoder.shutdown(wait=True)
        for s in self._sources.values():  # every source told first, then one deadline for
            s.worker.stop(timeout=0.0)     # all (10 dead URLs took 5 s each in turn: a trial)
        deadline = time.monotonic() + WORKER_STOP_S
        for s in self._sources.values():
            s.worker.stop(timeout=max(0.0, deadline - time.monotonic()))
            if s.live_audio is not None:
                _quietly(s.live_audio.close)
            if s.feeder is not None:
                _quietly(s.feeder.source.close)
        self._publish_status()
        for sink in self._sinks:  # (a duck-typed sink may have write() alone)
            _quietly(getattr(sink, "flush", None))
        for sink in self._sinks:
            _quietly(getattr(sink, "close", None))
        for s in self._sources.values():
            _quietly(s.rec.close)
        if self._own_backend:
            _quietly(getattr(self.backend, "close", lambda: None))

    close = stop

    def __enter__(self) -> Hub:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _check_recognizer_options(options: dict) -> None:
    """TypeError now (not at the first add_source) for a keyword Recognizer does not take."""
    import inspect

    from affedge.sdk.recognizer import Recognizer

    known = set(inspect.signature(Recognizer.__init__).parameters) - {
        "self", "bundle", "backend", "backend_options", "fallback", "on_prediction"}
    for key in options:
        if key not in known:
            hint = " (threads: backend_options={'intra_op_threads': N})" \
                if key in ("threads", "intra_op_threads") else ""
            raise TypeError(f"Hub: unknown keyword {key!r}{hint}; the per-source Recognizer "
                            f"options are {', '.join(sorted(known))}")


def _sink_name(sink) -> str:
    """A sink as messages name it: its target, else its class (not ``<obj at 0x7f...>``)."""
    return str(getattr(sink, "target", None) or type(sink).__name__)


class OneAtATime:
    """A detector object shared by the hub's sources, its ``detect``/``detect_region`` called
    by one thread at a time (every other attribute is the detector's own)."""

    def __init__(self, detector):
        self._inner, self._lock = detector, threading.Lock()

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in ("detect", "detect_region") or not callable(attr):
            return attr

        def locked(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)

        return locked


def _ms(x: float) -> float:
    """A latency for the status message: 0.01 ms resolution (NaN before the first frame)."""
    return round(float(x), 2) if x == x else x


def _quietly(fn) -> None:
    """Call ``fn`` (None: nothing), ignoring its errors (shutdown goes on)."""
    if fn is None:
        return
    try:
        fn()
    except Exception:  # noqa: BLE001, S110
        pass


__all__ = ["Hub"]
