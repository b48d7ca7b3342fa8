"""Training loop of one cross-validation fold: the paper's temporal training with gradual release
(PAPER.md §2.2, §5), after the stage-0 encoder pretraining of :mod:`affedge.training.pretrain`.
Fold data, predictions and small helpers live in ``fold_data``, ``predict`` and ``train_utils``
(their names are re-exported here).

Stages of :func:`train_fold`:

0. **Encoder pretraining** (deviation: the paper starts from an IR-50 fine-tuned on FER+, which
   cannot be downloaded here). The encoder plus a linear V/A head is trained per frame on the
   fold's *training* trials (frames with a face only), with a random 40x40 crop and a horizontal
   flip per frame (PAPER.md §1.3) and the CCC loss over each batch of frames. Its checkpoint
   (``pretrain/``) is the "pretrained encoder" the gradual release starts from. Skipped with
   ``pretrained_encoder=...`` or ``pretrain_epochs=0``.
1. **Temporal training with gradual release** (PAPER.md §2.2/§5): all encoder parameters frozen
   except release group 1 (the output layer, released at epoch 0); CCC loss per window (both
   V and A, mean of the two); Adam with classic L2 weight decay; ReduceLROnPlateau on the
   validation CCC (mode max, patience 5, factor 0.1; averaged over ``select_window`` epochs:
   ``selection.py``); best-state reload after every epoch (``reload_best``); early stopping
   after 20 epochs without a new best. Whenever the LR falls
   below ``min_lr`` the next encoder group is released with a new optimiser and scheduler (LR
   reset) after reloading the best weights; with no group left, training stops.

CPU practicality: while only the output layer is released (or nothing), the frozen part of the
encoder is evaluated once per frame and cached (:mod:`affedge.training.embedding_cache`,
``trunk`` / ``embedding`` level) and the temporal blocks train on cached features; once deeper
groups are released, windows go end to end through the encoder (``e2e_batch_size`` windows per
step). Augmentation is per window (one crop/flip view for all its frames); validation uses the
centre crop.

Outputs in the fold directory: ``metrics.csv`` (one row per epoch), ``best/`` (best weights,
:func:`affedge.training.model.save_checkpoint`), ``last/`` (weights + optimiser tensors as
safetensors + ``trainer_state.json``; resumable), ``curves.png`` and ``val_pred.png``.
Distributed runs (torchrun) shard windows per rank; only rank 0 writes files.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from affedge.config import FeatureConfig, ModelConfig
from affedge.training import ddp
from affedge.training.embedding_cache import (FrameFeatureCache, encoder_head, frames_tensor,
                                              random_view, training_views)
from affedge.training.fold_data import FoldData, Trial, load_fold, trial_windows  # noqa: F401
from affedge.training.model import check_same_model
from affedge.training.run_plots import plot_training_curves, plot_validation
from affedge.training.losses import ccc_loss
from affedge.training.predict import (  # noqa: F401  (re-exported: callers import them here)
    DIMS, _pad, embed_frames, predict_embeddings, predict_trial, va_metrics)
from affedge.training.pretrain import pretrain_encoder  # noqa: F401
from affedge.training.selection import SelectionScore
from affedge.training.train_utils import (  # noqa: F401
    CsvLog, _device, _progress, _state_copy, load_pretrained_encoder, optimizer_from_files,
    optimizer_to_files, read_csv, set_seed)


# ============================================================================================
# Options
# ============================================================================================
@dataclass
class TrainOptions:
    """Everything that controls one training run. Paper values cite PAPER.md."""

    encoder: str = "ir50"
    modality: str = "av"  # "av" (leader-follower fusion) or "v" (visual only)
    epochs: int = 100  # PAPER.md §5 max epochs
    batch_size: int = 8  # windows per step while training on cached features (PAPER.md §5)
    e2e_batch_size: int = 2  # windows per step once deeper encoder groups are released
    lr: float = 1e-5  # PAPER.md §5
    min_lr: float | None = None  # default lr/10 (PAPER.md §2.2: 1e-6 for lr 1e-5)
    weight_decay: float = 1e-3  # PAPER.md §5, classic L2 (torch Adam's weight_decay)
    patience: int = 5
    factor: float = 0.1
    early_stop: int = 20
    window: int = 300
    hop: int = 200
    seed: int = 0
    reload_best: bool = True  # PAPER.md §5 load_best_at_each_epoch = 1
    select_window: int = 1  # epochs in the kept-epoch score's trailing mean (training.selection)
    release: bool = True  # gradual release of encoder groups (PAPER.md §2.2)
    person_baseline: bool = False  # fit affedge.sdk.person_baseline on validation
    head_at_start: bool = True  # release group 1 (output layer) at epoch 0 (PAPER.md §2.2)
    views: int = 2  # cached augmentation views per frame (centre, mirrored, random crops...)
    pretrained_encoder: str | None = None
    pretrain_epochs: int = 3
    pretrain_lr: float = 1e-3
    pretrain_batch: int = 64
    pretrain_stride: int = 1  # use every n-th labelled face frame per pretraining epoch
    max_minutes: float | None = None
    threads: int | None = None
    resume: bool = False
    progress: bool = True
    cache_dir: str | None = None  # dataset feature cache (audio features)
    plots: bool = True
    profile: str = "custom"  # the profile the values came from (affedge.training.profiles)
    announce: bool = False  # print the budget plan and the verdict (the CLI turns this on)

    def __post_init__(self):
        if self.modality not in ("av", "v"):
            raise ValueError(f"modality must be 'av' or 'v', got {self.modality!r}")
        for name in ("epochs", "batch_size", "e2e_batch_size", "window", "hop", "views",
                     "pretrain_batch", "pretrain_stride", "select_window"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.hop > self.window:
            raise ValueError(f"hop ({self.hop}) must be <= window ({self.window}): the frames "
                             f"between windows would never be trained on or validated")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    @property
    def min_lr_value(self) -> float:
        return self.lr * 0.1 if self.min_lr is None else self.min_lr


def model_config_for(opts: TrainOptions, feature_cfg: FeatureConfig) -> ModelConfig:
    streams = tuple((n, feature_cfg.stream_dim(n)) for n in feature_cfg.streams)
    return ModelConfig(encoder=opts.encoder, crop_size=feature_cfg.crop_size,
                       audio_streams=streams, fusion=opts.modality == "av")


# ============================================================================================
# The forward used for both paths (wrapped by DDP in distributed runs)
# ============================================================================================
class WindowForward(nn.Module):
    """``forward(visual, mask, audio) -> [B, W, n_out]``.

    ``visual`` is either cached features ``[B, W, ...]`` (``mode`` "embedding" or "trunk") or
    frames ``[B, W, 3, 40, 40]`` (``mode`` "frames"). Only frames with ``mask`` true go through
    the encoder / head; padded positions get a zero embedding.
    """

    def __init__(self, model: nn.Module, mode: str = "frames"):
        super().__init__()
        self.model = model
        self.mode = mode

    def forward(self, visual: torch.Tensor, mask: torch.Tensor, audio: list[torch.Tensor]):
        b, w = mask.shape
        flat_mask = mask.reshape(-1)
        real = visual.reshape(b * w, *visual.shape[2:])[flat_mask]
        if self.mode == "frames":
            emb_real = self.model.encoder(real)
        elif self.mode == "trunk":
            emb_real = encoder_head(self.model.encoder, real)
        else:
            emb_real = real
        emb = emb_real.new_zeros(b * w, emb_real.shape[-1]).index_put((flat_mask.nonzero().squeeze(1),), emb_real)
        return self.model.temporal(emb.reshape(b, w, -1), audio)


# ============================================================================================
# Stage 1: temporal training with gradual release
# ============================================================================================
class TemporalTrainer:
    """The paper's training loop for one fold (see the module docstring)."""

    def __init__(self, model: nn.Module, data: FoldData, opts: TrainOptions, out_dir: Path,
                 model_cfg: ModelConfig):
        self.model, self.data, self.opts, self.out = model, data, opts, out_dir
        self.model_cfg = model_cfg
        self.dist = ddp.context()
        self.groups = model.encoder.release_groups() if opts.release else []
        self.released = 1 if (opts.head_at_start and self.groups) else 0
        self.windows = [(ti, a, b) for ti, t in enumerate(data.train)
                        for a, b in trial_windows(len(t), opts.window, opts.hop)]
        if not self.windows:
            raise ValueError("no training windows (are the training trials empty?)")
        # PAPER.md §5: the window list is shuffled once (seeded); every epoch uses that order
        self.order = np.random.default_rng(opts.seed).permutation(len(self.windows))
        self.views = training_views(opts.views, data.feature_cfg.frame_size, data.feature_cfg.crop_size, opts.seed)
        self.cache: FrameFeatureCache | None = None
        self.log = CsvLog(out_dir / "metrics.csv", self.dist.is_main)
        self.epoch = 0
        self.best_score = -math.inf
        self.best_epoch = -1
        self.selection = SelectionScore(opts.select_window)
        self.best_state = _state_copy(model)
        self.since_best = 0
        self.stop_reason = ""
        self.best_metrics: dict[str, float] | None = None
        self.best_val_preds: dict[int, np.ndarray] = {}
        self.val_seconds: dict[str, float] = {}  # measured validation time per mode
        self.epoch_seconds: list[float] = []
        self.encoder_s_per_frame: float | None = None  # from the budget probe, for estimates
        self._apply_release()
        self._new_optimizer()

    # ---------------------------------------------------------------- phases
    @property
    def mode(self) -> str:
        if self.released == 0:
            return "embedding"
        if self.released == 1:
            return "trunk"
        return "frames"

    @property
    def phase(self) -> str:
        return f"release{self.released}-{self.mode}"

    def _apply_release(self) -> None:
        for p in self.model.encoder.parameters():
            p.requires_grad_(False)
        for g in self.groups[:self.released]:
            for p in g:
                p.requires_grad_(True)
        if self.mode in ("embedding", "trunk"):
            if self.cache is None or self.cache.level != self.mode:
                self.cache = FrameFeatureCache(self.model.encoder, self.mode, self.views,
                                               self.data.feature_cfg.crop_size)
        else:
            self.cache = None
        self.fwd = WindowForward(self.model, self.mode)
        self.net = self.dist.wrap(self.fwd)

    def _new_optimizer(self) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, lr=self.opts.lr, weight_decay=self.opts.weight_decay)
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt, mode="max", factor=self.opts.factor, patience=self.opts.patience, eps=0.0)

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    # ---------------------------------------------------------------- batches
    def _batch(self, win_ids: np.ndarray, rng: np.random.Generator):
        w = self.opts.window
        vis, masks, auds, labs = [], [], [[] for _ in self.model.temporal.audio_names], []
        fs, cs = self.data.feature_cfg.frame_size, self.data.feature_cfg.crop_size
        for wi in win_ids:
            ti, a, b = self.windows[wi]
            t = self.data.train[ti]
            if self.cache is not None:
                x = self.cache.get(t.key, int(rng.integers(len(self.views))))[a:b]
            else:
                x = frames_tensor(t.frames[a:b], random_view(rng, fs, cs), cs)
            vis.append(_pad(x, w))
            m = torch.zeros(w, dtype=torch.bool)
            m[:b - a] = True
            masks.append(m)
            labs.append(_pad(torch.from_numpy(t.labels[a:b]), w))
            for k in range(len(auds)):
                auds[k].append(_pad(torch.from_numpy(t.audio[k][a:b]), w))
        return (torch.stack(vis), torch.stack(masks), [torch.stack(a) for a in auds], torch.stack(labs))

    def _refresh_cache(self) -> None:
        if self.cache is None:
            return
        self.cache.refresh({t.key: t.frames for t in self.data.train}, progress=self.opts.progress and self.dist.is_main)

    # ---------------------------------------------------------------- epochs
    def train_epoch(self, deadline: float | None = None) -> float:
        """One pass over this rank's windows; stops early (all ranks together) at ``deadline``."""
        self._refresh_cache()
        rng = np.random.default_rng([self.opts.seed, self.epoch])
        torch.manual_seed(self.opts.seed * 7919 + self.epoch)
        self.model.train()
        order = self.dist.shard(self.order, self.epoch)
        bs = self.opts.batch_size if self.cache is not None else self.opts.e2e_batch_size
        losses = []
        it = _progress(range(0, len(order), bs), self.opts.progress and self.dist.is_main,
                       f"epoch {self.epoch} {self.phase}")
        for s in it:
            vis, mask, aud, lab = self._batch(order[s:s + bs], rng)
            dev = _device(self.model)
            vis, mask, lab = vis.to(dev), mask.to(dev), lab.to(dev)
            aud = [a.to(dev) for a in aud]
            pred = self.net(vis, mask, aud)
            # PAPER.md §5: padded frames (zero labels) are part of the loss
            loss = ccc_loss(pred, lab)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            losses.append(loss.item())
            if hasattr(it, "set_postfix"):
                it.set_postfix(loss=f"{loss.item():.3f}")
            if deadline is not None and self.dist.agree(time.time() + self.val_estimate() > deadline):
                self.stop_reason = "time limit (--max-minutes)"
                break
        self.dist.sync_module(self.model)  # BN running stats: take rank 0's
        return self.dist.mean(float(np.mean(losses)) if losses else math.nan)

    def val_estimate(self, mode: str | None = None) -> float:
        """Seconds one validation pass takes in ``mode`` (measured, else estimated from the
        probe's per-frame encoder time; 0 when nothing is known)."""
        mode = mode or self.mode
        if mode in self.val_seconds:
            return 1.2 * self.val_seconds[mode]
        if mode == "frames" and self.encoder_s_per_frame is not None:
            return 1.5 * self.encoder_s_per_frame * sum(len(t) for t in self.data.val)
        return 1.2 * max(self.val_seconds.values(), default=0.0)

    def e2e_step_estimate(self) -> float:
        """Seconds of one end-to-end step (``e2e_batch_size`` windows through the encoder)."""
        if self.encoder_s_per_frame is None:
            return 0.0
        return 3.0 * self.encoder_s_per_frame * self.opts.e2e_batch_size * self.opts.window

    @torch.no_grad()
    def _val_embeddings(self, t: Trial) -> torch.Tensor:
        """Centre-crop embeddings ``[L, 512]`` of a validation trial (eval mode)."""
        if self.cache is None:
            return embed_frames(self.model.encoder, t.frames, self.data.feature_cfg.crop_size)
        feats = self.cache.get(t.key, 0)
        dev = _device(self.model)
        return torch.cat([self.cache.head(feats[s:s + 1024].to(dev)) for s in range(0, len(feats), 1024)])

    @torch.no_grad()
    def validate(self) -> tuple[dict[str, float], dict[int, np.ndarray]]:
        """Overall CCC over the concatenated validation trials (PAPER.md §5); each rank predicts
        a share of the trials and the predictions are gathered, so every rank gets the same score."""
        t0 = time.time()
        self.model.eval()
        mine = self.dist.shard(np.arange(len(self.data.val)), 0, pad=False)
        if self.cache is not None:  # validation uses the centre view (view 0)
            self.cache.refresh({self.data.val[i].key: self.data.val[i].frames for i in mine}, views=[0],
                               progress=self.opts.progress and self.dist.is_main)
        ys, ps, by_trial = [], [], {}
        for vi in mine:
            t = self.data.val[vi]
            p = predict_embeddings(self.model.temporal, self._val_embeddings(t), t.audio,
                                   self.opts.window, self.opts.hop)
            by_trial[int(vi)] = p
            ys.append(t.labels)
            ps.append(p)
        y = self.dist.gather_rows(np.concatenate(ys) if ys else np.zeros((0, 2), np.float32))
        p = self.dist.gather_rows(np.concatenate(ps) if ps else np.zeros((0, 2), np.float32))
        self.model.train()
        self.val_seconds[self.mode] = time.time() - t0
        return va_metrics(y, p), by_trial

    # ---------------------------------------------------------------- checkpoints
    def _save_best(self) -> None:
        if not self.dist.is_main:
            return
        from affedge.staged_write import replace_path
        from affedge.training.model import save_checkpoint
        from affedge.training.verdict import unfinished_record

        extra = {"epoch": self.best_epoch, "score": self.best_score,
                 "options": dataclasses.asdict(self.opts), "fold_info": self.data.info,
                 "face_frontend": self.data.info.get("face_frontend"),
                 "training": unfinished_record()}
        # staged, then swapped in: a stop mid-write never pairs new weights with an old config
        replace_path(self.out / "best", lambda d: save_checkpoint(
            d, self.model, self.model_cfg, self.data.feature_cfg, self.data.norm_stats, extra))

    def save_last(self) -> None:
        if not self.dist.is_main:
            return
        from affedge.staged_write import replace_path
        from affedge.training.model import save_checkpoint
        from affedge.training.verdict import unfinished_record

        state = {"epoch": self.epoch, "released": self.released, "best_score": self.best_score,
                 "best_epoch": self.best_epoch, "since_best": self.since_best,
                 "stop_reason": self.stop_reason, "scheduler": self.sched.state_dict(),
                 "best_metrics": self.best_metrics, "select_recent": self.selection.recent}

        def write(d: Path) -> None:  # weights, optimizer and state: all of one epoch, or none
            save_checkpoint(d, self.model, self.model_cfg, self.data.feature_cfg,
                            self.data.norm_stats, {"options": dataclasses.asdict(self.opts),
                                                   "training": unfinished_record()})
            optimizer_to_files(self.opt, d)
            (d / "trainer_state.json").write_text(json.dumps(state, indent=1))

        replace_path(self.out / "last", write)

    def resume(self) -> bool:
        """Restore from ``last/`` (and ``best/``); returns False when there is nothing to resume."""
        from safetensors.torch import load_file

        d = self.out / "last"
        if not (d / "trainer_state.json").is_file():
            return False
        st = json.loads((d / "trainer_state.json").read_text())
        check_same_model(d, self.model_cfg)  # (affedge.training.model)
        self.model.load_state_dict(load_file(str(d / "model.safetensors"), device=str(_device(self.model))))
        self.released = int(st["released"])
        self._apply_release()
        self._new_optimizer()
        optimizer_from_files(self.opt, d)
        self.sched.load_state_dict(st["scheduler"])
        self.epoch = int(st["epoch"])
        self.best_score, self.best_epoch = float(st["best_score"]), int(st["best_epoch"])
        self.since_best, self.stop_reason = int(st["since_best"]), st.get("stop_reason", "")
        self.best_metrics = st.get("best_metrics")
        self.selection = SelectionScore(self.opts.select_window, st.get("select_recent"))
        if (self.out / "best" / "model.safetensors").is_file():
            self.best_state = load_file(str(self.out / "best" / "model.safetensors"), device=str(_device(self.model)))
        return True

    # ---------------------------------------------------------------- main loop
    def run(self, deadline: float | None = None) -> dict[str, Any]:
        o = self.opts
        while not self.stop_reason and self.epoch < o.epochs:
            t0 = time.time()
            phase, lr = self.phase, self.lr
            loss = self.train_epoch(deadline)
            metrics, val_preds = self.validate()
            score = self.selection.push(metrics["mean_ccc"])
            improved = score > self.best_score
            if improved:
                self.best_score, self.best_epoch, self.since_best = score, self.epoch, 0
                self.best_state = _state_copy(self.model)
                self.best_metrics, self.best_val_preds = metrics, val_preds
                self._save_best()
            else:
                self.since_best += 1
            self.sched.step(score)
            if o.reload_best:  # PAPER.md §5: weights reset to the best state after every epoch
                self.model.load_state_dict(self.best_state)
            row = {"epoch": self.epoch, "phase": phase, "lr": lr, "train_loss": loss, **metrics,
                   "select_score": score, "best": int(improved),
                   "seconds": round(time.time() - t0, 2)}
            self.log.write(row)
            self.epoch_seconds.append(time.time() - t0)
            if self.dist.is_main and o.progress:
                sel = f" {o.select_window}-epoch mean={score:.4f}" if o.select_window > 1 else ""
                print(f"[{phase}] epoch {self.epoch}: loss={loss:.4f} val CCC V={metrics['valence_ccc']:.4f} "
                      f"A={metrics['arousal_ccc']:.4f}{sel} lr={lr:.2e}{' *' if improved else ''}",
                      file=sys.stderr, flush=True)  # progress: stdout is the results (--json -)
            self.epoch += 1
            if self.stop_reason:
                pass  # the time limit hit inside the epoch
            elif self.epoch > 1 and self.since_best >= o.early_stop:
                self.stop_reason = f"early stop: {o.early_stop} epochs without improvement"
            elif self.lr < o.min_lr_value * (1 - 1e-6):  # PAPER.md §2.2
                if self.released < len(self.groups) and not self._release_fits(deadline):
                    left = max(0.0, deadline - time.time()) if deadline is not None else 0.0
                    self.stop_reason = (f"a plateau (the LR fell below min_lr), and releasing "
                                        f"encoder group {self.released + 1} (slower epochs) "
                                        f"would not fit in the {left:.0f} s left of --max-minutes")
                elif self.released < len(self.groups):
                    self.model.load_state_dict(self.best_state)
                    self.released += 1
                    self._apply_release()
                    self._new_optimizer()
                else:
                    self.stop_reason = "LR below min_lr and no encoder group left to release"
            if not self.stop_reason and deadline is not None and self.dist.agree(
                    time.time() + self.val_estimate() > deadline):
                self.stop_reason = "time limit (--max-minutes)"
            self.save_last()
        if not self.stop_reason:
            self.stop_reason = f"reached {o.epochs} epochs"
        self.model.load_state_dict(self.best_state)
        t_plot = time.time()
        if self.dist.is_main and o.plots:
            if self.best_val_preds:
                plot_validation(self.out, self.data.val[0] if self.data.val else None,
                                self.best_val_preds, self.best_epoch, self.best_score)
            plot_training_curves(self.out)
        self.plot_seconds = time.time() - t_plot
        return {"best_score": self.best_score, "best_epoch": self.best_epoch,
                "epochs_run": self.epoch, "stop_reason": self.stop_reason}

    def _release_fits(self, deadline: float | None) -> bool:
        """Is there time for at least a few steps and one validation after the next release?"""
        if deadline is None:
            return True
        nxt = "frames" if self.released + 1 >= 2 else self.mode
        need = self.val_estimate(nxt) + (5 * self.e2e_step_estimate() if nxt == "frames" else 0.0)
        return not self.dist.agree(time.time() + need > deadline)

    # ---------------------------------------------------------------- plots


# ============================================================================================
# One fold, end to end
# ============================================================================================
def untrained_val_metrics(opts: TrainOptions, data: FoldData, model_cfg: ModelConfig) -> dict[str, float]:
    """Validation metrics of a freshly initialised model (seed ``opts.seed``, as the run starts):
    the no-learning baseline of the verdict. The global RNG is left as it was."""
    from affedge.training.model import AffectModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        model = AffectModel(model_cfg).to(ddp.context().device)
    return val_metrics(model, data, opts)[0]


def val_metrics(model: nn.Module, data: FoldData, opts: TrainOptions) -> tuple[dict[str, float], float]:
    """Offline validation metrics of ``model`` (centre crop, every validation frame) and the
    encoder's seconds per frame (the fastest trial's: the first pays one-time warm-up costs;
    the budget plan's per-frame encoder time)."""
    ys, ps, enc_s = [], [], math.inf
    was = model.training
    model.eval()
    try:
        for t in data.val:
            t0 = time.time()
            emb = embed_frames(model.encoder, t.frames, model.cfg.crop_size)
            enc_s = min(enc_s, (time.time() - t0) / max(len(t), 1))
            ps.append(predict_embeddings(model.temporal, emb, t.audio, opts.window, opts.hop))
            ys.append(t.labels)
    finally:
        model.train(was)
    return va_metrics(np.concatenate(ys), np.concatenate(ps)), enc_s


def train_fold(data_dir: str | Path, out_dir: str | Path, fold: int = 0,
               opts: TrainOptions | None = None, data: FoldData | None = None,
               deadline: float | None = None, **overrides: Any) -> dict[str, Any]:
    """Stage 0 (unless a pretrained encoder is given) then the temporal training of one fold,
    then the verdict (:mod:`affedge.training.verdict`) written into ``best/config.json``.

    ``deadline`` (a ``time.time()`` value; default ``max_minutes`` from now) bounds everything
    here, data loading included: with one, the stages follow :mod:`affedge.training.budget`'s
    plan. Returns a summary dict (also written to ``summary.json``): best score/epoch, best
    metrics, the untrained baseline and the verdict, stop reason, wall time, data sizes, the
    options, the plan. ``data`` may be passed pre-loaded.
    """
    from affedge.training import budget
    from affedge.training.person_baseline_fit import fit_for_run
    from affedge.training.verdict import make_verdict, write_to_checkpoint

    opts = dataclasses.replace(opts or TrainOptions(), **overrides)
    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    start = time.time()
    if deadline is None and opts.max_minutes:
        deadline = start + 60 * opts.max_minutes
    dist = ddp.context()
    say = ((lambda m: print(m, file=sys.stderr, flush=True)) if (dist.is_main and opts.announce)
           else (lambda m: None))
    out = Path(out_dir)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = load_fold(data_dir, fold, cache_dir=opts.cache_dir,
                         require_audio=opts.modality == "av")
    load_s = time.time() - start
    model_cfg = model_config_for(opts, data.feature_cfg)
    set_seed(opts.seed)
    from affedge.training.model import AffectModel

    model = AffectModel(model_cfg).to(dist.device)
    resuming = opts.resume and (out / "last" / "trainer_state.json").is_file()
    stage0 = (not resuming and not opts.pretrained_encoder and opts.pretrain_epochs > 0
              and not (opts.resume and (out / "pretrain" / "model.safetensors").is_file()))
    # the untrained baseline first: its encoder pass over the validation frames also measures
    # this machine's per-frame encoder time for the budget plan
    t_base = time.time()
    enc_s = None
    if resuming or opts.pretrained_encoder or opts.resume and (out / "pretrain" / "model.safetensors").is_file():
        baseline = untrained_val_metrics(opts, data, model_cfg)  # `model` is not the fresh one
    else:
        baseline, enc_s = val_metrics(model, data, opts)
    baseline_s = time.time() - t_base
    plan = probe = None
    t_probe = time.time()
    if deadline is not None:
        trunk = opts.release and opts.head_at_start
        val_frames = max(1, sum(len(t) for t in data.val))
        probe = budget.Probe(cache_s_per_frame=enc_s if enc_s is not None else baseline_s / val_frames,
                             step_s=budget.probe_step(model, data, opts, "trunk" if trunk else "embedding"))
        total = 60 * opts.max_minutes if opts.max_minutes else deadline - start
        done = json.loads((out / "last" / "trainer_state.json").read_text())["epoch"] if resuming else 0
        plan = budget.make_plan(opts, data, probe, deadline - time.time(), total, load_s, stage0, int(done))
        opts = dataclasses.replace(opts, views=plan.views, pretrain_epochs=plan.pretrain_epochs
                                   if stage0 else opts.pretrain_epochs,
                                   pretrain_stride=plan.pretrain_stride)
        stage0 = stage0 and plan.pretrain_epochs > 0
        if plan.train_trials < len(data.train):  # a seeded choice of trials, same every run
            keep = sorted(np.random.default_rng(opts.seed).permutation(len(data.train))[:plan.train_trials])
            data = dataclasses.replace(data, train=[data.train[i] for i in keep])
        say(plan.describe())
    probe_s = time.time() - t_probe
    pre: dict[str, Any] = {}
    if not resuming:
        if opts.pretrained_encoder:
            load_pretrained_encoder(model, opts.pretrained_encoder)
        elif opts.resume and (out / "pretrain" / "model.safetensors").is_file():
            load_pretrained_encoder(model, out / "pretrain")  # stage 0 finished before the stop
        elif stage0:
            pre_deadline = None
            if plan is not None:
                pre_deadline = time.time() + 1.5 * plan.pretrain_s
            pre = pretrain_encoder(model, data, opts, out, model_cfg, pre_deadline)
        set_seed(opts.seed + 1)
    trainer = TemporalTrainer(model, data, opts, out, model_cfg)
    if probe is not None:
        trainer.encoder_s_per_frame = probe.cache_s_per_frame
        # the first cached validation costs at most the direct pass the baseline took
        trainer.val_seconds.setdefault(trainer.mode, baseline_s)
    if resuming:
        trainer.resume()
    t_cache = time.time()
    trainer._refresh_cache()
    cache_s = time.time() - t_cache
    t_run = time.time()
    temporal_deadline = None if deadline is None else deadline - (
        plan.end_reserve_s if plan else budget.END_RESERVE_S)
    result = trainer.run(temporal_deadline)
    t_end = time.time()
    metrics, val_preds = trainer.best_metrics, trainer.best_val_preds
    # resumed: the best state is loaded, predict again (validate() is collective: under
    # torchrun a rank's share of the trials may be empty, so only the run's own state decides)
    if metrics is None or (dist.world_size == 1 and not val_preds):
        metrics, val_preds = trainer.validate()
    rec = make_verdict(metrics, baseline, profile=opts.profile, fold=fold,
                       person_baseline=fit_for_run(data, val_preds, opts.person_baseline),
                       best_epoch=result["best_epoch"], select_window=opts.select_window,
                       epochs_run=result["epochs_run"],
                       stop_reason=result["stop_reason"], encoder=opts.encoder,
                       modality=opts.modality, val_frames=int(sum(len(t) for t in data.val)),
                       train_seconds=round(time.time() - start, 1))
    summary = {
        "fold": fold, **result, "best_metrics": metrics, "untrained_metrics": baseline,
        "verdict": rec, "wall_seconds": round(time.time() - start, 1),
        "train_trials": len(data.train), "val_trials": len(data.val),
        "train_frames": int(sum(len(t) for t in data.train)), "val_frames": int(sum(len(t) for t in data.val)),
        "encoder_pretrain": pre.get("history", []), "options": dataclasses.asdict(opts),
        "world_size": dist.world_size, "plan": plan.as_dict() if plan else None,
        "seconds": {"load": round(load_s, 1), "probe": round(probe_s, 1), "cache": round(cache_s, 1),
                    "baseline": round(baseline_s, 1), "run": round(t_end - t_run, 1),
                    "after_run": round(time.time() - t_end, 1),
                    "plots": round(getattr(trainer, "plot_seconds", 0.0), 1),
                    "epochs": [round(x, 2) for x in trainer.epoch_seconds]},
    }
    if dist.is_main:
        if (out / "best" / "config.json").is_file():
            write_to_checkpoint(out / "best", rec)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    dist.barrier()
    summary["model"] = model
    return summary
