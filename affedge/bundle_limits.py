"""The rules every file of a bundle obeys before its content is read: size limits, plain
relative paths, and the error type every bundle check raises."""
from __future__ import annotations

from pathlib import PurePosixPath

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # optional Ed25519 signature of the manifest bytes (affedge.signing)


class BundleError(ValueError):
    """A bundle failed validation; the message names the file and the reason."""


FORBIDDEN_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".joblib", ".ckpt", ".dill")

# Bounds (generous for the models here: IR-50 is ~44 M parameters, 175 MB in fp32).
MAX_MANIFEST_BYTES = 4 << 20
MAX_ARTIFACT_BYTES = 2 << 30
MAX_ZIP_MEMBERS = 256
MAX_ZIP_TOTAL_BYTES = 4 << 30
MAX_TENSOR_ELEMENTS = 1 << 28  # 268 M elements per tensor
MAX_SAFETENSORS_HEADER = 16 << 20
MAX_SIGNATURE_BYTES = 4096


def _safe_relpath(rel: str, where: str) -> PurePosixPath:
    """Reject absolute paths, drive letters, backslashes and '..' components."""
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"{where}: empty or non-string path {rel!r}")
    if "\\" in rel or rel.startswith("/") or (len(rel) > 1 and rel[1] == ":") or "\x00" in rel:
        raise BundleError(f"{where}: path {rel!r} is absolute or not a plain relative path")
    p = PurePosixPath(rel)
    if any(part in ("..", "") for part in p.parts) or p.is_absolute():
        raise BundleError(f"{where}: path {rel!r} leaves the bundle ('..' component)")
    return p
