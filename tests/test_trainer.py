"""Trainer pieces: embedding cache, optimiser state files, resume, determinism, bad input."""
import json

import numpy as np
import pytest
import torch

from affedge.training.backbones import build_encoder
from affedge.training.embedding_cache import (FrameFeatureCache, check_split, encoder_head,
                                              encoder_trunk, frames_tensor, training_views)
from affedge.training.trainer import optimizer_from_files, optimizer_to_files

torch.set_num_threads(1)


def _frames(n=12, seed=0):
    return np.random.default_rng(seed).integers(0, 255, size=(n, 48, 48, 3), dtype=np.uint8)


def test_trunk_head_split_equals_forward():
    enc = build_encoder("mobile").eval()
    check_split(enc)
    x = frames_tensor(_frames(4), training_views(1)[0])
    with torch.no_grad():
        torch.testing.assert_close(encoder_head(enc, encoder_trunk(enc, x)), enc(x), atol=1e-5, rtol=1e-4)


def test_cache_computes_once_and_recomputes_only_after_weights_change():
    torch.manual_seed(0)
    enc = build_encoder("mobile")
    cache = FrameFeatureCache(enc, "trunk", training_views(2))
    trials = {"a": _frames(10, 1), "b": _frames(6, 2)}
    assert cache.refresh(trials)
    assert cache.n_computed == 2 * 16
    assert not cache.refresh(trials)  # nothing changed: no encoder pass
    assert cache.n_computed == 32
    # the released output layer is not part of the cached trunk: training it keeps the cache
    with torch.no_grad():
        enc.output_layer[-2].weight.add_(0.1)
    assert not cache.refresh(trials)
    # a change in the frozen trunk invalidates everything
    with torch.no_grad():
        enc.body[-1][0].conv[0][0].weight.mul_(1.5)
    assert cache.refresh(trials)
    assert cache.n_computed == 64
    # cached features equal a direct computation; view 1 is the mirror of view 0
    enc.eval()
    with torch.no_grad():
        direct = encoder_trunk(enc, frames_tensor(trials["a"], cache.views[1]))
    torch.testing.assert_close(cache.get("a", 1), direct, atol=2e-2, rtol=1e-2)  # fp16 storage
    assert cache.views[1].flip and not cache.views[0].flip
    with pytest.raises(KeyError, match="trial 'zz'"):
        cache.get("zz")


def test_embedding_level_cache_uses_whole_encoder():
    enc = build_encoder("mobile").eval()
    cache = FrameFeatureCache(enc, "embedding", training_views(1), store_dtype=torch.float32)
    f = _frames(5)
    cache.refresh({"a": f})
    with torch.no_grad():
        torch.testing.assert_close(cache.head(cache.get("a")), enc(frames_tensor(f, cache.views[0])))
    with torch.no_grad():
        enc.output_layer[-2].weight.add_(0.1)  # whole encoder frozen: any change recomputes
    assert cache.refresh({"a": f})


def test_optimizer_state_roundtrip_without_pickles(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-3)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()
    optimizer_to_files(opt, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimizer.json", "optimizer.safetensors"]
    json.loads((tmp_path / "optimizer.json").read_text())
    net2 = torch.nn.Linear(4, 3)
    net2.load_state_dict(net.state_dict())
    opt2 = torch.optim.Adam(net2.parameters(), lr=5.0)
    optimizer_from_files(opt2, tmp_path)
    assert opt2.param_groups[0]["lr"] == 1e-3
    x = torch.randn(8, 4)
    for o, n in ((opt, net), (opt2, net2)):
        o.zero_grad()
        n(x).pow(2).sum().backward()
        o.step()
    torch.testing.assert_close(net.weight, net2.weight)


# ------------------------------------------------------------------ the loop on in-memory data
from affedge.config import FeatureConfig  # noqa: E402
from affedge.training.trainer import (FoldData, TrainOptions, Trial, read_csv,  # noqa: E402
                                      train_fold)


def _fold(n_train=2, n_val=1, length=90, seed=0):
    """A small learnable fold: face colour and the first audio dims carry V/A."""
    rng = np.random.default_rng(seed)

    def trial(k):
        t = np.linspace(0, 6, length)
        lab = (0.8 * np.stack([np.sin(t + k), np.cos(0.7 * t + k)], 1)).astype(np.float32)
        fr = np.full((length, 48, 48, 3), 128, np.uint8)
        fr[:, 10:38, 10:38, 0] = (128 + 100 * lab[:, 0])[:, None, None].astype(np.uint8)
        fr[:, 10:38, 10:38, 1] = (128 + 100 * lab[:, 1])[:, None, None].astype(np.uint8)
        aud = [np.concatenate([lab, rng.normal(size=(length, 37))], 1).astype(np.float32),
               rng.normal(size=(length, 64)).astype(np.float32)]
        return Trial(f"t{k}", fr, np.ones(length, bool), lab, aud, 30.0)

    return FoldData([trial(k) for k in range(n_train)], [trial(100 + k) for k in range(n_val)],
                    {"mfcc": {"mean": 0.0, "std": 1.0}}, FeatureConfig())


FAST = dict(encoder="mobile", lr=1e-3, pretrain_epochs=1, pretrain_batch=32, pretrain_stride=3,
            window=40, hop=25, batch_size=4, progress=False)


def test_same_seed_gives_identical_metrics(tmp_path):
    runs = []
    for i in range(2):
        train_fold(None, tmp_path / f"r{i}", data=_fold(), opts=TrainOptions(epochs=2, seed=3, **FAST))
        runs.append(read_csv(tmp_path / f"r{i}" / "metrics.csv"))
    for a, b in zip(*runs):
        a.pop("seconds"), b.pop("seconds")
        assert a == b
    # a different seed gives different numbers
    train_fold(None, tmp_path / "r2", data=_fold(), opts=TrainOptions(epochs=2, seed=4, **FAST))
    other = read_csv(tmp_path / "r2" / "metrics.csv")
    assert other[-1]["train_loss"] != runs[0][-1]["train_loss"]


def test_outputs_and_resume_match_an_uninterrupted_run(tmp_path):
    opts = dict(FAST, pretrain_epochs=0)
    train_fold(None, tmp_path / "full", data=_fold(), opts=TrainOptions(epochs=3, **opts))
    train_fold(None, tmp_path / "part", data=_fold(), opts=TrainOptions(epochs=2, **opts))
    train_fold(None, tmp_path / "part", data=_fold(), opts=TrainOptions(epochs=3, resume=True, **opts))
    full, part = read_csv(tmp_path / "full" / "metrics.csv"), read_csv(tmp_path / "part" / "metrics.csv")
    assert len(full) == len(part) == 3
    for a, b in zip(full, part):
        a.pop("seconds"), b.pop("seconds")
        assert a == b
    out = tmp_path / "full"
    assert {"epoch", "phase", "lr", "train_loss", "valence_ccc", "arousal_ccc", "valence_pcc",
            "arousal_pcc", "valence_rmse", "arousal_rmse", "mean_ccc"} <= set(full[0])
    for f in ("best/model.safetensors", "best/config.json", "last/optimizer.safetensors",
              "last/optimizer.json", "last/trainer_state.json", "curves.png", "val_pred.png"):
        assert (out / f).is_file(), f
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pth")) and not list(out.rglob("*.pkl"))
    from affedge.training.model import load_checkpoint

    model, info = load_checkpoint(out / "best")
    assert info["model_config"].encoder == "mobile" and info["norm_stats"]


def test_gradual_release_order_then_stop(tmp_path):
    # a tiny LR never improves by the scheduler's threshold: with patience 0 the LR drops every
    # epoch, so each group is released after two drops (PAPER.md §2.2) and then training stops
    opts = TrainOptions(epochs=30, patience=0, **dict(FAST, lr=1e-9, pretrain_epochs=0))
    s = train_fold(None, tmp_path / "rel", data=_fold(), opts=opts)
    rows = read_csv(tmp_path / "rel" / "metrics.csv")
    phases = [r["phase"] for r in rows]
    assert phases[0] == "release1-trunk"
    assert "release2-frames" in phases and "release3-frames" in phases
    assert phases.index("release2-frames") < phases.index("release3-frames")
    assert s["stop_reason"].startswith("LR below min_lr and no encoder group left")
    # the LR is reset to the initial value at each release
    first = {p: float(r["lr"]) for r in reversed(rows) for p in [r["phase"]]}
    assert all(v == pytest.approx(1e-9) for v in first.values())


def test_bad_input_names_the_problem(tmp_path):
    from affedge.training.trainer import load_fold

    with pytest.raises(FileNotFoundError, match="nope"):
        load_fold(tmp_path / "nope", 0)
    with pytest.raises(ValueError, match="modality"):
        TrainOptions(modality="x")
    with pytest.raises(FileNotFoundError, match="pretrained encoder"):
        train_fold(None, tmp_path / "o", data=_fold(), opts=TrainOptions(
            pretrained_encoder=str(tmp_path / "missing"), **dict(FAST, pretrain_epochs=0)))


def test_checkpoint_files_follow_the_umask(tmp_path):
    """safetensors creates its files 0600; checkpoints (and the bundles copied from them) get
    the mode the umask gives every other file, so others on the machine can read them."""
    import os
    import stat

    from affedge.config import ModelConfig
    from affedge.training.model import AffectModel, save_checkpoint
    from affedge.training.trainer import optimizer_to_files

    old = os.umask(0o022)
    try:
        cfg = ModelConfig(encoder="mobile")
        d = save_checkpoint(tmp_path / "ck", AffectModel(cfg), cfg)
        net = torch.nn.Linear(2, 2)
        opt = torch.optim.Adam(net.parameters())
        net(torch.ones(1, 2)).sum().backward()
        opt.step()
        optimizer_to_files(opt, tmp_path)
    finally:
        os.umask(old)
    for f in (d / "model.safetensors", tmp_path / "optimizer.safetensors"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_the_kept_epoch_is_the_best_trailing_mean_and_resume_keeps_the_window(tmp_path):
    """select_window=3 (the fast profile's): the score of an epoch is the mean CCC averaged
    with the two epochs before it; the kept epoch ("best") is where that is highest, and a
    resumed run carries the window on (its rows equal an uninterrupted run's)."""
    import math

    opts = dict(FAST, pretrain_epochs=0, select_window=3)
    s = train_fold(None, tmp_path / "full", data=_fold(),
                   opts=TrainOptions(epochs=6, early_stop=50, **opts))
    rows = read_csv(tmp_path / "full" / "metrics.csv")
    raw = [float(r["mean_ccc"]) for r in rows]
    want = [sum(raw[max(0, i - 2):i + 1]) / len(raw[max(0, i - 2):i + 1]) for i in range(len(raw))]
    assert [float(r["select_score"]) for r in rows] == pytest.approx(want, abs=1e-9)
    best = max(range(len(want)), key=lambda i: (want[i], -i))
    assert s["best_epoch"] == best and s["best_score"] == pytest.approx(want[best])
    kept = [i for i, r in enumerate(rows) if r["best"] == "1"]
    assert kept[-1] == best and all(want[j] > max(want[:j], default=-math.inf) for j in kept)
    train_fold(None, tmp_path / "part", data=_fold(), opts=TrainOptions(epochs=4, early_stop=50, **opts))
    train_fold(None, tmp_path / "part", data=_fold(),
               opts=TrainOptions(epochs=6, early_stop=50, resume=True, **opts))
    part = read_csv(tmp_path / "part" / "metrics.csv")
    for a, b in zip(rows, part):
        a.pop("seconds"), b.pop("seconds")
        assert a == b


def test_selection_score_window_and_non_finite_values():
    from affedge.training.selection import SelectionScore

    s = SelectionScore(3)
    assert [s.push(x) for x in (0.3, 0.9, 0.3, 0.7)] == pytest.approx([0.3, 0.6, 0.5, 0.6333333])
    assert s.push(float("nan")) == float("-inf") and s.push(0.5) == float("-inf")
    assert s.push(0.5) == float("-inf") and s.push(0.5) == pytest.approx(0.5)
    assert SelectionScore(1).push(0.42) == pytest.approx(0.42)
    assert SelectionScore(3, [0.1, 0.2, 0.3, 0.4]).recent == [0.2, 0.3, 0.4]
    with pytest.raises(ValueError, match="select_window must be >= 1"):
        SelectionScore(0)
