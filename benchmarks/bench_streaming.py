"""Streaming step vs window recomputation (pytest-benchmark, CPU, 1 thread).

Run: .venv/bin/python -m pytest benchmarks/bench_streaming.py --benchmark-only -q \
        --benchmark-columns=median,iqr,ops --benchmark-group-by=group

Groups:
* ``temporal``: one step (N=1) vs re-running temporal+fusion over a 300-frame window;
* ``history``: step latency after 300 vs 3000 frames of history (state is fixed-size, so the
  two should be equal);
* ``frame``: a whole frame = mobile encoder on the new crop + step, vs re-encoding all 300 crops
  of the window and re-running the window form (what a stateless sliding window costs).
"""
from __future__ import annotations

import pytest
import torch

from affedge.config import ModelConfig
from affedge.export.folding import fold_encoder
from affedge.export.streaming import StreamingStep, WindowForm, run_stream
from affedge.training.backbones import build_encoder
from affedge.training.model import TemporalFusion

torch.set_num_threads(1)
CFG = ModelConfig(encoder="mobile")
W = 300


@pytest.fixture(scope="module")
def forms():
    torch.manual_seed(0)
    tf = TemporalFusion(CFG).eval()
    return StreamingStep(tf), WindowForm(tf), fold_encoder(build_encoder("mobile", CFG).eval())


def _frame_inputs(n_frames: int):
    g = torch.Generator().manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(1, n_frames, 512, generator=g), dim=-1)
    audio = [torch.randn(1, n_frames, d, generator=g) for _, d in CFG.audio_streams]
    return emb, audio


def _stepper(step, states, emb, audio):
    def run():
        with torch.no_grad():
            return step(emb[:, -1], *[a[:, -1] for a in audio], *states)
    return run


@pytest.mark.benchmark(group="temporal")
def test_step_n1(benchmark, forms):
    step, _, _ = forms
    emb, audio = _frame_inputs(W)
    _, states = run_stream(step, emb, audio)
    benchmark.pedantic(_stepper(step, states, emb, audio), rounds=300, warmup_rounds=20)


@pytest.mark.benchmark(group="temporal")
def test_window300_recompute(benchmark, forms):
    _, window, _ = forms
    emb, audio = _frame_inputs(W)

    def run():
        with torch.no_grad():
            return window(emb, *audio)[:, -1]
    benchmark.pedantic(run, rounds=40, warmup_rounds=3)


@pytest.mark.benchmark(group="history")
@pytest.mark.parametrize("history", [300, 3000])
def test_step_after_history(benchmark, forms, history):
    step, _, _ = forms
    emb, audio = _frame_inputs(history)
    _, states = run_stream(step, emb, audio)
    benchmark.extra_info["history"] = history
    benchmark.pedantic(_stepper(step, states, emb, audio), rounds=300, warmup_rounds=20)


@pytest.mark.benchmark(group="frame")
def test_frame_mobile_encoder_plus_step(benchmark, forms):
    step, _, enc = forms
    emb, audio = _frame_inputs(W)
    _, states = run_stream(step, emb, audio)
    crop = torch.randn(1, 3, 40, 40)

    def run():
        with torch.no_grad():
            e = enc(crop)
            return step(e, *[a[:, -1] for a in audio], *states)
    benchmark.pedantic(run, rounds=200, warmup_rounds=10)


@pytest.mark.benchmark(group="frame")
def test_frame_reencode_window300(benchmark, forms):
    _, window, enc = forms
    _, audio = _frame_inputs(W)
    crops = torch.randn(W, 3, 40, 40)

    def run():
        with torch.no_grad():
            e = enc(crops)[None]
            return window(e, *audio)[:, -1]
    benchmark.pedantic(run, rounds=8, warmup_rounds=1)
