"""The model bundle: manifest schema, writer and validating reader.

A bundle is a directory (or a ``.zip`` of one) holding ``manifest.json`` and the artifacts it
lists (ONNX graphs, TorchScript / torch.export archives, TensorRT engines, safetensors weights).
This module needs only numpy, json, hashlib and zipfile, so the runtime can use it.

Manifest, schema_version 1 (keys marked * are required; see ``docs``/the export report)::

    schema_version*     1
    affedge_version*    "0.1.0"
    created             ISO-8601 UTC time stamp
    model*              affedge.config.ModelConfig as a dict (to_dict)
    features*           affedge.config.FeatureConfig as a dict
    video*              {"fps": float}  frame rate the model was trained at (it runs at native fps)
    crop*               {"size": 40, "frame_size": 48, "aligned_size": 112, "color": "RGB",
                         "layout": "NCHW", "scale": 1/255, "mean": [.5]*3, "std": [.5]*3}
    receptive_field*    int, frames
    outputs*            ["valence", "arousal"]
    audio_norm*         {stream: {"mean": [D floats], "std": [D floats]}} (may be {})
    provenance          {"data": ..., "folds": [...], "seed": int, "metrics": {...}, ...}
    streaming           {"states": [{"name", "shape", "dtype"}], "audio_inputs": [...]} (step I/O)
    artifacts*          [artifact, ...]
    parity              [{"artifact", "format", "precision", "outputs": {name: {"max_abs",
                          "max_rel"}}, "ccc": {...}, "threshold", "status"}, ...]

    artifact = {name*: "encoder" | "step" | "window" | "weights" | ...,
                format*: one of FORMATS, file*: relative path, sha256*: hex, size*: bytes,
                precision*: "fp32" | "fp16" | "bf16" | "int8",
                inputs*/outputs*: [{"name", "shape": [int | symbol such as "N"], "dtype"}],
                exporter, opset, notes,                               (optional, informative)
                gpu_name, compute_capability, tensorrt_version}      (required for "tensorrt")

Everything is validated in :func:`load_bundle` before any file is handed to an inference
library: known schema version, required fields and their types, the meaning of every field
(ranges and cross-checks, :mod:`affedge.manifest_schema`), every path relative and inside
the bundle (no absolute paths, no ``..``, no symlink escaping, no zip-slip members, bounded zip
sizes), no files the manifest does not list, sha256 and size of each artifact, no pickles
(see :func:`check_no_pickle`), safetensors headers (dtype, shape, offsets, element bound), and
each ONNX graph's own signature against its record, with external data refused.
Every failure raises :class:`BundleError` (a ``ValueError``) naming the file and the reason.

Identity: the bundle digest is the sha256 of ``manifest.json``'s bytes (which list every
artifact's sha256), :attr:`Bundle.digest`. ``load_bundle(path, expect_digest=...)`` refuses any
other manifest and ``load_bundle(path, trust=[public keys])`` requires ``manifest.sig``, an
Ed25519 signature of those bytes by a trusted key (:mod:`affedge.signing`); both are checked
before the manifest is parsed. :attr:`Bundle.signature_status` says which one held.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from affedge import formats as _formats
from affedge.artifact_checks import (  # noqa: F401  (re-exported: the bundle's public checks)
    check_no_pickle, check_safetensors, looks_like_pickle, pickle_globals)
from affedge.bundle_hints import not_a_bundle_hint
from affedge.bundle_limits import (  # noqa: F401  (the limits are re-exported here)
    FORBIDDEN_SUFFIXES,
    MANIFEST,
    MAX_ARTIFACT_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_SAFETENSORS_HEADER,  # noqa: F401
    MAX_SIGNATURE_BYTES,
    MAX_TENSOR_ELEMENTS,  # noqa: F401
    MAX_ZIP_MEMBERS,  # noqa: F401
    MAX_ZIP_TOTAL_BYTES,  # noqa: F401
    SIGNATURE,  # noqa: F401
    BundleError,
    _safe_relpath,
)
from affedge.bundle_zip import extract_zip

SCHEMA_VERSION = 1
KNOWN_SCHEMA_VERSIONS = (1,)

# The formats and the file name suffix each must use (affedge.formats, the one table): a
# TorchScript or .pt2 zip is allowed only where its format says so, and ".pt/.pth/.pkl" (plain
# torch.save pickles) never.
FORMATS = tuple(f.name for f in _formats.FORMATS)
PRECISIONS = _formats.PRECISIONS
DTYPES = ("float32", "float16", "bfloat16", "int8", "uint8", "int32", "int64", "bool")
FORMAT_SUFFIXES = {f.name: f.suffixes for f in _formats.FORMATS}
REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "affedge_version": str,
    "model": dict,
    "features": dict,
    "video": dict,
    "crop": dict,
    "receptive_field": int,
    "outputs": list,
    "audio_norm": dict,
    "artifacts": list,
}
ARTIFACT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "format": str,
    "file": str,
    "sha256": str,
    "size": int,
    "precision": str,
    "inputs": list,
    "outputs": list,
}
_FLOAT32_MAX = float(np.finfo(np.float32).max)  # statistics are used as float32 at run time
ENGINE_FIELDS = {"gpu_name": str, "compute_capability": str, "tensorrt_version": str}




# --------------------------------------------------------------------------------------------
# small helpers


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def tensor_spec(name: str, shape: Sequence[int | str], dtype: str = "float32") -> dict[str, Any]:
    """One input/output record: ``{"name", "shape", "dtype"}`` (symbolic dims are strings)."""
    return {"name": name, "shape": [d if isinstance(d, str) else int(d) for d in shape],
            "dtype": str(dtype)}


def _check_type(obj: Mapping, key: str, typ, where: str) -> None:
    if key not in obj:
        raise BundleError(f"{where}: required field {key!r} is missing")
    val = obj[key]
    if typ is int and isinstance(val, bool):
        raise BundleError(f"{where}: field {key!r} must be int, got bool")
    if not isinstance(val, typ):
        tname = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise BundleError(f"{where}: field {key!r} must be {tname}, got {type(val).__name__}")


def _check_specs(specs: list, where: str) -> None:
    for i, s in enumerate(specs):
        w = f"{where}[{i}]"
        if not isinstance(s, dict):
            raise BundleError(f"{w}: tensor spec must be an object")
        _check_type(s, "name", str, w)
        _check_type(s, "shape", list, w)
        _check_type(s, "dtype", str, w)
        if s["dtype"] not in DTYPES:
            raise BundleError(f"{w}: unknown dtype {s['dtype']!r} (known: {DTYPES})")
        for d in s["shape"]:
            ok = (isinstance(d, int) and not isinstance(d, bool) and d >= 0) or (
                isinstance(d, str) and d.isidentifier())
            if not ok:
                raise BundleError(f"{w}: shape {s['shape']} has an invalid dimension {d!r}")


def validate_manifest(m: Any) -> None:
    """Check the schema version, required fields, their types and every artifact record."""
    if not isinstance(m, dict):
        raise BundleError(f"{MANIFEST}: top level must be a JSON object")
    if "schema_version" not in m:
        raise BundleError(f"{MANIFEST}: required field 'schema_version' is missing")
    if m["schema_version"] not in KNOWN_SCHEMA_VERSIONS or isinstance(m["schema_version"], bool):
        raise BundleError(f"{MANIFEST}: unknown schema_version {m['schema_version']!r} "
                          f"(this affedge reads {KNOWN_SCHEMA_VERSIONS})")
    for key, typ in REQUIRED_FIELDS.items():
        _check_type(m, key, typ, MANIFEST)
    if not all(isinstance(o, str) for o in m["outputs"]):
        raise BundleError(f"{MANIFEST}: 'outputs' must be a list of strings")
    for stream, st in m["audio_norm"].items():
        w = f"{MANIFEST}: audio_norm[{stream!r}]"
        if not isinstance(st, dict) or not isinstance(st.get("mean"), list) or not isinstance(
                st.get("std"), list):
            raise BundleError(f"{w} must have 'mean' and 'std' lists")
        if len(st["mean"]) != len(st["std"]):
            raise BundleError(f"{w}: mean has {len(st['mean'])} values, std {len(st['std'])}")
        if any(not isinstance(v, (int, float)) or isinstance(v, bool)
               for v in st["mean"] + st["std"]):
            raise BundleError(f"{w}: mean/std must be numbers")
        if not all(math.isfinite(v) and abs(v) <= _FLOAT32_MAX for v in st["mean"] + st["std"]):
            raise BundleError(f"{w}: mean/std must be finite float32 values (NaN, Infinity or "
                              "a magnitude above 3.4e38 found)")
        if any(not (v > 0) for v in st["std"]):
            raise BundleError(f"{w}: std must be positive")
    seen = set()
    for i, a in enumerate(m["artifacts"]):
        w = f"{MANIFEST}: artifacts[{i}]"
        if not isinstance(a, dict):
            raise BundleError(f"{w} must be an object")
        for key, typ in ARTIFACT_FIELDS.items():
            _check_type(a, key, typ, w)
        w = f"{MANIFEST}: artifact {a['name']!r} ({a['format']})"
        if a["format"] not in FORMATS:
            raise BundleError(f"{w}: unknown format {a['format']!r} (known: {FORMATS})")
        if a["precision"] not in PRECISIONS:
            raise BundleError(f"{w}: unknown precision {a['precision']!r}")
        if len(a["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in a["sha256"]):
            raise BundleError(f"{w}: sha256 must be 64 lowercase hex digits")
        if a["size"] < 0 or a["size"] > MAX_ARTIFACT_BYTES:
            raise BundleError(f"{w}: size {a['size']} outside [0, {MAX_ARTIFACT_BYTES}]")
        rel = _safe_relpath(a["file"], w)
        if rel.name == MANIFEST or rel.as_posix() == SIGNATURE:
            raise BundleError(f"{w}: an artifact cannot be the manifest or its signature")
        if rel.suffix.lower() in FORBIDDEN_SUFFIXES:
            raise BundleError(f"{w}: {rel.suffix} files are pickles and are refused")
        if not any(a["file"].endswith(s) for s in FORMAT_SUFFIXES[a["format"]]):
            raise BundleError(f"{w}: file {a['file']!r} must end with one of "
                              f"{FORMAT_SUFFIXES[a['format']]}")
        _check_specs(a["inputs"], f"{w}.inputs")
        _check_specs(a["outputs"], f"{w}.outputs")
        if a["format"] == "tensorrt":
            for key, typ in ENGINE_FIELDS.items():
                _check_type(a, key, typ, w)
        key = (a["name"], a["format"], a["precision"])
        if key in seen:
            raise BundleError(f"{w}: duplicate artifact {key}")
        seen.add(key)
    from affedge.manifest_schema import check_manifest

    check_manifest(m)  # ranges and cross-checks of every field the runtime uses


# --------------------------------------------------------------------------------------------
# the bundle


@dataclass(frozen=True)
class Bundle:
    """A validated bundle (read-only). ``root`` is its directory (a temporary extraction for a
    zip, removed when the object is garbage-collected)."""

    manifest: Mapping[str, Any]
    root: Path
    source: Path
    _tmp: Any = field(default=None, repr=False, compare=False)
    #: the bundle's identity: sha256 (hex) of the manifest's bytes, which list every artifact's
    #: sha256 and size, so any edited field or file changes it
    digest: str = ""
    #: "unpinned" (loaded without expect_digest / trust), "digest-pinned" (the caller's
    #: expected digest matched) or "signed:<key fingerprint>" (a trusted key's valid signature)
    signature_status: str = "unpinned"

    # -- manifest accessors
    @property
    def artifacts(self) -> list[dict]:
        return list(self.manifest["artifacts"])

    @property
    def outputs(self) -> list[str]:
        return list(self.manifest["outputs"])

    @property
    def receptive_field(self) -> int:
        return int(self.manifest["receptive_field"])

    @property
    def audio_norm(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{stream: (mean float32[D], std float32[D])}``."""
        return {k: (np.asarray(v["mean"], np.float32), np.asarray(v["std"], np.float32))
                for k, v in self.manifest["audio_norm"].items()}

    def model_config(self):
        from affedge.config import ModelConfig, from_dict

        return from_dict(ModelConfig, self.manifest["model"])

    def feature_config(self):
        from affedge.config import FeatureConfig, from_dict

        return from_dict(FeatureConfig, self.manifest["features"])

    def find(self, name: str, format: str | None = None,
             precision: str | None = None) -> dict | None:
        """The first artifact record matching name (and format / precision when given)."""
        for a in self.manifest["artifacts"]:
            if a["name"] == name and format in (None, a["format"]) and precision in (
                    None, a["precision"]):
                return a
        return None

    def has(self, name: str, format: str | None = None, precision: str | None = None) -> bool:
        return self.find(name, format, precision) is not None

    def artifact(self, name: str, format: str, precision: str | None = None) -> Path:
        """Path of the artifact ``name`` in ``format``; BundleError naming what exists if absent."""
        a = self.find(name, format, precision)
        if a is None:
            have = sorted({(x["name"], x["format"], x["precision"])
                           for x in self.manifest["artifacts"]})
            want = f"{name!r} in format {format!r}" + (f" ({precision})" if precision else "")
            raise BundleError(f"bundle {self.source}: no artifact {want}; it has {have}")
        return self.root / a["file"]

    def verify(self) -> None:
        """Re-check every artifact's size, sha256 and pickle / header rules."""
        _verify_artifacts(self.root, self.manifest)

    def pinned(self, expect_digest: str | None = None, trust: Any = None) -> Bundle:
        """This bundle checked against an expected digest and/or trusted keys (as
        :func:`load_bundle` does), for a Bundle that was loaded without them: returns a copy
        with the new ``signature_status``; BundleError if the identity does not hold (or the
        manifest file changed on disk since loading)."""
        if expect_digest is None and trust is None:
            return self
        raw = (self.root / MANIFEST).read_bytes()
        if manifest_digest(raw) != self.digest:
            raise BundleError(f"bundle {self.source}: {MANIFEST} changed on disk since it was "
                              "loaded")
        spath = self.root / SIGNATURE
        sig = spath.read_bytes()[:MAX_SIGNATURE_BYTES + 1] if spath.is_file() else None
        keys = None
        if trust is not None:
            from affedge.signing import load_public_keys

            keys = load_public_keys(trust)
        want = None if expect_digest is None else _normalise_digest(expect_digest)
        _, status = _identify(raw, sig, f"bundle {self.source}", want, keys)
        return dataclasses.replace(self, signature_status=status)


def _verify_artifacts(root: Path, manifest: Mapping[str, Any]) -> None:
    root_real = root.resolve()
    for a in manifest["artifacts"]:
        w = f"artifact {a['name']!r} ({a['format']}, {a['file']})"
        path = root / a["file"]
        if path.is_symlink() or not path.resolve().is_relative_to(root_real):
            raise BundleError(f"{w}: is a symlink or resolves outside the bundle")
        if not path.is_file():
            raise BundleError(f"{w}: file is missing from the bundle (every listed artifact must "
                              "be there; to slim it, export only what you ship: --format onnx)")
        size = path.stat().st_size
        if size != a["size"]:
            raise BundleError(f"{w}: size is {size} bytes, manifest says {a['size']} "
                              "(truncated or replaced)")
        digest = sha256_file(path)
        if digest != a["sha256"]:
            raise BundleError(f"{w}: sha256 mismatch (file {digest[:12]}..., manifest "
                              f"{a['sha256'][:12]}...): the file was modified")
        check_no_pickle(path, a["format"], w)
        if a["format"] == "safetensors":
            check_safetensors(path, w)
        elif a["format"] in ("onnx", "onnx-int8"):
            from affedge.manifest_schema import check_onnx_artifact

            check_onnx_artifact(path, a, w)  # graph signature = manifest's; no external data


def _check_tree(root: Path, manifest: Mapping[str, Any]) -> None:
    """No symlinks anywhere, no files the manifest does not list."""
    listed = {PurePosixPath(a["file"]) for a in manifest["artifacts"]} | {
        PurePosixPath(MANIFEST), PurePosixPath(SIGNATURE)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = PurePosixPath(p.relative_to(root).as_posix())
            if p.is_symlink():
                raise BundleError(f"bundle {root}: {rel} is a symlink (refused)")
            if n in filenames and rel not in listed:
                raise BundleError(f"bundle {root}: foreign file {rel} is not listed in the "
                                  "manifest")


def foreign_entries(root: str | os.PathLike) -> list[str] | None:
    """What a bundle directory holds beyond its bundle: files its manifest does not list and
    folders with none of its files (names relative to ``root``, folders ending in "/"), or
    None when ``root/manifest.json`` is not a readable manifest. Replacing the bundle would
    delete them (``affedge export`` refuses then)."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        listed = {PurePosixPath(a["file"]) for a in manifest["artifacts"]} | {
            PurePosixPath(MANIFEST), PurePosixPath(SIGNATURE)}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    keep_dirs = {parent for f in listed for parent in f.parents}
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        for n in sorted(dirnames):
            if rel_dir / n not in keep_dirs:
                out.append(f"{rel_dir / n}/")
        dirnames[:] = [n for n in dirnames if rel_dir / n in keep_dirs]
        out.extend(str(rel_dir / n) for n in sorted(filenames) if rel_dir / n not in listed)
    return out


def _read_manifest_bytes(raw: bytes, where: str) -> dict:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where}: manifest is {len(raw)} bytes (max {MAX_MANIFEST_BYTES})")
    try:
        m = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise BundleError(f"{where}: manifest.json is nested too deeply") from None
    except Exception as exc:
        raise BundleError(f"{where}: manifest.json is not valid JSON ({exc})") from None
    _check_depth(m, where)
    validate_manifest(m)
    return m


MAX_MANIFEST_DEPTH = 32  # real manifests are < 8 levels deep


def _check_depth(obj: Any, where: str) -> None:
    """Refuse absurdly nested JSON before any recursive code walks it (iterative check)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_MANIFEST_DEPTH:
            raise BundleError(f"{where}: manifest.json is nested deeper than {MAX_MANIFEST_DEPTH}")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def load_bundle(path: str | os.PathLike, expect_digest: str | None = None,
                trust: Any = None) -> Bundle:
    """Open and fully validate a bundle directory or ``.zip`` (see module docstring).

    ``expect_digest``: the bundle digest (sha256 hex of ``manifest.json``'s bytes, optionally
    prefixed ``sha256:``) the caller pinned; any other manifest is refused before it is parsed.
    ``trust``: a public key or a list of them (paths to PEM / OpenSSH / raw 32-byte Ed25519
    key files, their bytes, or key objects); the bundle must then carry ``manifest.sig``, a
    valid signature of the manifest bytes by one of them (see :mod:`affedge.signing`).
    The result's ``digest`` and ``signature_status`` say which identity was established.
    """
    src = Path(path)
    if not src.exists():
        raise FileNotFoundError(f"bundle not found: {src}")
    want = None if expect_digest is None else _normalise_digest(expect_digest)
    keys = None
    if trust is not None:
        from affedge.signing import load_public_keys

        keys = load_public_keys(trust)

    def identify(raw: bytes, sig: bytes | None) -> tuple[str, str]:
        return _identify(raw, sig, f"bundle {src}", want, keys)

    tmp = None
    if src.is_file():
        if not zipfile.is_zipfile(src):
            raise BundleError(f"bundle {src}: a file bundle must be a .zip archive")
        manifest, root, tmp, (digest, status) = extract_zip(src, identify, _read_manifest_bytes)
    else:
        root = src
        mpath = root / MANIFEST
        if not mpath.is_file() or mpath.is_symlink():
            raise BundleError(f"bundle {src}: {MANIFEST} is missing{not_a_bundle_hint(root)}")
        with open(mpath, "rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
        spath = root / SIGNATURE
        sig = None
        if spath.exists() or spath.is_symlink():
            if spath.is_symlink() or not spath.is_file():
                raise BundleError(f"bundle {src}: {SIGNATURE} is not a regular file")
            with open(spath, "rb") as fh:
                sig = fh.read(MAX_SIGNATURE_BYTES + 1)
            if len(sig) > MAX_SIGNATURE_BYTES:
                raise BundleError(f"bundle {src}: {SIGNATURE} is larger than "
                                  f"{MAX_SIGNATURE_BYTES} bytes")
        if len(raw) > MAX_MANIFEST_BYTES:
            raise BundleError(f"bundle {src}: manifest is over {MAX_MANIFEST_BYTES} bytes (max "
                              f"{MAX_MANIFEST_BYTES})")
        digest, status = identify(raw, sig)  # before the manifest is even parsed
        manifest = _read_manifest_bytes(raw, f"bundle {src}")
    _check_tree(root, manifest)
    _verify_artifacts(root, manifest)
    return Bundle(manifest=_freeze(manifest), root=root, source=src, _tmp=tmp, digest=digest,
                  signature_status=status)


def _identify(raw: bytes, sig: bytes | None, where: str, want: str | None,
              keys: list | None) -> tuple[str, str]:
    """(digest, signature_status) of manifest bytes; BundleError if the expected digest or a
    trusted signature does not hold."""
    digest = manifest_digest(raw)
    status = "unpinned"
    if want is not None:
        if digest != want:
            raise BundleError(f"{where}: {MANIFEST} digest sha256:{digest} differs from the "
                              f"expected sha256:{want} (the manifest was edited or this is "
                              "another bundle)")
        status = "digest-pinned"
    if keys is not None:
        from affedge.signing import verify_manifest_signature

        status = "signed:" + verify_manifest_signature(raw, sig, keys, where)
    return digest, status


def manifest_digest(raw: bytes) -> str:
    """The bundle digest of manifest bytes: their sha256, hex."""
    return hashlib.sha256(raw).hexdigest()


def _normalise_digest(d: Any) -> str:
    if not isinstance(d, str):
        raise TypeError(f"expect_digest must be a hex string, got {type(d).__name__}")
    h = d.strip().lower()
    h = h.removeprefix("sha256:")
    if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise ValueError(f"a bundle digest (--bundle-digest, expect_digest) must be 64 hex "
                         f"digits, optionally 'sha256:'-prefixed (affedge doctor --bundle B "
                         f"prints it whole), got {d!r}")
    return h


class _FrozenDict(dict):
    """A dict that refuses mutation (the manifest of a loaded bundle is read-only)."""

    def _ro(self, *a, **k):
        raise TypeError("a loaded bundle's manifest is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _ro  # type: ignore


def _freeze(obj: Any) -> Any:
    if isinstance(obj, dict):
        return _FrozenDict({k: _freeze(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return tuple(_freeze(v) for v in obj)
    return obj


def thaw(obj: Any) -> Any:
    """A plain, mutable copy of (part of) a loaded manifest."""
    if isinstance(obj, dict):
        return {k: thaw(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [thaw(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# writer


def artifact_record(root: str | os.PathLike, name: str, format: str, file: str,
                    precision: str, inputs: Iterable[dict], outputs: Iterable[dict],
                    **extra: Any) -> dict[str, Any]:
    """Build an artifact record for a file already written under ``root`` (hash and size)."""
    path = Path(root) / file
    if not path.is_file():
        raise BundleError(f"artifact {name!r}: file {path} does not exist")
    rec = {"name": name, "format": format, "file": PurePosixPath(file).as_posix(),
           "sha256": sha256_file(path), "size": path.stat().st_size, "precision": precision,
           "inputs": list(inputs), "outputs": list(outputs)}
    rec.update(extra)
    return rec


def write_bundle(out: str | os.PathLike, manifest_fields: Mapping[str, Any],
                 files: Sequence[Mapping[str, Any]]) -> Path:
    """Write a bundle and return its path.

    ``files``: artifact dicts with the keys of an artifact record except sha256/size; each has
    either ``source`` (a file to copy into the bundle at ``file``) or an existing ``file`` under
    ``out``. ``manifest_fields``: every other manifest field (schema_version and affedge_version
    are filled in). ``out`` ending in ``.zip`` writes a zip of the bundle directory.
    The result is validated with :func:`load_bundle` before returning.
    """
    from affedge import __version__

    out = Path(out)
    as_zip = out.suffix.lower() == ".zip"
    tmp = tempfile.TemporaryDirectory(prefix="affedge-write-") if as_zip else None
    root = Path(tmp.name) if tmp else out
    root.mkdir(parents=True, exist_ok=True)
    try:
        records = []
        for f in files:
            f = dict(f)
            src = f.pop("source", None)
            rel = f.get("file") or (Path(src).name if src else None)
            if rel is None:
                raise BundleError(f"artifact {f.get('name')!r}: needs 'file' or 'source'")
            _safe_relpath(rel, f"artifact {f.get('name')!r}")
            dest = root / rel
            if src is not None and Path(src).resolve() != dest.resolve():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
            f.pop("file", None)
            f.pop("sha256", None)
            f.pop("size", None)
            records.append(artifact_record(root, file=rel, **f))
        manifest = {"schema_version": SCHEMA_VERSION, "affedge_version": __version__,
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        manifest.update({k: v for k, v in manifest_fields.items()
                         if k not in ("schema_version", "artifacts")})
        manifest["artifacts"] = records
        manifest.setdefault("audio_norm", {})
        manifest.setdefault("parity", [])
        manifest = json.loads(json.dumps(manifest, default=_json_default))
        validate_manifest(manifest)
        (root / SIGNATURE).unlink(missing_ok=True)  # a signature of an older manifest
        (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False))
        if as_zip:
            out.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.write(root / MANIFEST, MANIFEST)
                for r in records:
                    zf.write(root / r["file"], r["file"])
        load_bundle(out)  # the writer never leaves an invalid bundle behind
        return out
    finally:
        if tmp is not None:
            tmp.cleanup()


def update_manifest(bundle_dir: str | os.PathLike, **fields: Any) -> None:
    """Set top-level manifest fields of a bundle *directory* (e.g. parity records), revalidated."""
    root = Path(bundle_dir)
    m = json.loads((root / MANIFEST).read_text())
    m.update(json.loads(json.dumps(fields, default=_json_default)))
    validate_manifest(m)
    (root / SIGNATURE).unlink(missing_ok=True)  # it signed the previous manifest bytes
    (root / MANIFEST).write_text(json.dumps(m, indent=2))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
