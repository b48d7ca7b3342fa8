"""Content checks of bundle artifacts before any library loads them: no pickled code (plain
pickles, or globals outside torch's tensor-rebuilding set inside TorchScript/.pt2 archives) and
sane safetensors headers."""
from __future__ import annotations

import io
import json
import pickletools
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from affedge.bundle_limits import (
    FORBIDDEN_SUFFIXES,
    MAX_ARTIFACT_BYTES,
    MAX_SAFETENSORS_HEADER,
    MAX_TENSOR_ELEMENTS,
    BundleError,
    _safe_relpath,
)

# what a damaged zip can raise while its members are read (zipfile, zlib, bz2/lzma, I/O)
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, RuntimeError,
                   OSError, ValueError, KeyError)

# --------------------------------------------------------------------------------------------
# pickle detection

# Globals a TorchScript / torch.export archive may reference in its pickled members. These are
# resolved by torch's own restricted unpickler (tensor rebuilding and TorchScript class types),
# never by importing arbitrary Python callables; anything else (os.system, builtins.eval...) is
# refused.
_TORCH_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_qtensor"),
}
_TORCH_DTYPE_NAMES = {
    "float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64",
    "bool", "float", "half", "double", "long", "int",
}


def _global_allowed(module: str, name: str) -> bool:
    if (module, name) in _TORCH_ALLOWED_GLOBALS:
        return True
    if module == "torch" and (name.endswith("Storage") or name in _TORCH_DTYPE_NAMES):
        return True
    if module == "torch.jit._pickle":
        return True
    # TorchScript class types, compiled from the archive's own code/ (TorchScript, not Python)
    return module.startswith("__torch__.") or module == "__torch__"


def looks_like_pickle(head: bytes) -> bool:
    """Pickle protocol 2-5 streams start with PROTO (0x80) and the protocol number."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def pickle_globals(data: bytes, where: str) -> list[tuple[str, str]]:
    """Statically list the globals a pickle stream imports (pickletools; nothing is executed)."""
    found: list[tuple[str, str]] = []
    strings: list[str] = []
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                mod, _, name = str(arg).partition(" ")
                found.append((mod, name))
            elif op.name == "STACK_GLOBAL":
                if len(strings) < 2:
                    raise BundleError(f"{where}: pickle STACK_GLOBAL with unknown operands")
                found.append((strings[-2], strings[-1]))
            elif isinstance(arg, str) and "UNICODE" in op.name:
                strings.append(arg)
            if op.name == "STOP":
                break
    except BundleError:
        raise
    except Exception as exc:  # malformed stream: refuse rather than guess
        raise BundleError(f"{where}: unreadable pickle stream ({exc})") from None
    return found


def _scan_torch_archive(data: bytes, where: str, depth: int = 0) -> None:
    """Check a torch zip archive: safe member names, bounded sizes, allowed pickle globals."""
    if depth > 2:
        raise BundleError(f"{where}: archives nested too deeply")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{where}: not a valid zip archive ({exc})") from None
    infos = zf.infolist()
    if len(infos) > 4096:
        raise BundleError(f"{where}: archive has {len(infos)} members (max 4096)")
    total = 0
    for info in infos:
        _safe_relpath(info.filename.rstrip("/") or "x", f"{where}:{info.filename}")
        total += info.file_size
        if total > MAX_ARTIFACT_BYTES:
            raise BundleError(f"{where}: archive expands beyond {MAX_ARTIFACT_BYTES} bytes")
    for info in infos:
        if info.is_dir():
            continue
        try:
            member = zf.read(info)
        except ZIP_READ_ERRORS as exc:
            raise BundleError(f"{where}:{info.filename}: unreadable archive member "
                              f"({type(exc).__name__}: {exc})") from None
        mwhere = f"{where}:{info.filename}"
        if member[:4] == b"PK\x03\x04":
            _scan_torch_archive(member, mwhere, depth + 1)
        elif looks_like_pickle(member[:2]):
            for mod, name in pickle_globals(member, mwhere):
                if not _global_allowed(mod, name):
                    raise BundleError(
                        f"{mwhere}: pickle imports {mod}.{name}, which a torch archive must not "
                        "reference (possible code execution)"
                    )


def check_no_pickle(path: Path, fmt: str, where: str) -> None:
    """Refuse pickle payloads.

    * file names with pickle suffixes (.pt/.pth/.pkl/...) are refused outright;
    * ``.npy`` files must have a non-object dtype (header parsed, data not loaded);
    * ONNX, TensorRT, safetensors and anything else not a torch archive must not start with the
      pickle PROTO opcode (0x80 0x02-0x05) nor be a zip;
    * TorchScript (``.torchscript``) and torch.export (``.pt2``) files must be zip archives whose
      pickled members (data.pkl, constants.pkl, *.debug_pkl, nested torch.save zips) reference only
      tensor-rebuilding and TorchScript globals, checked statically with ``pickletools``.
    """
    suffix = path.suffix.lower()
    if suffix in FORBIDDEN_SUFFIXES:
        raise BundleError(f"{where}: {suffix} files are pickles and are refused")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if suffix == ".npy":
        with open(path, "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    hdr = np.lib.format.read_array_header_1_0(fh)  # (shape, fortran, dtype)
                elif version == (2, 0):
                    hdr = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
            except Exception as exc:
                raise BundleError(f"{where}: invalid .npy header ({exc})") from None
        if hdr[2].hasobject:
            raise BundleError(f"{where}: .npy with object dtype (a pickle payload) is refused")
        return
    if fmt in ("torchscript", "torch-export", "aoti"):
        if head[:4] != b"PK\x03\x04":
            raise BundleError(f"{where}: a {fmt} artifact must be a torch zip archive")
        _scan_torch_archive(path.read_bytes(), where)
        return
    if looks_like_pickle(head):
        raise BundleError(f"{where}: file starts with the pickle magic 0x80 (a pickle payload)")
    if head[:4] == b"PK\x03\x04":
        raise BundleError(f"{where}: unexpected zip archive in a {fmt} artifact")


# --------------------------------------------------------------------------------------------
# safetensors header check (no torch needed)

_ST_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}


def check_safetensors(path: Path, where: str, max_elements: int = MAX_TENSOR_ELEMENTS) -> dict:
    """Parse and validate a safetensors header; returns ``{tensor_name: (dtype, shape)}``."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise BundleError(f"{where}: truncated safetensors file (no header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            raise BundleError(f"{where}: safetensors header length {n} is invalid for a "
                              f"{size}-byte file")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except Exception as exc:
            raise BundleError(f"{where}: safetensors header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise BundleError(f"{where}: safetensors header is not an object")
    data_len = size - 8 - n
    out = {}
    for key, rec in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = rec["dtype"], rec["shape"], rec["data_offsets"]
        except Exception:
            raise BundleError(f"{where}: malformed safetensors entry {key!r}") from None
        if dtype not in _ST_DTYPE_BYTES:
            raise BundleError(f"{where}: tensor {key!r} has unknown dtype {dtype!r}")
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise BundleError(f"{where}: tensor {key!r} has invalid shape {shape}")
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if numel > max_elements:
            raise BundleError(f"{where}: tensor {key!r} has {numel} elements (shape {shape}), "
                              f"more than the bound {max_elements}")
        if not (0 <= a <= b <= data_len) or b - a != numel * _ST_DTYPE_BYTES[dtype]:
            raise BundleError(f"{where}: tensor {key!r} offsets [{a}, {b}) do not match its "
                              f"shape {shape} / dtype {dtype} or the file size")
        out[key] = (dtype, tuple(shape))
    return out


# --------------------------------------------------------------------------------------------
# manifest validation
