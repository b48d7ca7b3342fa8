"""Untrusted bundles are refused by the *runtime entry points* before any inference session exists.

``tests/test_bundle.py`` checks the reader rule by rule on a tiny synthetic bundle. Here the real
exported bundle (ONNX encoder/step/window + safetensors weights, from ``test_engine``'s session
fixture) is tampered with in each way an attacker or a broken copy could, and handed to
``Recognizer`` and ``select_backend``. ``onnxruntime.InferenceSession`` is wrapped by a counting
subclass (the real class still does the work) so the tests can assert that *no* session was
constructed: the refusal happens in ``load_bundle``, with a ``BundleError`` naming the reason.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import pytest

from test_engine import bundle_dir  # noqa: F401  (shared session fixture: real exported bundle)

ort = pytest.importorskip("onnxruntime")


@pytest.fixture()
def copy(bundle_dir, tmp_path):  # noqa: F811
    """A private, writable copy of the real bundle directory."""
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_dir, dst)
    return dst


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _write_manifest(root: Path, m: dict) -> None:
    (root / "manifest.json").write_text(json.dumps(m))


def _relist(root: Path, name: str, file: str | None = None, fmt: str | None = None) -> None:
    """Point artifact ``name`` at ``file`` and make its checksum/size match (a consistent forgery)."""
    from affedge.bundle import sha256_file

    m = _manifest(root)
    a = next(x for x in m["artifacts"] if x["name"] == name)
    if file is not None:
        a["file"] = file
    if fmt is not None:
        a["format"] = fmt
    p = root / a["file"]
    a["sha256"] = sha256_file(p)
    a["size"] = p.stat().st_size
    _write_manifest(root, m)


def _zip_dir(root: Path, out: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(root).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return out


def _refused(path, sessions: list[str], match: str) -> None:
    """Recognizer and select_backend both raise BundleError(match) and build no session."""
    from affedge.bundle import BundleError
    from affedge.sdk.backends import select_backend
    from affedge.sdk.recognizer import Recognizer

    with pytest.raises(BundleError, match=match):
        Recognizer(path, backend="auto")
    with pytest.raises(BundleError, match=match):
        select_backend(path, "auto")
    assert sessions == [], f"an inference session was created for a refused bundle: {sessions}"


# ----------------------------------------------------------------------------------- control
def test_valid_bundle_does_create_sessions(bundle_dir, sessions):  # noqa: F811
    """Control for the spy: the untampered bundle is accepted and its sessions are built."""
    from affedge.sdk.recognizer import Recognizer

    with Recognizer(bundle_dir, backend="onnxruntime") as rec:
        assert rec.backend_name.startswith("onnxruntime")
    assert any(s.endswith("encoder.onnx") for s in sessions)
    assert any(s.endswith("step.onnx") for s in sessions)


# ------------------------------------------------------------------------------ tampering
def test_checksum_mismatch(copy, sessions):
    p = copy / "step.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights
    p.write_bytes(bytes(data))
    _refused(copy, sessions, "sha256 mismatch")


def test_truncated_artifact(copy, sessions):
    p = copy / "encoder.onnx"
    p.write_bytes(p.read_bytes()[:1000])
    _refused(copy, sessions, "truncated or replaced")


def test_missing_artifact(copy, sessions):
    (copy / "step.onnx").unlink()
    _refused(copy, sessions, "missing")


def test_missing_manifest_and_not_a_bundle(copy, tmp_path, sessions):
    from affedge.sdk.recognizer import Recognizer

    (copy / "manifest.json").unlink()
    _refused(copy, sessions, "manifest.json is missing")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 this is not really a zip")
    _refused(junk, sessions, "zip")
    with pytest.raises(FileNotFoundError):
        Recognizer(tmp_path / "nowhere", backend="auto")
    assert sessions == []


@pytest.mark.parametrize("version", [2, 0, "1", None, 1.5, True])
def test_unknown_schema_version(copy, sessions, version):
    m = _manifest(copy)
    m["schema_version"] = version
    _write_manifest(copy, m)
    _refused(copy, sessions, "schema_version")


@pytest.mark.parametrize("field,value", [("mean", float("nan")), ("std", float("inf")),
                                         ("mean", float("-inf")), ("std", True),
                                         ("mean", 1e300)])
def test_non_finite_normalisation_statistics(copy, sessions, field, value):
    """NaN/Infinity (valid in Python's JSON) in the audio statistics, or a value that overflows
    float32, would turn every audio feature into NaN/Inf at run time: refused when the manifest
    is read."""
    m = _manifest(copy)
    stream = next(iter(m["audio_norm"]))
    m["audio_norm"][stream][field][3] = value
    _write_manifest(copy, m)
    assert ("NaN" in (copy / "manifest.json").read_text()) == (
        not isinstance(value, bool) and math.isnan(value))
    _refused(copy, sessions, "finite" if not isinstance(value, bool) else "numbers")


def test_manifest_not_json_or_oversized(copy, sessions):
    (copy / "manifest.json").write_bytes(b"{\"schema_version\": 1, \x00\xff")
    _refused(copy, sessions, "not valid JSON")
    from affedge.bundle import MAX_MANIFEST_BYTES

    (copy / "manifest.json").write_bytes(b" " * (MAX_MANIFEST_BYTES + 10) + b"{}")
    _refused(copy, sessions, "max")


# ------------------------------------------------------------------------ escaping paths
@pytest.mark.parametrize("path", ["../step.onnx", "/etc/passwd.onnx", "a/../../step.onnx",
                                  "C:/step.onnx", "..\\step.onnx"])
def test_manifest_path_escaping_the_bundle(copy, sessions, path):
    m = _manifest(copy)
    next(a for a in m["artifacts"] if a["name"] == "step")["file"] = path
    _write_manifest(copy, m)
    _refused(copy, sessions, "leaves the bundle|absolute")


def test_symlinked_artifact_pointing_outside(copy, tmp_path, sessions):
    outside = tmp_path / "outside.onnx"
    shutil.copy(copy / "step.onnx", outside)  # same bytes: the checksum alone would pass
    (copy / "step.onnx").unlink()
    os.symlink(outside, copy / "step.onnx")
    _refused(copy, sessions, "symlink")


def test_symlinked_directory_inside_bundle(copy, tmp_path, sessions):
    outside = tmp_path / "elsewhere"
    shutil.move(str(copy / "weights"), str(outside))
    os.symlink(outside, copy / "weights", target_is_directory=True)
    _refused(copy, sessions, "symlink")


def test_zip_slip_member(copy, tmp_path, sessions):
    z = _zip_dir(copy, tmp_path / "slip.zip", {"../../pwned.txt": b"owned"})
    _refused(z, sessions, "leaves the bundle")
    assert not (tmp_path.parent / "pwned.txt").exists()
    assert not (tmp_path / "pwned.txt").exists()


def test_zip_absolute_member_and_symlink_member(copy, tmp_path, sessions):
    z = _zip_dir(copy, tmp_path / "abs.zip", {"/tmp/affedge_pwned.onnx": b"x"})
    _refused(z, sessions, "absolute")
    z2 = tmp_path / "link.zip"
    with zipfile.ZipFile(z2, "w") as zf:
        for f in sorted(copy.rglob("*")):
            if f.is_file() and f.name != "step.onnx":
                zf.write(f, f.relative_to(copy).as_posix())
        info = zipfile.ZipInfo("step.onnx")
        info.external_attr = 0o120777 << 16  # a symlink member pointing at a system file
        zf.writestr(info, "/etc/passwd")
    _refused(z2, sessions, "symlink")


@pytest.mark.parametrize("member", ["manifest.json", "step.onnx"])
def test_zip_with_a_member_twice(copy, tmp_path, sessions, member):
    """Found by a new-user trial: a second manifest.json entry (an edited manifest) was taken
    by an unpinned load; which of two same-named entries a reader takes is up to the reader."""
    import json

    z = tmp_path / "twice.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(copy.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(copy).as_posix())
        if member == "manifest.json":
            m = _manifest(copy)
            m["provenance"] = {"note": "edited"}
            second = json.dumps(m).encode()
        else:
            second = (copy / member).read_bytes()  # even the same bytes: refused
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr(member, second)
    _refused(z, sessions, f"member '{member}' appears twice")


def test_valid_zip_is_accepted(copy, tmp_path):
    """Control: the same bundle zipped (stored) loads, so the refusals above are specific."""
    from affedge.bundle import load_bundle

    b = load_bundle(_zip_dir(copy, tmp_path / "ok.zip"))
    assert b.has("step", "onnx")


def test_foreign_file_in_bundle(copy, sessions):
    (copy / "helper.py").write_text("import os; os.system('echo pwned')\n")
    _refused(copy, sessions, "foreign file")


# ------------------------------------------------------------------------------- pickles
class _Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    marker: Path

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_disguised_as_onnx_is_never_unpickled(copy, tmp_path, sessions):
    _Evil.marker = tmp_path / "PWNED"
    (copy / "step.onnx").write_bytes(pickle.dumps(_Evil(), protocol=4))
    _relist(copy, "step")  # checksum and size consistent: only the pickle rule can catch it
    _refused(copy, sessions, "pickle")
    assert not _Evil.marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".pkl", ".pth"])
def test_pickle_file_names_refused(copy, tmp_path, sessions, suffix):
    _Evil.marker = tmp_path / "PWNED"
    (copy / "step.onnx").unlink()
    (copy / f"step{suffix}").write_bytes(pickle.dumps(_Evil(), protocol=2))
    m = _manifest(copy)
    next(a for a in m["artifacts"] if a["name"] == "step")["file"] = f"step{suffix}"
    _write_manifest(copy, m)
    _refused(copy, sessions, "pickle")
    assert not _Evil.marker.exists()


def test_torch_archive_with_code_execution_global(copy, tmp_path, sessions):
    """A TorchScript-shaped zip whose data.pkl imports os.system is refused statically."""
    _Evil.marker = tmp_path / "PWNED"
    ts = copy / "step.torchscript"
    with zipfile.ZipFile(ts, "w") as zf:
        zf.writestr("step/version", "3\n")
        zf.writestr("step/data.pkl", pickle.dumps(_Evil(), protocol=2))
    from affedge.bundle import sha256_file

    m = _manifest(copy)
    rec = dict(next(a for a in m["artifacts"] if a["name"] == "step"))
    rec.update(format="torchscript", file="step.torchscript", sha256=sha256_file(ts),
               size=ts.stat().st_size)
    m["artifacts"].append(rec)
    _write_manifest(copy, m)
    _refused(copy, sessions, "system")
    assert not _Evil.marker.exists()


# ---------------------------------------------------------------------------- oversized
def test_oversized_tensor_in_safetensors(copy, sessions):
    p = copy / "weights" / "model.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 20, 1 << 20],
                               "data_offsets": [0, 16]}}).encode()
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    _relist(copy, "weights")
    _refused(copy, sessions, "more than the bound")


def test_safetensors_header_length_lies(copy, sessions):
    p = copy / "weights" / "model.safetensors"
    p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    _relist(copy, "weights")
    _refused(copy, sessions, "header length")


def test_declared_artifact_size_out_of_bounds(copy, sessions):
    m = _manifest(copy)
    next(a for a in m["artifacts"] if a["name"] == "step")["size"] = 1 << 40
    _write_manifest(copy, m)
    _refused(copy, sessions, "size")


def test_too_many_zip_members(copy, tmp_path, sessions):
    from affedge.bundle import MAX_ZIP_MEMBERS

    z = _zip_dir(copy, tmp_path / "many.zip",
                 {f"pad/{i}.onnx": b"" for i in range(MAX_ZIP_MEMBERS + 1)})
    _refused(z, sessions, "members")
