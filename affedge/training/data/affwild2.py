"""Reader for the Aff-Wild2 valence/arousal layout (the real data set or ``affedge synth``).

Layout (PAPER.md §1.1)::

    ROOT/annotations/VA_Set/Train_Set/<trial>.txt       header "valence,arousal", then one row
    ROOT/annotations/VA_Set/Validation_Set/<trial>.txt  "v,a" per video frame; -5 = invalid
    ROOT/cropped_aligned/<trial>/00001.jpg              face crop of frame 0 (1-based, 5 digits);
                                                        missing files = no face in that frame
    ROOT/raw_videos/<video>.mp4 (or .avi/.mkv/.mov, also in sub-folders)   video + audio track

``<trial>`` is ``<video>``, or ``<video>_left`` / ``<video>_right`` for two people in one video;
those share the video's audio (decoded once and reused).

What ``load(trial)`` does:
* labels: parsed with clear errors (file and line) for a wrong header, column count or number;
  the row count must match the video's frame count within ``length_tolerance`` frames. Only
  frames where both valence and arousal are valid (not -5) are kept, the rest are cut out
  (PAPER.md §1.2); ``frame_index`` keeps the original 0-based indices.
* frames: each kept frame's crop is read (unreadable file -> error naming it), resized to
  ``feature_cfg.frame_size`` (48) with ``affedge.features.faces.resize_crops`` (INTER_AREA, the
  same as at run time) and converted to RGB; a missing crop gives the black filler and
  ``face_present=False`` (PAPER.md §1.3).
* audio: decoded from the video with PyAV, mixed to mono, resampled to ``feature_cfg.sample_rate``
  with ``affedge.features.audio_io.resample``; the features of ``affedge.features.audio.extract``
  are put on the frame times ``frame_index / fps`` with
  ``affedge.features.align.sample_at(..., mode="previous")``, the causal rule the runtime uses.
  Audio shorter than the video by one frame or more is an error.
* fps comes from the video container.
Results are cached as ``.npz`` (no pickles) in ``cache_dir``, keyed by the sizes and
modification times of the input files and by the feature configuration.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from affedge.config import FeatureConfig, to_dict
from affedge.features.audio import FEATURES_VERSION
from affedge.features.faces import resize_crops
from affedge.labels import INVALID, read_annotation

__all__ = [
    "PARTITIONS",
    "AffWild2VA",
    "Trial",
    "TrialData",
    "decode_audio",
    "probe_video",
    "read_annotation",
]

PARTITIONS = ("Train_Set", "Validation_Set")
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
READER_VERSION = 1
_SUFFIX = re.compile(r"_(left|right)$")


@dataclass(frozen=True)
class Trial:
    """One annotated sequence: a video, or one person (``_left``/``_right``) of a video."""

    name: str
    partition: str
    annotation: Path
    crops_dir: Path
    video_path: Path

    def __str__(self) -> str:
        return self.name


@dataclass
class TrialData:
    """A loaded trial; every per-frame array has the kept (labelled) frames only, L rows."""

    name: str
    frames: np.ndarray  # uint8 [L, S, S, 3] RGB, black filler where no face
    face_present: np.ndarray  # bool [L]
    labels: np.ndarray  # float32 [L, 2] (valence, arousal)
    audio: dict[str, np.ndarray]  # name -> float32 [L, D]
    fps: float
    frame_index: np.ndarray  # int64 [L], original 0-based frame numbers
    frame_times: np.ndarray  # float64 [L], frame_index / fps (seconds)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


# ----------------------------------------------------------------------------- pieces
#: a frame crop's file name in cropped_aligned/<trial>/ (see the module docstring)
_CROP_NAME = re.compile(r"^\d{5}\.jpg$")


def probe_video(path: str | os.PathLike) -> tuple[float, int]:
    """(fps, frame count) of the first video stream, from the container (PyAV)."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise ValueError(f"{path}: no video stream")
            st = c.streams.video[0]
            rate = st.average_rate or st.guessed_rate or st.base_rate
            if not rate or float(rate) <= 0:
                raise ValueError(f"{path}: the container states no frame rate")
            fps = float(rate)
            n = int(st.frames or 0)
            if n <= 0:  # not stored: count the packets (no decoding)
                n = sum(1 for p in c.demux(st) if p.size)
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: cannot read the video: {exc}") from None
    return fps, n


def has_audio_track(path: str | os.PathLike) -> bool:
    """True when the video file has an audio stream (PyAV)."""
    import av

    try:
        with av.open(str(path)) as c:
            return bool(c.streams.audio)
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: cannot read the video: {exc}") from None


def decode_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Audio track of a video -> mono float32 at ``sample_rate`` (PyAV decode, numpy resample).

    Samples before the video's start time are dropped; a late audio start is zero-padded, so
    sample 0 is at video time 0.
    """
    import av

    from affedge.features.audio_io import resample

    path = Path(path)
    chunks = []
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise ValueError(f"{path}: no audio track (the VA reader needs the speech "
                                 f"audio; a visual-only model, --modality v, does not)")
            st = c.streams.audio[0]
            sr_in = int(st.rate or st.codec_context.sample_rate)
            v0 = 0.0
            if c.streams.video and c.streams.video[0].start_time is not None:
                vs = c.streams.video[0]
                v0 = float(vs.start_time * vs.time_base)
            mixer = av.AudioResampler(format="flt", layout="mono", rate=sr_in)
            first_time = None
            for frame in c.decode(st):
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                for out in mixer.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in mixer.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: cannot decode the audio: {exc}") from None
    pcm = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    offset = int(round(((first_time or 0.0) - v0) * sr_in))
    if offset > 0:
        pcm = np.concatenate([np.zeros(offset, np.float32), pcm])
    elif offset < 0:
        pcm = pcm[-offset:]
    if sr_in != sample_rate and pcm.size:
        pcm = resample(pcm, sr_in, sample_rate)
    return pcm


def _file_sig(p: Path) -> list:
    st = p.stat()
    return [p.name, st.st_size, st.st_mtime_ns]


def _dir_sig(d: Path) -> list:
    h = hashlib.sha1()
    n = 0
    with os.scandir(d) as it:
        entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in it)
    for e in entries:
        h.update(repr(e).encode())
        n += 1
    return [d.name, n, h.hexdigest()]


# ----------------------------------------------------------------------------- reader
class AffWild2VA:
    """Aff-Wild2 VA reader (see the module docstring for the layout and the processing).

    Parameters
    ----------
    root: data set root (holds ``annotations``, ``cropped_aligned``, ``raw_videos``).
    feature_cfg: FeatureConfig for audio features and crop size (default FeatureConfig()).
    cache_dir: where preprocessed trials are cached as .npz (None: no cache).
    length_tolerance: largest accepted difference between annotation rows and video frames.
    require_audio: False for a visual-only model (``train --modality v``): a video without an
        audio track then gets zero audio features (the training mean after normalisation, and
        the visual-only model reads none) instead of being refused.
    """

    def __init__(self, root: str | os.PathLike, feature_cfg: FeatureConfig | None = None,
                 cache_dir: str | os.PathLike | None = None, length_tolerance: int = 5,
                 require_audio: bool = True) -> None:
        self.root = Path(root)
        self.require_audio = bool(require_audio)
        self.cfg = feature_cfg or FeatureConfig()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.length_tolerance = int(length_tolerance)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Aff-Wild2 root not found: {self.root}")
        for sub in ("annotations/VA_Set", "cropped_aligned", "raw_videos"):
            if not (self.root / sub).is_dir():
                raise FileNotFoundError(
                    f"{self.root}: missing folder {sub}/ (expected the Aff-Wild2 VA layout: "
                    "annotations/VA_Set/{Train_Set,Validation_Set}, cropped_aligned, raw_videos)"
                )
        self._videos: dict[str, Path] | None = None
        self._audio_memo: tuple[tuple, dict] | None = None

    # -- discovery
    def _video_index(self) -> dict[str, Path]:
        if self._videos is None:
            idx: dict[str, Path] = {}
            for p in sorted((self.root / "raw_videos").rglob("*")):
                if p.suffix.lower() in VIDEO_EXTS and p.is_file():
                    idx.setdefault(p.stem, p)
            self._videos = idx
        return self._videos

    def _find_video(self, name: str, annotation: Path) -> Path:
        idx = self._video_index()
        if name in idx:
            return idx[name]
        base = _SUFFIX.sub("", name)
        if base in idx:
            return idx[base]
        raise FileNotFoundError(
            f"{annotation}: no video {name}{'' if base == name else ' or ' + base}"
            f".{{{','.join(e[1:] for e in VIDEO_EXTS)}}} under {self.root / 'raw_videos'}"
        )

    def trials(self, partition: str) -> list[Trial]:
        """The trials of ``partition`` ("Train_Set" or "Validation_Set"), sorted by name."""
        if partition not in PARTITIONS:
            raise ValueError(f"unknown partition {partition!r}; use one of {PARTITIONS}")
        d = self.root / "annotations" / "VA_Set" / partition
        if not d.is_dir():
            raise FileNotFoundError(f"missing annotation folder {d}")
        out = []
        for ann in sorted(d.glob("*.txt")):
            name = ann.stem
            out.append(Trial(name, partition, ann, self.root / "cropped_aligned" / name,
                             self._find_video(name, ann)))
        return out

    def trial(self, name: str) -> Trial:
        """Look a trial up by name in either partition."""
        for part in PARTITIONS:
            for t in self.trials(part):
                if t.name == name:
                    return t
        raise KeyError(f"no trial named {name!r} under {self.root}")

    # -- loading
    def _cache_path(self, trial: Trial) -> Path | None:
        if self.cache_dir is None:
            return None
        if not trial.crops_dir.is_dir():
            return None
        key = json.dumps([READER_VERSION, FEATURES_VERSION, _file_sig(trial.annotation),
                          _file_sig(trial.video_path),
                          _dir_sig(trial.crops_dir), to_dict(self.cfg), self.length_tolerance]
                         + ([] if self.require_audio else ["audio optional"]))
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return self.cache_dir / f"{trial.partition}__{trial.name}__{digest}.npz"

    def load(self, trial: Trial | str) -> TrialData:
        """Load one trial (from the cache when its inputs are unchanged)."""
        if isinstance(trial, str):
            trial = self.trial(trial)
        cpath = self._cache_path(trial)
        if cpath is not None and cpath.is_file():
            try:
                return self._from_npz(trial.name, cpath)
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache entry: rebuild it
        data = self._load_uncached(trial)
        if cpath is not None:
            self._to_npz(data, cpath)
        return data

    def _load_uncached(self, trial: Trial) -> TrialData:
        labels_all = read_annotation(trial.annotation)
        fps, n_frames = probe_video(trial.video_path)
        n = labels_all.shape[0]
        if abs(n - n_frames) > self.length_tolerance:
            raise ValueError(
                f"{trial.annotation}: {n} annotation rows but the video {trial.video_path.name} "
                f"has {n_frames} frames (tolerance {self.length_tolerance})"
            )
        valid = (labels_all[:, 0] != INVALID) & (labels_all[:, 1] != INVALID)
        # rows past the video's last frame (within the tolerance) have no frame and no audio:
        # left out (they failed the audio-length check with a message about the audio)
        covered = min(n, n_frames) if n_frames > 0 else n
        valid[covered:] = False
        index = np.flatnonzero(valid).astype(np.int64)
        if index.size == 0:
            raise ValueError(f"{trial.annotation}: no frame has both valence and arousal valid")
        labels = labels_all[index]
        times = index.astype(np.float64) / fps
        frames, present = self._read_crops(trial, index)
        audio = self._audio(trial, fps, covered, times)
        return TrialData(trial.name, frames, present, labels, audio, fps, index, times)

    def _read_crops(self, trial: Trial, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not trial.crops_dir.is_dir():
            raise FileNotFoundError(
                f"{trial.annotation}: its crop folder {trial.crops_dir} does not exist")
        S = self.cfg.frame_size
        names = set(os.listdir(trial.crops_dir))
        frames = np.zeros((index.size, S, S, 3), np.uint8)
        present = np.zeros(index.size, bool)
        for k, i in enumerate(index):
            fname = f"{int(i) + 1:05d}.jpg"
            if fname not in names:
                continue
            path = trial.crops_dir / fname
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None or img.size == 0:
                raise ValueError(f"unreadable face image {path} (corrupt or not an image)")
            frames[k] = resize_crops(img, S)[0][..., ::-1]  # BGR -> RGB
            present[k] = True
        if names and not any(_CROP_NAME.match(n) for n in names):
            raise ValueError(f"{trial.crops_dir}: none of its {len(names)} files is named like a "
                             f"frame crop (00001.jpg: 1-based frame number, 5 digits, .jpg), "
                             f"e.g. {sorted(names)[:3]}")
        return frames, present

    def _audio(self, trial: Trial, fps: float, n_rows: int, times: np.ndarray
               ) -> dict[str, np.ndarray]:
        from affedge.features.align import sample_at
        from affedge.features.audio import extract

        if not self.require_audio and not has_audio_track(trial.video_path):
            return {name: np.zeros((len(times), self.cfg.stream_dim(name)), np.float32)
                    for name in self.cfg.streams}
        key = (str(trial.video_path), tuple(_file_sig(trial.video_path)))
        if self._audio_memo is not None and self._audio_memo[0] == key:
            memo = self._audio_memo[1]  # the other person (_left/_right) of the same video
        else:
            memo = {"pcm": decode_audio(trial.video_path, self.cfg.sample_rate), "feats": None}
            self._audio_memo = (key, memo)
        pcm = memo["pcm"]
        sr = self.cfg.sample_rate
        need = n_rows / fps - 1.0 / fps  # tolerance: less than one frame
        have = pcm.size / sr
        if have < need - 1e-9 or pcm.size < self.cfg.win_length:
            raise ValueError(
                f"{trial.video_path}: audio track is {have:.3f} s but the video/annotation "
                f"({trial.annotation.name}) covers {n_rows / fps:.3f} s ({n_rows} frames at "
                f"{fps:g} fps)"
            )
        if memo["feats"] is None:
            memo["feats"] = extract(pcm, self.cfg)
        feats = memo["feats"]
        out = {}
        for name in self.cfg.streams:
            t, f = feats[name]
            out[name] = sample_at(t, f, times, mode="previous").astype(np.float32)
        return out

    # -- cache files
    @staticmethod
    def _to_npz(d: TrialData, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"frames": d.frames, "face_present": d.face_present, "labels": d.labels,
                  "fps": np.float64(d.fps), "frame_index": d.frame_index,
                  "frame_times": d.frame_times}
        for k, v in d.audio.items():
            arrays[f"audio__{k}"] = v
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @staticmethod
    def _from_npz(name: str, path: Path) -> TrialData:
        with np.load(path, allow_pickle=False) as z:
            audio = {k[len("audio__"):]: z[k] for k in z.files if k.startswith("audio__")}
            return TrialData(name, z["frames"], z["face_present"], z["labels"], audio,
                             float(z["fps"]), z["frame_index"], z["frame_times"])
