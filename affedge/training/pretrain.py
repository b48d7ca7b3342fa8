"""Stage 0: per-frame encoder pretraining, before the temporal model (PAPER.md §5)."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from affedge.config import ModelConfig
from affedge.training import ddp
from affedge.training.embedding_cache import (
    frames_tensor,
    random_view,
)
from affedge.training.fold_data import FoldData
from affedge.training.losses import frame_ccc_loss
from affedge.training.predict import embed_frames, va_metrics
from affedge.training.train_utils import CsvLog, _progress

if TYPE_CHECKING:  # the options class lives with the trainer, which imports this module
    from affedge.training.trainer import TrainOptions


# ============================================================================================
# Stage 0: encoder pretraining
# ============================================================================================
class _FrameRegressor(nn.Module):
    def __init__(self, encoder: nn.Module, n_out: int = 2):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.output_layer[-1].num_features if hasattr(encoder, "output_layer") else 512, n_out)

    def forward(self, x):
        return self.head(self.encoder(x))


def pretrain_encoder(model: nn.Module, data: FoldData, opts: TrainOptions, out_dir: Path,
                     model_cfg: ModelConfig, deadline: float | None = None) -> dict[str, Any]:
    """Stage 0 (see module doc). Trains ``model.encoder`` in place; writes ``pretrain/``."""
    dist = ddp.context()
    reg = _FrameRegressor(model.encoder, len(model_cfg.outputs))
    net = dist.wrap(reg)
    opt = torch.optim.Adam([p for p in reg.parameters() if p.requires_grad], lr=opts.pretrain_lr,
                           weight_decay=opts.weight_decay)
    idx = [(ti, i) for ti, t in enumerate(data.train) for i in np.flatnonzero(t.face)]
    if not idx:
        raise ValueError("encoder pretraining: the training trials have no frames with a face")
    fs, cs = data.feature_cfg.frame_size, data.feature_cfg.crop_size
    log = CsvLog(out_dir / "pretrain.csv", dist.is_main)
    history = []
    for epoch in range(opts.pretrain_epochs):
        rng = np.random.default_rng([opts.seed, 1000 + epoch])
        torch.manual_seed(opts.seed * 7919 + epoch)
        order = rng.permutation(len(idx))[::opts.pretrain_stride]
        order = dist.shard(order, epoch)
        reg.train()
        losses = []
        batches = range(0, len(order), opts.pretrain_batch)
        it = _progress(batches, opts.progress and dist.is_main, f"pretrain {epoch}")
        for s in it:
            sel = order[s:s + opts.pretrain_batch]
            if len(sel) < 2:
                continue
            xs, ys = [], []
            for j in sel:
                ti, fi = idx[j]
                v = random_view(rng, fs, cs)
                xs.append(frames_tensor(data.train[ti].frames[fi:fi + 1], v, cs))
                ys.append(data.train[ti].labels[fi])
            x = torch.cat(xs).to(dist.device)
            y = torch.from_numpy(np.stack(ys)).to(dist.device)
            loss = frame_ccc_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        dist.sync_module(reg)
        # per-frame validation CCC (centre crop, frames with a face)
        reg.eval()
        ys, ps = [], []
        with torch.no_grad():
            for t in data.val:
                f = np.flatnonzero(t.face)
                if len(f):
                    ps.append(reg.head(embed_frames(model.encoder, t.frames[f], cs)).cpu().numpy())
                    ys.append(t.labels[f])
        row = {"epoch": epoch, "train_loss": dist.mean(float(np.mean(losses)) if losses else math.nan)}
        if ys:
            row.update(va_metrics(np.concatenate(ys), np.concatenate(ps)))
        history.append(row)
        log.write(row)
        if dist.is_main and opts.progress:
            print(f"[pretrain] epoch {epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in row.items()
                                                      if k != "epoch"), file=sys.stderr, flush=True)
        if deadline is not None and dist.agree(time.time() > deadline):
            break
    if dist.is_main:
        from affedge.training.model import save_checkpoint

        save_checkpoint(out_dir / "pretrain", model, model_cfg, data.feature_cfg, data.norm_stats,
                        {"stage": "encoder_pretrain", "history": history})
    dist.barrier()
    return {"history": history}

