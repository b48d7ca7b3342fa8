"""Synthetic audio-visual valence/arousal data written in the Aff-Wild2 VA layout.

``generate(out_dir, n_videos, seed)`` (CLI: ``affedge synth OUT --videos N``) renders talking
faces whose expression and voice follow ground-truth valence/arousal trajectories, so the whole
pipeline (reader, training, export, runtime demo) can be exercised without the licensed data.

Layout (identical to Aff-Wild2's VA track, see ``affwild2.py``)::

    OUT/raw_videos/<name>.mp4              320x240 H.264 scene video + AAC audio track, 16 kHz mono
                                           (written with PyAV; no ffmpeg binary needed)
    OUT/cropped_aligned/<name>/00001.jpg   112x112 face crops, 1-based 5-digit frame numbers;
                                           frames without a crop are simply missing
    OUT/annotations/VA_Set/Train_Set/<name>.txt        "valence,arousal" + one row per frame,
    OUT/annotations/VA_Set/Validation_Set/<name>.txt   -5,-5 on invalid (unannotated) frames
    OUT/synthetic.json                     generator version, seed, per-video parameters and
                                           stretches (occlusion, out of view, invalid labels)
    OUT/ground_truth/<name>.npz            per-frame truth: valence, arousal (unmasked), face
                                           centre/angle/scale, talk, detected, crop_written, and
                                           the clean 16 kHz pcm (not part of Aff-Wild2)

Names are ``synth_<identity:05d>``; identity = ``identity_offset + video index``, and every
identity parameter is derived from the identity index alone, so two calls with disjoint identity
ranges (``--identity-offset``) never share a person: use that for a held-out test set.
About ``val_fraction`` of the videos (at least one when n >= 2) go to Validation_Set.

How the cues follow the labels (learnable, not trivial)
------------------------------------------------------
Labels V(t), A(t) in [-1, 1]: per video a sum of three slow sinusoids (periods 6-60 s) plus an
Ornstein-Uhlenbeck process (time constant 1-6 s, low-passed at 0.4 s), standardised, shifted by
a per-video offset and squashed with tanh, so videos cover the range with different means and
dynamics.

Video (per frame; the face is a procedurally drawn head, one identity per video):
* valence -> mouth-corner curvature (smile/frown) and eyebrow slant (inner ends down when
  negative);
* arousal -> eye openness, eyebrow height, baseline mouth opening and head-motion energy;
* speech -> mouth opening follows the audio syllable envelope (mouth moves when it talks);
* nuisance: identity-dependent face shape, skin tone (very dark to very light), hair, eye
  spacing, neutral mouth/brow offsets; pose jitter (in-plane rotation within +-4 degrees, which
  the frontal Haar cascade tolerates; translation; scale); lighting
  gradient and brightness flicker; textured cluttered background; sensor noise; occasional blur;
  H.264 and JPEG compression.
* occlusion (``occlusion`` = target fraction of frames): long stretches (4-10 s, longer than the
  model's 121-frame receptive field) in which a hand, a board or a cloth covers eyes and mouth.
  The Haar detector usually fails then, and such frames get no crop (the reader gives the model
  the black filler, PAPER.md §1.3), which is exactly what the runtime does when its detector
  misses; when the detector does find the occluded face, its crop carries no expression
  information, just like real occlusions in Aff-Wild2.
* out of view: a few short stretches (about 1-2 s) where the head slides out of the frame;
  frames where the detector finds no face (or only a box far from the real face) have no crop.
Crops are produced exactly as at run time: the front end's detector (default ``haar``) on the
rendered frame (searched inside a region around the drawn head to keep generation fast; the box
is in frame coordinates) and ``crop_face`` with the front end's crop recipe (default ``box-v1``;
``synthetic.json`` records the front end, see :mod:`affedge.features.frontend`). No ground-truth-box fallback is used. Measured: the detector
finds the face in >99 % of visible frames (generator, and the full-frame runtime detector on
the decoded mp4; 12 unseen identities x 8 s). Speed: ~240 frames per CPU-second on one core
(measured on a heavily shared 2-core machine); the Haar detector is about half of it.

Audio (16 kHz, speech-like): phrases of 3-9 vowel-like syllables separated by pauses; each
syllable is a harmonic (glottal-pulse-like) source shaped by the formants of one of five vowels,
with a short noise burst as consonant onset.
* F0 = f0_identity * (1 + 0.22*A + 0.08*V) with phrase declination and per-syllable jitter;
* syllable rate 2.5-5.5 per second and loudness (+12 dB range) rise with arousal; pauses shrink
  with arousal;
* brightness rises with valence (the spectral tilt falls): harmonic k has amplitude
  ~ k^-(1.3 - 0.5*V) before the formant filter;
* background noise (pink-ish, per-video SNR 12-30 dB) is always present.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from affedge.features.crops import crop_face
from affedge.features.detectors import Detector, make_detector
from affedge.features.frontend import frontend_record
from affedge.training.data.synthetic_render import (  # the drawing
    FRAME_H,
    FRAME_W,
    FaceRenderer,
    composite,
    draw_occluder,
    make_background,
    pose_matrix,
)

__all__ = ["GENERATOR_VERSION", "Identity", "generate", "make_identity", "render_video"]

GENERATOR_VERSION = 1
SAMPLE_RATE = 16000
CROP_SIZE = 112  # Aff-Wild2 cropped-aligned size

VOWELS = {  # (F1, F2, F3) Hz and mouth openness; textbook adult formant averages
    "a": ((730, 1090, 2440), 1.0),
    "e": ((530, 1840, 2480), 0.7),
    "i": ((270, 2290, 3010), 0.35),
    "o": ((570, 840, 2410), 0.75),
    "u": ((300, 870, 2240), 0.4),
}


# ----------------------------------------------------------------------------- identities
@dataclass(frozen=True)
class Identity:
    """A synthetic person; every field is derived from the identity index."""

    index: int
    skin_bgr: tuple[float, float, float]
    hair_bgr: tuple[float, float, float]
    iris_bgr: tuple[float, float, float]
    lip_bgr: tuple[float, float, float]
    face_ax: float  # half-width of the face oval (canvas px)
    face_ay: float  # half-height
    eye_dx: float  # half distance between the eyes
    eye_w: float
    hair_style: int  # 0 short, 1 long, 3 fringe (bald heads defeat the Haar cascade too often)
    neutral_smile: float  # identity-dependent neutral mouth curvature
    neutral_brow: float
    f0: float  # base pitch Hz
    rate: float  # speaking-rate factor
    loudness_db: float

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


#: present while ``generate`` writes a data set, removed when it is complete
INCOMPLETE_MARK = ".synth-incomplete"


def _skin(t: float, warm: float) -> tuple[float, float, float]:
    """Skin colour for lightness t in [0,1] (0 very dark, 1 very light); BGR."""
    dark = np.array([38.0, 55.0, 92.0])  # deep brown
    mid = np.array([95.0, 135.0, 190.0])
    light = np.array([185.0, 210.0, 245.0])
    c = dark + (mid - dark) * min(t, 0.5) * 2 if t < 0.5 else mid + (light - mid) * (t - 0.5) * 2
    c = c + np.array([-12.0, 0.0, 10.0]) * warm
    return tuple(float(v) for v in np.clip(c, 0, 255))


def make_identity(index: int) -> Identity:
    """Identity parameters from the index alone (no global seed), so identities never clash."""
    r = np.random.default_rng(np.random.SeedSequence([0x5EED, int(index)]))
    hair = [(25, 25, 30), (20, 40, 70), (40, 80, 130), (90, 140, 190), (160, 160, 165),
            (12, 12, 12)]
    irises = [(60, 40, 30), (30, 60, 90), (90, 80, 40), (40, 40, 40)]
    skin = _skin(float(r.uniform(0, 1)), float(r.uniform(-1, 1)))
    lip = tuple(float(v) for v in np.array(skin) * np.array([0.62, 0.55, 0.78]))
    hair_bgr = np.array(hair[int(r.integers(len(hair)))], float)
    # hair clearly darker than the skin: the Haar cascade misses light hair on dark skin
    # most of the time, so such hair is darkened
    limit = max(np.mean(skin) - 50.0, 12.0)
    if hair_bgr.mean() > limit:
        hair_bgr = hair_bgr * (limit / hair_bgr.mean())
    return Identity(
        index=int(index),
        skin_bgr=skin,
        hair_bgr=tuple(float(v) for v in hair_bgr),
        iris_bgr=tuple(float(v) for v in irises[int(r.integers(len(irises)))]),
        lip_bgr=lip,
        face_ax=float(r.uniform(45, 52)),
        face_ay=float(r.uniform(58, 65)),
        eye_dx=float(r.uniform(16, 20)),
        eye_w=float(r.uniform(9.5, 12.0)),
        hair_style=int(r.choice([0, 1, 3], p=[0.4, 0.35, 0.25])),
        neutral_smile=float(r.uniform(-0.25, 0.25)),
        neutral_brow=float(r.uniform(-1.5, 1.5)),
        f0=float(r.uniform(95, 230)),
        rate=float(r.uniform(0.85, 1.15)),
        loudness_db=float(r.uniform(-4, 2)),
    )


# ----------------------------------------------------------------------------- trajectories
def ou_process(rng: np.random.Generator, n: int, dt: float, tau: float) -> np.ndarray:
    """Unit-variance Ornstein-Uhlenbeck samples with time constant ``tau`` seconds."""
    a = math.exp(-dt / tau)
    b = math.sqrt(1.0 - a * a)
    e = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = a * x[i - 1] + b * e[i]
    return x


def va_trajectory(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Smooth bounded trajectory in (-1, 1): slow sinusoids + OU, standardised, offset, tanh."""
    t = np.arange(n) / fps
    z = np.zeros(n)
    for _ in range(3):
        period = rng.uniform(6.0, 60.0)
        z += rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    ou = ou_process(rng, n, 1.0 / fps, rng.uniform(1.0, 6.0))
    # smooth the OU path (one-pole low-pass, 0.4 s) so labels change smoothly like annotations
    k = 1.0 - math.exp(-1.0 / (0.4 * fps))
    for i in range(1, n):
        ou[i] = ou[i - 1] + k * (ou[i] - ou[i - 1])
    ou /= ou.std() + 1e-9
    z += rng.uniform(0.4, 1.0) * ou
    z = (z - z.mean()) / (z.std() + 1e-9)
    return np.tanh(rng.uniform(0.8, 1.3) * z + rng.uniform(-0.6, 0.6))


def _stretches(rng: np.random.Generator, n: int, count: int, lo: int, hi: int,
               avoid: list[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """Up to ``count`` non-overlapping [start, end) stretches of length in [lo, hi]."""
    out: list[tuple[int, int]] = []
    taken = list(avoid)
    for _ in range(count * 20):
        if len(out) >= count or n <= lo + 2:
            break
        length = int(rng.integers(lo, min(hi, n - 2) + 1))
        s = int(rng.integers(1, n - length))
        e = s + length
        if all(e + 5 <= a or s >= b + 5 for a, b in taken):
            out.append((s, e))
            taken.append((s, e))
    return sorted(out)


def occlusion_stretches(rng: np.random.Generator, n: int, fps: float, fraction: float,
                        ) -> list[tuple[int, int]]:
    """Long stretches (4-10 s) covering about ``fraction`` of the frames."""
    if fraction <= 0:
        return []
    target = int(round(fraction * n))
    lo, hi = int(4 * fps), int(10 * fps)
    if target < lo:  # short video: one stretch of the target length
        lo = hi = max(target, 1)
    out: list[tuple[int, int]] = []
    covered = 0
    for _ in range(200):
        if covered >= target - lo // 2:
            break
        length = int(min(rng.integers(lo, hi + 1), target - covered + lo // 2, n))
        length = max(length, min(lo, n))
        s = int(rng.integers(0, max(n - length, 0) + 1))
        e = s + length
        if all(e <= a or s >= b for a, b in out):
            out.append((s, e))
            covered += length
    return sorted(out)


# ----------------------------------------------------------------------------- audio
def _formant_gain(freqs: np.ndarray, formants) -> np.ndarray:
    g = np.full_like(freqs, 0.02)
    for f, bw, w in zip(formants, (90.0, 110.0, 150.0), (1.0, 0.55, 0.3)):
        g += w / np.sqrt(1.0 + ((freqs - f) / (bw / 2.0)) ** 2)
    return g


def synth_speech(rng: np.random.Generator, ident: Identity, valence: np.ndarray,
                 arousal: np.ndarray, fps: float, seconds: float, snr_db: float,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like track (see module doc). Returns (pcm float32 [n], mouth float32 [n]) where
    ``mouth`` is the per-sample mouth opening implied by the syllables (0 in pauses)."""
    sr = SAMPLE_RATE
    n = int(round(seconds * sr))
    pcm = np.zeros(n, np.float32)
    mouth = np.zeros(n, np.float32)

    def va_at(t: float) -> tuple[float, float]:
        i = min(int(t * fps), len(valence) - 1)
        return float(valence[i]), float(arousal[i])

    vowels = list(VOWELS.values())
    t = float(rng.uniform(0.1, 0.8))
    while t < seconds - 0.2:
        v, a = va_at(t)
        a01 = (a + 1.0) / 2.0
        n_syl = int(rng.integers(3, 10))
        f0_phrase = ident.f0 * (1.0 + 0.22 * a + 0.08 * v)  # F0 follows arousal and valence
        for k in range(n_syl):
            v, a = va_at(t)
            a01 = (a + 1.0) / 2.0
            rate = (2.5 + 3.0 * a01) * ident.rate * rng.uniform(0.85, 1.15)
            dur = 1.0 / rate
            i0 = int(t * sr)
            m = int(dur * sr * rng.uniform(0.75, 0.95))
            if i0 + m >= n:
                break
            # consonant onset: short high-passed noise burst
            nb = int(sr * rng.uniform(0.02, 0.05))
            if i0 - nb > 0 and rng.random() < 0.7:
                burst = np.diff(rng.standard_normal(nb + 1)).astype(np.float32)
                burst *= np.hanning(nb).astype(np.float32) * 0.04 * (0.5 + a01)
                pcm[i0 - nb : i0] += burst
            formants, openness = vowels[int(rng.integers(len(vowels)))]
            formants = np.array(formants) * rng.uniform(0.92, 1.08)
            decl = 1.0 - 0.12 * k / max(n_syl - 1, 1)  # phrase declination
            f0 = f0_phrase * decl * rng.uniform(0.94, 1.06)
            tt = np.arange(m) / sr
            contour = f0 * (1.0 + 0.06 * np.sin(np.pi * tt / (m / sr)) * rng.uniform(-1, 1))
            phase = 2 * np.pi * np.cumsum(contour) / sr
            K = max(1, int(3800.0 / (f0 * 1.1)))
            kk = np.arange(1, K + 1, dtype=np.float64)
            tilt = 1.3 - 0.5 * v  # brighter (flatter spectrum) for positive valence
            amp = _formant_gain(kk * f0, formants) * kk ** (-tilt)
            amp /= np.sqrt(np.sum(amp**2))
            wave = np.sin(np.outer(phase, kk)) @ amp
            env = np.ones(m)
            att, rel = int(0.2 * m), int(0.35 * m)
            env[:att] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, att))
            env[m - rel :] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, rel))
            gain = 10 ** ((ident.loudness_db - 14.0 + 12.0 * a01) / 20.0)
            pcm[i0 : i0 + m] += (gain * env * wave).astype(np.float32)
            mouth[i0 : i0 + m] = np.maximum(mouth[i0 : i0 + m], (env * openness).astype(np.float32))
            t += dur
        # pause between phrases, shorter when aroused
        t += rng.uniform(0.25, 1.0) * (1.4 - 0.8 * a01)
    # pink-ish background noise at the video's SNR (relative to the speech RMS)
    speech_rms = float(np.sqrt(np.mean(pcm[np.abs(pcm) > 1e-4] ** 2))) if np.any(pcm) else 0.05
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    spec /= np.sqrt(np.maximum(f, 50.0))
    noise = np.fft.irfft(spec, n)
    noise *= speech_rms * 10 ** (-snr_db / 20.0) / (noise.std() + 1e-12)
    pcm += noise.astype(np.float32)
    peak = float(np.max(np.abs(pcm)))
    if peak > 0.95:
        pcm *= 0.95 / peak
    return pcm, mouth


# ----------------------------------------------------------------------------- writing
class _Mp4Writer:
    """H.264 video + mono audio in an .mp4, written with PyAV (no ffmpeg binary)."""

    def __init__(self, path: Path, fps: float, audio_codec: str = "aac") -> None:
        from fractions import Fraction

        import av

        self.av = av
        self.container = av.open(str(path), "w")
        rate = Fraction(fps).limit_denominator(1001)
        self.v = self.container.add_stream("libx264", rate=rate)
        self.v.width, self.v.height, self.v.pix_fmt = FRAME_W, FRAME_H, "yuv420p"
        self.v.options = {"preset": "ultrafast", "crf": "18"}
        self.v.thread_count = 1
        self.a = self.container.add_stream(audio_codec, rate=SAMPLE_RATE, layout="mono")
        if audio_codec == "aac":
            self.a.bit_rate = 64000
        self.audio_pts = 0

    def write_frame(self, bgr: np.ndarray) -> None:
        frame = self.av.VideoFrame.from_ndarray(bgr, format="bgr24")
        for pkt in self.v.encode(frame):
            self.container.mux(pkt)

    def write_audio(self, pcm: np.ndarray) -> None:
        frame = self.av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.audio_pts
        self.audio_pts += pcm.shape[0]
        for pkt in self.a.encode(frame):
            self.container.mux(pkt)

    def close(self) -> None:
        for stream in (self.v, self.a):
            for pkt in stream.encode(None):
                self.container.mux(pkt)
        self.container.close()


def _noise_bank(rng: np.random.Generator, sigma: float, k: int = 6):
    bank = []
    for _ in range(k):
        z = rng.normal(0.0, sigma, size=(FRAME_H, FRAME_W, 1)).repeat(3, 2)
        z += rng.normal(0.0, sigma * 0.4, size=(FRAME_H, FRAME_W, 3))
        bank.append((np.clip(z, 0, 255).astype(np.uint8), np.clip(-z, 0, 255).astype(np.uint8)))
    return bank


def _bump(n: int, s: int, e: int) -> np.ndarray:
    """0 outside [s, e); rises to 1 and back with flat top (the head leaving the frame)."""
    out = np.zeros(n)
    L = e - s
    ramp = max(L // 4, 1)
    x = np.arange(L)
    prof = np.minimum(1.0, np.minimum((x + 1) / ramp, (L - x) / ramp))
    out[s:e] = 0.5 - 0.5 * np.cos(np.pi * prof)
    return out


def _in_any(i: int, stretches) -> bool:
    return any(s <= i < e for s, e in stretches)


def render_video(name: str, identity: int, seed: int, seconds: float, fps: float,
                 occlusion: float, out: Path, detector: Detector, partition: str,
                 progress=None, audio_codec: str = "aac", crop_recipe: str = "box-v1") -> dict:
    """Render one video (mp4 + crops + annotation) and return its synthetic.json record."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(identity), 0xA17]))
    ident = make_identity(identity)
    n = max(int(round(seconds * fps)), 1)
    valence = va_trajectory(rng, n, fps)
    arousal = va_trajectory(rng, n, fps)
    occl = occlusion_stretches(rng, n, fps, occlusion)
    oov = []
    if seconds >= 6 and rng.random() < 0.7:
        oov = _stretches(rng, n, 1, int(1.0 * fps), int(2.0 * fps), avoid=occl)
    invalid = _stretches(rng, n, int(rng.integers(1, 4)), 3, max(4, int(1.2 * fps)))
    snr = float(rng.uniform(12, 30))
    pcm, mouth_s = synth_speech(rng, ident, valence, arousal, fps, n / fps, snr)
    # mouth opening per frame: the strongest opening during the frame interval
    edges = np.minimum((np.arange(n + 1) / fps * SAMPLE_RATE).astype(int), len(mouth_s))
    talk = np.maximum.reduceat(np.append(mouth_s, 0.0), edges[:-1]) if len(mouth_s) else np.zeros(n)
    talk = np.asarray(talk[:n], np.float64)
    # pose: OU jitter, energy grows with arousal; out-of-view excursions
    a01 = (arousal + 1) / 2
    energy = 0.5 + a01
    base_s = float(rng.uniform(0.85, 1.08))
    bx, by = float(rng.uniform(135, 185)), float(rng.uniform(112, 130))
    tx = bx + 9.0 * energy * ou_process(rng, n, 1 / fps, 0.6)
    ty = by + 5.0 * energy * ou_process(rng, n, 1 / fps, 0.5) + 2.0 * talk
    # in-plane rotation stays small: the Haar frontal cascade misses these faces beyond ~5 deg
    rot = np.clip(1.5 * energy * ou_process(rng, n, 1 / fps, 0.8), -4.0, 4.0)
    scl = base_s * (1.0 + 0.03 * ou_process(rng, n, 1 / fps, 2.0))
    for s, e in oov:
        tx = tx + float(rng.choice([-1, 1])) * 260.0 * _bump(n, s, e)
    gaze = np.clip(ou_process(rng, n, 1 / fps, 0.7), -1.5, 1.5)
    blink = np.zeros(n)
    for b in np.flatnonzero(rng.random(n) < 1.0 / (3.5 * fps)):
        blink[b : b + 3] = (1.0, 0.8, 0.3)[: len(blink[b : b + 3])]
    gain = float(rng.uniform(0.75, 1.2)) * (1 + 0.04 * ou_process(rng, n, 1 / fps, 3.0))
    light = float(rng.uniform(-1, 1))
    renderer = FaceRenderer(ident, light)
    bg = make_background(rng)
    bank = _noise_bank(rng, float(rng.uniform(2.0, 6.0)))
    blur_p = float(rng.uniform(0.0, 0.06))
    jpeg_q = int(rng.integers(80, 96))
    occ_kind = [int(rng.integers(3)) for _ in occl]
    occ_col = [tuple(int(c) for c in (rng.uniform(30, 230, 3) if k else
                                      np.array(_skin(float(rng.uniform(0, 1)), 0.0))))
               for k in occ_kind]

    crop_dir = out / "cropped_aligned" / name
    crop_dir.mkdir(parents=True, exist_ok=True)
    writer = _Mp4Writer(out / "raw_videos" / f"{name}.mp4", fps, audio_codec)
    ann_rows = []
    # expected Haar box side ~ face height; narrow the search for speed (same detector)
    expect = 2.0 * ident.face_ay * base_s
    detector.min_size = int(0.8 * expect)
    detector.max_size = int(1.25 * expect)
    n_det = n_vis = n_vis_det = 0
    detected = np.zeros(n, bool)
    crop_written = np.zeros(n, bool)
    spf = SAMPLE_RATE / fps
    audio_done = 0
    for i in range(n):
        frame = bg.copy()
        patch = renderer.draw(float(valence[i]), float(arousal[i]), float(talk[i]),
                              float(blink[i]), float(gaze[i]))
        m = pose_matrix(renderer.cx, renderer.cy, float(tx[i]), float(ty[i]), float(rot[i]),
                        float(scl[i]))
        composite(frame, patch, renderer.alpha, m)
        k = next((j for j, (s, e) in enumerate(occl) if s <= i < e), None)
        if k is not None:
            wob = 3.0 * math.sin(i / fps * 2.1 + k)
            draw_occluder(frame, occ_kind[k], float(tx[i]), float(ty[i]), float(scl[i]), ident,
                          occ_col[k], wob)
        if gain[i] != 1.0:
            frame = cv2.convertScaleAbs(frame, alpha=float(gain[i]))
        if rng.random() < blur_p:
            frame = cv2.GaussianBlur(frame, (5, 5), 0)
        pos, neg = bank[int(rng.integers(len(bank)))]
        frame = cv2.subtract(cv2.add(frame, pos), neg)
        writer.write_frame(frame)
        if (i + 1) % max(int(fps), 1) == 0 or i == n - 1:  # audio in ~1 s chunks
            a1 = len(pcm) if i == n - 1 else int(round((i + 1) * spf))
            writer.write_audio(pcm[audio_done:a1])
            audio_done = a1
        # detection exactly as at run time, inside a search region around the drawn head
        cx, cy = float(tx[i]), float(ty[i])
        half = 0.75 * expect * float(scl[i]) / base_s
        x0, y0 = max(int(cx - half), 0), max(int(cy - half), 0)
        x1, y1 = min(int(cx + half), FRAME_W), min(int(cy + half), FRAME_H)
        box = None
        if x1 - x0 >= detector.min_size and y1 - y0 >= detector.min_size:
            for b in detector.detect(np.ascontiguousarray(frame[y0:y1, x0:x1])):
                bb = b.shifted(x0, y0)
                bcx, bcy = bb.center
                if abs(bcx - cx) < 0.3 * expect and abs(bcy - cy) < 0.3 * expect:
                    box = bb
                    break
        visible = k is None and not _in_any(i, oov)
        n_vis += visible
        if box is not None:
            detected[i] = True
            n_det += 1
            n_vis_det += visible
        if box is not None:
            crop_written[i] = True
            crop = crop_face(frame, box, crop_recipe, CROP_SIZE)
            cv2.imwrite(str(crop_dir / f"{i + 1:05d}.jpg"), crop,
                        [cv2.IMWRITE_JPEG_QUALITY, jpeg_q])
        if _in_any(i, invalid):
            ann_rows.append("-5,-5")
        else:
            ann_rows.append(f"{valence[i]:.4f},{arousal[i]:.4f}")
        if progress is not None:
            progress.update(1)
    writer.close()
    ann = out / "annotations" / "VA_Set" / partition / f"{name}.txt"
    ann.write_text("valence,arousal\n" + "\n".join(ann_rows) + "\n")
    np.savez_compressed(
        out / "ground_truth" / f"{name}.npz", valence=valence.astype(np.float32),
        arousal=arousal.astype(np.float32), face_x=tx.astype(np.float32),
        face_y=ty.astype(np.float32), angle=rot.astype(np.float32), scale=scl.astype(np.float32),
        talk=talk.astype(np.float32), detected=detected, crop_written=crop_written,
        pcm=pcm.astype(np.float32))
    return {
        "name": name,
        "partition": partition,
        "identity": ident.to_json(),
        "fps": fps,
        "n_frames": n,
        "audio_samples": len(pcm),
        "snr_db": snr,
        "jpeg_quality": jpeg_q,
        "occlusion": [list(se) for se in occl],
        "occluder_kinds": [("hand", "board", "cloth")[k] for k in occ_kind],
        "out_of_view": [list(se) for se in oov],
        "invalid": [list(se) for se in invalid],
        "frames_detected": n_det,
        "frames_visible": n_vis,
        "visible_detect_rate": (n_vis_det / n_vis) if n_vis else None,
    }


def generate(out_dir: str | os.PathLike, n_videos: int, seed: int = 0, seconds: float = 30.0,
             fps: float = 30.0, occlusion: float = 0.0, identity_offset: int = 0,
             val_fraction: float = 0.2, progress: bool = True, audio_codec: str = "aac",
             detector: str = "haar", crop_recipe: str = "box-v1") -> dict:
    """Write ``n_videos`` synthetic videos in the Aff-Wild2 VA layout under ``out_dir``.

    Deterministic given (seed, identity_offset, n_videos, seconds, fps, occlusion, detector,
    crop_recipe). ``detector`` (a registry name) and ``crop_recipe`` (a crop recipe name) are
    the front end the crops are made with. This function's default (haar, box-v1) is the
    legacy front end, kept so that data sets and the test suite's measured thresholds stay
    reproducible; ``affedge synth`` (and the demo bundle, ``scripts/build_demo_assets.sh``)
    use :data:`affedge.features.detectors.DEFAULT_DETECTOR` with landmarks5-v1.
    Returns the record written to ``out_dir/synthetic.json``.
    """
    if int(n_videos) < 1:
        raise ValueError(f"synth: --videos must be >= 1, got {n_videos}")
    if not seconds > 0:
        raise ValueError(f"synth: --seconds must be > 0, got {seconds}")
    if not 1.0 <= fps <= 120.0:
        raise ValueError(f"synth: --fps must be in [1, 120], got {fps}")
    if not 0.0 <= occlusion <= 0.9:
        raise ValueError(f"synth: --occlusion must be in [0, 0.9], got {occlusion}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"synth: val_fraction must be in [0, 1), got {val_fraction}")
    if int(identity_offset) < 0:
        raise ValueError(f"synth: --identity-offset must be >= 0, got {identity_offset}")
    out = Path(out_dir)
    if (out / INCOMPLETE_MARK).exists():
        raise FileExistsError(f"synth: {out} holds an incomplete data set (the synth that "
                              f"wrote it was stopped); remove it or choose another directory")
    if (out / "synthetic.json").exists() or (out / "raw_videos").exists():
        raise FileExistsError(f"{out} already holds a data set; choose an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / INCOMPLETE_MARK).write_text("affedge synth was writing this data set and did not "
                                       "finish; remove the directory and generate it again\n")
    for sub in ("raw_videos", "cropped_aligned", "ground_truth", "annotations/VA_Set/Train_Set",
                "annotations/VA_Set/Validation_Set"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    n_videos = int(n_videos)
    n_val = int(round(val_fraction * n_videos))
    if val_fraction > 0 and n_videos >= 2:
        n_val = min(max(n_val, 1), n_videos - 1)
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5B17])).permutation(n_videos)
    val_set = {int(j) for j in order[:n_val]}
    det = make_detector(detector)
    frontend = frontend_record(det, crop_recipe)  # validates the pair before rendering
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=n_videos * max(int(round(seconds * fps)), 1), unit="frame",
                       desc="synth")
        except ImportError:
            bar = None
    t0 = time.perf_counter()
    videos = []
    try:
        for j in range(n_videos):
            identity = int(identity_offset) + j
            name = f"synth_{identity:05d}"
            part = "Validation_Set" if j in val_set else "Train_Set"
            videos.append(render_video(name, identity, seed, seconds, fps, occlusion, out,
                                       det, part, bar, audio_codec, crop_recipe))
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    total = sum(v["n_frames"] for v in videos)
    vis = sum(v["frames_visible"] for v in videos)
    vis_det = sum(round((v["visible_detect_rate"] or 0) * v["frames_visible"]) for v in videos)
    record = {
        "generator": "affedge.training.data.synthetic",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "identity_offset": int(identity_offset),
        "n_videos": n_videos,
        "seconds": float(seconds),
        "fps": float(fps),
        "occlusion": float(occlusion),
        "val_fraction": float(val_fraction),
        "frame_size": [FRAME_W, FRAME_H],
        "sample_rate": SAMPLE_RATE,
        "crops": {"frontend": frontend,
                  "framing": "affedge.features.crops.crop_face", "size": CROP_SIZE,
                  "occluded_frames": "crop only where the detector finds the face", "missing": "no detection"},
        "visible_detect_rate": (vis_det / vis) if vis else None,
        "frames_per_second_generated": total / elapsed if elapsed > 0 else None,
        "videos": videos,
    }
    (out / "synthetic.json").write_text(json.dumps(record, indent=1))
    (out / INCOMPLETE_MARK).unlink()
    return record


def check_complete(data_dir: str | Path) -> None:
    """ValueError when ``data_dir`` is a synthetic data set whose writing was stopped (a
    stopped synth left some videos, and training on them would go on without a word)."""
    if (Path(data_dir) / INCOMPLETE_MARK).exists():
        raise ValueError(f"{data_dir} is an incomplete synthetic data set (the synth that wrote "
                         f"it was stopped); remove it and run affedge synth again")
