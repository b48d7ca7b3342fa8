"""The `aoti` backend's refusal of AOTInductor packages compiled for another device/machine
(read from the package's own metadata, torch 2.13 layout) and of bundles without packages."""
from __future__ import annotations

import json
import platform
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("torch")

from affedge.bundle import load_bundle
from affedge.sdk.backends.aoti_backend import (
    AotiBackend,
    check_package_target,
    package_target,
)
from affedge.sdk.backends.base import BackendUnavailable

DEMO = Path(__file__).parents[1] / "affedge" / "assets" / "demo" / "demo_bundle"


def _package(path: Path, **meta) -> Path:
    """A zip with the member layout torch._inductor.aoti_compile_and_package writes."""
    base = {"AOTI_DEVICE_KEY": "cpu", "AOTI_PLATFORM": "linux", "AOTI_MACHINE": "x86_64",
            "AOTI_CPU_ISA": "AVX2", "AOTI_COMPUTE_CAPABILITY": ""} | meta
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("m/data/aotinductor/model/abc.wrapper_metadata.json", json.dumps(base))
        zf.writestr("m/archive_format", "pt2")
    return path


def test_package_target_and_checks(tmp_path):
    p = _package(tmp_path / "e.aoti.pt2", AOTI_DEVICE_KEY="cuda", AOTI_MACHINE="aarch64",
                 AOTI_COMPUTE_CAPABILITY="87")
    t = package_target(p)
    assert t == {"device": "cuda", "machine": "aarch64", "cpu_isa": "AVX2",
                 "compute_capability": "87"}
    check_package_target(t, "cuda:0", here_machine="aarch64", here_cc="8.7")
    with pytest.raises(BackendUnavailable, match="compiled for cuda, not cpu"):
        check_package_target(t, "cpu", here_machine="aarch64")
    with pytest.raises(BackendUnavailable, match="compiled for aarch64, this machine is x86_64"):
        check_package_target(t, "cuda", here_machine="x86_64")
    with pytest.raises(BackendUnavailable, match="compute capability 87, this GPU has 9.0"):
        check_package_target(t, "cuda", here_machine="aarch64", here_cc="9.0")
    with zipfile.ZipFile(tmp_path / "x.pt2", "w") as zf:
        zf.writestr("m/archive_format", "pt2")
    with pytest.raises(BackendUnavailable, match="not an AOTInductor package"):
        package_target(tmp_path / "x.pt2")
    check_package_target(package_target(_package(tmp_path / "c.pt2",
                                                 AOTI_MACHINE=platform.machine())), "cpu")


def test_bundle_without_packages_is_skipped():
    with pytest.raises(BackendUnavailable, match="no AOTInductor packages"):
        AotiBackend(load_bundle(DEMO))
