"""Configuration records shared by training, export and the runtime.

Plain dataclasses, JSON-serialisable, no torch: the runtime reads them from a bundle's manifest,
training writes them next to a checkpoint. Numbers that come from the paper cite PAPER.md.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FeatureConfig:
    """Audio and face-crop preprocessing; identical in training and at run time."""

    sample_rate: int = 16000  # PAPER.md §1.4: mono 16 kHz
    hop_length: int = 160  # 10 ms hop (PAPER.md §1.4)
    win_length: int = 400  # 25 ms window (PAPER.md §1.4, openSMILE MFCC12_0_D_A)
    n_fft: int = 512
    preemphasis: float = 0.97  # openSMILE MFCC12_0_D_A
    # MFCC-39: 13 cepstra c0..c12 from 26 mel bands over 0-8 kHz, lifter 22, + deltas + delta-deltas
    mfcc_n_mels: int = 26
    mfcc_n_ceps: int = 13
    mfcc_lifter: int = 22
    mfcc_fmin: float = 0.0
    mfcc_fmax: float = 8000.0
    delta_width: int = 2  # regression half-width in frames (openSMILE default)
    # log-mel: the VGGish front end's settings (64 bands, 125-7500 Hz, log offset 0.01)
    logmel_n_mels: int = 64
    logmel_fmin: float = 125.0
    logmel_fmax: float = 7500.0
    logmel_offset: float = 0.01
    # audio streams fed to the model, in order; each maps to a TCN follower
    streams: tuple[str, ...] = ("mfcc", "logmel")
    # face crops: 112 px aligned crop -> 48 px -> 40 px crop (PAPER.md §1.3)
    aligned_size: int = 112
    frame_size: int = 48
    crop_size: int = 40

    def stream_dim(self, name: str) -> int:
        """Row length of the audio feature kind ``name`` (the registry in
        :mod:`affedge.features.audio`)."""
        from affedge.features.audio import FEATURE_KINDS

        if name not in FEATURE_KINDS:
            raise ValueError(f"unknown audio stream {name!r}; known: {', '.join(FEATURE_KINDS)}")
        return FEATURE_KINDS[name].dim(self)

    @property
    def hop_seconds(self) -> float:
        return self.hop_length / self.sample_rate


@dataclass(frozen=True)
class ModelConfig:
    """The leader-follower attentive fusion network (PAPER.md §2-§4)."""

    encoder: str = "ir50"  # "ir50" (paper), "ir18", "mobile" (light, <= 1/10 of IR-50 FLOPs)
    embed_dim: int = 512  # PAPER.md §2.1
    crop_size: int = 40
    visual_channels: tuple[int, ...] = (128, 128, 128, 128)  # PAPER.md §2.3
    audio_streams: tuple[tuple[str, int], ...] = (("mfcc", 39), ("logmel", 64))
    audio_channels: tuple[int, ...] = (32, 32, 32, 32)  # PAPER.md §3
    kernel_size: int = 5
    dropout: float = 0.1
    encoder_dropout: float = 0.4  # output layer dropout of IR-50 (PAPER.md §2.1)
    attn_dim: int = 32  # PAPER.md §4
    outputs: tuple[str, ...] = ("valence", "arousal")
    fusion: bool = True  # False: visual-only model (my_2d1d)

    @property
    def receptive_field(self) -> int:
        """1 + 2*(k-1)*sum(dilations) for the two convs of every block (PAPER.md §2.3)."""
        dil = sum(2**i for i in range(len(self.visual_channels)))
        return 1 + 2 * (self.kernel_size - 1) * dil


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def from_dict(cls: type, data: dict[str, Any]):
    """Build a config dataclass from a dict, rejecting unknown keys with a clear message."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            v = data[f.name]
            kwargs[f.name] = v if f.name == "extra" else _tuplify(v)
    return cls(**kwargs)
