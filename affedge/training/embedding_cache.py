"""Per-frame encoder features, computed once and reused while the encoder does not change.

Why: the temporal and fusion blocks see every frame ~1.5 times per epoch (window 300, hop 200,
PAPER.md §5), and the encoder dominates the cost (PAPER.md §9). While the encoder (or the part
of it below the released groups) is frozen, each frame's features are the same in every epoch,
so they are computed once per "epoch group" — i.e. again only when the frozen weights changed
(checked by a fingerprint of those weights) — instead of once per window and epoch.

Two levels:

* ``"embedding"`` — the encoder's final 512-d L2-normalised output (whole encoder frozen).
* ``"trunk"`` — the input of the encoder's ``output_layer`` (``body(input_layer(x))``), for the
  paper's first phase where only the output layer is released (PAPER.md §2.2, release 1 at epoch
  0): the cached trunk features go through the trainable :func:`encoder_head` every step.

Augmentation (PAPER.md §1.3: one random 40x40 crop + flip per 300-frame window) is kept by
caching a small set of *views* (crop offset, flip) per frame; each training window draws one
view for all its frames. Validation uses the centre view. Cached features are computed with the
frozen part in eval mode (running BN statistics) — a documented deviation from the reference,
whose frozen BN layers kept adapting in train mode (PAPER.md §2.2).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affedge.features.faces import frames_to_input

LEVELS = ("embedding", "trunk")


@dataclass(frozen=True)
class View:
    """One augmentation view of a frame: crop offset and horizontal flip."""

    top: int
    left: int
    flip: bool


def centre_view(frame_size: int = 48, crop_size: int = 40) -> View:
    off = (frame_size - crop_size) // 2
    return View(off, off, False)


def random_view(rng: np.random.Generator, frame_size: int = 48, crop_size: int = 40) -> View:
    """PAPER.md §1.3: random crop offset, flip with probability 0.5."""
    span = frame_size - crop_size + 1
    return View(int(rng.integers(span)), int(rng.integers(span)), bool(rng.random() < 0.5))


def training_views(n: int, frame_size: int = 48, crop_size: int = 40, seed: int = 0) -> list[View]:
    """``n`` views for cached training: the centre, its mirror, then seeded random views."""
    if n < 1:
        raise ValueError(f"training_views: need at least 1 view, got {n}")
    c = centre_view(frame_size, crop_size)
    views = [c, View(c.top, c.left, True)][:n]
    rng = np.random.default_rng(seed)
    while len(views) < n:
        v = random_view(rng, frame_size, crop_size)
        if v not in views:
            views.append(v)
    return views


def frames_tensor(frames: np.ndarray, view: View, crop_size: int = 40) -> torch.Tensor:
    """uint8 RGB ``[L, S, S, 3]`` -> float ``[L, 3, crop, crop]`` model input for ``view``."""
    return torch.from_numpy(frames_to_input(frames, crop_size, view.top, view.left, view.flip))


def encoder_trunk(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The frozen part below the output layer: ``body(input_layer(x))``."""
    return encoder.body(encoder.input_layer(x))


def encoder_head(encoder: nn.Module, trunk: torch.Tensor) -> torch.Tensor:
    """Output layer + L2 normalisation (the rest of the encoder's forward, PAPER.md §2.1)."""
    return F.normalize(encoder.output_layer(trunk), p=2.0, dim=1)


def check_split(encoder: nn.Module, crop_size: int = 40) -> None:
    """Raise if ``encoder_head(encoder_trunk(x)) != encoder(x)`` (the encoder's layout changed)."""
    for name in ("input_layer", "body", "output_layer"):
        if not hasattr(encoder, name):
            raise ValueError(f"embedding cache level 'trunk' needs encoder.{name}; "
                             f"{type(encoder).__name__} has none (use level 'embedding')")
    was = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            x = torch.randn(2, 3, crop_size, crop_size, generator=torch.Generator().manual_seed(0))
            a = encoder(x)
            b = encoder_head(encoder, encoder_trunk(encoder, x))
    finally:
        encoder.train(was)
    if not torch.allclose(a, b, atol=1e-5):
        raise RuntimeError(f"{type(encoder).__name__}: forward != output_layer(body(input_layer(x))); "
                           "the 'trunk' cache would be wrong")


def module_fingerprint(modules: list[nn.Module]) -> str:
    """sha1 over all parameters and buffers of ``modules`` (exact: any weight change shows)."""
    h = hashlib.sha1()
    for m in modules:
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class FrameFeatureCache:
    """Cached per-frame features of many trials under several views.

    ``refresh(trials)`` (``{key: uint8 frames [L,48,48,3]}``) computes what is missing or stale;
    ``get(key, view)`` returns a float32 tensor ``[L, ...]``; ``head(feats)`` turns cached
    features into 512-d embeddings (identity for level ``"embedding"``; the trainable output
    layer for ``"trunk"``). ``n_computed`` counts encoder frame passes (tests use it).
    """

    def __init__(self, encoder: nn.Module, level: str = "embedding", views: list[View] | None = None,
                 crop_size: int = 40, batch_size: int = 256, store_dtype: torch.dtype = torch.float16):
        if level not in LEVELS:
            raise ValueError(f"embedding cache: level must be one of {LEVELS}, got {level!r}")
        if level == "trunk":
            check_split(encoder, crop_size)
        self.encoder = encoder
        self.level = level
        self.views = list(views) if views else [centre_view(crop_size=crop_size)]
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.store_dtype = store_dtype
        self._store: dict[tuple[str, int], torch.Tensor] = {}
        self._fingerprint: str | None = None
        self.n_computed = 0

    def _frozen_modules(self) -> list[nn.Module]:
        if self.level == "trunk":
            return [self.encoder.input_layer, self.encoder.body]
        return [self.encoder]

    def fingerprint(self) -> str:
        return module_fingerprint(self._frozen_modules())

    def _compute(self, frames: np.ndarray, view: View, bar=None) -> torch.Tensor:
        outs = []
        dev = next(self.encoder.parameters()).device
        for s in range(0, len(frames), self.batch_size):
            x = frames_tensor(frames[s:s + self.batch_size], view, self.crop_size).to(dev)
            if self.level == "trunk":
                y = encoder_trunk(self.encoder, x)
            else:
                y = self.encoder(x)
            outs.append(y.to(device="cpu", dtype=self.store_dtype))
            self.n_computed += len(x)
            if bar is not None:
                bar.update(len(x))
        return torch.cat(outs) if outs else torch.empty(0)

    @torch.no_grad()
    def refresh(self, trials: dict[str, np.ndarray], views: list[int] | None = None,
                progress: bool = False) -> bool:
        """Make every (trial, view) current (all views unless ``views`` lists indices); returns
        True when anything was (re)computed."""
        fp = self.fingerprint()
        if fp != self._fingerprint:
            self._store.clear()
            self._fingerprint = fp
        vs = range(len(self.views)) if views is None else views
        todo = [(k, v) for k in trials for v in vs if (k, v) not in self._store]
        if not todo:
            return False
        was = [m.training for m in self._frozen_modules()]
        for m in self._frozen_modules():
            m.eval()
        bar = None
        if progress:  # counted in frames: one long trial (an IR-50 on a CPU) is minutes
            from tqdm import tqdm

            bar = tqdm(total=sum(len(trials[k]) for k, _ in todo), desc=f"cache {self.level}",
                       leave=False, unit="frame")
        try:
            for key, v in todo:
                self._store[(key, v)] = self._compute(trials[key], self.views[v], bar)
        finally:
            if bar is not None:
                bar.close()
            for m, w in zip(self._frozen_modules(), was):
                m.train(w)
        return True

    def get(self, key: str, view: int = 0) -> torch.Tensor:
        try:
            return self._store[(key, view)].float()
        except KeyError:
            raise KeyError(f"embedding cache: no features for trial {key!r} view {view}; call refresh()") from None

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        """Cached features ``[N, ...]`` -> embeddings ``[N, 512]`` (trainable for 'trunk')."""
        if self.level == "trunk":
            return encoder_head(self.encoder, feats)
        return feats

    def clear(self) -> None:
        self._store.clear()
        self._fingerprint = None
