"""``affedge doctor``: what this machine offers the runtime.

:func:`collect` returns a JSON-ready report (each probe catches its own failure and records it
as text, so one broken component never hides the others); :func:`format_report` renders it.
Probes: Python and package versions, OpenCV GUI support, ONNX Runtime execution providers,
the affedge backends that can run a bundle, NVIDIA GPUs (``nvidia-smi`` where there is one;
otherwise - JetPack has none - the CUDA driver API through ctypes, torch.cuda, and
``/etc/nv_tegra_release`` for the Jetson/L4T release: :func:`cuda_devices`), CUDA / TensorRT
(import attempts: torch, tensorrt), cameras and microphones, and whether a bundle's TensorRT
engines were built for this GPU and TensorRT version.
"""
from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any


def _try(fn, *a, **kw) -> Any:
    try:
        return fn(*a, **kw)
    except Exception as exc:  # noqa: BLE001 - a probe failure is reported, not raised
        return {"error": f"{type(exc).__name__}: {exc}"}


def _versions() -> dict:
    import cv2
    import numpy

    out = {"python": sys.version.split()[0], "platform": platform.platform(),
           "machine": platform.machine(), "numpy": numpy.__version__, "opencv": cv2.__version__}
    from affedge import __version__

    out["affedge"] = __version__
    from affedge.sdk.overlay import display_available

    ok, why = display_available()
    out["display"] = "available" if ok else f"not available: {why}"
    out["audio_packages"] = _packages(AUDIO_PACKAGES)
    out["serve_packages"] = _packages(SERVE_PACKAGES)
    from affedge.sdk.backends.cpu_features import cpu_line

    out["cpu"] = cpu_line()
    return out


#: optional packages per feature: (import name, shown as, what needs it)
AUDIO_PACKAGES = (("soxr", "soxr", "resampling any rate to 16 kHz"),
                  ("av", "av", "a video file's audio track"), ("pyaudio", "pyaudio", "microphones"))
SERVE_PACKAGES = (("zmq", "pyzmq", "zmq:// outputs"), ("websockets", "websockets",
                                                       "ws:// outputs and the dashboard"),
                  ("yaml", "pyyaml", "a YAML --config"))


def _packages(which) -> str:
    """Which of ``which``'s optional packages are installed, with their versions (a --no-deps
    install, as on a Jetson, can lack them; without PyAV a video file runs on the face alone)."""
    import importlib

    parts = []
    for mod, shown, need in which:
        try:
            m = importlib.import_module(mod)
        except Exception:  # noqa: BLE001  (missing, or broken: unusable either way)
            parts.append(f"{shown} MISSING ({need})")
            continue
        v = getattr(m, "__version__", None) or (m.get_portaudio_version_text()
                                                if mod == "pyaudio" else "?")
        parts.append(f"{shown} {v}")
    return ", ".join(parts)


def _onnxruntime() -> dict:
    import onnxruntime as ort

    return {"version": ort.__version__, "providers": list(ort.get_available_providers()),
            "device": ort.get_device()}


def _nvidia_smi() -> dict:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"present": False, "gpus": [], "note": "nvidia-smi not found (no NVIDIA driver)"}
    q = ["--query-gpu=name,memory.total,driver_version,compute_cap",
         "--format=csv,noheader,nounits"]
    r = subprocess.run([exe, *q], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:  # older drivers lack compute_cap
        q[0] = "--query-gpu=name,memory.total,driver_version"
        r = subprocess.run([exe, *q], capture_output=True, text=True, timeout=20)
    gpus = []
    for line in r.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        g = {"name": parts[0]}
        if len(parts) > 1:
            g["memory_mib"] = parts[1]
        if len(parts) > 2:
            g["driver"] = parts[2]
        if len(parts) > 3:
            g["compute_capability"] = parts[3]
        gpus.append(g)
    cuda = None
    r2 = subprocess.run([exe], capture_output=True, text=True, timeout=20)
    for tok in r2.stdout.split("|"):
        if "CUDA Version" in tok:
            cuda = tok.split("CUDA Version:")[-1].strip()
    out = {"present": True, "gpus": gpus, "driver_cuda": cuda}
    if r.returncode != 0:
        out["error"] = r.stderr.strip()[:300]
    return out


TEGRA_RELEASE = "/etc/nv_tegra_release"
_CUDA_LIBS = ("libcuda.so.1", "libcuda.so", "/usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1",
              "/usr/lib/aarch64-linux-gnu/nvidia/libcuda.so.1")


def tegra_release(path: str | os.PathLike = TEGRA_RELEASE) -> dict | None:
    """The L4T release of a Jetson from ``/etc/nv_tegra_release`` (None elsewhere), e.g.
    ``# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, EABI: aarch64`` ->
    ``{"l4t": "36.4.3", "board": "generic"}`` (L4T 36.x is JetPack 6)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read(4096)
    except OSError:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if m is None:
        return {"l4t": None, "raw": text.strip().splitlines()[0][:200] if text.strip() else ""}
    out = {"l4t": f"{m.group(1)}.{m.group(2)}"}
    b = re.search(r"BOARD:\s*([^,\s]+)", text)
    if b:
        out["board"] = b.group(1)
    major = int(m.group(1))
    out["jetpack"] = {36: "6.x", 35: "5.x", 34: "5.0 (developer preview)", 32: "4.x"}.get(
        major, "unknown")
    return out


def _cuda_driver_devices(libs=_CUDA_LIBS) -> list[dict]:
    """GPUs through the CUDA driver API (libcuda: present wherever the NVIDIA driver is,
    JetPack included); raises OSError/RuntimeError when it is not usable."""
    lib = None
    errors = []
    for name in libs:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as exc:
            errors.append(str(exc))
    if lib is None:
        raise OSError("CUDA driver library not found (" + "; ".join(errors[:2]) + ")")
    if lib.cuInit(0) != 0:
        raise RuntimeError("cuInit failed (no usable NVIDIA GPU or driver)")
    n = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(n)) != 0:
        raise RuntimeError("cuDeviceGetCount failed")
    out = []
    for i in range(n.value):
        dev = ctypes.c_int(0)
        lib.cuDeviceGet(ctypes.byref(dev), i)
        name = ctypes.create_string_buffer(256)
        lib.cuDeviceGetName(name, 256, dev)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # ..._COMPUTE_CAPABILITY_MAJOR
        lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._COMPUTE_CAPABILITY_MINOR
        mem = ctypes.c_size_t(0)
        lib.cuDeviceTotalMem_v2(ctypes.byref(mem), dev)
        out.append({"gpu_name": name.value.decode(errors="replace"),
                    "compute_capability": f"{major.value}.{minor.value}",
                    "memory_mib": int(mem.value) >> 20})
    return out


def _torch_cuda_devices() -> list[dict]:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch.cuda.is_available() is False")
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"gpu_name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                    "memory_mib": int(p.total_memory) >> 20})
    return out


def cuda_devices(tegra_path: str | os.PathLike = TEGRA_RELEASE,
                 probes=(("cuda-driver", _cuda_driver_devices),
                         ("torch", _torch_cuda_devices))) -> dict:
    """NVIDIA GPUs without nvidia-smi: ``{"devices": [{"gpu_name", "compute_capability",
    "memory_mib"}], "source": probe name, "tegra": tegra_release() or None, "note"}``.
    ``tegra_path``/``probes`` exist to test the Jetson and no-GPU cases on any machine."""
    notes, short = [], []
    devices, source = [], None
    for name, probe in probes:
        try:
            devices = probe()
        except Exception as exc:  # noqa: BLE001 - each probe may be missing
            notes.append(f"{name}: {exc}")
            short.append(f"{name}: {str(exc).split(' (', 1)[0]}")  # the reason, not its details
            continue
        if devices:
            source = name
            break
        notes.append(f"{name}: no devices")
        short.append(notes[-1])
    tegra = tegra_release(tegra_path)
    out: dict[str, Any] = {"devices": devices, "source": source, "tegra": tegra}
    if not devices:
        out["note"] = "no CUDA GPU found (" + "; ".join(notes) + ")"
        out["summary"] = "no CUDA GPU found: " + "; ".join(short)
        if tegra is not None:
            jetson = (f"; this is a Jetson (L4T {tegra.get('l4t')}): check that the user "
                      "is in the 'video' group and that JetPack's CUDA is installed")
            out["note"] += jetson
            out["summary"] += jetson
    return out


def _gpu() -> dict:
    """nvidia-smi where it exists, else the CUDA driver / torch / Jetson probes."""
    smi = _nvidia_smi()
    if smi.get("present"):
        return smi
    cd = cuda_devices()
    gpus = [{"name": d["gpu_name"], "memory_mib": d.get("memory_mib"),
             "compute_capability": d["compute_capability"]} for d in cd["devices"]]
    out = {"present": bool(gpus), "gpus": gpus, "source": cd["source"], "tegra": cd["tegra"]}
    out["note"] = cd.get("note") or f"found through {cd['source']} (nvidia-smi not found)"
    if "summary" in cd:
        out["summary"] = cd["summary"]
    return out


def _torch() -> dict:
    try:
        import torch
    except ImportError as exc:
        return {"installed": False, "note": f"torch not installed ({exc}); only needed for "
                                            "training, export and the torch backends"}
    d = {"installed": True, "version": torch.__version__, "cuda": torch.version.cuda,
         "cuda_available": bool(torch.cuda.is_available())}
    if d["cuda_available"]:
        d["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        d["cudnn"] = torch.backends.cudnn.version()
    return d


def _tensorrt() -> dict:
    try:
        import tensorrt as trt
    except ImportError as exc:
        return {"installed": False, "note": f"tensorrt not importable ({exc})"}
    return {"installed": True, "version": trt.__version__}


def _devices() -> dict:
    from affedge.sdk.sources import list_cameras, list_microphones

    return {"cameras": _try(list_cameras), "microphones": _try(list_microphones)}


def _openvino() -> dict:
    from affedge.sdk.backends.openvino_backend import openvino_device_lines

    return {"lines": openvino_device_lines()}


def _front_end(b) -> dict:
    """The bundle's face front end (detector + crop recipe) and whether this install can
    reproduce it."""
    from affedge.features.frontend import check_frontend, frontend_of

    rec = frontend_of(b.manifest.get("face_frontend"))
    out = {**rec, "recorded": b.manifest.get("face_frontend") is not None}
    try:
        check_frontend(rec)
        out["reproducible"] = True
    except ValueError as exc:
        out["reproducible"], out["why"] = False, str(exc)
    return out


def _bundle(path, expect_digest: str | None = None, trust=None) -> dict:
    from affedge.bundle import load_bundle
    from affedge.sdk.backends import select_backend

    b = load_bundle(path, expect_digest=expect_digest, trust=trust)
    out: dict[str, Any] = {
        "path": str(path),
        "encoder": b.model_config().encoder,
        "modality": "audio-visual" if b.model_config().fusion else "visual only",
        "receptive_field": b.receptive_field,
        "artifacts": [f"{a['name']} {a['format']} {a['precision']}" + _parity_note(b, a)
                      for a in b.artifacts],
        "front_end": _try(_front_end, b),
        "digest": "sha256:" + b.digest,
        "signature": b.signature_status if b.signature_status != "unpinned" or not
        (b.root / "manifest.sig").exists() else "manifest.sig present, not verified (check it "
        "with --trust PUBKEY)",
        "training": b.manifest.get("training"),
        "person_baseline": b.manifest.get("person_baseline"),
    }
    engines = [a for a in b.artifacts if a["format"] == "tensorrt"]
    if engines:
        from affedge.sdk.backends.tensorrt_backend import check_engine_target, this_target

        try:
            here = this_target()
        except Exception as exc:  # noqa: BLE001
            here = None
            why = str(exc)
        fits = []
        for a in engines:
            target = (f"{a.get('gpu_name')} (compute {a.get('compute_capability')}, "
                      f"TensorRT {a.get('tensorrt_version')})")
            if here is None:
                fits.append({"engine": a["file"], "built_for": target, "fits": False,
                             "why": why})
                continue
            try:
                check_engine_target(a, here)
                fits.append({"engine": a["file"], "built_for": target, "fits": True})
            except Exception as exc:  # noqa: BLE001
                fits.append({"engine": a["file"], "built_for": target, "fits": False,
                             "why": str(exc)})
        out["engines"] = fits
    else:
        out["engines"] = []
    try:
        be = select_backend(b, "auto")
        out["backend"] = {"selected": be.name, "providers": list(be.providers),
                          "candidates": [list(r) for r in getattr(be, "selection", [])]}
        be.close()
    except Exception as exc:  # noqa: BLE001
        out["backend"] = {"error": str(exc)}
    return out


def _baseline_line(rec, training=None) -> str:
    """The bundle's per-person baseline (manifest ``person_baseline``; when absent, why, from
    the training record), one line."""
    if rec is None:
        off = (training or {}).get("person_baseline") if isinstance(training, dict) else None
        why = off.get("off") if isinstance(off, dict) else None
        return "none (the model's own outputs)" + (f": {why}" if isinstance(why, str) else "")
    from affedge.sdk.person_baseline import describe, implemented

    if not implemented(rec):
        return (f"method {rec.get('method')!r} version {rec.get('version')!r}, which this "
                f"affedge does not implement: runs need --no-person-baseline")
    return describe(rec) + " (Recognizer(person_baseline=False) or run --no-person-baseline: off)"


def _training_line(t) -> str:
    """The bundle's training verdict and validation CCC (manifest ``training``), one line."""
    if not isinstance(t, dict) or "verdict" not in t:
        return "no verdict recorded (bundle exported before affedge recorded one)"
    v, u = t.get("val_ccc"), t.get("untrained_ccc")
    if not (isinstance(v, dict) and isinstance(u, dict)):
        return str(t["verdict"]) + (f" ({t['note']})" if t.get("note") else "") + \
            (f"; WARNING: {t['warning']}" if t.get("warning") else "")
    try:
        s = (f"{t['verdict']}: validation CCC V {float(v['valence_ccc']):.3f} / A "
             f"{float(v['arousal_ccc']):.3f}, untrained V {float(u['valence_ccc']):.3f} / A "
             f"{float(u['arousal_ccc']):.3f} (profile {t.get('profile', '?')}"
             + (f"; kept epoch {t['best_epoch']}, by the best {t['select_window']}-epoch mean"
                if isinstance(t.get("select_window"), int) and t["select_window"] > 1
                and "best_epoch" in t else "") + ")")
    except (KeyError, TypeError, ValueError):
        return str(t["verdict"])
    return s + (f"; WARNING: {t['warning']}" if t.get("warning") else "")


def collect(bundle=None, devices: bool = True, expect_digest: str | None = None,
            trust=None) -> dict:
    """The whole report as a dict (JSON-ready); ``expect_digest``/``trust`` pin ``bundle`` as
    ``Recognizer`` does (a mismatch is the bundle's error)."""
    rep: dict[str, Any] = {
        "versions": _try(_versions),
        "onnxruntime": _try(_onnxruntime),
        "gpu": _try(_gpu),
        "torch": _try(_torch),
        "tensorrt": _try(_tensorrt),
        "openvino": _try(_openvino),
    }
    if devices:
        rep["devices"] = _try(_devices)
    if bundle is not None:
        rep["bundle"] = _try(_bundle, bundle, expect_digest, trust)
    return rep


def _fmt(v) -> str:
    if isinstance(v, dict) and "error" in v and len(v) == 1:
        return f"error: {v['error']}"
    return str(v)


def format_report(rep: dict) -> str:
    """Human-readable multi-line text of :func:`collect`'s report."""
    lines = []
    v = rep.get("versions", {})
    if "error" in v:
        lines.append(f"versions: {_fmt(v)}")
    else:
        lines.append(f"affedge {v['affedge']}  python {v['python']}  numpy {v['numpy']}  "
                     f"opencv {v['opencv']}  ({v['platform']})")
        lines.append(f"cpu: {v['cpu']}")
        lines.append(f"display: {v['display']}")
        lines.append(f"audio packages: {v['audio_packages']}")
        lines.append(f"serve packages: {v['serve_packages']}")
    o = rep.get("onnxruntime", {})
    lines.append("onnxruntime: " + (_fmt(o) if "error" in o else
                                    f"{o['version']} providers {', '.join(o['providers'])}"))
    g = rep.get("gpu", {})
    if "error" in g and "gpus" not in g:
        lines.append(f"gpu: {_fmt(g)}")
    elif not g.get("present"):
        # one short line here (the full probe errors are in `affedge doctor --json`)
        lines.append(f"gpu: none ({g.get('summary') or g.get('note')})")
    else:
        for x in g["gpus"]:
            lines.append(f"gpu: {x.get('name')}  {x.get('memory_mib', '?')} MiB  driver "
                         f"{x.get('driver', '?')}  compute {x.get('compute_capability', '?')}  "
                         f"CUDA (driver) {g.get('driver_cuda')}")
        if g.get("source"):
            lines.append(f"  ({g.get('note')})")
    if g.get("tegra"):
        tg = g["tegra"]
        lines.append(f"jetson: L4T {tg.get('l4t')} (JetPack {tg.get('jetpack', '?')}), board "
                     f"{tg.get('board', '?')}")
    t = rep.get("torch", {})
    if t.get("installed"):
        lines.append(f"torch: {t['version']}  CUDA {t['cuda']}  cuda available: "
                     f"{t['cuda_available']}")
    else:
        lines.append(f"torch: {t.get('note', _fmt(t))}")
    r = rep.get("tensorrt", {})
    lines.append(f"tensorrt: {r['version']}" if r.get("installed")
                 else f"tensorrt: {r.get('note', _fmt(r))}")
    ov = rep.get("openvino", {})
    lines.extend(ov.get("lines") or [f"openvino: {_fmt(ov)}"])
    d = rep.get("devices")
    if d is not None:
        if "error" in d and len(d) == 1:
            lines.append(f"devices: {_fmt(d)}")
        else:
            cams, mics = d.get("cameras"), d.get("microphones")
            if isinstance(cams, list):
                lines.append(f"cameras: {len(cams)} found" + "".join(
                    f"\n  [{c['index']}] {c['name']} {c['width']}x{c['height']}" for c in cams))
            else:
                lines.append(f"cameras: {_fmt(cams)}")
            if isinstance(mics, list):
                lines.append(f"microphones: {len(mics)} found" + "".join(
                    f"\n  [{m.get('index')}] {m.get('name')}" for m in mics))
            else:
                lines.append(f"microphones: {_fmt(mics)}")
    b = rep.get("bundle")
    if b is not None:
        if "error" in b and len(b) == 1:
            lines.append(f"bundle: {_fmt(b)}")
        else:
            lines.append(f"bundle: {b['path']} (encoder {b['encoder']}, {b['modality']}, "
                         f"receptive field {b['receptive_field']} frames)")
            lines.append(f"  digest {b.get('digest')} ({b.get('signature')})")
            lines.append("  training: " + _training_line(b.get("training")))
            lines.append("  person baseline: " + _baseline_line(b.get("person_baseline"),
                                                                b.get("training")))
            for a in b["artifacts"]:
                lines.append(f"  artifact {a}")
            fe = b.get("front_end", {})
            if "detector" in fe:
                sha = (fe.get("detector_sha256") or "")[:12]
                lines.append(
                    f"  face front end: detector {fe['detector']}"
                    + (f" (model sha256 {sha}...)" if sha else "")
                    + f", crop recipe {fe['crop_recipe']} v{fe['crop_recipe_version']}"
                    + ("" if fe["recorded"] else " (no record: the legacy default)")
                    + ("; reproducible here" if fe.get("reproducible")
                       else f"; NOT reproducible here: {fe.get('why')}"))
            else:
                lines.append(f"  face front end: {_fmt(fe)}")
            if not b["engines"]:
                lines.append("  TensorRT engines: none in this bundle")
            for e in b["engines"]:
                state = "fits this GPU" if e["fits"] else f"does NOT fit: {e.get('why')}"
                lines.append(f"  engine {e['engine']} built for {e['built_for']}: {state}")
            be = b.get("backend", {})
            lines.append("  backend (auto): " + (f"{be['selected']} {be['providers']}"
                                                 if "selected" in be else _fmt(be)))
            for name, status, why in be.get("candidates", []):
                lines.append(f"    {status:8s} {name}: {why}")
    return "\n".join(lines)


def _parity_note(bundle, artifact: dict) -> str:
    """" (export parity: report)" for an encoder of a precision whose whole-pipeline parity
    check at export did not pass (e.g. an int8 encoder that moved the CCC); else ""."""
    from affedge.sdk.parity_warning import pipeline_parity

    if artifact["name"] != "encoder" or artifact["precision"] == "fp32":
        return ""
    rec = pipeline_parity(bundle.manifest, artifact["precision"])
    if rec is None or rec.get("status") == "pass":
        return ""
    ccc = (rec.get("ccc") or {}).get("max_delta")
    by = f", CCC moved by {ccc:.3f}" if isinstance(ccc, (int, float)) else ""
    return f" (export parity: {rec.get('status')}{by})"
