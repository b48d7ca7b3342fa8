"""Step form == offline causal forward; window form == step form for W >= receptive field;
folding changes nothing (ARCHITECTURE.md §4 contract)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from affedge.config import ModelConfig
from affedge.export.folding import fold_encoder, fold_temporal_fusion, fold_weight_norm
from affedge.export.streaming import StreamingStep, WindowForm, run_stream
from affedge.training.backbones import build_encoder
from affedge.training.model import TemporalFusion
from affedge.training.tcn import TemporalBlock

torch.set_num_threads(1)
RF = 121


def _random_tf(fusion: bool, seed: int = 0) -> TemporalFusion:
    """A TemporalFusion with non-trivial weight-norm gains and LayerNorm affine (as after
    training), in eval mode."""
    torch.manual_seed(seed)
    tf = TemporalFusion(ModelConfig(fusion=fusion))
    with torch.no_grad():
        for m in tf.modules():
            if isinstance(m, TemporalBlock):
                for conv in (m.conv1, m.conv2):
                    conv.parametrizations.weight.original0.mul_(
                        torch.empty_like(conv.parametrizations.weight.original0).uniform_(0.5, 1.5))
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return tf.eval()


def _inputs(n: int, t: int, fusion: bool, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    emb = nn.functional.normalize(torch.randn(n, t, 512, generator=g), dim=-1)
    audio = [torch.randn(n, t, 39, generator=g), torch.randn(n, t, 64, generator=g)] if fusion else []
    return emb, audio


@pytest.fixture(scope="module", params=[True, False], ids=["fusion", "visual_only"])
def setup(request):
    fusion = request.param
    tf = _random_tf(fusion)
    return fusion, tf, StreamingStep(tf), WindowForm(tf)


@pytest.mark.parametrize("length", [1, 50, 400])
def test_step_reproduces_offline_forward(setup, length):
    fusion, tf, step, _ = setup
    emb, audio = _inputs(2, length, fusion)
    with torch.no_grad():
        y_off = tf(emb, audio)
    y_step, states = run_stream(step, emb, audio)
    assert y_step.shape == y_off.shape == (2, length, 2)
    assert torch.allclose(y_step, y_off, atol=1e-5, rtol=0), (y_step - y_off).abs().max()
    assert [tuple(s.shape[1:]) for s in states] == [shape for _, shape in step.state_specs()]


def test_window_form_equals_step_form_when_window_covers_receptive_field(setup):
    fusion, _, step, window = setup
    assert window.receptive_field == step.receptive_field == RF
    emb, audio = _inputs(1, 400, fusion, seed=3)
    y_step, _ = run_stream(step, emb, audio)
    with torch.no_grad():
        for pos in (RF - 1, 200, 333, 399):
            for w in (RF, 300):
                lo = pos + 1 - w
                if lo < 0:
                    continue
                y_win = window(emb[:, lo:pos + 1], *[a[:, lo:pos + 1] for a in audio])
                assert y_win.shape == (1, w, 2)
                assert torch.allclose(y_win[:, -1], y_step[:, pos], atol=1e-5, rtol=0)
            # sanity check of the test itself: a window shorter than the RF misses history
            y_short = window(emb[:, pos - 59:pos + 1], *[a[:, pos - 59:pos + 1] for a in audio])
            assert (y_short[:, -1] - y_step[:, pos]).abs().max() > 1e-4


def test_step_continues_from_given_states(setup):
    fusion, _, step, _ = setup
    emb, audio = _inputs(1, 150, fusion, seed=4)
    y_all, _ = run_stream(step, emb, audio)
    _, mid = run_stream(step, emb[:, :70], [a[:, :70] for a in audio])
    y_rest, _ = run_stream(step, emb[:, 70:], [a[:, 70:] for a in audio], states=mid)
    assert torch.allclose(y_rest, y_all[:, 70:], atol=1e-6, rtol=0)


def test_state_layout_and_names():
    tf = _random_tf(True)
    step = StreamingStep(tf)
    specs = step.state_specs()
    k = 5
    per_tcn = lambda c_in, c: [(c_in if i == 0 and j == 0 else c, (k - 1) * 2**i)
                               for i in range(4) for j in range(2)]
    expected = per_tcn(512, 128) + per_tcn(39, 32) + per_tcn(64, 32)
    assert [shape for _, shape in specs] == expected
    assert [name for name, _ in specs] == [f"state_{i}" for i in range(24)]
    assert step.input_names == ["embedding", "audio_mfcc", "audio_logmel"] + [n for n, _ in specs]
    assert step.output_names == ["va"] + [f"state_out_{i}" for i in range(24)]
    assert step.state_shapes(3)[0] == ("state_0", (3, 512, 4))
    assert all(torch.count_nonzero(s) == 0 for s in step.initial_states(2))
    assert len(list(step.buffers())) == 0  # no hidden state
    vo = StreamingStep(_random_tf(False))
    assert vo.input_names == ["embedding"] + [f"state_{i}" for i in range(8)]


def test_step_is_pure_function_of_its_inputs():
    step = StreamingStep(_random_tf(True))
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(x.shape, generator=g) for x in step.example_inputs(2)]
    with torch.no_grad():
        a = step(*inputs)
        b = step(*inputs)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len(a) == 1 + 24 and a[0].shape == (2, 2)


def test_step_rejects_bad_inputs():
    step = StreamingStep(_random_tf(True))
    ex = list(step.example_inputs(1))
    with pytest.raises(ValueError, match="embedding"):
        step(torch.zeros(1, 256), *ex[1:])
    with pytest.raises(ValueError, match="audio_logmel"):
        step(ex[0], ex[1], torch.zeros(1, 39), *ex[3:])
    with pytest.raises(ValueError, match="state_5"):
        bad = ex[:3 + 5] + [torch.zeros(1, 128, 3)] + ex[3 + 6:]
        step(*bad)
    with pytest.raises(ValueError, match="expected 24 state tensors"):
        step(*ex[:-1])


# ---------------------------------------------------------------------------------- folding
def test_fold_temporal_fusion_changes_nothing_and_removes_weight_norm(setup):
    fusion, tf, _, _ = setup
    before = copy.deepcopy(tf.state_dict())
    folded = fold_temporal_fusion(tf)
    emb, audio = _inputs(2, 140, fusion, seed=5)
    with torch.no_grad():
        assert torch.allclose(folded(emb, audio), tf(emb, audio), atol=1e-5, rtol=0)
    assert not any(parametrize.is_parametrized(m) for m in folded.modules())
    assert not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in folded.modules())
    assert not folded.training and not any(p.requires_grad for p in folded.parameters())
    after = tf.state_dict()  # the source model is untouched
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_fold_weight_norm_handles_classic_hook():
    torch.manual_seed(0)
    with pytest.warns(FutureWarning):
        conv = torch.nn.utils.weight_norm(nn.Conv1d(6, 4, 3, padding=2, dilation=1))
    with torch.no_grad():
        conv.weight_g.mul_(2.0)
    x = torch.randn(2, 6, 11)
    with torch.no_grad():
        assert torch.allclose(fold_weight_norm(conv)(x), conv(x), atol=1e-6)


@pytest.mark.parametrize("name", ["mobile", "ir18"])
def test_fold_encoder_changes_nothing(name):
    torch.manual_seed(0)
    enc = build_encoder(name, ModelConfig())
    with torch.no_grad():  # learnt-looking BN statistics
        for m in enc.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    enc.eval()
    folded = fold_encoder(enc)
    x = torch.randn(3, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(folded(x), enc(x), atol=1e-5, rtol=0)
    n_bn = lambda m: sum(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())
    if name == "mobile":
        assert n_bn(folded) == 0  # every BN follows a conv/linear
    else:
        # only the leading BN of each IR unit stays (it precedes a zero-padded conv)
        assert n_bn(folded) == len(enc.body)


# ---------------------------------------------------------------------------------- export
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_step_exports_to_onnx_and_matches(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    step = StreamingStep(_random_tf(True))
    g = torch.Generator().manual_seed(0)
    inputs = tuple(torch.randn(x.shape, generator=g) for x in step.example_inputs(1))
    path = tmp_path / "step.onnx"
    torch.onnx.export(step, inputs, str(path), input_names=step.input_names,
                      output_names=step.output_names, dynamo=False,
                      dynamic_axes={n: {0: "n"} for n in step.input_names + step.output_names})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == step.input_names
    assert [o.name for o in sess.get_outputs()] == step.output_names
    # run 3 chained steps with batch 2 through ONNX Runtime and torch
    feeds = [x.numpy() for x in step.example_inputs(2)]
    states_t = [torch.from_numpy(f) for f in feeds[3:]]
    states_o = feeds[3:]
    for _ in range(3):
        frame = [np.random.default_rng(1).standard_normal(f.shape).astype(np.float32)
                 for f in feeds[:3]]
        out_o = sess.run(None, dict(zip(step.input_names, frame + states_o)))
        with torch.no_grad():
            out_t = step(*[torch.from_numpy(f) for f in frame], *states_t)
        assert np.allclose(out_o[0], out_t[0].numpy(), atol=1e-5)
        states_o, states_t = out_o[1:], list(out_t[1:])
