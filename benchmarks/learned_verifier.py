"""Would a learned verifier of BlazeFace's weak candidates beat the hand-set re-scoring rule? (cross-fitted estimate)

Not used by the runtime: an experiment for issue 12's recall target. (Built into the detector
for a try, it kept the astronaut's white helmet as a second face on the moving-photo clip,
which the training's negatives never showed it: benchmarks/README.md.) For each seed it records
every full-pass candidate of the short model at CANDIDATE_FLOOR (``benchmarks/
bench_detectors.py``'s frames: 100 LFW faces, 30 astronaut heads, 100 non-face patches, 200
face-free frames): the pass score, the four upright views of ``_confirm`` (middle size, 1.5x,
mirrored, turned 180 degrees), the box, and the six keypoints of the pass and of the two
upright views. Features per candidate: the scores, the views' mean, and the keypoint geometry
(eye distance / box side, nose and mouth offsets along and across the eye line, ear span,
and how far the keypoints move between views); a gradient-boosted tree classifier
(scikit-learn, depth 3, 150 trees) says whether the candidate is a face.

The estimate is cross-fitted over seeds *and* identities: seeds 0-5 and 6-11 are two halves,
the LFW faces and non-face patches 0-49 and 50-99 two more, and each of the four blocks is
scored by a model trained on the opposite seed half and the opposite identity half. Astronaut
frames and face-free frames are counted once. A rule keeps a candidate that scored >=
CONFIDENT_SCORE in the pass, or (among the ``--max-rescues`` best weak ones) whose upright view
scores >= ``--early-reject`` and whose probability is >= the threshold.

    .venv/bin/python benchmarks/learned_verifier.py --seeds 0-11 --cache /tmp/verifier

(about 80 s per new seed on a 2-core machine; needs scikit-learn, a dev-only dependency.)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FLOOR = 0.2  # blazeface.CANDIDATE_FLOOR at the time of the experiment
MIN_SCORE, CONFIDENT = 0.7, 0.85  # the short model's min_score; blazeface.CONFIDENT_SCORE


def record(seed: int) -> list[dict]:
    """Per frame: its kind and its candidates (scores, views, box, keypoints, hits)."""
    sys.path.insert(0, str(HERE))
    import bench_detectors as bench
    from tune_rescoring import full_passes

    from affedge.features.detectors import blazeface as bf
    from affedge.features.faces import FaceBox

    out = []
    for smp, bgr, d, mid, raw in full_passes(seed, FLOOR):
        cands = []
        for f in d._faces(raw, max(1, int(bf.FULL_PASS_SLACK * d.min_size)), None):
            up, kps = d.upright_view(bgr, f, mid)
            g = f if kps is None else FaceBox(f.x, f.y, f.w, f.h, up, keypoints=tuple(
                (float(x), float(y)) for x, y in kps))
            v15, k15 = d.upright_view(bgr, g, 1.5 * mid)
            c, side = smp.get("centre"), smp.get("size")
            cands.append({
                "score": float(f.score), "up": float(up), "v15": float(v15),
                "vm": float(d.upright_view(bgr, g, mid, mirror=True)[0]),
                "vt": float(d.upright_view(bgr, g, mid, turn=180.0)[0]),
                "box": [f.x, f.y, f.w, f.h], "kp_pass": [list(p) for p in f.keypoints],
                "kp_up": None if kps is None else kps.tolist(),
                "kp_15": None if k15 is None else k15.tolist(),
                "hit": bool(smp["kind"] == "face" and bench._hit(f, c, side)),
                "nonface_hit": bool(smp["kind"] == "nonface" and abs(f.center[0] - c[0]) < side
                                    and abs(f.center[1] - c[1]) < side)})
        out.append({"kind": smp["kind"], "cands": cands})
    return out


def _geometry(kp, side: float) -> list[float]:
    e0, e1, n, m, r0, r1 = np.asarray(kp, np.float64)
    d = e1 - e0
    de = float(np.hypot(*d)) + 1e-6
    u = d / de
    v = np.array([-u[1], u[0]])
    mid = (e0 + e1) / 2
    return [de / side, np.dot(n - mid, u) / de, np.dot(n - mid, v) / de,
            np.dot(m - mid, u) / de, np.dot(m - mid, v) / de, float(np.hypot(*(r1 - r0))) / de,
            np.dot((r0 + r1) / 2 - mid, u) / de]


def features(c: dict) -> list[float]:
    side = max(c["box"][2], c["box"][3])
    kp = c["kp_up"] if c["kp_up"] is not None else c["kp_pass"]
    mean = (c["up"] + c["v15"] + c["vm"]) / 3
    f = [c["score"], c["up"], c["v15"], c["vm"], c["vt"], mean, c["vt"] - mean]
    f += _geometry(kp, side)
    moved_15 = 1.0 if c["kp_up"] is None or c["kp_15"] is None else float(np.mean(np.hypot(
        *(np.asarray(c["kp_up"]) - np.asarray(c["kp_15"])).T))) / side
    moved_pass = float(np.mean(np.hypot(*(np.asarray(kp) - np.asarray(c["kp_pass"])).T))) / side
    return f + [moved_15, moved_pass]


def shipped_rule(c: dict) -> bool:
    """``_confirm``'s rule at the time (RESCUE_SCORE 0.65, CONSENSUS_SCORE 0.68, mean veto)."""
    if c["score"] < MIN_SCORE and (c["up"] < 0.65 or c["kp_up"] is None):
        return False
    mean = (c["up"] + c["v15"] + c["vm"]) / 3
    return mean >= 0.68 and c["vt"] < mean


def _kept(cands, keep, max_rescues: int):
    weak = sorted((c["score"] for c in cands if c["score"] < MIN_SCORE), reverse=True)
    floor = weak[max_rescues - 1] if len(weak) > max_rescues else 0.0
    return [c for c in cands if c["score"] >= CONFIDENT or (
        not (c["score"] < MIN_SCORE and c["score"] < floor) and keep(c))]


def _in_half(i: int, half: int) -> bool:
    """Frame ``i`` of a seed belongs to identity half ``half`` (faces and non-face patches are
    split by index; astronaut and face-free frames belong to both)."""
    if i < 100:
        return (i < 50) == (half == 0)
    if 130 <= i < 230:
        return (i - 130 < 50) == (half == 0)
    return True


def cross_fit(data: dict, seed_halves, rules) -> list[tuple]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from tune_rescoring import tally

    def frames(sh, ih):
        for s in seed_halves[sh]:
            for i, rec in enumerate(data[s]):
                if _in_half(i, ih):
                    yield i, rec

    models = {}
    for sh in (0, 1):
        for ih in (0, 1):
            X, y = [], []
            for _, rec in frames(1 - sh, 1 - ih):
                for c in rec["cands"]:
                    if c["score"] < CONFIDENT:
                        X.append(features(c))
                        y.append(c["hit"])
            models[(sh, ih)] = HistGradientBoostingClassifier(
                max_depth=3, max_iter=150, learning_rate=0.05, l2_regularization=1.0).fit(
                np.array(X), np.array(y))
    rows = []
    for name, max_rescues, threshold, early in rules:
        found, free, nonface = [], [], []
        for (sh, ih), model in models.items():
            prob = {}

            def keep(c, model=model, prob=prob, threshold=threshold, early=early):
                if threshold is None:
                    return shipped_rule(c)
                if c["up"] < early:
                    return False
                if id(c) not in prob:
                    prob[id(c)] = model.predict_proba([features(c)])[0, 1]
                return prob[id(c)] >= threshold

            for i, rec in frames(sh, ih):
                if ih == 1 and (100 <= i < 130 or rec["kind"] == "free"):
                    continue  # astronaut and face-free frames once
                tally(rec["kind"], _kept(rec["cands"], keep, max_rescues), found, free, nonface)
        rows.append((name, float(np.mean(found)), len(found) - sum(found), len(found),
                     float(np.mean(free)), float(np.mean(nonface))))
    return rows


def main(argv=None) -> int:
    sys.path.insert(0, str(HERE))
    from tune_rescoring import _seeds, cached_records

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=_seeds, default="0-11", help="an even count (default 0-11)")
    ap.add_argument("--cache", help="directory for the per-seed records (re-used when there)")
    args = ap.parse_args(argv)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        ap.error("needs scikit-learn (a dev-only dependency): pip install scikit-learn")
    if len(args.seeds) < 2 or len(args.seeds) % 2:
        ap.error("--seeds: give an even number of seeds (two halves)")
    data = cached_records(args.seeds, args.cache, "verifier", record)
    half = len(args.seeds) // 2
    rules = [("hand-set rule (shipped)", 2, None, 0.0)] + [
        (f"learned, {mr} rescues, p >= {t}, upright view >= 0.5", mr, t, 0.5)
        for mr in (3, 4, 6) for t in (0.1, 0.2, 0.3)]
    rows = cross_fit(data, (args.seeds[:half], args.seeds[half:]), rules)
    print("| rule | recall | faces missed | face-free frames with a false face | non-face "
          "patches hit |\n|---|---|---|---|---|")
    for name, recall, missed, n, free, nonface in rows:
        print(f"| {name} | {recall:.3f} | {missed} of {n} | {100 * free:.2f} % | "
              f"{100 * nonface:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
