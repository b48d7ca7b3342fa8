"""AOTInductor packages (``format="aoti"``, ``.pt2``) as a selectable backend, ``aoti``.

An AOTInductor package is compiled machine code for one device kind, CPU architecture / ISA
and (for CUDA) compute capability; the package records them in its
``*_metadata.json`` (``AOTI_DEVICE_KEY``, ``AOTI_MACHINE``, ``AOTI_CPU_ISA``,
``AOTI_COMPUTE_CAPABILITY``; torch 2.13's layout). :func:`package_target` reads that without
loading anything, and :class:`AotiBackend` refuses a package built for another device or
machine with the reason (``select_backend`` then moves on), instead of failing inside the
loaded library. The device defaults to the one the package was compiled for.
"""
from __future__ import annotations

import json
import platform
import zipfile
from pathlib import Path

from affedge.bundle import Bundle
from affedge.sdk.backends.base import BackendUnavailable
from affedge.sdk.backends.torch_backend import TorchExportBackend


def package_target(path: str | Path) -> dict[str, str]:
    """``{"device", "machine", "cpu_isa", "compute_capability"}`` recorded in an AOTI package."""
    try:
        with zipfile.ZipFile(path) as zf:
            metas = [n for n in zf.namelist() if n.endswith("_metadata.json")
                     and "/aotinductor/" in n]
            if not metas:
                raise BackendUnavailable(f"{Path(path).name}: not an AOTInductor package (no "
                                         "aotinductor metadata)")
            meta = json.loads(zf.read(min(metas)))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BackendUnavailable(f"{Path(path).name}: unreadable AOTInductor package "
                                 f"({exc})") from None
    return {"device": str(meta.get("AOTI_DEVICE_KEY", "")),
            "machine": str(meta.get("AOTI_MACHINE", "")),
            "cpu_isa": str(meta.get("AOTI_CPU_ISA", "")),
            "compute_capability": str(meta.get("AOTI_COMPUTE_CAPABILITY", ""))}


def check_package_target(target: dict[str, str], device: str, here_machine: str | None = None,
                         here_cc: str | None = None, name: str = "package") -> None:
    """Refuse a package compiled for another device kind, CPU architecture or GPU."""
    want = device.split(":")[0]
    machine = here_machine or platform.machine()
    if target["device"] and target["device"] != want:
        raise BackendUnavailable(f"aoti: {name} was compiled for {target['device']}, not "
                                 f"{want}: export it with --format aoti on a {want} machine")
    if target["machine"] and target["machine"] != machine:
        raise BackendUnavailable(f"aoti: {name} was compiled for {target['machine']}, this "
                                 f"machine is {machine}: re-export it here")
    if want == "cuda" and target["compute_capability"] and here_cc and \
            target["compute_capability"].replace(".", "") != here_cc.replace(".", ""):
        raise BackendUnavailable(f"aoti: {name} was compiled for compute capability "
                                 f"{target['compute_capability']}, this GPU has {here_cc}")


class AotiBackend(TorchExportBackend):
    """The bundle's AOTInductor packages through ``torch._inductor.aoti_load_package``."""

    name = "aoti"
    format = "aoti"

    def __init__(self, bundle: Bundle, device: str | None = None, models=None):
        rec = next((bundle.find(m, "aoti") for m in ("encoder", "step", "window")
                    if bundle.find(m, "aoti") is not None), None)
        if rec is None:
            raise BackendUnavailable(f"aoti: bundle {bundle.source} has no AOTInductor packages "
                                     "(export with --format aoti)")
        first = package_target(bundle.root / rec["file"])
        self._device_pref = device or first["device"] or "cpu"
        super().__init__(bundle, device=self._device_pref, models=models, aoti=True)

    def _load(self, model: str, rec: dict):
        path = self.bundle.root / rec["file"]
        cc = None
        if self.device.startswith("cuda"):
            major, minor = self.torch.cuda.get_device_capability(self.device)
            cc = f"{major}{minor}"
        check_package_target(package_target(path), self.device, here_cc=cc, name=rec["file"])
        return super()._load(model, rec)
