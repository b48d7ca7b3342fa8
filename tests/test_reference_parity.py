"""Parity with the authors' model code (sucv/ABAW2, PAPER.md §0).

The reference is never vendored: point ``AFFEDGE_REF_ABAW2`` at a checkout of the repository
(default ``/work/ref/ABAW2``; it needs ``model/model.py``, ``model/arcface_model.py`` and
``model/temporal_convolutional_model.py``). Both networks get the same (randomised) weights via
:func:`affedge.training.model.map_reference_state_dict` and must agree bit for bit in eval mode (README: "bit-exactly (max |Δ| = 0.0)"): the same
operations in the same order on the same CPU give the same floats.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from affedge.config import ModelConfig
from affedge.training.model import AffectModel, map_reference_state_dict

REF_DIR = Path(os.environ.get("AFFEDGE_REF_ABAW2", "/work/ref/ABAW2"))
REF_FILES = ("model/model.py", "model/arcface_model.py", "model/temporal_convolutional_model.py")

pytestmark = pytest.mark.skipif(
    not all((REF_DIR / f).is_file() for f in REF_FILES),
    reason=f"reference sucv/ABAW2 not found at {REF_DIR} (set AFFEDGE_REF_ABAW2 to a checkout "
           f"containing {', '.join(REF_FILES)})")

REF_CFG = ModelConfig(encoder="ir50", audio_streams=(("vggish", 128), ("mfcc", 39)),
                      outputs=("valence",))


@pytest.fixture(scope="module")
def ref_module():
    """Import the reference ``model.model`` from REF_DIR without leaving it in sys.modules."""
    saved = {k: v for k, v in sys.modules.items() if k == "model" or k.startswith("model.")}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, str(REF_DIR))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = importlib.import_module("model.model")
    finally:
        sys.path.remove(str(REF_DIR))
        for k in [k for k in sys.modules if k == "model" or k.startswith("model.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    return mod


def _build_reference(ref_module, cls_name: str, monkeypatch, **kwargs) -> nn.Module:
    """Instantiate a reference model; its ``init()`` loads a backbone .pth, which we replace by
    the reference's own freshly initialised ``my_res50`` state dict (no file, no unpickling)."""
    cls = getattr(ref_module, cls_name)
    model = cls(backbone_state_dict="unused", channels=[128, 128, 128, 128], output_dim=1,
                kernel_size=5, dropout=0.1, **kwargs)
    fresh = lambda *a, **k: ref_module.my_res50(use_pretrained=False).state_dict()
    with monkeypatch.context() as m, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.setattr(torch, "load", fresh)
        model.init()
    return model


def _randomise(model: nn.Module, seed: int) -> None:
    """Give every normalisation/activation parameter a non-default value so parity is not
    trivially satisfied by identity BNs, unit LayerNorms or g = ||v||."""
    g = torch.Generator().manual_seed(seed)

    def u(t, lo, hi):
        return torch.rand(t.shape, generator=g) * (hi - lo) + lo

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                mod.running_mean.copy_(u(mod.running_mean, -0.2, 0.2))
                mod.running_var.copy_(u(mod.running_var, 0.5, 1.5))
                mod.weight.copy_(u(mod.weight, 0.5, 1.5))
                mod.bias.copy_(u(mod.bias, -0.2, 0.2))
            elif isinstance(mod, nn.PReLU):
                mod.weight.copy_(u(mod.weight, 0.0, 0.5))
            elif isinstance(mod, nn.LayerNorm):
                mod.weight.copy_(u(mod.weight, 0.5, 1.5))
                mod.bias.copy_(u(mod.bias, -0.2, 0.2))
        for name, p in model.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(u(p, 0.5, 1.5))


def _load_into_ours(ref: nn.Module, cfg: ModelConfig) -> AffectModel:
    ours = AffectModel(cfg)
    ours.load_state_dict(map_reference_state_dict(ref.state_dict()), strict=True)
    return ours.eval()


def test_fusion_model_matches_reference(ref_module, monkeypatch):
    torch.manual_seed(0)
    ref = _build_reference(ref_module, "my_2d1ddy", monkeypatch, modality=["frame", "mfcc", "vggish"])
    _randomise(ref, 1)
    ref.eval()
    ours = _load_into_ours(ref, REF_CFG)
    b, t = 2, 5
    frames = torch.randn(b, t, 3, 40, 40)
    vggish, mfcc = torch.randn(b, t, 128), torch.randn(b, t, 39)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the reference takes audio as (B, 1, T, D) (PAPER.md §1.5) and is called (frames, vggish, mfcc)
        y_ref = ref(frames, vggish[:, None], mfcc[:, None])
        y = ours(frames, [vggish, mfcc])
    assert y.shape == y_ref.shape == (b, t, 1)
    assert torch.equal(y, y_ref), f"max |diff| {(y - y_ref).abs().max():.3g} (README: bit-exact)"


def test_temporal_fusion_matches_reference_beyond_receptive_field(ref_module, monkeypatch):
    """Long sequences through the TCNs + fusion: the encoder is bypassed on both sides."""
    torch.manual_seed(1)
    ref = _build_reference(ref_module, "my_2d1ddy", monkeypatch, modality=["frame", "mfcc", "vggish"])
    _randomise(ref, 2)
    ref.eval()
    ours = _load_into_ours(ref, REF_CFG)
    ref.spatial = nn.Flatten()  # embeddings given directly as [B*T, 512, 1, 1]
    b, t = 2, 180
    emb = torch.nn.functional.normalize(torch.randn(b, t, 512), dim=-1)
    vggish, mfcc = torch.randn(b, t, 128), torch.randn(b, t, 39)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y_ref = ref(emb[..., None, None], vggish[:, None], mfcc[:, None])
        y = ours.temporal(emb, [vggish, mfcc])
    assert torch.equal(y, y_ref), f"max |diff| {(y - y_ref).abs().max():.3g} (README: bit-exact)"
    # and the comparison is sensitive: perturbing one of our weights breaks it
    with torch.no_grad():
        ours.temporal.fusion.query[2].bias.add_(0.5)
        y_bad = ours.temporal(emb, [vggish, mfcc])
    assert not torch.allclose(y_bad, y_ref, atol=1e-3)


def test_visual_only_model_matches_reference(ref_module, monkeypatch):
    torch.manual_seed(2)
    ref = _build_reference(ref_module, "my_2d1d", monkeypatch, modality=["frame"])
    _randomise(ref, 3)
    ref.eval()
    cfg = ModelConfig(encoder="ir50", fusion=False, outputs=("valence",))
    ours = _load_into_ours(ref, cfg)
    frames = torch.randn(2, 4, 3, 40, 40)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y_ref = ref(frames)
        y = ours(frames)
    assert torch.equal(y, y_ref), f"max |diff| {(y - y_ref).abs().max():.3g} (README: bit-exact)"


def test_reference_parameter_counts_match_paper(ref_module, monkeypatch):
    """PAPER.md §9.2: 38 376 449 parameters in the reference fusion model, which includes the
    128 of its two unused GroupNorms; ours has no GroupNorm."""
    ref = _build_reference(ref_module, "my_2d1ddy", monkeypatch, modality=["frame", "mfcc", "vggish"])
    n_ref = sum(p.numel() for p in ref.parameters())
    n_ours = sum(p.numel() for p in AffectModel(REF_CFG).parameters())
    assert n_ref == 38_376_449
    assert n_ours == 38_376_449 - 128
