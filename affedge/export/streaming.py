"""Streaming ("step") and window execution forms of the temporal + fusion network.

ARCHITECTURE.md §4: the per-frame encoder runs once per frame; everything after it is
:class:`StreamingStep`, which consumes ONE frame's embedding and audio features plus the cached
history of every causal conv and returns the prediction and the updated caches. All state is
explicit tensors (inputs/outputs), so ONNX, TensorRT and TorchScript can run it; cost per frame
is independent of how long the stream has been running.

State layout (``state_<i>``, i = 0..S-1): one tensor per causal conv, in this order: the visual
TCN's blocks 0..3 (conv1 then conv2 of each block), then each audio stream's TCN in
``cfg.audio_streams`` order, same block/conv order. State ``i`` has shape ``[N, C_in, (k-1)*d]``:
the last ``(k-1)*d`` inputs of that conv, oldest first. Zero state == the offline model's left
zero padding, so stepping from zeros reproduces the offline causal forward exactly.

I/O names: inputs ``embedding`` [N, E], ``audio_<name>`` [N, D_i] (fusion models only),
``state_<i>``; outputs ``va`` [N, n_out], ``state_out_<i>``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from affedge.export.folding import fold_temporal_fusion


class StreamingStep(nn.Module):
    """``forward(embedding [N,E], *audio [N,D_i], *states) -> (va [N,n_out], *new_states)``.

    Built from a (trained) ``TemporalFusion``; holds a folded copy (plain conv weights, no
    dropout), so it is an eval-only module with no buffers and no Python-side state.
    """

    def __init__(self, temporal_fusion: nn.Module):
        super().__init__()
        self.tf = fold_temporal_fusion(temporal_fusion)
        self.embed_dim = self.tf.cfg.embed_dim
        self.audio_names = tuple(self.tf.audio_names)
        self.audio_dims = tuple(self.tf.audio_dims)
        self.n_out = len(self.tf.cfg.outputs)
        self._tcns = [self.tf.visual] + list(self.tf.audio)
        self._counts = [len(t.state_shapes()) for t in self._tcns]
        self._specs = [s for t in self._tcns for s in t.state_shapes()]
        self.state_names = [f"state_{i}" for i in range(len(self._specs))]
        self.input_names = (["embedding"] + [f"audio_{n}" for n in self.audio_names]
                            + self.state_names)
        self.output_names = ["va"] + [f"state_out_{i}" for i in range(len(self._specs))]

    @property
    def receptive_field(self) -> int:
        return self.tf.receptive_field

    def state_specs(self) -> list[tuple[str, tuple[int, int]]]:
        """``[(name, (C, L)), ...]`` for every state, in input order."""
        return list(zip(self.state_names, self._specs))

    def state_shapes(self, n: int) -> list[tuple[str, tuple[int, int, int]]]:
        """``[(name, (n, C, L)), ...]`` (INTERFACES.md ``state_shapes(n)``)."""
        return [(name, (n, c, length)) for name, (c, length) in self.state_specs()]

    def initial_states(self, n: int = 1, dtype: torch.dtype = torch.float32,
                       device: torch.device | str | None = None) -> list[torch.Tensor]:
        """Zero states for a fresh stream (== the offline model's left zero padding)."""
        return [torch.zeros(n, c, length, dtype=dtype, device=device) for c, length in self._specs]

    def example_inputs(self, n: int = 1) -> tuple[torch.Tensor, ...]:
        """Inputs in ``input_names`` order (zeros), e.g. for tracing/export."""
        audio = [torch.zeros(n, d) for d in self.audio_dims]
        return (torch.zeros(n, self.embed_dim), *audio, *self.initial_states(n))

    def _check(self, embedding: torch.Tensor, audio, states) -> None:
        if embedding.dim() != 2 or embedding.shape[1] != self.embed_dim:
            raise ValueError(f"embedding must be [N, {self.embed_dim}], got {tuple(embedding.shape)}")
        n = embedding.shape[0]
        for name, dim, a in zip(self.audio_names, self.audio_dims, audio):
            if a.dim() != 2 or a.shape[0] != n or a.shape[1] != dim:
                raise ValueError(f"audio_{name} must be [{n}, {dim}], got {tuple(a.shape)}")
        if len(states) != len(self._specs):
            raise ValueError(f"expected {len(self._specs)} state tensors, got {len(states)}")
        for i, ((c, length), s) in enumerate(zip(self._specs, states)):
            if s.dim() != 3 or s.shape[0] != n or s.shape[1] != c or s.shape[2] != length:
                raise ValueError(f"state_{i} must be [{n}, {c}, {length}], got {tuple(s.shape)}")

    def forward(self, embedding: torch.Tensor, *args: torch.Tensor):
        n_audio = len(self.audio_names)
        audio, states = args[:n_audio], args[n_audio:]
        if not torch.jit.is_tracing():  # shapes are fixed by the example inputs when tracing
            self._check(embedding, audio, states)
        new_states: list[torch.Tensor] = []
        pos = 0
        outs = []
        for tcn, count, x in zip(self._tcns, self._counts, (embedding, *audio)):
            h, st = tcn.step(x, states[pos:pos + count])
            outs.append(h)
            new_states += st
            pos += count
        if self.tf.cfg.fusion:
            y = self.tf.fusion(outs[0], outs[1:])
        else:
            y = self.tf.head(outs[0])
        return (y, *new_states)


def run_stream(step: StreamingStep, embedding: torch.Tensor,
               audio: Sequence[torch.Tensor] = (), states: Sequence[torch.Tensor] | None = None):
    """Step through ``embedding [N,T,E]`` (+ audio ``[N,T,D_i]``) frame by frame.

    Returns ``(y [N,T,n_out], final_states)``; starts from zero state unless ``states`` given.
    """
    n, t = embedding.shape[:2]
    states = list(states) if states is not None else step.initial_states(n, embedding.dtype)
    ys = []
    with torch.no_grad():
        for i in range(t):
            y, *states = step(embedding[:, i], *[a[:, i] for a in audio], *states)
            ys.append(y)
    return torch.stack(ys, dim=1), states


class WindowForm(nn.Module):
    """Folded offline forward over a window: ``forward(embedding [N,W,E], *audio [N,W,D_i])
    -> va [N,W,n_out]``. For ``W >= receptive_field`` its last output equals the step form's."""

    def __init__(self, temporal_fusion: nn.Module):
        super().__init__()
        self.tf = fold_temporal_fusion(temporal_fusion)
        self.audio_names = tuple(self.tf.audio_names)
        self.input_names = ["embedding"] + [f"audio_{n}" for n in self.audio_names]
        self.output_names = ["va"]

    @property
    def receptive_field(self) -> int:
        return self.tf.receptive_field

    def forward(self, embedding: torch.Tensor, *audio: torch.Tensor) -> torch.Tensor:
        return self.tf(embedding, list(audio))
