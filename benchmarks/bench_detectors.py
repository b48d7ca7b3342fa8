"""Face detectors on real faces: recall, false positives, keypoint alignment error, full-frame cost.

Real faces from photos that ship in scikit-image: ``lfw_subset()``'s 100 faces (25x25 LFW
crops) and the astronaut's head (``astronaut()``), pasted into 640x480 frames at 40-300 px
(log-uniform; the astronaut's face up to 200 px so that her head fits) with in-plane rotations
up to +-45 degrees, over skimage's face-free photos (coffee, rocket, brick, ...) and noise.

* recall: a face counts as found when a detection's centre lies within 0.35 x its size of the
  pasted face's centre and the detection's side is 0.4-1.6 x its size;
* false positives: ``lfw_subset``'s 100 non-face patches pasted the same way (a detection
  overlapping the patch = a false positive), face-free frames (any detection = a false
  positive), and any other detection in the face frames;
* alignment (detectors with keypoints): the astronaut's eye centres (found once by OpenCV's eye
  cascade on the original photo) carried through the paste, then through the ``landmarks5-v1``
  transform: their distance to the template eye points in the 112x112 crop, median and p90;
* moving-photo clip: the astronaut photo gliding over a grey canvas through the engine's face
  path (tracking-assisted detection every 4 frames, select_detections, tracker,
  choose_primary): track ids, frames with a phantom second face, primary switches;
* cost: ``detect()`` on each 640x480 frame, detectors interleaved frame by frame in rotating
  order (same frames, same load): wall time p50/p99 in ms and the ratio of medians to Haar's,
  and the CPU time the call used (``time.process_time``: every thread of this process, which
  runs nothing else meanwhile) with its ratio of medians. The two differ because OpenCV runs
  Haar's scales on all cores (``cv2.getNumThreads()``, printed) while the CNN detectors run
  their model on one thread: on a CPU-bound pipeline (2 cores shared by detection, the model
  and decoding) the CPU time is what detection costs the rest, the wall time is its latency.

Run (under 3 minutes on a shared 2-core machine):

    .venv/bin/python benchmarks/bench_detectors.py [--faces 100] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import cv2
import numpy as np

W, H = 640, 480
#: skimage photos that ship in its wheel and show no face (``coins`` is left out: its Greek
#: coins carry portrait heads, which BlazeFace rightly reports)
BACKGROUNDS = ("coffee", "chelsea", "rocket", "brick", "horse", "moon", "grass", "gravel",
               "hubble_deep_field", "immunohistochemistry", "clock", "page", "text",
               "colorwheel", "retina", "cell")
#: the astronaut's face box and eye centres in skimage's 512x512 photo (BlazeFace box; eyes by
#: OpenCV's haarcascade_eye, see tests/test_blazeface.py)
ASTRONAUT_HEAD = (119, 14, 214)  # x, y, side of the square pasted (her face is ~107 px in it)
ASTRONAUT_EYES = ((202.0, 100.0), (246.5, 103.5))


def _bgr(img) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR)


def backgrounds(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """``n`` face-free 640x480 frames: random crops/rescales of skimage photos, and noise."""
    from skimage import data

    photos = [_bgr(getattr(data, name)()) for name in BACKGROUNDS]
    out = []
    for i in range(n):
        if i % 6 == 5:  # noise frames: white and smoothed
            f = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            if i % 12 == 11:
                f = cv2.GaussianBlur(f, (0, 0), 4.0)
            out.append(f)
            continue
        p = photos[int(rng.integers(len(photos)))]
        s = max(W / p.shape[1], H / p.shape[0]) * rng.uniform(1.0, 1.6)
        big = cv2.resize(p, (math.ceil(p.shape[1] * s), math.ceil(p.shape[0] * s)),
                         interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        y = int(rng.integers(0, big.shape[0] - H + 1))
        x = int(rng.integers(0, big.shape[1] - W + 1))
        out.append(np.ascontiguousarray(big[y:y + H, x:x + W]))
    return out


def paste(frame: np.ndarray, patch: np.ndarray, side: float, angle: float,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``patch`` scaled to ``side`` px, rotated by ``angle`` degrees, pasted at a random place
    fully inside ``frame``. Returns (frame, 2x3 patch->frame transform)."""
    ph = patch.shape[0]
    s = side / ph
    half = side * (abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle)))) / 2
    half = min(half, H / 2.0)  # (a large rotated head may lose its corners, never the face)
    cx = rng.uniform(half, W - half)
    cy = rng.uniform(half, H - half)
    M = cv2.getRotationMatrix2D((ph / 2.0, ph / 2.0), angle, s)
    M[:, 2] += (cx - ph / 2.0, cy - ph / 2.0)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    warped = cv2.warpAffine(patch, M, (W, H), flags=interp)
    mask = cv2.warpAffine(np.full(patch.shape[:2], 255, np.uint8), M, (W, H), flags=interp)
    a = (mask.astype(np.float32) / 255.0)[..., None]
    out = (warped.astype(np.float32) * a + frame.astype(np.float32) * (1 - a))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), M


def make_samples(seed: int = 0, n_faces: int = 100, n_astronaut: int = 30, n_nonfaces: int = 100,
                 n_free: int = 200) -> list[dict]:
    """The benchmark frames with their ground truth (deterministic for a seed)."""
    from skimage import data

    rng = np.random.default_rng(seed)
    lfw = data.lfw_subset()
    faces = [_bgr(f) for f in lfw[:100]]
    nonfaces = [_bgr(f) for f in lfw[100:]]
    x, y, s = ASTRONAUT_HEAD
    head = _bgr(data.astronaut())[y:y + s, x:x + s]
    eyes = np.array(ASTRONAUT_EYES) - (x, y)
    bgs = backgrounds(rng, n_faces + n_astronaut + n_nonfaces + n_free)
    samples = []
    k = 0

    def size():
        return float(np.exp(rng.uniform(np.log(40), np.log(300))))

    for i in range(n_faces):
        side, ang = size(), float(rng.uniform(-45, 45))
        f, M = paste(bgs[k], faces[i % 100], side, ang, rng)
        k += 1
        c = M @ (12.5, 12.5, 1.0)
        samples.append({"kind": "face", "src": f"lfw{i % 100}", "frame": f, "centre": c,
                        "size": side, "angle": ang})
    for _ in range(n_astronaut):
        side = float(np.exp(rng.uniform(np.log(40), np.log(200))))
        ang = float(rng.uniform(-45, 45))
        f, M = paste(bgs[k], head, 2.0 * side, ang, rng)  # her face is half the head patch
        k += 1
        c = M @ (s / 2.0, s / 2.0, 1.0)
        e = np.hstack([eyes, np.ones((2, 1))]) @ M.T
        samples.append({"kind": "face", "src": "astronaut", "frame": f, "centre": c,
                        "size": side, "angle": ang, "eyes": e})
    for i in range(n_nonfaces):
        side, ang = size(), float(rng.uniform(-45, 45))
        f, M = paste(bgs[k], nonfaces[i % 100], side, ang, rng)
        k += 1
        samples.append({"kind": "nonface", "frame": f, "centre": M @ (12.5, 12.5, 1.0),
                        "size": side})
    for _ in range(n_free):
        samples.append({"kind": "free", "frame": bgs[k]})
        k += 1
    return samples


def _hit(b, centre, size) -> bool:
    cx, cy = b.center
    side = max(b.w, b.h)
    return math.hypot(cx - centre[0], cy - centre[1]) <= 0.35 * size and \
        0.4 * size <= side <= 1.6 * size


def evaluate(detectors: dict, samples: list[dict]) -> dict:
    """Run every detector on every frame (interleaved, rotating order); return per-detector
    recall, false-positive rates, alignment error and timing."""
    from affedge.features.crops import TEMPLATE4_112, landmark_transform

    names = list(detectors)
    res = {n: {"times": [], "cpu": [], "found": [], "found_by_angle": [], "nonface_fp": 0, "free_fp": 0,
               "extra_in_face_frames": 0, "eye_err": [], "missed": []} for n in names}
    for i, smp in enumerate(samples):
        order = names[i % len(names):] + names[:i % len(names)]
        for n in order:
            c0, t0 = time.process_time(), time.perf_counter()
            boxes = detectors[n].detect(smp["frame"])
            res[n]["times"].append(time.perf_counter() - t0)
            res[n]["cpu"].append(time.process_time() - c0)
            r = res[n]
            if smp["kind"] == "face":
                hits = [b for b in boxes if _hit(b, smp["centre"], smp["size"])]
                r["found"].append(bool(hits))
                r["found_by_angle"].append((abs(smp["angle"]), bool(hits)))
                if not hits:
                    r["missed"].append((smp["src"], round(smp["size"]), round(smp["angle"])))
                r["extra_in_face_frames"] += len(boxes) - min(len(hits), 1)
                if hits and "eyes" in smp and hits[0].keypoints is not None:
                    M = landmark_transform(hits[0])
                    e = np.hstack([smp["eyes"], np.ones((2, 1))]) @ M.T
                    r["eye_err"].extend(np.hypot(*(e - TEMPLATE4_112[:2]).T).tolist())
            elif smp["kind"] == "nonface":
                c, s = smp["centre"], smp["size"]
                r["nonface_fp"] += any(
                    abs(b.center[0] - c[0]) < s and abs(b.center[1] - c[1]) < s for b in boxes)
            else:
                r["free_fp"] += bool(boxes)
    n_face = sum(s["kind"] == "face" for s in samples)
    n_non = sum(s["kind"] == "nonface" for s in samples)
    n_free = sum(s["kind"] == "free" for s in samples)
    out = {}
    haar_p50 = haar_cpu_p50 = None
    for n in names:
        r = res[n]
        t = np.array(r["times"]) * 1000
        cpu = np.array(r["cpu"]) * 1000
        small = [f for f, s in zip(r["found"], [s for s in samples if s["kind"] == "face"])
                 if s["size"] < 60]
        upright = [f for a, f in r["found_by_angle"] if a <= 15]
        srcs = [s["src"] for s in samples if s["kind"] == "face"]
        ast = [f for f, src in zip(r["found"], srcs) if src == "astronaut"]
        lfw = [f for f, src in zip(r["found"], srcs) if src != "astronaut"]
        out[n] = {
            "recall": float(np.mean(r["found"])) if r["found"] else None,
            "recall_upright_le15deg": float(np.mean(upright)) if upright else None,
            "recall_lfw": float(np.mean(lfw)) if lfw else None,
            "recall_astronaut": float(np.mean(ast)) if ast else None,
            "recall_faces_under_60px": float(np.mean(small)) if small else None,
            "fp_nonface_patches": r["nonface_fp"] / max(n_non, 1),
            "fp_face_free_frames": r["free_fp"] / max(n_free, 1),
            "extra_boxes_per_face_frame": r["extra_in_face_frames"] / max(n_face, 1),
            "eye_err_px_median": float(np.median(r["eye_err"])) if r["eye_err"] else None,
            "eye_err_px_p90": float(np.percentile(r["eye_err"], 90)) if r["eye_err"] else None,
            "ms_p50": float(np.percentile(t, 50)),
            "ms_p99": float(np.percentile(t, 99)),
            "cpu_ms_p50": float(np.percentile(cpu, 50)),
            "cpu_ms_p99": float(np.percentile(cpu, 99)),
            "missed": r["missed"][:12],
            "missed_count": len(r["missed"]),
        }
        if n == "haar":
            haar_p50, haar_cpu_p50 = out[n]["ms_p50"], out[n]["cpu_ms_p50"]
    for n in names:
        out[n]["cost_vs_haar_p50"] = out[n]["ms_p50"] / haar_p50 if haar_p50 else None
        out[n]["cpu_cost_vs_haar_p50"] = out[n]["cpu_ms_p50"] / haar_cpu_p50 \
            if haar_p50 else None
    out["_counts"] = {"faces": n_face, "nonface_patches": n_non, "face_free_frames": n_free}
    return out


def moving_photo_clip(n_frames: int = 240, scale: float = 0.6) -> list[np.ndarray]:
    """The astronaut photo (scaled) gliding over a plain grey 640x480 canvas on a Lissajous
    path, as in issue 12's report."""
    from skimage import data

    photo = _bgr(data.astronaut())
    ph = int(round(512 * scale))
    photo = cv2.resize(photo, (ph, ph), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n_frames):
        t = i / 30.0
        x = int(round((W - ph) / 2 + (W - ph) / 2 * math.sin(0.7 * t)))
        y = int(round((H - ph) / 2 + (H - ph) / 2 * math.sin(1.1 * t + 0.5)))
        f = np.full((H, W, 3), 128, np.uint8)
        f[y:y + ph, x:x + ph] = photo
        frames.append(f)
    return frames


def track_clip(detector, frames, detect_every: int = 4, max_faces: int = 4) -> dict:
    """The engine's face path on ``frames`` (TrackAssistedDetector -> select_detections ->
    IouTracker -> choose_primary): track ids seen, frames with more than one confirmed face,
    primary switches, and frames without a face."""
    from affedge.sdk.tracking import (
        IouTracker,
        TrackAssistedDetector,
        choose_primary,
        select_detections,
    )

    search = TrackAssistedDetector(detector, detect_every)
    tracker = IouTracker(max_tracks=max_faces)
    ids, primaries = set(), []
    multi = empty = 0
    prim = None
    for f in frames:
        dets = select_detections(search.detect(f, tracker.tracks), tracker.tracks, max_faces)
        tracks = tracker.update(dets)
        confirmed = [t for t in tracks if t.confirmed]
        ids.update(t.id for t in confirmed)
        multi += len(confirmed) > 1
        p = choose_primary(confirmed, f.shape, prim)
        prim = p.id if p else None
        primaries.append(prim)
        empty += not any(t.detected for t in tracks)
    switches = sum(a != b for a, b in zip(primaries, primaries[1:]))
    return {"frames": len(frames), "track_ids": len(ids), "frames_with_2plus_faces": multi,
            "primary_switches": switches, "frames_without_detection": empty}


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_1m": os.getloadavg()[0],
            "opencv_threads": cv2.getNumThreads()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=100, help="LFW face frames (default 100)")
    ap.add_argument("--astronaut", type=int, default=30, help="astronaut frames (default 30)")
    ap.add_argument("--nonfaces", type=int, default=100, help="non-face patch frames (100)")
    ap.add_argument("--free", type=int, default=200, help="face-free frames (default 200)")
    ap.add_argument("--detectors", default="haar,blazeface,blazeface-short,"
                    "blazeface-short@openvino",
                    help="registry names; NAME@openvino runs that detector's model on "
                         "OpenVINO instead of the default ONNX Runtime; NAME*2 on 2 intra-op "
                         "threads instead of 1 (Haar runs on OpenCV's default threads)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clip", type=int, default=240,
                    help="frames of the moving-photo clip (0: skip; default 240)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    for name in ("faces", "astronaut", "nonfaces", "free", "clip"):
        if getattr(args, name) < 0:
            ap.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    from affedge.features.detectors import make_detector

    from affedge.features.detectors.model_runner import openvino_available

    dets = {}
    for n in args.detectors.split(","):
        spec, _, threads = n.partition("*")
        name, _, runtime = spec.partition("@")
        if runtime and runtime == "openvino" and not openvino_available():
            print(f"skipped {n}: openvino is not installed")
            continue
        dets[n] = make_detector(name, **({"runtime": runtime} if runtime else {}),
                                **({"threads": int(threads)} if threads else {}))
    samples = make_samples(args.seed, args.faces, args.astronaut, args.nonfaces, args.free)
    for d in dets.values():  # warm-up (sessions, caches)
        d.detect(samples[0]["frame"])
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = evaluate(dets, samples)
    res["_machine"] = {**machine(), "load_1m_before": load0,
                       "seconds": time.perf_counter() - t0}
    cols = ["recall", "recall_upright_le15deg", "recall_lfw", "recall_astronaut",
            "recall_faces_under_60px", "fp_nonface_patches",
            "fp_face_free_frames", "extra_boxes_per_face_frame", "eye_err_px_median",
            "eye_err_px_p90", "ms_p50", "ms_p99", "cost_vs_haar_p50", "cpu_ms_p50",
            "cpu_ms_p99", "cpu_cost_vs_haar_p50"]
    print(f"{'':28s}" + "".join(f"{n:>17s}" for n in dets))
    for c in cols:
        vals = [res[n][c] for n in dets]
        print(f"{c:28s}" + "".join(f"{'-' if v is None else f'{v:.3f}':>17s}" for v in vals))
    for n in dets:
        more = res[n]["missed_count"] - len(res[n]["missed"])
        print(f"{n} missed (src, size, angle): {res[n]['missed']}"
              + (f" and {more} more" if more > 0 else ""))
    if args.clip > 0:
        clip = moving_photo_clip(args.clip)
        res["_clip"] = {n: track_clip(d, clip) for n, d in dets.items()}
        for n in dets:
            print(f"moving-photo clip, {n}: {json.dumps(res['_clip'][n])}")
    print(json.dumps({"counts": res["_counts"], "machine": res["_machine"]}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
