"""Accelerated soak of the streaming runtime: hours of simulated camera + microphone input pushed
into ``Recognizer`` as fast as it can process them.

    python benchmarks/soak.py --hours 2              # 2 h x 25 fps = 180 000 frames
    python benchmarks/soak.py --hours 2 --max-minutes 9   # stop early; reports what was simulated
    python benchmarks/soak.py --hours 2 --detect-every 4  # the tracking-assisted default cadence

Input: a periodic clip (``period`` frames of a real face photo moving on a 160x120 frame, and the
same duration of real espeak-ng speech at 16 kHz) repeated for the whole run. The video thread
pushes frames with t = i / fps; a second thread pushes 20 ms audio chunks on the same clock,
staying at most ``lead_s`` ahead of the video (a consumer that keeps up: no overrun may occur).

Checks (``run_soak`` returns them; ``tests/test_soak.py`` runs a short version):
  * predictions: every frame of every period after the first equals, to ``tol``, the
    *uninterrupted offline* computation of the first two periods (face crops -> encoder, whole
    WAV features on the frame times -> the window form over the whole 2-period sequence from zero
    history; ``tests/test_engine.offline_va``). Because the model's receptive field (121 frames)
    is shorter than the period, period k of the stream must equal period 1 of the offline run.
  * memory: resident set size at the end of the stream (before `close()`) vs after warm-up
    (``WARMUP_FRAMES``, or half of a short run) (growth must stay < 5 %); the size after
    `close()` is reported as well;
  * threads: ``threading.active_count()`` is back to its baseline after ``close()``;
  * audio: ``stats()["audio_overruns"] == 0`` and no filled gaps.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
for p in (str(ROOT), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

from affedge.sdk.engine import LATENCY_HISTORY  # noqa: E402  (after the sys.path set-up)

FPS = 25.0
SR = 16000
FRAME_SIZE = (160, 120)
FACE_SIZE = (80, 90)  # Haar finds the face on every frame at this size
# memory is compared from here on: the engine's bounded per-tick histories are full by then
WARMUP_FRAMES = LATENCY_HISTORY + 512


def rss_mb() -> float:
    """Resident set size of this process (MiB), from /proc (Linux)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def periodic_frames(period: int) -> list[np.ndarray]:
    """``period`` BGR frames: the face photo on a plain background, moving on a closed path."""
    import cv2
    import media

    face = cv2.resize(media.face_photo_bgr(), FACE_SIZE, interpolation=cv2.INTER_AREA)
    w, h = FRAME_SIZE
    fw, fh = FACE_SIZE
    out = []
    for i in range(period):
        a = 2 * np.pi * i / period
        x = int(round((w - fw) / 2 + ((w - fw) / 2 - 4) * np.sin(a)))
        y = int(round((h - fh) / 2 + ((h - fh) / 2 - 2) * np.cos(2 * a)))
        img = np.full((h, w, 3), (90, 110, 120), np.uint8)
        img[y:y + fh, x:x + fw] = face
        out.append(img)
    return out


def periodic_speech(period: int, workdir: Path) -> np.ndarray:
    """``period / FPS`` seconds of real speech (espeak-ng) at 16 kHz, float32."""
    import media

    n = int(round(period / FPS * SR))
    pcm, _ = media.speech_signal(workdir, silences=(0.3, 0.4, 0.3), total=max(6.0, n / SR))
    return np.ascontiguousarray(pcm[:n], np.float32)


def build_bundle(workdir: Path) -> Path:
    """The tiny random-weights mobile bundle the runtime tests use (exported once, reused)."""
    from test_engine import _build_bundle

    return _build_bundle(Path(workdir))


def offline_reference(bundle_path: Path, frames: list[np.ndarray], pcm: np.ndarray) -> np.ndarray:
    """V/A [P, 2] of the second period of an uninterrupted offline run over two periods."""
    from test_engine import offline_va

    from affedge.bundle import load_bundle
    from affedge.features.faces import FaceDetector, align_crop
    from affedge.sdk.backends import select_backend

    det = FaceDetector("haar")
    crops = []
    for f in frames:
        boxes = det.detect(f)
        if not boxes:
            raise RuntimeError("soak clip: the face was not detected on every frame")
        crops.append(align_crop(f, max(boxes, key=lambda b: b.area)))
    p = len(frames)
    bundle = load_bundle(bundle_path)
    backend = select_backend(bundle, "onnxruntime")
    times = np.arange(2 * p) / FPS
    ref = offline_va(bundle, backend, crops + crops, times, np.concatenate([pcm, pcm]))
    backend.close()
    return ref[p:]


def run_soak(bundle_path: Path, n_frames: int, period: int = 125, workdir: Path | None = None,
             lead_s: float = 0.3, chunk_ms: int = 20, max_seconds: float | None = None,
             tol: float = 1e-4, progress=None, detect_every: int = 1) -> dict:
    """Stream ``n_frames`` frames (+ audio) through one Recognizer; see the module docstring.

    ``detect_every=1``: the full-frame detector on every frame, and every frame after the first
    period is compared with the uninterrupted offline run. ``detect_every=K > 1`` (the runtime's
    tracking-assisted default is 4): region searches between full passes frame the face in a way
    the offline reference does not reproduce, so the check is steady state instead: the whole
    pipeline (detection cadence, tracker, audio, model) repeats with the lag
    ``lcm(period, K)``, and every frame from ``2 * lag + receptive_field`` on must equal the
    frame one lag earlier: no drift, no state that grows, for the whole run."""
    from affedge.sdk.recognizer import Recognizer

    workdir = Path(workdir or ROOT / ".soak")
    workdir.mkdir(parents=True, exist_ok=True)
    frames = periodic_frames(period)
    pcm = periodic_speech(period, workdir)
    samples_per_period = len(pcm)
    assert samples_per_period * FPS == period * SR, "period must be a whole number of samples"
    detect_every = int(detect_every)
    lag = math.lcm(period, detect_every)
    ref = offline_reference(bundle_path, frames, pcm) if detect_every == 1 else None

    gc.collect()
    threads_before = threading.active_count()
    # detect_every=1: the full-frame detector on every frame, like the offline reference
    # (tracking-assisted region search between full passes frames faces slightly differently)
    rec = Recognizer(bundle_path, backend="onnxruntime", detect_every=detect_every,
                     async_detect=False)
    receptive_field = int(rec.engine.receptive_field)
    chunk = SR * chunk_ms // 1000
    cond = threading.Condition()
    state = {"video_t": -1.0, "stop": False, "error": None, "audio_t": 0.0}

    def producer():
        n = 0
        try:
            while True:
                t = n / SR
                with cond:
                    while not state["stop"] and t > state["video_t"] + lead_s:
                        cond.wait(0.5)
                    if state["stop"]:
                        return
                k = n % samples_per_period
                piece = pcm[k:k + chunk]
                if piece.size < chunk:  # wrap around the loop point
                    piece = np.concatenate([piece, pcm[:chunk - piece.size]])
                rec.push_audio(piece, t=t, sample_rate=SR)
                n += chunk
                state["audio_t"] = n / SR
        except BaseException as exc:  # reported by the video loop
            state["error"] = exc

    va = np.full((n_frames, 2), np.nan, np.float32)
    face = np.zeros(n_frames, bool)
    audio = np.zeros(n_frames, bool)
    rss_samples: list[tuple[int, float]] = []
    # one row per sample point: (frame, simulated min, RSS MiB, fps, tick p50 ms, tick p99 ms,
    # live threads) over the frames since the previous sample point
    timeline: list[tuple] = []
    window_lat: list[float] = []
    window_t0 = time.perf_counter()
    warm_frame = min(n_frames - 1, 2 * period)  # the first memory sample
    # the memory reference: after the bounded per-tick histories have filled, or half-way
    # through a short run
    warm_ref = min(max(2 * period, WARMUP_FRAMES), n_frames // 2)
    th = threading.Thread(target=producer, name="soak-audio", daemon=True)
    th.start()
    wall0 = time.perf_counter()
    done = 0
    try:
        for i in range(n_frames):
            t = i / FPS
            with cond:
                state["video_t"] = t
                cond.notify_all()
            # the frame may only be inferred once its audio is in (a consumer that keeps up)
            while state["audio_t"] < min(t + 0.05, t + lead_s) and state["error"] is None \
                    and th.is_alive():
                time.sleep(0.0005)
            if state["error"] is not None:
                raise RuntimeError(f"audio producer failed: {state['error']}") from state["error"]
            p = rec.push_frame(frames[i % period], t=t)
            va[i] = (p.valence, p.arousal)
            face[i], audio[i] = p.face_present, p.audio_present
            window_lat.append(p.latency_ms)
            done = i + 1
            if i == warm_frame or (i > warm_frame and i % max(period, n_frames // 200) == 0):
                rss_samples.append((i, rss_mb()))
                now = time.perf_counter()
                lat = np.asarray(window_lat)
                timeline.append((i, t / 60.0, rss_samples[-1][1], len(lat) / (now - window_t0),
                                 float(np.percentile(lat, 50)), float(np.percentile(lat, 99)),
                                 threading.active_count()))
                window_lat, window_t0 = [], now
            if progress and i and i % 5000 == 0:
                progress(i, time.perf_counter() - wall0, rss_samples[-1][1] if rss_samples else 0)
            if max_seconds is not None and time.perf_counter() - wall0 > max_seconds:
                break
    finally:
        with cond:
            state["stop"] = True
            cond.notify_all()
        th.join(10)
        stats = rec.stats()
        rss_samples.append((done, rss_mb()))  # the end of the stream, still open
        rec.close()
    wall = time.perf_counter() - wall0
    rss_closed = rss_mb()
    rec = None  # drop the last reference before counting threads
    gc.collect()
    deadline = time.monotonic() + 10
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.05)
    threads_after = threading.active_count()

    va = va[:done]
    if ref is not None:
        checked = va[period:]  # every period after the first vs period 1 of the offline run
        idx = np.arange(period, done) % period
        diff = np.abs(checked - ref[idx]) if len(checked) else np.zeros((0, 2))
    else:  # steady state: frame i equals frame i - lag once the tracker has settled (one lag
        # after the first) and the model's receptive field lies wholly in the settled part
        start = min(done, 2 * lag + receptive_field)
        checked = va[start:]
        diff = np.abs(checked - va[start - lag:done - lag]) if len(checked) else np.zeros((0, 2))
    warm_rss = next((r for i, r in rss_samples if i >= warm_ref), rss_samples[0][1])
    end_rss = rss_samples[-1][1]
    return {
        "frames": done,
        "requested_frames": n_frames,
        "simulated_seconds": done / FPS,
        "wall_seconds": wall,
        "frames_per_second": done / wall if wall > 0 else float("nan"),
        "period_frames": period,
        "detect_every": detect_every,
        "reference": "offline run" if ref is not None else f"the same stream {lag} frames earlier",
        "frames_checked": int(len(checked)),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "predictions_match": bool(diff.size == 0 or diff.max() <= tol),
        "face_present_frac": float(face[:done].mean()) if done else 0.0,
        "audio_present_after_first_frame": bool(audio[1:done].all()) if done > 1 else True,
        "rss_warm_mb": warm_rss,
        "rss_end_mb": end_rss,
        "rss_after_close_mb": rss_closed,
        "rss_max_mb": max(r for _, r in rss_samples),
        "rss_growth": (end_rss - warm_rss) / warm_rss,
        "rss_samples": rss_samples,
        "timeline": timeline,
        "threads_before": threads_before,
        "threads_after": threads_after,
        "audio_overruns": int(stats["audio_overruns"]),
        "audio_gaps_filled": int(stats["audio_gaps_filled"]),
        "latency_ms_p50": stats["latency_ms_p50"],
        "latency_ms_p99": stats["latency_ms_p99"],
        "backend": stats["backend"],
    }


def plot_timeline(res: dict, path) -> np.ndarray:
    """One PNG, three panels over simulated time: RSS (MiB), tick latency p50/p99 (ms) and
    throughput (frames/s) per sample window. Returns the image."""
    import cv2

    from affedge.plotting import plot_curves

    tl = np.asarray(res["timeline"], np.float64)
    if tl.ndim != 2 or len(tl) < 2:
        raise ValueError("soak plot: the run has fewer than two sample points")
    x = tl[:, 1]
    hours = res["simulated_seconds"] / 3600
    growth = 100 * res["rss_growth"]
    panels = [
        plot_curves(None, x, {"RSS (MiB)": tl[:, 2]}, xlabel="", ylabel="MiB",
                    title=f"soak: {hours:.2f} h simulated, {res['frames']:,} frames, "
                          f"RSS growth {growth:+.2f} %", size=(900, 300)),
        plot_curves(None, x, {"tick p50 (ms)": tl[:, 4], "tick p99 (ms)": tl[:, 5]},
                    xlabel="", ylabel="ms", size=(900, 300)),
        plot_curves(None, x, {"frames / s": tl[:, 3]}, xlabel="simulated minutes",
                    ylabel="fps", size=(900, 300)),
    ]
    img = np.vstack([f.image for f in panels])
    if not cv2.imwrite(str(path), img):
        raise OSError(f"soak plot: could not write {path}")
    return img


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=2.0, help="simulated stream length")
    ap.add_argument("--period", type=int, default=250, help="frames per repeated clip")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop after this wall time (the report says what was simulated)")
    ap.add_argument("--workdir", default=str(ROOT / ".soak"))
    ap.add_argument("--json", default=None, help="write the result here")
    ap.add_argument("--threads", type=int, default=1, help="torch/ORT threads hint")
    ap.add_argument("--detect-every", type=int, default=1,
                    help="1: full-frame detection every frame, checked against the offline run; "
                         "K > 1: the tracking-assisted cadence, checked for steady state")
    ap.add_argument("--plot", default=None,
                    help="write a PNG of RSS, tick latency and throughput over the run")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(work)
    n = int(round(args.hours * 3600 * FPS))

    def progress(i, wall, rss):
        print(f"  {i:7d} frames  {i / FPS / 60:6.1f} simulated min  {wall:7.1f} s wall  "
              f"{i / wall:6.1f} fps  rss {rss:.1f} MiB", flush=True)

    res = run_soak(bundle, n, period=args.period, workdir=work,
                   max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
                   progress=progress, detect_every=args.detect_every)
    short = {k: v for k, v in res.items() if k not in ("rss_samples", "timeline")}
    print(json.dumps(short, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    if args.plot:
        plot_timeline(res, args.plot)
        print("plot:", args.plot)
    ok = (res["predictions_match"] and res["rss_growth"] < 0.05 and res["audio_overruns"] == 0
          and res["threads_after"] == res["threads_before"])
    print("SOAK", "PASS" if ok else "FAIL",
          f"({res['simulated_seconds'] / 3600:.2f} h simulated of {args.hours:g} h requested)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
