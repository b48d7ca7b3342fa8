"""Inference-time folding: weight norm -> plain weights, BatchNorm -> preceding conv/linear,
dropout -> identity. Every function returns a NEW module in eval mode; the input is untouched.

What folds exactly (eval mode, up to float rounding):

* weight norm ``w = g * v / ||v||`` (both ``torch.nn.utils.parametrizations.weight_norm`` and
  the classic ``torch.nn.utils.weight_norm``) -> a plain ``weight`` parameter;
* ``Conv -> BN`` and ``Linear -> BN1d`` (BN after the layer) -> one conv/linear with bias;
* ``BN2d -> [Dropout] -> Flatten -> Linear`` (IR-50's output layer) -> one Linear, since BN is a
  per-channel affine map and the Linear sees every position of it;
* ``Dropout*`` -> ``Identity``.

What does not fold: the *leading* BN of every IR unit (``BN -> conv3x3, padding 1``). Folding
it into the conv would turn the zero padding around ``BN(x)`` into padding with ``-mean/std``
values, which changes the border outputs, so it stays a BatchNorm layer.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def _plain_weight(conv: nn.Module) -> torch.Tensor:
    """The effective weight of a (possibly weight-normed) layer."""
    if hasattr(conv, "weight_g") and hasattr(conv, "weight_v"):  # classic weight_norm hook
        dim = next((h.dim for h in conv._forward_pre_hooks.values() if hasattr(h, "dim")), 0)
        return torch._weight_norm(conv.weight_v, conv.weight_g, dim)
    return conv.weight  # plain or parametrized (computed on access)


def fold_weight_norm(conv: nn.Conv1d) -> nn.Conv1d:
    """A plain ``nn.Conv1d`` computing exactly what the weight-normed ``conv`` computes."""
    plain = nn.Conv1d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                      bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        plain.weight.copy_(_plain_weight(conv).detach())
        if conv.bias is not None:
            plain.bias.copy_(conv.bias.detach())
    return plain


def _drop_dropout(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.dropout._DropoutNd):
            setattr(module, name, nn.Identity())
        else:
            _drop_dropout(child)


def fold_temporal_fusion(tf: nn.Module) -> nn.Module:
    """Copy of a :class:`~affedge.training.model.TemporalFusion` with weight norm folded into
    plain conv weights, dropout removed, eval mode and no gradients; same forward."""
    from affedge.training.tcn import TemporalBlock

    folded = copy.deepcopy(tf).eval()
    for block in folded.modules():
        if isinstance(block, TemporalBlock):
            block.conv1 = fold_weight_norm(block.conv1)
            block.conv2 = fold_weight_norm(block.conv2)
    _drop_dropout(folded)
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded.eval()


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm):
    if not bn.track_running_stats or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight
        shift = bn.bias - bn.running_mean * scale
    else:
        shift = -bn.running_mean * scale
    return scale.detach(), shift.detach()


def fold_bn_after(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """``bn(layer(x))`` as one Conv/Linear with bias (BN in eval mode)."""
    scale, shift = _bn_scale_shift(bn)
    fused = copy.deepcopy(layer)
    if fused.bias is None:
        fused.bias = nn.Parameter(torch.zeros(fused.weight.shape[0], dtype=fused.weight.dtype))
    with torch.no_grad():
        w = _plain_weight(layer).detach()
        shape = (-1,) + (1,) * (w.dim() - 1)
        fused.weight = nn.Parameter(w * scale.reshape(shape))
        fused.bias = nn.Parameter(fused.bias.detach() * scale + shift)
    return fused


def fold_bn_before_linear(bn: nn.BatchNorm2d, linear: nn.Linear) -> nn.Linear:
    """``linear(flatten(bn(x)))`` as one Linear (x: [N, C, H, W] flattened channel-major)."""
    scale, shift = _bn_scale_shift(bn)
    c = scale.numel()
    if linear.in_features % c:
        raise ValueError(f"Linear in_features {linear.in_features} is not a multiple of the "
                         f"BatchNorm's {c} channels")
    rep = linear.in_features // c
    s, b = scale.repeat_interleave(rep), shift.repeat_interleave(rep)
    fused = copy.deepcopy(linear)
    with torch.no_grad():
        w = linear.weight.detach()
        fused.weight = nn.Parameter(w * s[None, :])
        bias = linear.bias.detach() if linear.bias is not None else torch.zeros(w.shape[0])
        fused.bias = nn.Parameter(bias + w @ b)
    return fused


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _fold_sequential(seq: nn.Sequential) -> int:
    n = 0
    items = list(seq)
    for i in range(len(items) - 1):  # pass 1: layer -> BN
        a, b = items[i], items[i + 1]
        if isinstance(b, _BN) and (isinstance(a, _CONV) or
                                   (isinstance(a, nn.Linear) and isinstance(b, nn.BatchNorm1d))):
            items[i], items[i + 1] = fold_bn_after(a, b), nn.Identity()
            n += 1
    for i, a in enumerate(items):  # pass 2: BN2d -> (Identity)* -> Flatten -> Linear
        if not isinstance(a, nn.BatchNorm2d):
            continue
        j = i + 1
        while j < len(items) and isinstance(items[j], nn.Identity):
            j += 1
        if j + 1 < len(items) and isinstance(items[j], nn.Flatten) \
                and isinstance(items[j + 1], nn.Linear):
            items[j + 1], items[i] = fold_bn_before_linear(a, items[j + 1]), nn.Identity()
            n += 1
    for i, m in enumerate(items):
        seq[i] = m
    return n


def fold_encoder(encoder: nn.Module) -> nn.Module:
    """Copy of a face encoder with every exactly-foldable BatchNorm folded (see module doc) and
    dropout removed; eval mode, no gradients. Identity placeholders keep the module layout."""
    folded = copy.deepcopy(encoder).eval()
    _drop_dropout(folded)
    for m in list(folded.modules()):
        if isinstance(m, nn.Sequential):
            _fold_sequential(m)
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded.eval()
