"""Build TensorRT engines for a bundle *on the target device* and add them to its manifest.

The normal Jetson workflow: export the bundle anywhere (ONNX is portable), copy it to the
device, run ``affedge build-engines BUNDLE`` there. For each model (default encoder + step):

1. the graph for the precision (:func:`affedge.export.tensorrt_build.prepare_source`: the fp32
   ONNX, its fp16 conversion, or symmetric Q/DQ int8 for the encoder - the step and window stay
   fp16 then, their recurrent state would accumulate int8 error);
2. an engine with profiles covering ``max_faces`` (step: ``max_faces + 1``, the background
   stream), the timing cache under the bundle's cache directory;
3. the whole new bundle is written next to the target (existing artifacts + the engines, every
   file hashed again by :func:`affedge.bundle.write_bundle`), loaded, and the engines are run
   against ONNX Runtime CPU on the fp32 graphs: encoder crops at batch 1 and at the max batch,
   the step over a sequence from the zero state (its own state fed back) and one call at the max
   batch. Records join the manifest's ``parity`` list;
4. only if every check passes (``require_parity``) is the new bundle moved into place (the old
   one is replaced atomically enough: rename, rename, delete), so a failed build leaves the
   bundle exactly as it was.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ENGINE_MODELS = ("encoder", "step", "window")
PARITY_TOL = {"fp32": 1e-4, "fp16": 1e-2, "int8": None}  # as affedge.export.parity (task bounds)


def _parity_inputs(bundle, n_frames: int):
    from affedge.export.parity import synthetic_inputs

    return synthetic_inputs(bundle.model_config(), n_frames, seed=0)


def _err(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    from affedge.export.parity import errors

    return errors(ref, got)


def _status(errs: Mapping[str, Mapping[str, float]], precision: str) -> str:
    tol = PARITY_TOL.get(precision)
    if tol is None:
        return "report"
    ok = all(e["max_abs"] <= tol * max(1.0, e["ref_max"]) for e in errs.values())
    return "pass" if ok else "FAIL"


def engine_parity(bundle, trt_backend, ort_backend, models: Sequence[str], max_faces: int,
                  frames: int = 48) -> list[dict[str, Any]]:
    """TensorRT engines vs ONNX Runtime CPU on the fp32 graphs (records for the manifest)."""
    from affedge.export.tensorrt_build import step_batch

    pin = _parity_inputs(bundle, frames)
    recs = []
    for model in models:
        spec = trt_backend._spec(model)
        prec = spec["precision"]
        errs: dict[str, dict[str, float]] = {}
        if model == "encoder":
            n_max = min(trt_backend.max_batch("encoder") or 1, len(pin.frames))
            for n in sorted({1, n_max}):
                x = {"frames": pin.frames[:n]}
                a, b = ort_backend.run("encoder", x), trt_backend.run("encoder", x)
                for k in a:
                    e = _err(a[k], b[k])
                    if k not in errs or e["max_abs"] > errs[k]["max_abs"]:
                        errs[k] = e
        elif model == "step":
            from affedge.export.parity import run_step_sequence

            names = trt_backend.input_names("step")
            state_specs = [(s["name"], tuple(s["shape"][1:]))
                           for s in spec["inputs"] if s["name"].startswith("state_")]
            rng = np.random.default_rng(1)
            emb = _unit_rows(frames, spec["inputs"][0]["shape"][1], 1)
            ya, sa = run_step_sequence(lambda f: ort_backend.run("step", f), names, state_specs,
                                       emb, pin.audio)
            yb, sb = run_step_sequence(lambda f: trt_backend.run("step", f), names, state_specs,
                                       emb, pin.audio)
            errs["va (sequence)"] = _err(ya, yb)
            errs["state_out_* (sequence end)"] = max(
                (_err(x, y) for x, y in zip(sa, sb)), key=lambda e: e["max_abs"])
            n = min(trt_backend.max_batch("step") or 1, step_batch(max_faces))
            feeds = {}
            for s in spec["inputs"]:
                shape = [n if d == "N" else d for d in s["shape"]]
                feeds[s["name"]] = rng.standard_normal(shape).astype(np.float32)
            a, b = ort_backend.run("step", feeds), trt_backend.run("step", feeds)
            errs[f"va (batch {n})"] = _err(a["va"], b["va"])
        elif model == "window":
            w = min(frames, 64)
            x = {"embedding": _unit_rows(w, spec["inputs"][0]["shape"][2], 2)[None]}
            x.update({f"audio_{k}": v[None, :w] for k, v in pin.audio.items()
                      if f"audio_{k}" in trt_backend.input_names("window")})
            a, b = ort_backend.run("window", x), trt_backend.run("window", x)
            errs = {k: _err(a[k], b[k]) for k in a}
        recs.append({"artifact": model, "format": "tensorrt", "precision": prec,
                     "file": spec["file"], "size": spec["size"], "reference": "onnxruntime-cpu",
                     "outputs": errs, "threshold": PARITY_TOL.get(prec),
                     "status": _status(errs, prec)})
    return recs


def _unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` random unit-length embeddings (what the encoder emits)."""
    e = np.random.default_rng(seed).standard_normal((n, dim))
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def build_engines(bundle_path: str | os.PathLike, out: str | os.PathLike | None = None,
                  precision: str = "fp16", max_faces: int = 16,
                  models: Sequence[str] = ("encoder", "step"), window: int = 64,
                  calib: str | os.PathLike | None = None,
                  timing_cache: str | os.PathLike | None = None, workspace_bytes: int = 1 << 30,
                  dla_core: int | None = None, require_parity: bool = True,
                  parity_frames: int = 48, gpu: Mapping[str, str] | None = None, device=None,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build engines for ``bundle_path`` (see the module doc). ``out``: another directory for the
    result (required when the bundle is a zip); default: update the bundle directory in place.
    ``gpu``/``device``: a fake GPU for tests. Returns ``{"bundle", "engines", "parity", "ok",
    "seconds"}``; raises RuntimeError (bundle untouched) when parity fails and
    ``require_parity``."""
    from affedge.bundle import load_bundle, thaw, update_manifest, write_bundle
    from affedge.export.quantize import load_calibration_crops
    from affedge.export.tensorrt_build import (
        PRECISIONS,
        build_engine,
        prepare_source,
        profiles_from_specs,
        step_batch,
    )
    from affedge.sdk.backends.onnxruntime_backend import OnnxRuntimeBackend
    from affedge.sdk.backends.tensorrt_backend import TensorRTBackend, default_cache_dir

    say = progress or (lambda m: None)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    bad = [m for m in models if m not in ENGINE_MODELS]
    if bad or not models:
        raise ValueError(f"models must be a non-empty subset of {ENGINE_MODELS}, got {list(models)}")
    if int(max_faces) < 1:
        raise ValueError(f"max_faces must be >= 1, got {max_faces}")
    src = Path(bundle_path)
    bundle = load_bundle(src)
    if out is None:
        if not src.is_dir():
            raise ValueError(f"{src} is a zip bundle: give an output directory (--out DIR)")
        target = src
    else:
        target = Path(out)
        if target.suffix.lower() == ".zip":
            raise ValueError("--out must be a directory (engines are device-specific; zip the "
                             "bundle afterwards if needed)")
        if target.exists() and any(target.iterdir()) and not (target / "manifest.json").is_file():
            raise FileExistsError(f"{target} exists and is not a bundle; refusing to replace it")
    if gpu is None:  # (tests pass a fake GPU with a fake tensorrt module)
        from affedge.export.tensorrt_build import tensorrt_available

        ok, why = tensorrt_available()
        if not ok:
            raise RuntimeError(f"{why}; nothing was changed. Build the engines on the target "
                               "machine: a Jetson or an NVIDIA GPU with TensorRT (docs/JETSON.md)")
    cache = Path(timing_cache) if timing_cache else default_cache_dir(bundle) / "timing.cache"
    crops = None
    if precision == "int8" and "encoder" in models:
        crops = (load_calibration_crops(calib, bundle.model_config().crop_size) if calib
                 else _parity_inputs(bundle, 128).frames)
    seconds: dict[str, float] = {}
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
    try:
        work = stage / "work"
        work.mkdir()
        engines = []
        for model in models:
            rec = bundle.find(model, "onnx", "fp32")
            if rec is None:
                raise ValueError(f"bundle {src} has no fp32 ONNX {model!r} to build from")
            prec = precision if (precision != "int8" or model == "encoder") else "fp16"
            batch = step_batch(max_faces) if model == "step" else int(max_faces)
            profiles = profiles_from_specs(rec["inputs"], batch, window)
            t0 = time.perf_counter()
            graph = prepare_source(bundle.root / rec["file"], prec, work,
                                   crops if model == "encoder" else None)
            file = f"{model}.{prec}.engine"
            say(f"tensorrt  {model:8s} {prec}: building (max batch {batch}) ...")
            info = build_engine(graph, work / file, profiles, prec, max_batch=batch,
                                workspace_bytes=workspace_bytes, timing_cache=cache,
                                dla_core=dla_core, gpu=gpu)
            seconds[model] = round(time.perf_counter() - t0, 2)
            say(f"tensorrt  {model:8s} {prec}: built in {seconds[model]:.1f} s")
            engines.append({"name": model, "format": "tensorrt", "file": file,
                            "source": work / file, "precision": prec,
                            "inputs": thaw(rec["inputs"]), "outputs": thaw(rec["outputs"]),
                            **info})
        replaced = {(e["name"], e["precision"]) for e in engines}
        files = [{**a, "source": bundle.root / a["file"]} for a in thaw(bundle.manifest["artifacts"])
                 if not (a["format"] == "tensorrt" and (a["name"], a["precision"]) in replaced)]
        files += engines
        fields = {k: v for k, v in thaw(bundle.manifest).items() if k != "artifacts"}
        fields["parity"] = [p for p in fields.get("parity", [])
                            if not (p.get("format") == "tensorrt"
                                    and (p.get("artifact"), p.get("precision")) in replaced)]
        new_dir = stage / "bundle"
        write_bundle(new_dir, fields, files)
        nb = load_bundle(new_dir)
        # exactly the engines just built (an int8 build has an int8 encoder + fp16 step)
        trt_be = TensorRTBackend(nb, precision={e["name"]: e["precision"] for e in engines},
                                 models=tuple(models), device=device)
        ort_be = OnnxRuntimeBackend(nb, "cpu", models=tuple(models))
        t0 = time.perf_counter()
        parity = engine_parity(nb, trt_be, ort_be, models, max_faces, parity_frames)
        seconds["parity"] = round(time.perf_counter() - t0, 2)
        trt_be.close(), ort_be.close()
        ok = all(p["status"] != "FAIL" for p in parity)
        update_manifest(new_dir, parity=fields["parity"] + parity)
        load_bundle(new_dir)
        if not ok and require_parity:
            worst = [p for p in parity if p["status"] == "FAIL"]
            raise RuntimeError("engine parity against ONNX Runtime failed for "
                               f"{[p['artifact'] for p in worst]}: {worst[0]['outputs']}; "
                               f"{target} is unchanged")
        old = None
        if target.exists():
            old = stage / "old"
            target.rename(old)
        new_dir.rename(target)
        return {"bundle": target, "engines": [{k: e[k] for k in e if k != "source"}
                                              for e in engines],
                "parity": parity, "ok": ok, "seconds": seconds}
    finally:
        shutil.rmtree(stage, ignore_errors=True)
