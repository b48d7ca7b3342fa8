"""Reading a zipped bundle safely: member limits, no zip-slip or symlinks, nothing foreign, sizes
as listed, then extraction into a temporary directory."""
from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from affedge.artifact_checks import ZIP_READ_ERRORS
from affedge.bundle_limits import (
    MANIFEST,
    MAX_ARTIFACT_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    MAX_ZIP_MEMBERS,
    MAX_ZIP_TOTAL_BYTES,
    SIGNATURE,
    BundleError,
    _safe_relpath,
)


def extract_zip(zpath: Path, identify, read_manifest: Callable[[bytes, str], dict]
                ) -> tuple[dict, Path, Any, tuple[str, str]]:
    """Validate a zipped bundle's members, then extract them into a temporary directory.
    ``identify(manifest_bytes, signature_bytes | None) -> (digest, status)`` runs before the
    manifest is parsed; ``read_manifest(raw, where)`` parses and validates it.

    Any failure while reading a damaged archive is reported as a :class:`BundleError`."""
    try:
        return _extract_zip_unchecked(zpath, identify, read_manifest)
    except BundleError:
        raise
    except ZIP_READ_ERRORS as exc:
        raise BundleError(f"bundle {zpath}: damaged zip archive ({type(exc).__name__}: {exc})"
                          ) from None


def _extract_zip_unchecked(zpath: Path, identify, read_manifest) -> tuple[dict, Path, Any, tuple]:
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"bundle {zpath}: not a readable zip file ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise BundleError(f"bundle {zpath}: {len(infos)} members (max {MAX_ZIP_MEMBERS})")
        total = 0
        names: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            w = f"bundle {zpath}: member {info.filename!r}"
            rel = _safe_relpath(info.filename.rstrip("/"), w)  # zip-slip: absolute or '..'
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise BundleError(f"{w} is a symlink (refused)")
            if info.file_size > MAX_ARTIFACT_BYTES:
                raise BundleError(f"{w} is {info.file_size} bytes (max {MAX_ARTIFACT_BYTES})")
            total += info.file_size
            if total > MAX_ZIP_TOTAL_BYTES:
                raise BundleError(f"bundle {zpath}: expands beyond {MAX_ZIP_TOTAL_BYTES} bytes")
            if not info.is_dir():
                if rel.as_posix() in names:  # which copy a reader takes is up to the reader
                    raise BundleError(f"{w} appears twice in the archive (refused: the "
                                      f"entries are ambiguous)")
                names[rel.as_posix()] = info
        # a zip of a directory may have one top-level folder around the manifest
        prefix = ""
        if MANIFEST not in names:
            cands = [n for n in names if PurePosixPath(n).name == MANIFEST
                     and len(PurePosixPath(n).parts) == 2]
            if len(cands) != 1:
                raise BundleError(f"bundle {zpath}: no {MANIFEST} at the top level")
            prefix = cands[0][: -len(MANIFEST)]
        man_info = names[prefix + MANIFEST]
        if man_info.file_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"bundle {zpath}: manifest too large")
        raw = zf.read(man_info)
        sig_info = names.get(prefix + SIGNATURE)
        if sig_info is not None and sig_info.file_size > MAX_SIGNATURE_BYTES:
            raise BundleError(f"bundle {zpath}: {SIGNATURE} is {sig_info.file_size} bytes "
                              f"(max {MAX_SIGNATURE_BYTES})")
        sig = zf.read(sig_info) if sig_info is not None else None
        identity = identify(raw, sig)  # before the manifest is even parsed
        manifest = read_manifest(raw, f"bundle {zpath}")
        listed = {prefix + a["file"] for a in manifest["artifacts"]} | {prefix + MANIFEST}
        if sig_info is not None:
            listed.add(prefix + SIGNATURE)
        for n in names:
            if n not in listed:
                raise BundleError(f"bundle {zpath}: foreign file {n} is not listed in the "
                                  "manifest")
        for a in manifest["artifacts"]:
            info = names.get(prefix + a["file"])
            if info is None:
                raise BundleError(f"bundle {zpath}: artifact file {a['file']} is missing")
            if info.file_size != a["size"]:
                raise BundleError(f"bundle {zpath}: artifact {a['file']} is {info.file_size} "
                                  f"bytes, manifest says {a['size']} (truncated or replaced)")
        tmp = tempfile.TemporaryDirectory(prefix="affedge-bundle-")
        root = Path(tmp.name)
        for n in listed:
            dest = root / n[len(prefix):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(names[n]) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    return manifest, root, tmp, identity
