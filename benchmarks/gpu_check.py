"""The prepared GPU check: torch CUDA eager / torch.export / AOTInductor (+ CUDA graphs for the
step) parity against CPU and p50/p99 latency of the encoder and the step, the demo clip through
the pipeline on CUDA, and TensorRT when it happens to be importable.

Run through ``benchmarks/gpu_check.sh`` (a hard time limit around it). Writes
``gpu_check.json`` and ``gpu_check.md`` to ``--out`` (default ``$OUT`` or ``./gpu_check_out``).
``--cpu-dry-run`` runs the same code paths on the CPU with few iterations (what can be checked
without a GPU; CUDA graphs are then reported as skipped). Every stage runs under a global time
budget and records "skipped: <why>" instead of failing the whole check; a bare machine with
CUDA torch and ONNX Runtime CPU but no network needs nothing else (safetensors, OpenCV and the
C++ ring buffer are optional: without them the weights are read by a small safetensors reader
here, and the pipeline stage says what is missing).

Latency: warm-up, then timed calls, each followed by ``torch.cuda.synchronize()`` on CUDA;
variants are timed one after the other in the same process (ratios between them are only
indicative), p50/p90/p99 in milliseconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "affedge" / "assets" / "demo" / "demo_bundle"
CLIP = ROOT / "affedge" / "assets" / "demo" / "demo_clip.mp4"
TOL = {"fp32": 1e-4, "fp16": 1e-2}  # as affedge.export.parity (max_abs / max(1, max|ref|))


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def need(self, seconds: float, what: str) -> None:
        if self.left() < seconds:
            raise TimeoutError(f"skipped: {what} needs ~{seconds:.0f} s, {self.left():.0f} s "
                               "left in the time budget")


def _read_safetensors(path: Path):
    """{name: torch tensor} without the safetensors package (header JSON + raw little-endian)."""
    import torch

    dt = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "BF16": None, "U8": np.uint8, "BOOL": np.bool_}
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        if dt.get(v["dtype"]) is None:
            raise ValueError(f"{path.name}: dtype {v['dtype']} not supported by the fallback reader")
        arr = np.frombuffer(raw[8 + n + a: 8 + n + b], dtype=dt[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(arr.copy())
    return out


def load_modules(bundle, device: str):
    """(encoder, step, model config) as eval torch modules on ``device`` from the bundle."""
    from affedge.export.folding import fold_encoder
    from affedge.export.streaming import StreamingStep
    from affedge.training.model import AffectModel

    path = bundle.artifact("weights", "safetensors")
    try:
        from safetensors.torch import load_file

        sd = load_file(str(path))
    except ImportError:
        sd = _read_safetensors(path)
    cfg = bundle.model_config()
    model = AffectModel(cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit the config: {missing[:3]} {unexpected[:3]}")
    model.eval()
    enc = fold_encoder(model.encoder).eval().to(device)
    step = StreamingStep(model.temporal).eval().to(device)
    return enc, step, cfg


def example_inputs(step, cfg, n: int, seed: int = 0):
    """Deterministic encoder crops [n,3,S,S] in [-1,1] and step inputs for batch n (CPU)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    s = cfg.crop_size
    frames = torch.rand(n, 3, s, s, generator=g) * 2 - 1
    emb = torch.nn.functional.normalize(torch.randn(n, cfg.embed_dim, generator=g), dim=1)
    audio = [torch.randn(n, d, generator=g) for d in step.audio_dims]
    states = [torch.randn(n, c, ln, generator=g) * 0.5 for _, (c, ln) in step.state_specs()]
    return (frames,), (emb, *audio, *states)


def _as_tuple(y):
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def max_err(ref, got) -> dict:
    """max |got - ref| over all outputs, and whether it is within fp32 / fp16 bounds."""
    worst, ref_max = 0.0, 0.0
    for r, x in zip(_as_tuple(ref), _as_tuple(got)):
        r = r.detach().float().cpu().numpy()
        x = x.detach().float().cpu().numpy()
        if r.shape != x.shape:
            raise ValueError(f"output shape {x.shape} != reference {r.shape}")
        worst = max(worst, float(np.max(np.abs(r - x))) if np.isfinite(x).all() else float("inf"))
        ref_max = max(ref_max, float(np.max(np.abs(r))))
    return {"max_abs": worst, "ref_max": ref_max,
            "fp32_ok": worst <= TOL["fp32"] * max(1.0, ref_max),
            "fp16_ok": worst <= TOL["fp16"] * max(1.0, ref_max)}


def latency(fn, device: str, iters: int, warmup: int, max_seconds: float) -> dict:
    from affedge.benchmarking.harness import measure

    if device.startswith("cuda"):
        import torch

        def call():
            fn()
            torch.cuda.synchronize()
    else:
        call = fn
    st = measure(call, iters=iters, warmup=warmup, max_seconds=max_seconds)
    return {"n": st.n, "p50_ms": st.p50_ms, "p90_ms": st.p90_ms, "p99_ms": st.p99_ms,
            "mean_ms": st.mean_ms}


def step_cuda_graph(fn, args):
    """Capture ``fn(*static_args)`` in a CUDA graph; returns (replay() -> outputs, static args)."""
    import torch

    static = [a.clone() for a in args]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):  # warm-up outside the graph (allocator, lazy init)
            fn(*static)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*static)

    def replay():
        graph.replay()
        return out

    return replay, static


def run_variants(bundle, device: str, args, budget: Budget, work: Path) -> dict:
    """eager / torch.export / AOTInductor (+ CUDA graph step) on ``device`` vs eager CPU."""
    import torch

    from affedge.export.torch_export import export_program

    results: dict = {}
    cpu_enc, cpu_step, cfg = load_modules(bundle, "cpu")
    dev_enc, dev_step, _ = load_modules(bundle, device)
    if device.startswith("cuda"):  # fp32 means fp32 (TF32 would miss 1e-4 parity)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    names = {"encoder": (["frames"], {"frames": {0: "N"}}),
             "step": (list(cpu_step.input_names), {n: {0: "N"} for n in cpu_step.input_names})}
    batches = sorted({1, int(args.batch)})
    inputs = {n: example_inputs(cpu_step, cfg, n, seed=n) for n in batches}
    ref = {}
    with torch.inference_mode():
        for n in batches:
            ref[("encoder", n)] = cpu_enc(*inputs[n][0])
            ref[("step", n)] = cpu_step(*inputs[n][1])

    def on_dev(t):
        return tuple(a.to(device) for a in t)

    mods = {"encoder": dev_enc, "step": dev_step}
    variants = {"eager": dict(mods)}
    if device.startswith("cuda"):
        variants["eager-fp16-autocast"] = dict(mods)
    if not args.skip_export:
        try:
            budget.need(30, "torch.export")
            variants["torch.export"] = {}
            for m, mod in mods.items():
                t0 = time.perf_counter()
                ex_args = on_dev(inputs[max(batches)][0 if m == "encoder" else 1])
                ep = export_program(mod, ex_args, names[m][0], names[m][1])
                variants["torch.export"][m] = ep.module()
                results.setdefault("compile_seconds", {})[f"torch.export/{m}"] = round(
                    time.perf_counter() - t0, 2)
            if not args.skip_aoti:
                variants["aoti"] = {}
                for m in args.aoti_models:
                    budget.need(args.aoti_estimate_s, f"AOTInductor compile of {m}")
                    t0 = time.perf_counter()
                    ex_args = on_dev(inputs[max(batches)][0 if m == "encoder" else 1])
                    ep = export_program(mods[m], ex_args, names[m][0], names[m][1])
                    pkg = work / f"{m}.aoti.pt2"
                    torch._inductor.aoti_compile_and_package(ep, package_path=str(pkg))
                    variants["aoti"][m] = torch._inductor.aoti_load_package(str(pkg))
                    results.setdefault("compile_seconds", {})[f"aoti/{m}"] = round(
                        time.perf_counter() - t0, 2)
        except TimeoutError as exc:
            results.setdefault("skipped", {})["export/aoti"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported, the other variants still run
            results.setdefault("skipped", {})["export/aoti"] = f"failed: {exc!r}"[:500]
    rows = []
    for vname, vm in variants.items():
        for m, fn in vm.items():
            for n in batches:
                row = {"variant": vname, "model": m, "batch": n, "device": device}
                try:
                    budget.need(5, f"{vname}/{m}")
                    a = on_dev(inputs[n][0 if m == "encoder" else 1])
                    if vname == "eager-fp16-autocast":
                        def call(fn=fn, a=a):
                            with torch.inference_mode(), torch.autocast("cuda", torch.float16):
                                return fn(*a)
                    else:
                        def call(fn=fn, a=a):
                            with torch.inference_mode():
                                return fn(*a)
                    row["parity"] = max_err(ref[(m, n)], call())
                    row["latency"] = latency(call, device, args.iters, args.warmup,
                                             args.max_seconds_per_case)
                except TimeoutError as exc:
                    row["skipped"] = str(exc)
                except Exception as exc:  # noqa: BLE001
                    row["skipped"] = f"failed: {exc!r}"[:500]
                rows.append(row)
    # the step replayed from a CUDA graph (the per-frame call with the least launch overhead)
    for vname in ("aoti", "eager"):
        if "step" not in variants.get(vname, {}):
            continue
        for n in batches:
            row = {"variant": f"{vname}+cudagraph", "model": "step", "batch": n,
                   "device": device}
            if not device.startswith("cuda"):
                row["skipped"] = "skipped: CUDA graphs need a CUDA device (--cpu-dry-run)"
                rows.append(row)
                continue
            try:
                budget.need(10, f"{vname} CUDA graph")
                fn = variants[vname]["step"]
                with torch.inference_mode():
                    replay, _static = step_cuda_graph(fn, on_dev(inputs[n][1]))
                    row["parity"] = max_err(ref[("step", n)], replay())
                    row["latency"] = latency(replay, device, args.iters, args.warmup,
                                             args.max_seconds_per_case)
            except TimeoutError as exc:
                row["skipped"] = str(exc)
            except Exception as exc:  # noqa: BLE001
                row["skipped"] = f"failed: {exc!r}"[:500]
            rows.append(row)
        break  # the first variant that has a step (AOTI when compiled)
    results["rows"] = rows
    return results


def run_pipeline(bundle_path: Path, device: str, args, budget: Budget) -> dict:
    """The demo clip through Recognizer(backend torch on ``device``) vs ONNX Runtime CPU."""
    out: dict = {"clip": str(CLIP.relative_to(ROOT)), "frames": args.pipeline_frames}
    try:
        import affedge._ringbuf  # noqa: F401
        import cv2  # noqa: F401
    except ImportError as exc:
        out["skipped"] = f"skipped: the pipeline needs OpenCV and the C++ ring buffer ({exc})"
        return out
    from affedge.sdk.recognizer import Recognizer

    res = {}
    for name, backend, opts in (("torch-" + device, "torch", {"device": device}),
                                ("onnxruntime-cpu", "ort-cpu", {})):
        try:
            budget.need(20, f"pipeline {name}")
            rec = Recognizer(bundle_path, backend=backend, backend_options=opts)
            t0 = time.perf_counter()
            preds = list(rec.run(str(CLIP), audio="video", max_frames=args.pipeline_frames))
            wall = time.perf_counter() - t0
            rec.close()
            lat = np.array([p.latency_ms for p in preds], np.float64)
            res[name] = {"frames": len(preds), "wall_s": round(wall, 2),
                         "fps": round(len(preds) / wall, 1),
                         "tick_p50_ms": float(np.percentile(lat[10:] if len(lat) > 20 else lat,
                                                            50)),
                         "tick_p99_ms": float(np.percentile(lat[10:] if len(lat) > 20 else lat,
                                                            99)),
                         "va": np.array([[p.valence, p.arousal] for p in preds], np.float64)}
        except TimeoutError as exc:
            res[name] = {"skipped": str(exc)}
        except Exception as exc:  # noqa: BLE001
            res[name] = {"skipped": f"failed: {exc!r}"[:500]}
    a, b = res.get("torch-" + device, {}), res.get("onnxruntime-cpu", {})
    if "va" in a and "va" in b and len(a["va"]) == len(b["va"]):
        d = np.abs(a["va"] - b["va"])
        d = d[np.isfinite(d)]
        out["max_abs_va_diff_vs_ort_cpu"] = float(d.max()) if d.size else None
    for r in res.values():
        r.pop("va", None)
    out["runs"] = res
    return out


def run_tensorrt(bundle_path: Path, args, budget: Budget, work: Path) -> dict:
    """Engines built here (affedge build-engines) + backend latency, when tensorrt imports."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        return {"skipped": f"skipped: tensorrt not importable ({exc})"}
    out: dict = {"version": trt.__version__}
    try:
        import shutil

        from affedge.bundle import load_bundle
        from affedge.export.engines import build_engines
        from affedge.sdk.backends.tensorrt_backend import TensorRTBackend

        budget.need(120, "TensorRT engine builds")
        dst = work / "trt_bundle"
        shutil.copytree(bundle_path, dst)
        res = build_engines(dst, precision="fp16", max_faces=4, progress=print)
        out["parity"] = res["parity"]
        out["build_seconds"] = res["seconds"]
        be = TensorRTBackend(load_bundle(dst))
        rng = np.random.default_rng(0)
        x = {"frames": np.tanh(rng.standard_normal((1, 3, 40, 40))).astype(np.float32)}
        out["encoder_latency"] = latency(lambda: be.run("encoder", x), "cpu", args.iters,
                                         args.warmup, args.max_seconds_per_case)
        feeds = {s["name"]: rng.standard_normal([1 if d == "N" else d for d in s["shape"]])
                 .astype(np.float32) for s in be.input_specs("step")}
        out["step_latency_host_state"] = latency(lambda: be.run("step", feeds), "cpu",
                                                 args.iters, args.warmup,
                                                 args.max_seconds_per_case)
        rs = be.resident_step()
        per_tick = {k: v for k, v in feeds.items() if not k.startswith("state_")}

        def tick():
            rs.run([0], per_tick)
            rs.commit()

        out["step_latency_resident_state"] = latency(tick, "cpu", args.iters, args.warmup,
                                                     args.max_seconds_per_case)
        be.close()
    except TimeoutError as exc:
        out["skipped"] = str(exc)
    except Exception as exc:  # noqa: BLE001
        out["skipped"] = f"failed: {exc!r}"[:800]
    return out


def machine(device: str) -> dict:
    import torch

    from affedge.benchmarking.harness import cpu_model

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cpu": cpu_model(), "cores": os.cpu_count(),
            "load_1min": os.getloadavg()[0], "device": device}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = p.name
        info["compute_capability"] = f"{p.major}.{p.minor}"
        info["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError:
        pass
    return info


def markdown(rep: dict) -> str:
    m = rep["machine"]
    lines = [f"# GPU check ({'CPU dry run' if rep['cpu_dry_run'] else m.get('gpu', '?')})", "",
             (f"torch {m['torch']} (CUDA {m['cuda']}), CPU {m['cpu']} x{m['cores']}, load "
              f"{m['load_1min']:.2f}, {rep['seconds']:.0f} s total"), "",
             "| variant | model | batch | max abs err vs CPU eager | fp32 ok | p50 ms | p99 ms |",
             "|---|---|---:|---:|:---:|---:|---:|"]
    for r in rep["variants"].get("rows", []):
        if "skipped" in r:
            lines.append(f"| {r['variant']} | {r['model']} | {r['batch']} | {r['skipped']} "
                         "| | | |")
            continue
        p, lat = r["parity"], r["latency"]
        ok = "yes" if p["fp32_ok"] else ("fp16 bound" if p["fp16_ok"] else "NO")
        lines.append(f"| {r['variant']} | {r['model']} | {r['batch']} | {p['max_abs']:.2e} | "
                     f"{ok} | {lat['p50_ms']:.3f} | {lat['p99_ms']:.3f} |")
    for k, v in rep["variants"].get("compile_seconds", {}).items():
        lines.append(f"\ncompile {k}: {v} s")
    for k, v in rep["variants"].get("skipped", {}).items():
        lines.append(f"\n{k}: {v}")
    pl = rep["pipeline"]
    lines += ["", "## Demo clip through the pipeline", ""]
    if "skipped" in pl:
        lines.append(pl["skipped"])
    else:
        lines += ["| backend | frames | fps | tick p50 ms | tick p99 ms |", "|---|---:|---:|---:|---:|"]
        for name, r in pl["runs"].items():
            if "skipped" in r:
                lines.append(f"| {name} | {r['skipped']} | | | |")
            else:
                lines.append(f"| {name} | {r['frames']} | {r['fps']} | {r['tick_p50_ms']:.2f} | "
                             f"{r['tick_p99_ms']:.2f} |")
        if pl.get("max_abs_va_diff_vs_ort_cpu") is not None:
            lines.append(f"\nmax |V/A difference| vs ONNX Runtime CPU: "
                         f"{pl['max_abs_va_diff_vs_ort_cpu']:.2e}")
    t = rep["tensorrt"]
    lines += ["", "## TensorRT", "", t.get("skipped") or json.dumps(
        {k: v for k, v in t.items() if k != "parity"}, indent=1)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    ap.add_argument("--bundle", default=str(DEMO))
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="same code paths on the CPU, few iterations (no GPU needed)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting new stages "
                                                                   "after this (default 420)")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--batch", type=int, default=4, help="the larger batch (faces) timed")
    ap.add_argument("--max-seconds-per-case", type=float, default=None)
    ap.add_argument("--pipeline-frames", type=int, default=None)
    ap.add_argument("--aoti-models", default=None, help="comma-separated (default encoder,step "
                                                        "on CUDA, step in the dry run)")
    ap.add_argument("--aoti-estimate-s", type=float, default=None,
                    help="time one AOTInductor compile needs (skipped when less is left)")
    ap.add_argument("--skip-export", action="store_true")
    ap.add_argument("--skip-aoti", action="store_true")
    ap.add_argument("--skip-pipeline", action="store_true")
    args = ap.parse_args(argv)
    dry = args.cpu_dry_run
    args.iters = args.iters or (20 if dry else 300)
    args.warmup = args.warmup if args.warmup is not None else (3 if dry else 30)
    args.max_seconds_per_case = args.max_seconds_per_case or (3.0 if dry else 8.0)
    args.pipeline_frames = args.pipeline_frames or (60 if dry else 300)
    args.aoti_models = [m for m in (args.aoti_models or ("step" if dry else "encoder,step"))
                        .split(",") if m]
    args.aoti_estimate_s = args.aoti_estimate_s or (150.0 if dry else 60.0)
    t_start = time.monotonic()
    budget = Budget(args.budget_s)

    import torch

    from affedge.bundle import load_bundle

    device = "cpu" if dry else "cuda"
    if not dry and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device (use --cpu-dry-run to test the script)",
              file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(args.bundle)
    rep = {"cpu_dry_run": dry, "machine": machine(device), "args": {
        k: v for k, v in vars(args).items() if k != "out"}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        for key, fn in (("variants", lambda: run_variants(bundle, device, args, budget, work)),
                        ("pipeline", lambda: {"skipped": "skipped: --skip-pipeline"}
                         if args.skip_pipeline else run_pipeline(Path(args.bundle), device,
                                                                  args, budget)),
                        ("tensorrt", lambda: run_tensorrt(Path(args.bundle), args, budget,
                                                          work))):
            t0 = time.monotonic()
            try:
                rep[key] = fn()
            except Exception as exc:  # noqa: BLE001 - one stage never hides the others
                rep[key] = {"skipped": f"failed: {exc!r}",
                            "traceback": traceback.format_exc()[-2000:]}
            print(f"gpu_check: {key} done in {time.monotonic() - t0:.1f} s", flush=True)
    rep["seconds"] = time.monotonic() - t_start
    (out / "gpu_check.json").write_text(json.dumps(rep, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(rep))
    print(markdown(rep))
    rows = rep["variants"].get("rows", []) if isinstance(rep["variants"], dict) else []
    bad = [r for r in rows if "parity" in r and r["variant"] in ("eager", "torch.export", "aoti")
           and not r["parity"]["fp32_ok"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
