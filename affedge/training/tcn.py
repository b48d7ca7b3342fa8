"""Causal temporal convolutional network (PAPER.md §2.3, §3).

A Bai-et-al.-style TCN as used by the reference: every block has two weight-normalised dilated
``Conv1d`` layers (kernel k, dilation d), each padded by ``(k-1)*d`` on both sides and then
chomped by ``(k-1)*d`` on the right, so output ``t`` only sees inputs ``<= t``. The block output
is ``LeakyReLU(net(x) + res(x))`` with ``res`` the identity or a 1x1 conv when channels change.

Besides the offline forward over ``[B, C, T]`` every block offers :meth:`TemporalBlock.step`,
the same computation for ONE new time step given the last ``(k-1)*d`` inputs of each conv
(the "fast WaveNet" cache). Both forms live here so the block arithmetic exists in one place;
``affedge.export.streaming`` only wires the states together.

Weight norm uses ``torch.nn.utils.parametrizations.weight_norm`` (state-dict keys
``convN.parametrizations.weight.original0`` = g, ``original1`` = v). The reference code applies
Xavier init to the weight-normed convs, which is a no-op because the weight is recomputed from
g and v (PAPER.md §2.3); we therefore keep PyTorch's default init for v (g = ||v||) and apply
Xavier-uniform with gain sqrt(2) only to the 1x1 downsample convs, where it does take effect.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

LEAKY_SLOPE = 0.01  # nn.LeakyReLU default, as in the reference (PAPER.md §2.3)


class TemporalBlock(nn.Module):
    """Two causal dilated convs + residual (PAPER.md §2.3)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        pad = (kernel_size - 1) * dilation
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.pad = pad
        self.conv1 = weight_norm(nn.Conv1d(in_ch, out_ch, kernel_size, padding=pad, dilation=dilation))
        self.conv2 = weight_norm(nn.Conv1d(out_ch, out_ch, kernel_size, padding=pad, dilation=dilation))
        # Dropout2d on (B, C, T) in the reference zeroes whole channels: Dropout1d here.
        self.dropout1 = nn.Dropout1d(dropout)
        self.dropout2 = nn.Dropout1d(dropout)
        self.downsample = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else None
        if self.downsample is not None:
            nn.init.xavier_uniform_(self.downsample.weight, gain=math.sqrt(2.0))

    # -- offline form -------------------------------------------------------------------------
    def _causal(self, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        y = conv(x)
        return y[:, :, : y.shape[-1] - self.pad] if self.pad else y  # right chomp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout1(F.leaky_relu(self._causal(self.conv1, x), LEAKY_SLOPE))
        h = self.dropout2(F.leaky_relu(self._causal(self.conv2, h), LEAKY_SLOPE))
        res = x if self.downsample is None else self.downsample(x)
        return F.leaky_relu(h + res, LEAKY_SLOPE)

    # -- streaming form -----------------------------------------------------------------------
    def state_shapes(self) -> list[tuple[int, int]]:
        """(channels, length) of the cached inputs of conv1 and conv2."""
        return [(self.conv1.in_channels, self.pad), (self.conv2.in_channels, self.pad)]

    @staticmethod
    def _step_conv(conv: nn.Conv1d, x: torch.Tensor, state: torch.Tensor):
        # state: [N, C_in, (k-1)*d] = the previous inputs, oldest first; x: [N, C_in]
        full = torch.cat([state, x.unsqueeze(-1)], dim=-1)
        y = F.conv1d(full, conv.weight, conv.bias, stride=1, padding=0, dilation=conv.dilation)
        return y.squeeze(-1), full[:, :, 1:]

    def step(self, x: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor):
        """One time step: ``x [N, C_in]`` -> ``(y [N, C_out], s1', s2')`` (eval semantics)."""
        h, s1 = self._step_conv(self.conv1, x, s1)
        h = F.leaky_relu(h, LEAKY_SLOPE)
        h, s2 = self._step_conv(self.conv2, h, s2)
        h = F.leaky_relu(h, LEAKY_SLOPE)
        res = x if self.downsample is None else F.linear(
            x, self.downsample.weight.squeeze(-1), self.downsample.bias)
        return F.leaky_relu(h + res, LEAKY_SLOPE), s1, s2


class TemporalConvNet(nn.Module):
    """Stack of :class:`TemporalBlock` with dilations 1, 2, 4, ... (PAPER.md §2.3).

    ``forward(x [B, in_ch, T]) -> [B, channels[-1], T]``.
    """

    def __init__(self, in_ch: int, channels: Sequence[int], kernel_size: int = 5,
                 dropout: float = 0.1):
        super().__init__()
        if in_ch <= 0 or not channels or kernel_size < 1:
            raise ValueError(f"TemporalConvNet: bad sizes in_ch={in_ch}, channels={channels}, "
                             f"kernel_size={kernel_size}")
        blocks = []
        prev = in_ch
        for i, ch in enumerate(channels):
            blocks.append(TemporalBlock(prev, int(ch), kernel_size, 2**i, dropout))
            prev = int(ch)
        self.network = nn.Sequential(*blocks)
        self.in_channels = in_ch
        self.out_channels = prev

    @property
    def receptive_field(self) -> int:
        return 1 + sum(2 * b.pad for b in self.network)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"TemporalConvNet expects [B, {self.in_channels}, T], "
                             f"got {tuple(x.shape)}")
        return self.network(x)

    def state_shapes(self) -> list[tuple[int, int]]:
        """(C, L) of every causal conv's cache, in block order, conv1 before conv2."""
        return [s for b in self.network for s in b.state_shapes()]

    def step(self, x: torch.Tensor, states: Sequence[torch.Tensor]):
        """One time step: ``x [N, in_ch]`` -> ``(y [N, out], new_states)`` (2 states per block)."""
        new = []
        for i, block in enumerate(self.network):
            x, s1, s2 = block.step(x, states[2 * i], states[2 * i + 1])
            new += [s1, s2]
        return x, new
