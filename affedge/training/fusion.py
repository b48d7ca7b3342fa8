"""Leader-follower attentive fusion (PAPER.md §4), generalised to any number of audio streams.

Per time step (no mixing across time), with the visual TCN output ``h_v`` (the leader) and one
TCN output ``h_i`` per audio stream (the followers):

* family A ("K" in the reference): ``a_v = A_v h_v``, ``a_i = A_i h_i``;
* family B ("Q") and C ("V"): ``b_v = B_v h_v``, ``c_v = C_v h_v`` for the leader, but for the
  followers they are applied to the family-A outputs: ``b_i = B_i a_i``, ``c_i = C_i a_i`` (the
  reference overwrites its aural inputs with the family-A results; we keep that chaining);
* ``S = K Q^T / sqrt(attn_dim)`` over the ``n_tokens = 1 + n_audio`` tokens, softmax over the last
  axis, ``O = softmax(S) V``;
* ``Z = LayerNorm_[n_tokens, attn_dim](O + V)`` (joint normalisation, elementwise affine);
* ``y = Linear(concat(h_v, flatten(Z)))`` (224 inputs for the paper's 128 + 3*32).

Works on inputs with any leading shape ``[..., C]`` so the same module serves the offline
``[B, T, C]`` forward and the streaming ``[N, C]`` step.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class LeaderFollowerFusion(nn.Module):
    """``forward(h_v [..., visual_dim], audio: list[[..., audio_dim_i]]) -> [..., n_out]``.

    Sub-modules: ``key``/``query``/``value`` (``nn.ModuleList``, index 0 = visual, then the
    audio streams in order), ``norm`` (LayerNorm over ``[n_tokens, attn_dim]``), ``regressor``.
    """

    def __init__(self, visual_dim: int, audio_dims: Sequence[int], attn_dim: int, n_out: int):
        super().__init__()
        if not audio_dims:
            raise ValueError("LeaderFollowerFusion needs at least one audio stream")
        self.visual_dim = visual_dim
        self.audio_dims = tuple(int(d) for d in audio_dims)
        self.attn_dim = attn_dim
        self.n_tokens = 1 + len(self.audio_dims)
        # Family A maps each modality's TCN output; B and C take h_v for the leader and the
        # family-A output (attn_dim wide) for the followers (PAPER.md §4 step 1).
        self.key = nn.ModuleList(
            [nn.Linear(visual_dim, attn_dim)] + [nn.Linear(d, attn_dim) for d in self.audio_dims])
        self.query = nn.ModuleList(
            [nn.Linear(visual_dim, attn_dim)] + [nn.Linear(attn_dim, attn_dim) for _ in self.audio_dims])
        self.value = nn.ModuleList(
            [nn.Linear(visual_dim, attn_dim)] + [nn.Linear(attn_dim, attn_dim) for _ in self.audio_dims])
        self.norm = nn.LayerNorm([self.n_tokens, attn_dim])  # eps 1e-5, affine (n_tokens, attn_dim)
        self.regressor = nn.Linear(visual_dim + self.n_tokens * attn_dim, n_out)
        self.scale_div = math.sqrt(attn_dim)  # PAPER.md §4 step 3: / sqrt(32)

    def forward(self, h_v: torch.Tensor, audio: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(audio) != len(self.audio_dims):
            raise ValueError(f"LeaderFollowerFusion: expected {len(self.audio_dims)} audio inputs, "
                             f"got {len(audio)}")
        ks = [self.key[0](h_v)]
        qs = [self.query[0](h_v)]
        vs = [self.value[0](h_v)]
        for i, h in enumerate(audio, start=1):
            a = self.key[i](h)
            ks.append(a)
            qs.append(self.query[i](a))  # chained: Q/V of a follower act on its family-A output
            vs.append(self.value[i](a))
        k = torch.stack(ks, dim=-2)  # [..., n_tokens, attn_dim]
        q = torch.stack(qs, dim=-2)
        v = torch.stack(vs, dim=-2)
        scores = torch.softmax(torch.matmul(k, q.transpose(-1, -2)) / self.scale_div, dim=-1)
        z = self.norm(torch.matmul(scores, v) + v)
        u = torch.cat([h_v, z.flatten(-2)], dim=-1)
        return self.regressor(u)
