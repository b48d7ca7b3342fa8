"""Simulate BlazeFace's upright re-scoring rules on recorded full-pass candidates (recall vs false faces vs cost).

The constants of :mod:`affedge.features.detectors.blazeface` that decide which full-pass
candidates survive (CANDIDATE_FLOOR, RESCUE_SCORE, CONSENSUS_SCORE, MAX_RESCUES and the
turned-view veto) were chosen with this script. For each seed it makes
``benchmarks/bench_detectors.py``'s frames (130 real faces, 100 non-face patches, 200
face-free frames), runs the short model's full pass once at the lowest floor, and records
for every candidate (per floor, since weak candidates merge among themselves) its pass score
and its upright views (middle size, 1.5x, mirrored, turned 180 degrees), whether it hits the
pasted face or a non-face patch. Rules are then evaluated on the records alone, as
``_confirm`` applies them: recall, face-free frames with a false face, non-face patches hit,
and upright views per frame (the re-scoring cost; one view is one 128x128 model call).

    .venv/bin/python benchmarks/tune_rescoring.py --seeds 0-5 --cache /tmp/rescoring
    .venv/bin/python benchmarks/tune_rescoring.py --seeds 9-11 --cache /tmp/rescoring

(about 45 s per new seed on a 2-core machine; cached seeds are read back from ``--cache``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

FLOORS = (0.3, 0.25, 0.2)
#: (floor, rescue score, consensus, max rescues, veto against "upright" view or views' "mean")
RULES = {
    "before 2026-12-02": (0.3, 0.7, 0.68, 5, "upright"),
    "shipped": (0.2, 0.65, 0.68, 2, "mean"),
    "floor 0.2, rescue 0.6, 5 rescues": (0.2, 0.6, 0.68, 5, "mean"),
    "shipped, 3 rescues": (0.2, 0.65, 0.68, 3, "mean"),
    "shipped, upright veto": (0.2, 0.65, 0.68, 2, "upright"),
    "floor 0.25": (0.25, 0.65, 0.68, 2, "mean"),
}


def full_passes(seed: int, floor: float):
    """For each of ``bench_detectors.py``'s frames of ``seed``: (sample, BGR frame, the short
    detector, its middle face size, the full pass's raw candidates down to ``floor``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_detectors as bench

    from affedge.features.detectors import make_detector
    from affedge.features.faces import to_bgr

    d = make_detector("blazeface-short")
    mid = float(np.sqrt(d.face_lo * d.face_hi))
    for smp in bench.make_samples(seed, 100, 30, 100, 200):
        bgr = to_bgr(smp["frame"])
        H, W = bgr.shape[:2]
        yield smp, bgr, d, mid, [d._pass(bgr, 0.0, 0.0, float(W), float(H), s, floor)
                                 for s in d.scales(H, W, d.min_size, None)]


def record(seed: int) -> list[dict]:
    """Per frame: its kind and, per floor, the merged candidates with scores, views and hits."""
    import bench_detectors as bench

    from affedge.features.detectors import blazeface as bf
    from affedge.features.faces import FaceBox

    out = []
    for smp, bgr, d, mid, raw in full_passes(seed, min(FLOORS)):
        seen: dict[tuple, dict] = {}
        rec = {"kind": smp["kind"], "floors": {}}
        for floor in FLOORS:
            parts = [(b[s >= floor], s[s >= floor]) for b, s in raw]
            cands = []
            for f in d._faces(parts, max(1, int(bf.FULL_PASS_SLACK * d.min_size)), None):
                key = (round(f.x, 2), round(f.y, 2), round(f.w, 2), round(f.h, 2))
                if key not in seen:
                    up, kps = d.upright_view(bgr, f, mid)
                    g = f  # a weak candidate's other views use its rescued keypoints
                    if kps is not None and f.score < d.min_score:
                        g = FaceBox(f.x, f.y, f.w, f.h, up,
                                    keypoints=tuple((float(x), float(y)) for x, y in kps))
                    c, side = smp.get("centre"), smp.get("size")
                    seen[key] = {  # plain floats and bools: the records are JSON
                        "score": float(f.score), "up": float(up), "rescuable": kps is not None,
                        "v15": float(d.upright_view(bgr, g, 1.5 * mid)[0]),
                        "vm": float(d.upright_view(bgr, g, mid, mirror=True)[0]),
                        "vt": float(d.upright_view(bgr, g, mid, turn=180.0)[0]),
                        "hit": bool(smp["kind"] == "face" and bench._hit(f, c, side)),
                        "nonface_hit": bool(
                            smp["kind"] == "nonface" and abs(f.center[0] - c[0]) < side
                            and abs(f.center[1] - c[1]) < side)}
                cands.append(seen[key])
            rec["floors"][str(floor)] = cands
        out.append(rec)
    return out


def confirm(cands: list[dict], rule, min_score: float = 0.7, confident: float = 0.85):
    """The candidates ``_confirm`` keeps under ``rule``, and the upright views it runs."""
    _, rescue, consensus, max_rescues, veto = rule
    weak = sorted((c["score"] for c in cands if c["score"] < min_score), reverse=True)
    weak_floor = weak[max_rescues - 1] if len(weak) > max_rescues else 0.0
    kept, views = [], 0
    for c in cands:
        if c["score"] >= confident:
            kept.append(c)
            continue
        if c["score"] < min_score and c["score"] < weak_floor:
            continue
        views += 1
        if c["score"] < min_score and (c["up"] < rescue or not c["rescuable"]):
            continue
        views += 3
        mean = float(np.mean((c["up"], c["v15"], c["vm"])))
        if mean >= consensus and c["vt"] < (c["up"] if veto == "upright" else mean):
            kept.append(c)
    return kept, views


def tally(kind: str, kept: list[dict], found: list, free: list, nonface: list) -> None:
    """One frame's outcome: a face frame found, a face-free frame fooled, a patch taken."""
    if kind == "face":
        found.append(any(c["hit"] for c in kept))
    elif kind == "free":
        free.append(bool(kept))
    else:
        nonface.append(any(c["nonface_hit"] for c in kept))


def evaluate(frames: list[dict], rule) -> dict:
    found, free, nonface, views = [], [], [], 0
    for rec in frames:
        kept, v = confirm(rec["floors"][str(rule[0])], rule)
        views += v
        tally(rec["kind"], kept, found, free, nonface)
    return {"recall": float(np.mean(found)), "free_fp": float(np.mean(free)),
            "nonface_fp": float(np.mean(nonface)), "views": views / len(frames)}


def _seeds(text: str) -> list[int]:
    """``0-5``, ``0,3,7`` or a mix: the seeds, in order (argparse type: ValueError -> usage)."""
    out = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise argparse.ArgumentTypeError(f"not a seed or a range of seeds: {part!r} "
                                             "(e.g. 0-5 or 0,3,7)")
        first, last = int(lo), int(hi) if dash else int(lo)
        if last < first:
            raise argparse.ArgumentTypeError(f"empty range of seeds: {part!r}")
        out += list(range(first, last + 1))
    return out


def cached_records(seeds, cache: str | None, prefix: str, record) -> dict:
    """``{seed: record(seed)}``, each read from ``cache/<prefix>_seed<N>.json`` when there and
    written there otherwise (no cache: always recorded)."""
    data = {}
    for seed in seeds:
        path = Path(cache) / f"{prefix}_seed{seed}.json" if cache else None
        if path is not None and path.is_file():
            data[seed] = json.loads(path.read_text())
            continue
        print(f"recording seed {seed} ...", file=sys.stderr, flush=True)
        data[seed] = record(seed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data[seed]))
    return data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=_seeds, default="0-2",
                    help="e.g. 0-5 or 0,3,7 (default 0-2)")
    ap.add_argument("--cache", help="directory for the per-seed records (re-used when there)")
    args = ap.parse_args(argv)
    data = cached_records(args.seeds, args.cache, "rescoring", record)
    print(f"seeds {','.join(map(str, args.seeds))}: pooled over {len(data)} x (130 faces, 200 face-free frames, "
          "100 non-face patches)\n")
    print("| rule (floor, rescue, consensus, rescues, veto) | recall | per seed | face-free "
          "frames with a false face | non-face patches hit | upright views per frame |")
    print("|---|---|---|---|---|---|")
    for name, rule in RULES.items():
        per = [evaluate(frames, rule) for frames in data.values()]
        pooled = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
        seeds = " ".join(f"{p['recall']:.3f}" for p in per)
        print(f"| {name} {rule} | {pooled['recall']:.3f} | {seeds} | "
              f"{100 * pooled['free_fp']:.2f} % | {100 * pooled['nonface_fp']:.1f} % | "
              f"{pooled['views']:.2f} |")
    return 0 if all(math.isfinite(v) for v in pooled.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
