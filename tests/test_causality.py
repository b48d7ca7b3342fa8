"""The network is causal (PAPER.md §4, §8.1): outputs at frame t never depend on inputs after t,
and (finite receptive field, 121 frames) never on inputs 121 or more frames before t."""
from __future__ import annotations

import pytest
import torch

from affedge.config import ModelConfig
from affedge.training.model import AffectModel, TemporalFusion

torch.set_num_threads(1)
TIMES = [0, 7, 23, 48]


def _perturb_after(x: torch.Tensor, t: int, gen: torch.Generator) -> torch.Tensor:
    y = x.clone()
    y[:, t + 1:] = torch.randn(y[:, t + 1:].shape, generator=gen)
    return y


def _perturb_at(x: torch.Tensor, t: int, gen: torch.Generator) -> torch.Tensor:
    y = x.clone()
    y[:, t] = torch.randn(y[:, t].shape, generator=gen)
    return y


@pytest.fixture(scope="module")
def affect_setup():
    torch.manual_seed(0)
    model = AffectModel(ModelConfig(encoder="mobile")).eval()
    b, t = 2, 50
    frames = torch.randn(b, t, 3, 40, 40)
    audio = [torch.randn(b, t, 39), torch.randn(b, t, 64)]
    with torch.no_grad():
        y = model(frames, audio)
    return model, frames, audio, y


@pytest.mark.parametrize("t", TIMES)
def test_affect_model_future_inputs_do_not_change_past_outputs(affect_setup, t):
    model, frames, audio, y = affect_setup
    g = torch.Generator().manual_seed(t)
    frames2 = _perturb_after(frames, t, g)
    audio2 = [_perturb_after(a, t, g) for a in audio]
    with torch.no_grad():
        y2 = model(frames2, audio2)
    assert torch.allclose(y2[:, : t + 1], y[:, : t + 1], atol=1e-6, rtol=0)
    if t + 1 < y.shape[1]:
        assert not torch.allclose(y2[:, t + 1:], y[:, t + 1:], atol=1e-4)


@pytest.mark.parametrize("t", TIMES)
@pytest.mark.parametrize("which", ["frames", "mfcc", "logmel"])
def test_affect_model_input_at_t_changes_output_at_t(affect_setup, t, which):
    model, frames, audio, y = affect_setup
    g = torch.Generator().manual_seed(100 + t)
    if which == "frames":
        frames = _perturb_at(frames, t, g)
    else:
        i = ["mfcc", "logmel"].index(which)
        audio = list(audio)
        audio[i] = _perturb_at(audio[i], t, g)
    with torch.no_grad():
        y2 = model(frames, audio)
    assert torch.allclose(y2[:, :t], y[:, :t], atol=1e-6, rtol=0)
    assert (y2[:, t] - y[:, t]).abs().max() > 1e-4


@pytest.mark.parametrize("fusion", [True, False])
def test_temporal_fusion_causal_with_receptive_field_121(fusion):
    torch.manual_seed(1)
    cfg = ModelConfig(fusion=fusion)
    tf = TemporalFusion(cfg).eval()
    b, n = 1, 260
    emb = torch.randn(b, n, 512)
    audio = [torch.randn(b, n, 39), torch.randn(b, n, 64)] if fusion else []
    with torch.no_grad():
        y = tf(emb, audio)
        for t in (0, 60, 200):  # future -> past: never
            g = torch.Generator().manual_seed(t)
            y2 = tf(_perturb_after(emb, t, g), [_perturb_after(a, t, g) for a in audio])
            assert torch.allclose(y2[:, : t + 1], y[:, : t + 1], atol=1e-6, rtol=0)
        # an input at s reaches outputs s .. s+120 and no further (PAPER.md §2.3: RF 121)
        s, rf = 30, cfg.receptive_field
        g = torch.Generator().manual_seed(7)
        y3 = tf(_perturb_at(emb, s, g), [_perturb_at(a, s, g) for a in audio])
        diff = (y3 - y).abs().amax(dim=(0, 2))
        assert (diff[s:s + rf] > 0).all()
        assert torch.all(diff[s + rf:] < 1e-6)
        assert torch.all(diff[:s] < 1e-6)
