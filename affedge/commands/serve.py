"""``affedge serve``: several sources, one backend, predictions to robots, apps and a dashboard.

::

    affedge serve --source 0 --audio mic --source rtsp://cam/live --audio video \\
        --publish zmq://127.0.0.1:5556 --publish ws://127.0.0.1:8765 --out -
    affedge serve --config serve.toml          # the same as a file (affedge.serve.config)

``--source``/``--audio``/``--name`` pair up in order (a source without ``--audio`` gets its
file's own track when it has one, else none). Outputs: ``--publish`` (``zmq://``, ``ws://``:
the WebSocket port also serves the dashboard page) and ``--out`` (``-``, .csv, .jsonl). With
no output given, ``ws://HOST:8765`` (the dashboard). Binds 127.0.0.1 unless ``--host`` or a
target names another address; a non-loopback ``ws://`` needs ``--token``/``--token-file``.

Every bound address is printed on stderr and, with ``--port-file``, written as JSON
(``{"zmq": [...], "ws": [...], "dashboard": [...]}``; port 0 picks a free port).

The process ends when every source has ended (files; ``--linger`` keeps serving until a
signal) or on SIGTERM/SIGINT: sources stop, every sink is flushed and closed, cameras and
microphones are released, exit code 0.
"""
from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import signal
import stat
import sys
import threading

from affedge.commands.argtypes import non_negative_float
from affedge.commands.run import add_runtime_arguments, demo_bundle_note
from affedge.sdk.sinks.base import is_file_target
from affedge.sdk.sinks.ws import MIN_REMOTE_TOKEN

HELP = "serve several sources: predictions over ZeroMQ/WebSocket, a live dashboard, files"
DEFAULT_WS_PORT = 8765
#: seconds the shutdown (every source, sink and recognizer closed) may take before serve dumps
#: its threads' stacks to stderr and exits 1
SHUTDOWN_WATCHDOG_S = 45.0


class _SourceSpec(argparse.Action):
    """``--source`` starts a source; ``--audio`` / ``--name`` belong to the ``--source`` before
    them on the command line (pairing by count put a name on the wrong camera when a source in
    the middle had none). The sources, in order: ``args.source_specs``."""

    def __call__(self, parser, namespace, value, option_string=None):
        specs = list(getattr(namespace, "source_specs", None) or [])
        if self.dest == "source":
            specs.append({"video": value})
        elif not specs:
            parser.error(f"{option_string} {value}: put it after the --source it belongs to")
        elif self.dest in specs[-1]:
            parser.error(f"{option_string} {value}: --source {specs[-1]['video']} already has "
                         f"{option_string} {specs[-1][self.dest]} (each {option_string} belongs "
                         f"to the --source before it)")
        else:
            specs[-1][self.dest] = value
        namespace.source_specs = specs
        setattr(namespace, self.dest, list(getattr(namespace, self.dest) or []) + [value])


def add_arguments(p) -> None:
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a serve.toml (or .yaml/.yml) listing sources, outputs and options "
                        "(top-level keys: bundle, backend, publish, out, host, token_file, "
                        "allow_origin, realtime; flags add "
                        "sources and outputs to it; an option flag set on the command line "
                        "wins over its [options] value)")
    p.add_argument("--source", action=_SourceSpec, default=[], metavar="VIDEO",
                   help="video file, camera index, /dev/videoN, URL or GStreamer pipeline "
                        "(repeat for several sources)")
    p.add_argument("--audio", action=_SourceSpec, default=[], metavar="AUDIO",
                   help="audio of the --source before it: 'mic', 'mic:N', a WAV/media file, "
                        "'video' (a file's track, or a network stream's own audio), 'none'")
    p.add_argument("--name", action=_SourceSpec, default=[], metavar="NAME",
                   help="name (ZeroMQ topic) of the --source before it (default: src0, "
                        "src1...)")
    p.add_argument("--publish", action="append", default=[], metavar="URL",
                   help="zmq://HOST:PORT (PUB, one topic per source) or ws://HOST:PORT "
                        "(WebSocket + dashboard page); port 0 picks a free one")
    p.add_argument("--out", action="append", default=[], metavar="TARGET",
                   help="'-' (JSONL on stdout), a .csv or .jsonl file")
    p.add_argument("--host", default="127.0.0.1",
                   help="address for outputs given without one (e.g. ws://:8765) and for the "
                        "default dashboard")
    p.add_argument("--token", default=None,
                   help="WebSocket clients must present this token (required off loopback)")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="read the token from FILE (keeps it out of the process list)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="another page origin allowed to open the WebSocket "
                        "(e.g. http://kiosk.local:3000)")
    p.add_argument("--realtime", action="store_true",
                   help="pace file sources to their frame rate (default: as fast as possible, "
                        "every frame)")
    p.add_argument("--linger", action="store_true",
                   help="keep serving after every source ended, until SIGTERM/SIGINT")
    p.add_argument("--start-delay", type=non_negative_float, default=0.0, metavar="S",
                   help="wait S seconds after the outputs are bound before reading the "
                        "sources (lets subscribers connect before a file's first frame)")
    p.add_argument("--port-file", default=None, metavar="JSON",
                   help="write the bound addresses and the pid here as JSON once serving "
                        "(left in place when serve ends: check the pid)")
    add_runtime_arguments(p, "causal exponential smoothing in [0, 1) of the *_smoothed "
                             "fields; mean lag s/(1-s) frames", show=False)
    # which runtime flags the command line set: those win over the config's [options]
    from affedge.serve.config import OPTION_KEYS  # (each key is its flag's dest)

    p.set_defaults(_runtime_defaults={a.dest: a.default for a in p._actions
                                      if a.dest in OPTION_KEYS})


def _with_host(target: str, host: str) -> str:
    """``ws://:8765`` -> ``ws://HOST:8765``."""
    scheme, sep, rest = target.partition("://")
    if sep and rest.startswith(":"):
        return f"{scheme}://{host}{rest}"
    return target


def _token(args, cfg) -> str | None:
    if args.token and args.token_file:
        raise ValueError("--token and --token-file: give one of them")
    if args.token:
        return _checked_token(args.token, "--token")
    path = args.token_file or (cfg.token_file if cfg else None)
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                mode = os.fstat(fh.fileno()).st_mode
                tok = fh.read().strip()
        except OSError as exc:
            raise ValueError(f"--token-file {path}: {exc.strerror or exc}") from None
        # as ssh does with its keys: a token others may replace protects nothing, one every
        # user may read protects little (a security trial: chmod 666 was taken silently)
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ValueError(f"--token-file {path}: other users may write it (mode "
                             f"{stat.S_IMODE(mode):04o}); chmod 600 {path}")
        if mode & stat.S_IROTH:
            from affedge import log

            log.warning(f"affedge serve: warning: --token-file {path} is readable by every user "
                        f"of this machine (mode {stat.S_IMODE(mode):04o}); chmod 600 {path}")
        if not tok:
            raise ValueError(f"--token-file {path}: the file is empty")
        return _checked_token(tok, f"--token-file {path}")
    return None


def _checked_token(tok: str, what: str) -> str:
    """The token, refused when it holds whitespace (a file of two lines was taken whole, and
    no client could present it), with a warning when it is short."""
    if any(c.isspace() for c in tok):
        lines = len(tok.splitlines())
        raise ValueError(f"{what}: the token holds " + (f"{lines} lines" if lines > 1 else
                         "a space") + "; put it alone, as one word, on the first line")
    if len(tok) < MIN_REMOTE_TOKEN:  # (refused for a non-loopback bind: WebSocketSink)
        from affedge import log

        log.warning(f"affedge serve: warning: the token is {len(tok)} characters, easy to "
                    f"guess; use {MIN_REMOTE_TOKEN} or more (python -c 'import secrets; "
                    "print(secrets.token_urlsafe(24))')")
    return tok


def _sources(args, cfg) -> list[dict]:
    from affedge.commands.run import default_audio, have_pyav

    out = list(cfg.sources) if cfg else []
    out += [dict(s) for s in getattr(args, "source_specs", None) or []]
    if not out:
        from affedge.sdk.recognizer import DEMO_CLIP

        raise ValueError(f"give at least one --source: a camera index, a video file, a URL (or "
                         f"a --config with [[source]] tables); to try it, the demo clip: "
                         f"--source {DEMO_CLIP} --realtime")
    for s in out:
        if "audio" not in s and isinstance(s["video"], str):
            s["audio"] = default_audio(s["video"])
            if s["audio"] is None and os.path.isfile(s["video"]) and not have_pyav():
                _say(f"affedge serve: warning: {s['video']}: no audio: reading a file's audio "
                     f"track needs PyAV (pip install 'affedge[video-audio]'); running on the "
                     f"face alone (--audio none silences this)")
    return out


def _open_outputs(hub, args, cfg, token) -> dict:
    from affedge.commands.run import check_out_file, open_out
    from affedge.sdk.sinks.base import known_target, unknown_kind
    from affedge.sdk.sinks.combine import DeferredSink
    from affedge.sdk.sinks.ws import WebSocketSink
    from affedge.sdk.sinks.zmq import ZmqSink

    host = (cfg.host if cfg and cfg.host else None) or args.host
    publish = (cfg.publish if cfg else []) + args.publish
    outs = (cfg.out if cfg else []) + args.out
    if not publish and not outs:
        publish = [f"ws://{host}:{DEFAULT_WS_PORT}"]
    origins = (cfg.allow_origin if cfg else []) + args.allow_origin
    for o in origins:
        if "://" not in o or o.rstrip("/").count("/") > 2:
            raise ValueError(f"--allow-origin {o}: give a page origin, scheme://host[:port] "
                             f"(no wildcards, no path), e.g. http://kiosk.local:3000")
    _no_duplicates([t for t in map(lambda x: _with_host(x, host), publish)
                    if not t.endswith(":0")], "--publish",  # (port 0: a free port each)
                   "the same address would be bound twice")
    _no_duplicates([os.path.realpath(t) if is_file_target(t) else t for t in outs], "--out",
                   "two writers would share it")
    # every target's kind is checked before anything binds or opens (a bad --out used to be
    # refused after the ZeroMQ socket had been bound and announced)
    # (target as given, with the host filled in, its scheme) per --publish, computed once
    pubs = [(target, t, t.split("://", 1)[0].lower() if "://" in t else "")
            for target, t in ((x, _with_host(x, host)) for x in publish)]
    for target, _, scheme in pubs:
        if scheme not in ("ws", "zmq"):
            raise ValueError(f"--publish {target}: use zmq://HOST:PORT or ws://HOST:PORT "
                             f"(files and '-' go to --out)")
    for target in outs:
        scheme = target.split("://", 1)[0].lower() if "://" in target else ""
        # (a scheme a plugin registered, e.g. sqlite://, is an --out target like a file)
        if scheme in ("zmq", "ws") or (scheme and not known_target(target)):
            raise ValueError(f"--out {target}: network outputs go to --publish")
        if not known_target(target):
            raise ValueError(f"--out {target}: {unknown_kind(target)}")
    if token and not any(scheme == "ws" for _, _, scheme in pubs):
        _say("affedge serve: warning: the token protects ws:// outputs only, and there is none "
             "(ZeroMQ has no authentication and binds loopback only)")
    bound: dict = {"zmq": [], "ws": [], "dashboard": [], "out": []}
    for _, t, scheme in pubs:
        if scheme == "ws":
            sink = hub.add_sink(WebSocketSink(t, token=token, allowed_origins=origins))
            bound["ws"].append(sink.url)
            bound["dashboard"].append(sink.http_url)
            page = sink.http_url + ("#token=..." if token else "")
            _say(f"affedge serve: WebSocket on {sink.url}, dashboard at {page}")
        elif scheme == "zmq":
            sink = hub.add_sink(ZmqSink(t))
            bound["zmq"].append(sink.url)
            _say(f"affedge serve: ZeroMQ PUB on {sink.endpoint} (one topic per source)")
    for target in outs:
        if target != "-" and "://" not in target:
            # created at the first Prediction (checked now): a serve stopped before any leaves
            # an earlier file at that path whole, as affedge run does
            check_out_file(target)
            hub.add_sink(DeferredSink(target, open_out, create_if_empty=False))
        else:
            hub.add_sink(open_out(target))
        bound["out"].append(target)
    return bound


def _no_duplicates(items: list[str], flag: str, why: str) -> None:
    seen = set()
    for t in items:
        if t in seen:
            raise ValueError(f"{flag} {t}: given twice ({why}; the config file's list and "
                             f"the flags add up)")
        seen.add(t)


def _with_audio(hub) -> list[str]:
    """"NAME [audio: A]" per source: a file without an audio track runs without audio (lower
    confidence), which the user should see at the start rather than find in the records."""
    return [f"{n} [audio: {hub.audio_of(n) or 'none'}]" for n in hub.sources]


def _say(msg: str) -> None:
    """A status line (what serve is doing, what it wrote): stderr, silenced by -q."""
    from affedge import log

    log.status(msg)


def _check_port_file(path: str) -> None:
    """ValueError now (before anything binds) when ``--port-file``'s folder does not exist."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"--port-file {path}: folder {folder} does not exist")


def _write_port_file(path: str, bound: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({**bound, "pid": os.getpid()}, fh)
        os.replace(tmp, path)  # readers never see half a file
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ValueError(f"--port-file {path}: cannot write here "
                         f"({exc.strerror or exc})") from None


def _raise_file_limit() -> None:
    """Raise this process's soft limit of open files to its hard limit (at most 65536):
    WebSocket clients, cameras and files share it (the common soft default is 1024)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, OSError, ValueError):
        pass  # (not on this system, or not allowed: the connection cap follows the limit)


def run(args) -> int:
    from affedge.commands.run import recognizer_options, resolve_bundle
    from affedge.serve import Hub
    from affedge.serve.config import load_config

    _raise_file_limit()
    cfg = load_config(args.config) if args.config else None
    if args.port_file:
        _check_port_file(args.port_file)
    sources = _sources(args, cfg)
    token = _token(args, cfg)
    opts = recognizer_options(args)
    if cfg:
        defaults = getattr(args, "_runtime_defaults", {})
        for key, value in cfg.options.items():
            if key in defaults and getattr(args, key) != defaults[key]:
                continue  # the command line set it: the flag wins
            if key == "threads":
                opts.setdefault("backend_options", {})["intra_op_threads"] = value
            elif key == "precision":
                if value != "fp32":
                    opts.setdefault("backend_options", {})["precision"] = value
            else:
                opts[key] = value
    backend = (cfg.backend if cfg and cfg.backend and args.backend == "auto" else None) \
        or opts.pop("backend")
    opts.pop("backend", None)
    backend_options = opts.pop("backend_options", None)
    bundle = resolve_bundle(args.bundle or (cfg.bundle if cfg else None))
    realtime = args.realtime or (cfg.realtime if cfg else False)

    stop = threading.Event()
    got: list[int] = []

    def on_signal(signum, frame):
        got.append(signum)
        stop.set()

    # SIGHUP (a closed terminal, or an operator's "reopen your logs") stops as SIGTERM does:
    # it killed serve outright before (exit 129, no flush)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM,
                                                    signal.SIGHUP)}
    hub = Hub(bundle, backend, backend_options=backend_options, stop_without_outputs=True,
              **opts)
    try:
        for s in sources:
            hub.add_source(s["video"], s.get("audio"), name=s.get("name"),
                           realtime=bool(s.get("realtime", realtime)))
        bound = _open_outputs(hub, args, cfg, token)
        if args.port_file:
            _write_port_file(args.port_file, bound)
        if args.start_delay > 0:
            stop.wait(args.start_delay)
        if not stop.is_set():
            hub.start()
        _say(f"affedge serve: {len(sources)} source(s): {', '.join(_with_audio(hub))}; "
             f"backend {hub.status()['backend']}")
        if not (args.bundle or (cfg and cfg.bundle)):
            demo_bundle_note("affedge serve")
        while not stop.is_set() and not hub.stopped_reason:
            if hub.wait(0.2):  # every source ended (it returns at once from then on)
                if not args.linger:
                    break
                stop.wait(0.5)  # --linger: serve the clients until a signal, idle
    finally:
        # a shutdown that hangs prints every thread's stack and exits 1 instead of waiting for
        # a SIGKILL (a CI run once saw serve not exit within 60 s of SIGTERM)
        faulthandler.dump_traceback_later(SHUTDOWN_WATCHDOG_S, exit=True)
        try:
            hub.stop()
        finally:
            faulthandler.cancel_dump_traceback_later()
        for s, h in old.items():
            signal.signal(s, h)
    st = hub.status()
    why = f"stopped by {signal.Signals(got[0]).name}" if got else \
        (hub.stopped_reason or "every source ended")
    frames = ", ".join(f"{n}: {v['frames']} predictions" + _latency(v)
                       for n, v in st["sources"].items())
    total = sum(v["frames"] for v in st["sources"].values())
    busy = st.get("active_s") or st["uptime_s"]  # (not the idle time of --linger)
    rate = f" in {busy:.1f} s ({total / busy:.0f} frames/s in all)" if busy > 0 and total else ""
    _say(f"affedge serve: {why}; {frames}; {st['ticks']} ticks{rate}"
         + (f", mean batch {st['mean_batch']:.2f}" if st["ticks"] else ""))
    files, unopened = [], []
    for t, sink in _file_sinks(hub, bound["out"]):
        if getattr(sink, "opened", True):
            files.append(f"{t} ({sink.rows} rows)")
        else:
            unopened.append(t)
    if files:
        _say("affedge serve: wrote " + ", ".join(files))
    if unopened:
        _say("affedge serve: no prediction came, nothing written to " + ", ".join(unopened)
             + " (an earlier file there is left as it was)")
    stuck = [t.name for t in threading.enumerate()
             if t is not threading.current_thread() and t.is_alive() and not t.daemon]
    if stuck:  # (the interpreter waits for these at exit: name them)
        print(f"affedge serve: threads still running after the stop: {', '.join(stuck)}",
              file=sys.stderr, flush=True)  # a warning: shown even with -q
    if hub.failed_outputs:  # (each was reported when it failed; said again at the end)
        print("affedge serve: outputs that failed and were dropped: "
              + "; ".join(hub.failed_outputs), file=sys.stderr, flush=True)
    # stopped because the last output failed (a full disk): a failure, for a supervisor's
    # restart-on-failure (it exited 0, like a reader that quit, before)
    if hub.loop_error is not None:  # (reported when it happened; a supervisor restarts it)
        return 1
    return 1 if hub.stopped_reason == "no output left" and hub.failed_outputs else 0


def _file_sinks(hub, targets: list[str]):
    """(target, sink) for each --out file (not stdout) the hub wrote to."""
    for sink in hub.sinks:
        t = getattr(sink, "target", None)
        if t in targets and t != "-":
            yield t, sink


def _latency(v: dict) -> str:
    p50, p99 = v.get("latency_ms_p50"), v.get("latency_ms_p99")
    if p50 is None or p50 != p50:  # no prediction (NaN)
        return ""
    return f" (latency p50 {p50:.1f} / p99 {p99:.1f} ms)"


def main(argv: list[str] | None = None) -> int:
    """``python -m affedge.commands.serve ...``: the same as ``affedge serve ...``."""
    from affedge import cli

    if "serve" not in cli.COMMANDS:  # until affedge/cli.py lists the command
        cli.COMMANDS = (*cli.COMMANDS, "serve")
    return cli.main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
