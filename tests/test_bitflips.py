"""Deterministic bit flips in every artifact kind of a real bundle are refused, naming the file.

A bundle is written with the demo bundle's real artifacts (ONNX fp32 graphs, the int8 ONNX
encoder, safetensors weights) plus one artifact of each other format in ``FORMATS``: a real
TorchScript archive and a real torch.export ``.pt2`` (when torch is installed; the ``.pt2`` is
listed once as ``torch-export`` and once as ``aoti``, both are torch zip archives checked the
same way) and an opaque TensorRT ``.engine`` (TensorRT cannot run here; to ``load_bundle`` an
engine is bytes with a checksum). One byte is inverted at fixed offsets of each file; every
flip must raise a BundleError naming that file and the sha256 mismatch. The manifest itself is
covered by the bundle digest: with ``expect_digest`` every flip is refused, without it a flip
is either refused by the schema or loads as "unpinned" -- never another exception.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from affedge import bundle as B
from affedge.sdk.recognizer import DEMO_BUNDLE

pytestmark = pytest.mark.skipif(not (DEMO_BUNDLE / "manifest.json").is_file(),
                                reason="demo bundle not present")

#: fixed offsets (negative: from the end); header bytes, the middle, the last byte
OFFSETS = (0, 1, 7, 100, 0.5, -1)


def _torch_artifacts(src: Path) -> dict[str, Path]:
    """A real TorchScript file and a real torch.export .pt2 (empty when torch is missing)."""
    try:
        import torch
    except ImportError:
        return {}

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return torch.relu(x) * 2.0

    ts = src / "tiny.torchscript"
    torch.jit.save(torch.jit.script(Tiny()), str(ts))
    out = {"torchscript": ts}
    try:
        pt2 = src / "tiny.pt2"
        torch.export.save(torch.export.export(Tiny(), (torch.ones(1, 4),)), str(pt2))
        out["torch-export"] = out["aoti"] = pt2
    except Exception:  # noqa: BLE001, S110  (an old torch without torch.export: skip those kinds)
        pass
    return out


@pytest.fixture(scope="module")
def all_kinds(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("kinds_src")
    demo = B.load_bundle(DEMO_BUNDLE)
    fields = {k: v for k, v in B.thaw(demo.manifest).items() if k != "artifacts"}
    files = [{**a, "source": demo.root / a["file"]} for a in B.thaw(demo.manifest["artifacts"])]
    enc = B.thaw(demo.find("encoder", "onnx"))
    io = {"inputs": enc["inputs"], "outputs": enc["outputs"]}
    if "tensorrt" in B.FORMATS:
        eng = src / "encoder.engine"
        eng.write_bytes(bytes(range(256)) * 64)  # opaque serialized-engine bytes
        files.append({**io, "name": "encoder", "format": "tensorrt", "file": "encoder.engine",
                      "source": eng, "precision": "fp16", "gpu_name": "NVIDIA Jetson Orin",
                      "compute_capability": "8.7", "tensorrt_version": "10.3.0"})
    suffix = {"torchscript": ".torchscript", "torch-export": ".export.pt2", "aoti": ".aoti.pt2"}
    for fmt, path in _torch_artifacts(src).items():
        if fmt in B.FORMATS:
            files.append({**io, "name": "encoder", "format": fmt, "file": "encoder" + suffix[fmt],
                          "source": path, "precision": "fp32"})
    return B.write_bundle(tmp_path_factory.mktemp("kinds") / "bundle", fields, files)


def _kinds(root: Path) -> list[tuple[str, str]]:
    m = json.loads((root / "manifest.json").read_text())
    return [(a["format"], a["file"]) for a in m["artifacts"]]


def test_bundle_has_every_kind_available_here(all_kinds):
    kinds = {fmt for fmt, _ in _kinds(all_kinds)}
    assert {"onnx", "onnx-int8", "safetensors"} <= kinds
    if "tensorrt" in B.FORMATS:
        assert "tensorrt" in kinds
    assert B.load_bundle(all_kinds).signature_status == "unpinned"


def _flip(path: Path, offset) -> int:
    data = bytearray(path.read_bytes())
    i = int(len(data) * offset) if isinstance(offset, float) else offset % len(data)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return i


@pytest.fixture()
def copy(all_kinds, tmp_path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(all_kinds, dst)
    return dst


def test_artifact_bit_flips_refused_naming_the_file(copy, all_kinds):
    checked = 0
    for fmt, rel in _kinds(all_kinds):
        for off in OFFSETS:
            shutil.copyfile(all_kinds / rel, copy / rel)
            i = _flip(copy / rel, off)
            with pytest.raises(B.BundleError) as ei:
                B.load_bundle(copy)
            msg = str(ei.value)
            assert rel in msg and "sha256 mismatch" in msg, (fmt, rel, i, msg)
            checked += 1
        shutil.copyfile(all_kinds / rel, copy / rel)
    assert checked == len(OFFSETS) * len(_kinds(all_kinds))
    B.load_bundle(copy)  # restored: loads again


def test_manifest_bit_flips_refused_when_pinned_and_never_escape(copy, all_kinds):
    digest = B.load_bundle(all_kinds).digest
    man = copy / "manifest.json"
    n = len((all_kinds / "manifest.json").read_bytes())
    offsets = (*OFFSETS, *range(3, n, max(1, n // 97)))  # plus ~100 evenly spread bytes
    outcomes = {"refused by schema": 0, "loaded unpinned": 0}
    for off in offsets:
        shutil.copyfile(all_kinds / "manifest.json", man)
        _flip(man, off)
        with pytest.raises(B.BundleError, match=r"manifest\.json digest sha256:[0-9a-f]{64} "
                                                 "differs from the expected"):
            B.load_bundle(copy, expect_digest=digest)
        try:
            b = B.load_bundle(copy)
        except B.BundleError:
            outcomes["refused by schema"] += 1
        else:
            assert b.signature_status == "unpinned" and b.digest != digest
            outcomes["loaded unpinned"] += 1
    assert sum(outcomes.values()) == len(offsets)
    assert outcomes["refused by schema"] > 0
