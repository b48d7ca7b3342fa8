"""Predictions of a trained model over whole trials (validation, held-out sets) and metrics."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from affedge.training.embedding_cache import (
    View,
    centre_view,
    frames_tensor,
)
from affedge.training.fold_data import trial_windows
from affedge.training.train_utils import _device

DIMS = ("valence", "arousal")


# ============================================================================================
# Prediction (validation, held-out sets)
# ============================================================================================
@torch.no_grad()
def embed_frames(encoder: nn.Module, frames: np.ndarray, crop_size: int = 40, batch: int = 256,
                 view: View | None = None) -> torch.Tensor:
    """uint8 frames ``[L,48,48,3]`` -> embeddings ``[L, 512]`` (centre crop unless ``view``)."""
    view = view or centre_view(frames.shape[1], crop_size)
    dev = _device(encoder)
    out = [encoder(frames_tensor(frames[s:s + batch], view, crop_size).to(dev))
           for s in range(0, len(frames), batch)]
    return torch.cat(out)


@torch.no_grad()
def predict_embeddings(temporal: nn.Module, emb: torch.Tensor, audio: list[np.ndarray] | list[torch.Tensor],
                       window: int = 300, hop: int = 200, batch: int = 16) -> np.ndarray:
    """Windowed offline prediction of one trial with overlap averaging (PAPER.md §5/§6.1)."""
    from affedge.training.data.windows import overlap_average

    length = emb.shape[0]
    dev = _device(temporal)
    emb = emb.to(dev)
    aud = [torch.as_tensor(a, dtype=torch.float32).to(dev) for a in audio] if temporal.cfg.fusion else []
    wins = trial_windows(length, window, hop)
    preds = []
    for s in range(0, len(wins), batch):
        chunk = wins[s:s + batch]
        e = torch.stack([_pad(emb[a:b], window) for a, b in chunk])
        au = [torch.stack([_pad(x[a:b], window) for a, b in chunk]) for x in aud]
        y = temporal(e, au)
        preds.extend(y[i, :b - a].cpu().numpy() for i, (a, b) in enumerate(chunk))
    return np.asarray(overlap_average(length, wins, preds), dtype=np.float32)


def predict_trial(model: nn.Module, frames: np.ndarray, audio: list[np.ndarray], window: int = 300,
                  hop: int = 200) -> np.ndarray:
    """Offline prediction ``[L, n_out]`` for one trial (eval mode, centre crop)."""
    was = model.training
    model.eval()
    try:
        emb = embed_frames(model.encoder, frames, model.cfg.crop_size)
        return predict_embeddings(model.temporal, emb, audio, window, hop)
    finally:
        model.train(was)


def va_metrics(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    """``valence_ccc``, ``valence_pcc``, ``valence_rmse``, ... and ``mean_ccc`` (the model-selection
    score: mean of the V and A CCCs over the concatenated frames)."""
    from affedge.metrics import summarize

    return {k: float(v) for k, v in summarize(labels, preds, DIMS).items() if not k.endswith("_n")}


def _pad(x: torch.Tensor, w: int) -> torch.Tensor:
    if len(x) == w:
        return x
    return torch.cat([x, x.new_zeros((w - len(x),) + tuple(x.shape[1:]))])
