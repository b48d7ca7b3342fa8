"""CCC loss exactly as the reference trains it (PAPER.md §5).

For each window b (time axis = dim 1 of a ``[B, T, C]`` tensor) and each output channel c::

    mu     = time mean
    s2     = unbiased (T-1) variance of label and of prediction
    cov    = mean of the products of deviations (biased, /T)
    CCC    = 2*cov / (s2_y + s2_yhat + (mu_y - mu_yhat)^2 + eps),   eps = 1e-8
    loss   = mean over windows and channels of (1 - CCC)

The covariance/variance mismatch (T vs T-1) is the reference's convention and is kept on
purpose; the evaluation metric in :mod:`affedge.metrics` uses the same convention.
Zero-padded frames of short windows are included, as in the reference, unless a ``mask`` is
given (then statistics use only the masked-in frames of each window).
"""
from __future__ import annotations

import torch

EPS = 1e-8  # PAPER.md §5


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"ccc loss: prediction shape {tuple(pred.shape)} != label shape {tuple(target.shape)}")
    if pred.dim() != 3:
        raise ValueError(f"ccc loss: expected [B, T, C] tensors, got shape {tuple(pred.shape)}")
    if pred.shape[1] < 2:
        raise ValueError(f"ccc loss: need at least 2 time steps per window, got T={pred.shape[1]}")


def ccc_per_window(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                   eps: float = EPS) -> torch.Tensor:
    """CCC of every window and channel: ``[B, T, C]`` x2 -> ``[B, C]``.

    ``mask`` (optional, ``[B, T]`` bool/float): frames that count. Windows with fewer than two
    counted frames get CCC 0 for the statistics to stay finite.
    """
    _check(pred, target)
    if mask is None:
        t = pred.shape[1]
        mu_p = pred.mean(dim=1, keepdim=True)
        mu_y = target.mean(dim=1, keepdim=True)
        dp, dy = pred - mu_p, target - mu_y
        cov = (dp * dy).mean(dim=1)  # biased (/T)
        var_p = (dp * dp).sum(dim=1) / (t - 1)  # unbiased (/(T-1))
        var_y = (dy * dy).sum(dim=1) / (t - 1)
        return 2.0 * cov / (var_y + var_p + (mu_y - mu_p).squeeze(1) ** 2 + eps)
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"ccc loss: mask shape {tuple(mask.shape)} != [B, T] = {tuple(pred.shape[:2])}")
    m = mask.to(pred.dtype).unsqueeze(-1)
    n = m.sum(dim=1)  # [B, 1]
    n_safe = n.clamp(min=2.0)
    mu_p = (pred * m).sum(dim=1, keepdim=True) / n_safe.unsqueeze(1)
    mu_y = (target * m).sum(dim=1, keepdim=True) / n_safe.unsqueeze(1)
    dp, dy = (pred - mu_p) * m, (target - mu_y) * m
    cov = (dp * dy).sum(dim=1) / n_safe
    var_p = (dp * dp).sum(dim=1) / (n_safe - 1)
    var_y = (dy * dy).sum(dim=1) / (n_safe - 1)
    ccc = 2.0 * cov / (var_y + var_p + (mu_y - mu_p).squeeze(1) ** 2 + eps)
    return torch.where(n >= 2, ccc, torch.zeros_like(ccc))


def ccc_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
             eps: float = EPS) -> torch.Tensor:
    """``mean(1 - CCC)`` over windows and output channels (valence and arousal): a scalar."""
    return (1.0 - ccc_per_window(pred, target, mask, eps)).mean()


def frame_ccc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """CCC loss over a batch of independent frames ``[N, C]`` (treated as one sequence).

    Used by the per-frame encoder pretraining stage (no time axis there).
    """
    if pred.dim() != 2:
        raise ValueError(f"frame ccc loss: expected [N, C], got {tuple(pred.shape)}")
    return ccc_loss(pred.unsqueeze(0), target.unsqueeze(0), eps=eps)
