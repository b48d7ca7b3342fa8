"""Encoders, TCN, fusion, the full model and checkpoints (PAPER.md §2-§4, §9)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from affedge.config import FeatureConfig, ModelConfig
from affedge.training.backbones import ENCODERS, build_encoder, count_flops
from affedge.training.fusion import LeaderFollowerFusion
from affedge.training.model import (
    AffectModel,
    TemporalFusion,
    load_checkpoint,
    map_reference_state_dict,
    save_checkpoint,
)
from affedge.training.tcn import TemporalConvNet

torch.set_num_threads(1)


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------- encoders
@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_output_is_unit_norm_512(name):
    torch.manual_seed(0)
    enc = build_encoder(name, ModelConfig()).eval()
    with torch.no_grad():
        emb = enc(torch.randn(2, 3, 40, 40))
    assert emb.shape == (2, 512)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_encoder_rejects_bad_input():
    enc = build_encoder("mobile", ModelConfig()).eval()
    with pytest.raises(ValueError, match=r"\[N, 3, 40, 40\]"):
        enc(torch.zeros(1, 3, 48, 48))
    with pytest.raises(TypeError, match="floating"):
        enc(torch.zeros(1, 3, 40, 40, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("resnet9000", ModelConfig())


def test_ir50_matches_paper_sizes_and_release_groups():
    enc = build_encoder("ir50", ModelConfig())
    # PAPER.md §9.2: 37 283 520 params; output layer 6 556 160
    assert n_params(enc) == 37_283_520
    assert n_params(enc.output_layer) == 6_556_160
    # registration order input_layer, output_layer, body; §2.2 indices of the release groups
    names = [n for n, _ in enc.named_parameters()]
    assert names[0].startswith("input_layer") and names[4].startswith("output_layer")
    assert names[10].startswith("body") and len(names) == 187
    index = {id(p): i for i, p in enumerate(enc.parameters())}
    groups = enc.release_groups()
    spans = [sorted(index[id(p)] for p in g) for g in groups]
    assert spans[0] == list(range(4, 10))
    assert spans[1] == list(range(163, 187))
    assert spans[2] == list(range(142, 163))
    assert [sum(p.numel() for p in g) for g in groups] == [6_556_160, 13_115_392, 3_542_784]
    # 40x40 -> 5x5x512 before the output layer (stride-1 first stage)
    with torch.no_grad():
        feat = enc.body(enc.input_layer(torch.zeros(1, 3, 40, 40)))
    assert feat.shape == (1, 512, 5, 5)


@pytest.mark.parametrize("name", ["ir18", "mobile"])
def test_light_encoder_release_groups_are_disjoint_head_first(name):
    enc = build_encoder(name, ModelConfig())
    groups = enc.release_groups()
    assert len(groups) == 3 and all(groups)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids))
    assert {id(p) for p in groups[0]} == {id(p) for p in enc.output_layer.parameters()}


def test_encoder_flops_ir50_as_paper_and_mobile_under_a_tenth():
    flops = {name: count_flops(build_encoder(name, ModelConfig())) for name in ENCODERS}
    assert flops["ir50"] == pytest.approx(6.05e9, rel=0.01)  # PAPER.md §9.1
    assert flops["ir18"] < flops["ir50"]
    assert flops["mobile"] / flops["ir50"] <= 0.1
    assert flops["mobile"] <= 80e6  # trainable on a small CPU


# ---------------------------------------------------------------------------------- TCN
def test_tcn_structure_and_sizes():
    tcn = TemporalConvNet(512, (128, 128, 128, 128), kernel_size=5, dropout=0.1)
    assert tcn.receptive_field == 121  # PAPER.md §2.3
    assert n_params(tcn) == 968_832  # PAPER.md §9.2
    assert n_params(TemporalConvNet(128, (32,) * 4)) == 60_960
    assert n_params(TemporalConvNet(39, (32,) * 4)) == 43_872
    for i, block in enumerate(tcn.network):
        assert block.dilation == 2**i and block.pad == 4 * 2**i
        for conv in (block.conv1, block.conv2):
            assert parametrize.is_parametrized(conv, "weight")
            assert conv.padding == (4 * 2**i,)
            # effective init: g = ||v|| per output channel (PAPER.md §2.3 init note)
            g = conv.parametrizations.weight.original0.flatten()
            v = conv.parametrizations.weight.original1
            assert torch.allclose(g, v.flatten(1).norm(dim=1))
        assert isinstance(block.dropout1, nn.Dropout1d)
        assert (block.downsample is not None) == (i == 0)


def test_tcn_channel_dropout_in_training():
    torch.manual_seed(0)
    tcn = TemporalConvNet(8, (16,), kernel_size=3, dropout=0.5).train()
    block = tcn.network[0]
    h = block.dropout1(torch.ones(4, 16, 30))
    # whole channels are zeroed over the entire window (Dropout2d semantics, PAPER.md §2.3)
    per_channel = (h == 0).all(dim=-1) | (h != 0).all(dim=-1)
    assert per_channel.all() and (h == 0).any()


def test_tcn_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[B, 512, T\]"):
        TemporalConvNet(512, (128,))(torch.zeros(1, 100, 10))


# ---------------------------------------------------------------------------------- fusion
def _oracle_fusion(f: LeaderFollowerFusion, h_v, hs):
    """PAPER.md §4 written out token by token."""
    lin = lambda m, x: x @ m.weight.T + m.bias
    k = [lin(f.key[0], h_v)]
    q = [lin(f.query[0], h_v)]
    v = [lin(f.value[0], h_v)]
    for i, h in enumerate(hs, 1):
        a = lin(f.key[i], h)
        k.append(a)
        q.append(lin(f.query[i], a))
        v.append(lin(f.value[i], a))
    n = len(k)
    out = []
    for r in range(n):
        s = torch.stack([(k[r] * q[c]).sum(-1) / math.sqrt(32) for c in range(n)], -1)
        w = torch.softmax(s, -1)
        out.append(sum(w[..., c:c + 1] * v[c] for c in range(n)) + v[r])
    z = torch.stack(out, -2)
    mu = z.mean(dim=(-1, -2), keepdim=True)
    var = z.var(dim=(-1, -2), unbiased=False, keepdim=True)
    z = (z - mu) / torch.sqrt(var + 1e-5) * f.norm.weight + f.norm.bias
    return lin(f.regressor, torch.cat([h_v, z.flatten(-2)], -1))


@pytest.mark.parametrize("n_audio", [1, 2, 3])
def test_fusion_matches_written_out_formula(n_audio):
    torch.manual_seed(n_audio)
    f = LeaderFollowerFusion(128, [32] * n_audio, 32, 2)
    with torch.no_grad():
        f.norm.weight.uniform_(0.5, 1.5)
        f.norm.bias.uniform_(-0.3, 0.3)
    assert f.norm.normalized_shape == (1 + n_audio, 32)
    assert f.regressor.in_features == 128 + 32 * (1 + n_audio)
    h_v, hs = torch.randn(3, 7, 128), [torch.randn(3, 7, 32) for _ in range(n_audio)]
    with torch.no_grad():
        assert torch.allclose(f(h_v, hs), _oracle_fusion(f, h_v, hs), atol=1e-5)


def test_fusion_paper_configuration_sizes():
    f = LeaderFollowerFusion(128, [32, 32], 32, 1)
    assert f.regressor.in_features == 224
    assert n_params(f) == 19_137  # PAPER.md §9.2 (without the unused GroupNorms)


# ---------------------------------------------------------------------------------- model
def test_temporal_fusion_shapes_and_modes():
    torch.manual_seed(0)
    cfg = ModelConfig()
    tf = TemporalFusion(cfg).eval()
    emb = torch.randn(2, 9, 512)
    audio = [torch.randn(2, 9, 39), torch.randn(2, 9, 64)]
    with torch.no_grad():
        assert tf(emb, audio).shape == (2, 9, 2)
    assert tf.receptive_field == cfg.receptive_field == 121
    vo = TemporalFusion(ModelConfig(fusion=False, outputs=("valence",))).eval()
    assert len(vo.audio) == 0 and vo.head.in_features == 128
    with torch.no_grad():
        assert vo(emb).shape == (2, 9, 1)


def test_temporal_fusion_rejects_bad_inputs():
    tf = TemporalFusion(ModelConfig()).eval()
    emb = torch.zeros(1, 5, 512)
    good = [torch.zeros(1, 5, 39), torch.zeros(1, 5, 64)]
    with pytest.raises(ValueError, match="embedding"):
        tf(torch.zeros(1, 5, 256), good)
    with pytest.raises(ValueError, match="expected 2 audio streams"):
        tf(emb, good[:1])
    with pytest.raises(ValueError, match="'logmel'"):
        tf(emb, [good[0], torch.zeros(1, 4, 64)])


def test_affect_model_forward_mobile():
    torch.manual_seed(0)
    model = AffectModel(ModelConfig(encoder="mobile")).eval()
    frames = torch.randn(2, 6, 3, 40, 40)
    with torch.no_grad():
        y = model(frames, [torch.randn(2, 6, 39), torch.randn(2, 6, 64)])
    assert y.shape == (2, 6, 2) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="frames"):
        model(torch.zeros(2, 6, 40, 40, 3), [])
    # encoder parameters come first (the release-group indexing of PAPER.md §2.2)
    assert next(iter(model.parameters())) is next(iter(model.encoder.parameters()))


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(encoder="mobile")
    model = AffectModel(cfg).eval()
    stats = {"mfcc": {"mean": 0.5, "std": 2.0}, "logmel": {"mean": -3.0, "std": 1.5}}
    save_checkpoint(tmp_path / "ck", model, cfg, FeatureConfig(), stats, {"epoch": 3})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors"]
    info_json = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert info_json["model"]["encoder"] == "mobile" and info_json["norm_stats"] == stats
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert info["model_config"] == cfg and info["feature_config"] == FeatureConfig()
    assert info["extra"] == {"epoch": 3} and not loaded.training
    frames = torch.randn(1, 4, 3, 40, 40)
    audio = [torch.randn(1, 4, 39), torch.randn(1, 4, 64)]
    with torch.no_grad():
        assert torch.equal(model(frames, audio), loaded(frames, audio))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(tmp_path)
    cfg = ModelConfig(encoder="mobile")
    save_checkpoint(tmp_path, AffectModel(cfg), cfg)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["model"]["visual_channels"] = [64, 64, 64, 64]  # weights no longer fit
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="do not match"):
        load_checkpoint(tmp_path)
    raw["format"] = "something-else"
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="not an affedge checkpoint"):
        load_checkpoint(tmp_path)


def test_map_reference_state_dict_keys():
    t = torch.zeros(1)
    sd = {
        "spatial.body.0.res_layer.1.weight": t,
        "temporal.network.0.conv1.weight_g": t,
        "temporal.network.0.conv1.weight_v": t,
        "temporal.network.0.net.0.weight_g": t,  # duplicate registration: dropped
        "temporal.network.0.downsample.bias": t,
        "temporal2.network.3.conv2.bias": t,
        "encoder1.weight": t, "encoderQ3.bias": t, "encoderV2.weight": t,
        "ln.weight": t, "regressor.bias": t, "gn1.weight": t,
    }
    assert set(map_reference_state_dict(sd)) == {
        "encoder.body.0.res_layer.1.weight",
        "temporal.visual.network.0.conv1.parametrizations.weight.original0",
        "temporal.visual.network.0.conv1.parametrizations.weight.original1",
        "temporal.visual.network.0.downsample.bias",
        "temporal.audio.1.network.3.conv2.bias",
        "temporal.fusion.key.0.weight", "temporal.fusion.query.2.bias",
        "temporal.fusion.value.1.weight", "temporal.fusion.norm.weight",
        "temporal.fusion.regressor.bias",
    }
    assert set(map_reference_state_dict({"regressor.weight": t, "backbone.input_layer.0.weight": t,
                                         "logits.weight": t})) == {
        "temporal.head.weight", "encoder.input_layer.0.weight"}
    with pytest.raises(KeyError, match="unrecognised"):
        map_reference_state_dict({"mystery.weight": t})
