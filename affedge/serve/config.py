"""The file form of ``affedge serve`` (``--config``, TOML or YAML): sources, outputs, options.

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

The same keys in YAML (``.yaml``/``.yml``; read with PyYAML's ``safe_load``, which builds
plain data only): ``source:`` is a list of mappings, ``options:`` a mapping.

Unknown keys and wrong types are refused with their name (a typo never silently changes
nothing). Relative paths (videos, audio files, outputs, the bundle, the token file) are relative
to the file. ``affedge serve`` adds its flags' sources and outputs to the file's; an option flag
given on the command line wins over ``[options]``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from affedge.features.detectors.base import MIN_FACE_PX

TOP_KEYS = {"bundle", "backend", "publish", "out", "token_file", "host", "realtime", "source",
            "options", "allow_origin"}
SOURCE_KEYS = {"video", "audio", "name", "realtime"}



def _number_in(lo: float, hi: float):
    return lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and lo <= x < hi


def _whole_at_least(lo: int):
    return lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= lo


#: [options]: the check and what it wants (the same ranges as the flags of the same names)
OPTION_CHECKS = {
    "smoothing": (_number_in(0.0, 1.0), "a number in [0, 1)"),
    "detect_every": (_whole_at_least(1), "a whole number >= 1"),
    "max_faces": (_whole_at_least(1), "a whole number >= 1"),
    "min_face": (_whole_at_least(MIN_FACE_PX), f"a whole number >= {MIN_FACE_PX}"),
    "detector": (lambda x: isinstance(x, str), "a detector name (affedge serve --help lists "
                                               "them)"),
    "threads": (_whole_at_least(1), "a whole number >= 1"),
    "precision": (lambda x: x in ("fp32", "bf16", "int8"), "'fp32', 'bf16' or 'int8'"),
    "person_baseline": (lambda x: isinstance(x, bool), "true or false (--no-person-baseline)"),
    "async_detect": (lambda x: isinstance(x, bool), "true or false (false: --sync-detect)"),
}
OPTION_KEYS = set(OPTION_CHECKS)


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


#: file name endings read as YAML (anything else is read as TOML)
YAML_SUFFIXES = (".yaml", ".yml")


def _read_toml(path: str) -> dict:
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # 3.10 (JetPack 6's Python): the same parser as a package
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError("reading a --config file on Python 3.10 needs tomli: "
                              "pip install tomli") from None
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc}; a YAML file needs the .yaml or "
                         f".yml ending)") from None


def _read_yaml(path: str) -> dict:
    try:
        import yaml
    except ImportError:
        raise ImportError(f"{path}: reading a YAML --config needs PyYAML: pip install "
                          f"'affedge[serve]' (or write the file as TOML)") from None
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)  # plain data only: never constructs Python objects
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping of keys (publish, source, "
                         f"options, ...), got {type(data).__name__}")
    return data


def load_config(path) -> ServeConfig:
    """Read and check a serve TOML or YAML file (ValueError naming the file and the key)."""
    path = os.fspath(path)
    data = _read_yaml(path) if path.lower().endswith(YAML_SUFFIXES) else _read_toml(path)
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
    # relative paths in the file are relative to the file (a service's working directory is
    # often /), like the sources' video paths below
    if cfg.token_file:
        cfg.token_file = os.path.join(base, cfg.token_file)
    if cfg.bundle and not os.path.isabs(cfg.bundle):
        cfg.bundle = os.path.join(base, cfg.bundle)
    for key in ("publish", "out", "allow_origin"):
        if key in data:
            setattr(cfg, key, _strings(data[key], key, path))
    cfg.out = [t if t == "-" or "://" in t else os.path.join(base, t) for t in cfg.out]
    if "realtime" in data:
        if not isinstance(data["realtime"], bool):
            raise ValueError(f"{path}: realtime must be true or false")
        cfg.realtime = data["realtime"]
    opts = data.get("options", {})
    opts = {} if opts is None else opts  # YAML's empty "options:"
    if not isinstance(opts, dict):
        raise ValueError(f"{path}: [options] must be a table")
    bad = sorted(set(opts) - OPTION_KEYS)
    if bad:
        top = [k for k in bad if k in TOP_KEYS]
        hint = f"; {', '.join(top)} go(es) at the top of the file, not under [options]" \
            if top else ""
        raise ValueError(f"{path}: unknown option(s) {', '.join(bad)} (known: "
                         f"{', '.join(sorted(OPTION_KEYS))}){hint}")
    for key, value in opts.items():
        check = OPTION_CHECKS[key]
        if not check[0](value):
            raise ValueError(f"{path}: [options] {key} must be {check[1]}, got {value!r}")
    cfg.options = dict(opts)
    sources = data.get("source", [])
    if not isinstance(sources, list) or not all(isinstance(x, dict) for x in sources):
        raise ValueError(f"{path}: sources are [[source]] tables (in YAML: a list of "
                         f"mappings under source:)")
    for i, s in enumerate(sources):
        bad = sorted(set(s) - SOURCE_KEYS)
        if bad:
            raise ValueError(f"{path}: source {i + 1}: unknown key(s) {', '.join(bad)} "
                             f"(known: {', '.join(sorted(SOURCE_KEYS))})")
        if "video" not in s or isinstance(s["video"], bool) or \
                not isinstance(s["video"], (str, int)):
            raise ValueError(f"{path}: source {i + 1}: video must be a path, URL or camera "
                             f"index")
        where = f"{path}: source {i + 1}"
        for key, ok, what in (("name", lambda x: isinstance(x, str) and x, "a non-empty string"),
                              ("audio", lambda x: isinstance(x, str), "a string ('mic', "
                               "'mic:N', a file, 'video' or 'none')"),
                              ("realtime", lambda x: isinstance(x, bool), "true or false")):
            if key in s and not ok(s[key]):
                raise ValueError(f"{where}: {key} must be {what}, got {s[key]!r}")
        src = dict(s)
        v = src["video"]
        if isinstance(v, str) and "://" not in v and not v.isdigit() and "!" not in v \
                and not v.startswith("/dev/") and not os.path.isabs(v):
            src["video"] = os.path.join(base, v)  # relative paths: next to the file
        a = src.get("audio")
        if isinstance(a, str) and a not in ("mic", "video", "none") and \
                not a.startswith("mic:") and "://" not in a and not os.path.isabs(a):
            src["audio"] = os.path.join(base, a)
        cfg.sources.append(src)
    return cfg
