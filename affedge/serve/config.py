"""The TOML file form of ``affedge serve`` (``--config serve.toml``): sources, outputs, options.

::

    # serve.toml
    bundle = "models/my_bundle"        # optional (default: the demo bundle)
    backend = "auto"
    publish = ["zmq://127.0.0.1:5556", "ws://127.0.0.1:8765"]
    out = ["-"]                        # JSONL on stdout; .csv/.jsonl paths too
    token_file = "/etc/affedge/token"  # needed for a non-loopback ws:// bind
    realtime = false                   # pace file sources to their frame rate

    [options]                          # per-source recognizer settings (like the CLI flags)
    smoothing = 0.6
    detect_every = 4

    [[source]]
    name = "front"
    video = 0
    audio = "mic:1"

    [[source]]
    name = "door"
    video = "rtsp://192.168.1.20/stream1"
    audio = "video"                    # the stream's own audio track, same demuxer

Unknown keys are refused with their name (a typo never silently changes nothing).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import tomllib

TOP_KEYS = {"bundle", "backend", "publish", "out", "token_file", "host", "realtime", "source",
            "options", "allow_origin"}
SOURCE_KEYS = {"video", "audio", "name", "realtime"}
OPTION_KEYS = {"smoothing", "detect_every", "max_faces", "min_face", "detector", "threads",
               "precision"}


@dataclass
class ServeConfig:
    sources: list[dict] = field(default_factory=list)
    publish: list[str] = field(default_factory=list)
    out: list[str] = field(default_factory=list)
    bundle: str | None = None
    backend: str | None = None
    token_file: str | None = None
    host: str | None = None
    realtime: bool = False
    allow_origin: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)


def _strings(value, key: str, path) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise ValueError(f"{path}: {key} must be a string or a list of strings")
    return list(items)


def load_config(path) -> ServeConfig:
    """Read and check a serve TOML file (ValueError naming the file and the key)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    bad = sorted(set(data) - TOP_KEYS)
    if bad:
        raise ValueError(f"{path}: unknown key(s) {', '.join(bad)} (known: "
                         f"{', '.join(sorted(TOP_KEYS))})")
    cfg = ServeConfig()
    base = os.path.dirname(os.path.abspath(path))
    for key in ("bundle", "backend", "token_file", "host"):
        if key in data:
            if not isinstance(data[key], str):
                raise ValueError(f"{path}: {key} must be a string")
            setattr(cfg, key, data[key])
    if cfg.token_file:
        cfg.token_file = os.path.join(base, cfg.token_file)
    for key in ("publish", "out", "allow_origin"):
        if key in data:
            setattr(cfg, key, _strings(data[key], key, path))
    if "realtime" in data:
        if not isinstance(data["realtime"], bool):
            raise ValueError(f"{path}: realtime must be true or false")
        cfg.realtime = data["realtime"]
    opts = data.get("options", {})
    if not isinstance(opts, dict):
        raise ValueError(f"{path}: [options] must be a table")
    bad = sorted(set(opts) - OPTION_KEYS)
    if bad:
        raise ValueError(f"{path}: unknown option(s) {', '.join(bad)} (known: "
                         f"{', '.join(sorted(OPTION_KEYS))})")
    cfg.options = dict(opts)
    sources = data.get("source", [])
    if not isinstance(sources, list):
        raise ValueError(f"{path}: sources are [[source]] tables")
    for i, s in enumerate(sources):
        bad = sorted(set(s) - SOURCE_KEYS)
        if bad:
            raise ValueError(f"{path}: source {i + 1}: unknown key(s) {', '.join(bad)} "
                             f"(known: {', '.join(sorted(SOURCE_KEYS))})")
        if "video" not in s or isinstance(s["video"], bool) or \
                not isinstance(s["video"], (str, int)):
            raise ValueError(f"{path}: source {i + 1}: video must be a path, URL or camera "
                             f"index")
        src = dict(s)
        v = src["video"]
        if isinstance(v, str) and "://" not in v and not v.isdigit() and "!" not in v \
                and not v.startswith("/dev/") and not os.path.isabs(v):
            src["video"] = os.path.join(base, v)  # relative paths: next to the file
        cfg.sources.append(src)
    return cfg
