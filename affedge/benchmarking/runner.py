"""``run_bench``: the whole ``affedge bench`` measurement as one function returning a dict.

Order: machine description -> bundle (given / demo / fresh random-weights export) -> clip ->
the encoder in every format/precision -> per-stage timings on the chosen backend -> the
reference comparison (streaming vs re-encode + re-run the W-frame window, ONNX Runtime) ->
the roofline (measured GEMM peaks with the same thread count, FLOPs per frame) -> targets.
"""
from __future__ import annotations

import contextlib

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from affedge.benchmarking import report
from affedge.benchmarking.harness import LatencyStats, machine_info, set_threads
from affedge.benchmarking.pipeline import (
    STAGES,
    encoder_rows,
    load_clip,
    make_backend,
    reference_comparison,
    resolve_bundle,
    stage_benchmarks,
    workdir,
)

SCHEMA = "affedge-bench/1"


def _roofline(bundle, rows: list[dict], stages: dict, threads: int, window: int,
              say: Callable[[str], None]) -> dict[str, Any]:
    from affedge.benchmarking import roofline as roofline_mod
    from affedge.benchmarking.roofline import measure_peaks, model_flops, roofline_row

    try:
        flops, source = model_flops(bundle, window)
    except ImportError as exc:
        return {"skipped": str(exc)}
    say(f"roofline: measuring GEMM peaks ({threads} thread(s))")
    peaks = measure_peaks(threads, n=roofline_mod.GEMM_SIZE)  # read now (tests shrink it)
    out_rows = []
    for r in rows:
        st = r.get("stats")
        if not isinstance(st, LatencyStats):
            continue
        prec = r["precision"].split()[0]
        peak = (peaks.get(prec) or {}).get("gflops")
        row = roofline_row(flops["encoder"] * r["batch"], peak, st.min_ms)
        row.update(part=f"encoder ({r['format']})", precision=r["precision"],
                   measured_p50_ms=st.p50_ms)
        out_rows.append(row)
    step = stages.get("step")
    if isinstance(step, LatencyStats) and "step" in flops:
        row = roofline_row(flops["step"], peaks["fp32"]["gflops"], step.min_ms)
        row.update(part="step (pipeline backend)", precision="fp32", measured_p50_ms=step.p50_ms)
        out_rows.append(row)
    return {"threads": threads, "flops": flops, "flops_source": source, "peaks": peaks,
            "rows": out_rows}


def _targets(bundle, stages: dict, breakdown: dict | None) -> dict[str, Any]:
    """The issue's targets: whole-frame p99 <= 1.2 x encoder p99 (IR-50), >= 60 fps end to end
    with a light encoder. Reported, never asserted. The p99 ratio is taken against the encoder
    calls *inside* the same whole-frame ticks (same frames, same moment: robust to load
    changes between stages); the ratio against the separately timed encoder stage is kept as
    ``..._vs_isolated_encoder``."""
    enc, whole, e2e = stages.get("encoder"), stages.get("whole_frame"), stages.get("end_to_end")
    out: dict[str, Any] = {"encoder": bundle.model_config().encoder}
    in_tick = ((breakdown or {}).get("calls") or {}).get("encoder")
    if isinstance(in_tick, LatencyStats) and isinstance(whole, LatencyStats):
        ratio = whole.p99_ms / in_tick.p99_ms
        out["whole_frame_p99_over_encoder_p99"] = ratio
        out["whole_frame_p50_over_encoder_p50"] = whole.p50_ms / in_tick.p50_ms
        out["whole_frame_within_1p2x_encoder"] = ratio <= 1.2
    if isinstance(enc, LatencyStats) and isinstance(whole, LatencyStats):
        out["whole_frame_p99_over_encoder_p99_vs_isolated_encoder"] = whole.p99_ms / enc.p99_ms
    if isinstance(e2e, LatencyStats):
        out["end_to_end_fps"] = e2e.fps
        out["end_to_end_at_least_60fps"] = e2e.fps >= 60.0
        # issue 12: >= 120 fps end to end for the mobile model on the 2-core CPU
        out["end_to_end_at_least_120fps"] = e2e.fps >= 120.0
        serial = stages.get("end_to_end_serial")
        if isinstance(serial, LatencyStats) and serial.n:
            out["end_to_end_serial_fps"] = serial.fps
            out["pipeline_speedup"] = e2e.fps / serial.fps
    if isinstance(whole, LatencyStats):
        out["whole_frame_fps"] = whole.fps
    return out


def run_bench(bundle: str | Path | None = None, backend: str = "auto", precision: str = "fp32",
              frames: int = 100, warmup: int = 10, threads: int = 1, encoder_only: bool = False,
              clip: str | Path | None = None, encoder: str = "mobile", reference: bool = True,
              window: int = 300, roofline: bool = True, max_seconds: float = 60.0,
              min_face: int | None = None, detect_every: int | None = None,
              say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready document (LatencyStats inside; see
    :func:`affedge.benchmarking.report.jsonable`). ``encoder``: architecture of the fresh
    random-weights bundle when there is neither ``bundle`` nor a demo bundle.
    ``detect_every``: full-frame face detection every this many frames, region searches around
    the tracks in between (None: the runtime default, ``engine.DEFAULT_DETECT_EVERY``)."""
    if frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    set_threads(threads)
    t_start = time.perf_counter()
    doc: dict[str, Any] = {"schema": SCHEMA, "machine_at_start": machine_info(threads),
                           "config": {"backend": backend, "precision": precision,
                                      "frames": frames, "warmup": warmup, "threads": threads,
                                      "encoder_only": encoder_only, "window": window,
                                      "min_face": min_face, "detect_every": detect_every}}
    with workdir() as tmp:
        b, desc = resolve_bundle(bundle, tmp, encoder, say)
        mcfg = b.model_config()
        doc["bundle"] = {"source": desc, "encoder": mcfg.encoder,
                         "random_weights": "random" in desc or "random" in str(
                             (b.manifest.get("provenance") or {}).get("data", "")),
                         "artifacts": [{"name": a["name"], "format": a["format"],
                                        "precision": a["precision"], "size": a["size"]}
                                       for a in b.artifacts]}
        # the pipeline's backend first: one that cannot run here (tensorrt without TensorRT,
        # a precision the bundle lacks) is refused before the encoder table's seconds
        be = None if encoder_only else make_backend(b, backend, precision, threads)
        stages: dict[str, Any] = {}
        with contextlib.closing(be) if be is not None else contextlib.nullcontext():
            say(f"encoder in every format ({mcfg.encoder}, batch 1, {threads} thread(s))")
            rows = encoder_rows(b, threads, iters=frames, warmup=warmup,
                                max_seconds=max_seconds / 3, say=say)
            doc["encoder_formats"] = rows
            if be is not None:
                c = load_clip(clip, tmp, say=say)
                doc["clip"] = {"source": c.source, "frames": len(c.frames), "fps": c.fps,
                               "size": list(c.frames[0].shape[:2])}
                say(f"stages on {be.name} ({', '.join(be.providers)}), precision {precision}, "
                    f"{frames} frames after {warmup} warm-up")
                stages = stage_benchmarks(b, be, c, frames, warmup, max_seconds,
                                          min_face=min_face, detect_every=detect_every)
                doc["pipeline_backend"] = {"name": be.name, "providers": list(be.providers),
                                           "precision": precision}
        if not encoder_only:
            doc["clip"]["faces_detected"] = stages.pop("faces_detected", None)
            doc["whole_frame_breakdown"] = stages.pop("whole_frame_breakdown", None)
            doc["stages"] = stages
            whole = stages["whole_frame"]
            doc["single_stream"] = {"p90_ms": whole.p90_ms, "stage": "whole_frame",
                                    "note": "MLPerf-style single stream: 90th-percentile "
                                            "latency of one frame"}
            if reference and b.has("window"):
                say(f"reference: streaming vs re-encode + window({window}) per frame (ONNX "
                    "Runtime fp32)")
                ref_be = make_backend(b, "ort-cpu", "fp32", threads)
                try:
                    doc["reference"] = reference_comparison(b, ref_be, window,
                                                            max_seconds=max_seconds)
                finally:
                    ref_be.close()
            elif reference:
                doc["reference"] = {"skipped": "bundle has no window artifact"}
            doc["targets"] = _targets(b, stages, doc.get("whole_frame_breakdown"))
        if roofline:
            doc["roofline"] = _roofline(b, rows, stages, threads, window, say)
    doc["machine_at_end"] = machine_info(threads)
    doc["seconds"] = time.perf_counter() - t_start
    return doc


def render(doc: dict[str, Any]) -> str:
    """The human-readable report of a :func:`run_bench` document."""
    m0, m1 = doc["machine_at_start"], doc["machine_at_end"]
    cfg = doc["config"]
    lines = [f"affedge bench — {doc['bundle']['source']} (encoder {doc['bundle']['encoder']}"
             + (", random weights" if doc["bundle"].get("random_weights") else "") + ")",
             (f"machine: {m0['cpu']}, {m0['usable_cores']} usable cores, {cfg['threads']} "
              f"thread(s) for every measurement; load average {m0['loadavg_1_5_15']} at start, "
              f"{m1['loadavg_1_5_15']} at end")] + [n for n in [_busy_note(m0)] if n] + [""]
    lines += ["Face encoder (batch 1)", report.encoder_table(doc["encoder_formats"]), ""]
    if "stages" in doc:
        pb = doc["pipeline_backend"]
        lines += [f"Pipeline stages on {pb['name']} {pb['precision']} — clip: "
                  f"{doc['clip']['source']}, {doc['clip']['size'][1]}x{doc['clip']['size'][0]} "
                  f"@ {doc['clip']['fps']:.1f} fps, faces in "
                  f"{100 * (doc['clip']['faces_detected'] or 0):.0f}% of the timed frames; the bundle's detector "
                  f"min face {cfg.get('min_face') or 'default (40)'} px"
                  + _detection_note(cfg.get("detect_every")),
                  report.stage_table(doc["stages"], STAGES), ""]
        bd = doc.get("whole_frame_breakdown")
        if bd:
            parts = [f"{k} {bd[k]:.2f}" for k in ("detect", "encoder", "step", "window")
                     if k in bd]
            lines.append(f"Inside the whole-frame tick (mean ms per frame): "
                         f"{bd['whole_frame_mean']:.2f} = " + " + ".join(parts)
                         + f" + other {bd['other']:.2f} (tracking, crop, audio features, ring "
                         "buffers, Prediction)"
                         + (f"; beside it, on the detection worker thread (not part of the "
                            f"tick's time): full passes {bd['detect_worker']:.2f}"
                            if "detect_worker" in bd else ""))
        ss = doc["single_stream"]
        lines.append(f"Single-stream (MLPerf-style) 90th-percentile latency of one frame: "
                     f"{ss['p90_ms']:.2f} ms")
    ref = doc.get("reference")
    if ref and "ratio_p50" in ref:
        lines.append(f"Reference comparison ({ref['backend']}): streaming frame "
                     f"{ref['streaming'].p50_ms:.2f} ms vs re-encode + window({ref['window']}) "
                     f"{ref['reference'].p50_ms:.1f} ms per frame (p50) -> "
                     f"{ref['ratio_p50']:.0f}x")
    elif ref:
        lines.append(f"Reference comparison skipped: {ref.get('skipped')}")
    t = doc.get("targets")
    if t:
        bits = []
        if "whole_frame_p99_over_encoder_p99" in t:
            bits.append(f"whole-frame p99 / encoder p99 (in the same ticks) = "
                        f"{t['whole_frame_p99_over_encoder_p99']:.2f}, p50 ratio "
                        f"{t['whole_frame_p50_over_encoder_p50']:.2f} (target p99 <= 1.2 with "
                        f"IR-50: {'met' if t['whole_frame_within_1p2x_encoder'] else 'NOT met'}"
                        f"; vs the isolated encoder stage "
                        f"{t['whole_frame_p99_over_encoder_p99_vs_isolated_encoder']:.2f})")
        if "end_to_end_fps" in t:
            bits.append(f"end to end {t['end_to_end_fps']:.1f} fps (targets with a light "
                        f"encoder: >= 60 "
                        f"{'met' if t['end_to_end_at_least_60fps'] else 'NOT met'}, >= 120 "
                        f"{'met' if t['end_to_end_at_least_120fps'] else 'NOT met'})")
            if "pipeline_speedup" in t:
                bits.append(f"pipelined capture loop {t['pipeline_speedup']:.2f}x the serial "
                            f"one ({t['end_to_end_serial_fps']:.1f} fps), runs interleaved")
        lines.append(f"Targets ({t['encoder']}): " + "; ".join(bits))
    rf = doc.get("roofline")
    if rf and "rows" in rf:
        pk = rf["peaks"]
        lines += ["", f"Roofline ({rf['threads']} thread(s); FLOPs from {rf['flops_source']}; "
                  "best-of-5 GEMM peaks "
                  + ", ".join(f"{p} {pk[p]['gflops']:.0f} GFLOP/s ({pk[p]['best']})"
                              for p in ("fp32", "bf16", "int8") if pk.get(p, {}).get("gflops"))
                  + "; measured = best (min) latency)", report.roofline_table(rf["rows"])]
    elif rf:
        lines.append(f"Roofline skipped: {rf.get('skipped')}")
    return "\n".join(lines)


def _detection_note(detect_every: int | None) -> str:
    """How the pipeline stages ran face detection (None: the runtime default)."""
    from affedge.sdk.engine import DEFAULT_DETECT_EVERY

    k = DEFAULT_DETECT_EVERY if detect_every is None else int(detect_every)
    default = " (runtime default)" if k == DEFAULT_DETECT_EVERY else ""
    if k <= 1:
        return f", full-frame detection on every frame{default}"
    return (f", full-frame detection every {k} frames, region searches around the tracks in "
            f"between{default}; face_detect times that schedule synchronously, whole_frame "
            f"and end_to_end run the full pass asynchronously, as the Recognizer does unless "
            f"async_detect=False (beside the tick, joining a later frame)")


#: a 1-minute load average above this fraction of the usable cores marks the figures as noisy
BUSY_LOAD = 0.5


def _busy_note(m0: dict) -> str:
    """A warning line when other work held the CPU as the run began (1-minute load average
    above BUSY_LOAD x the usable cores; the load at the end counts this run's own threads, so
    it is shown, not judged), else ""."""
    cores = m0.get("usable_cores") or 1
    load = (m0.get("loadavg_1_5_15") or [0.0])[0]
    if load <= BUSY_LOAD * cores:
        return ""
    return (f"note: the machine was busy as the run began (1-minute load {load:.1f} on {cores} "
            f"cores): single figures can move by a factor of several between runs; compare "
            f"variants measured in one run, or re-run on an idle machine")
