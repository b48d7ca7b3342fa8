"""The wall-time budget of a training run as a plan: measure, then share the time between stages.

``--max-minutes`` bounds the whole ``affedge train`` command, counted from the process start.
After the data is loaded, the first batches are timed (the untrained-baseline validation pass
through the encoder gives the per-frame encoder time; :func:`probe_step` one temporal step) and :func:`make_plan` shares what is
left between the stages so that none of them starves the temporal model:

* an end reserve (plots, summaries, process exit) and one validation pass are kept back;
* stage-0 pretraining gets at most :data:`PRETRAIN_SHARE` of the rest (fewer epochs, then a
  larger frame stride; skipped when that would leave it under :data:`MIN_PRETRAIN_FRAMES`
  frames, or the temporal model under :data:`MIN_TEMPORAL_EPOCHS` epochs);
* the feature cache gets at most :data:`CACHE_SHARE` (fewer augmentation views; on a machine
  too slow even for one view, fewer training trials: a model trained on part of the data beats
  one that never got to train);
* the temporal model gets everything else; the trainer stops an epoch early so that the
  validation after it still ends before the deadline, and it re-measures its epochs as it goes,
  so a machine that gets busier runs fewer epochs instead of overrunning.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

PRETRAIN_SHARE = 0.25
CACHE_SHARE = 0.35
MIN_TEMPORAL_EPOCHS = 8
MIN_PRETRAIN_FRAMES = 2000
END_RESERVE_S = 6.0  # plots, summary/checkpoint writes, the command's report, interpreter exit
END_RESERVE_SHARE = 0.03
TRAIN_VS_FORWARD = 3.0  # forward + backward + update ~ 3 forward passes (rule of thumb)
#: an end-to-end step after the second release (forward through the encoder, backward through
#: its released deeper groups only) ~ this many forward passes: measured with the synthetic quick
#: start (mobile encoder, 2-core Xeon, 2026-12-02): 16.2-16.6 s per epoch, 28.4 s estimated at 3.0
E2E_VS_FORWARD = 1.7


def process_start_time() -> float:
    """Wall-clock time at which this process started (Linux ``/proc``); ``time.time()`` elsewhere."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of proc(5), counted after "pid (comm)"
        with open("/proc/stat", encoding="ascii") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        t = btime + start_ticks / os.sysconf("SC_CLK_TCK")
        return t if 0 <= time.time() - t < 86400 else time.time()
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def busy_cores(sample_s: float = 0.5) -> float | None:
    """Cores other processes keep busy now: the non-idle share of all CPU time in /proc/stat
    over ``sample_s`` seconds while this process sleeps, times the core count (None where
    /proc/stat is unreadable). Unlike the 1-minute load average it does not remember a job that
    just ended: right after ``affedge synth`` the load average still said 1.0 on an idle
    2-core machine, and training ran on one thread."""

    def sample():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
        return sum(vals[:8]), idle

    try:
        t0, i0 = sample()
        time.sleep(sample_s)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if t1 <= t0:
        return None
    return (os.cpu_count() or 1) * (1.0 - (i1 - i0) / (t1 - t0))


def auto_threads(cores: int | None = None, load: float | None = None) -> int:
    """CPU threads for torch on this machine now: the cores other processes leave free (at
    least 1); ``load`` = busy cores, measured by :func:`busy_cores` when not given (the 1-minute
    load average where /proc/stat is missing). Two OpenMP threads on a core another process
    keeps busy wait for each other at every barrier: on the shared 2-core machine with a load
    of 10, one thread ran a budget probe in 3.8 s where two took 23 s (docs/RESULTS.md)."""
    cores = cores or os.cpu_count() or 1
    if load is None:
        load = busy_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    return max(1, min(cores, round(cores - load)))


@dataclass
class Probe:
    """Seconds measured on the first batches of this run."""

    cache_s_per_frame: float  # frozen encoder part, eval mode, per frame
    step_s: float  # one temporal training step on cached features (batch_size windows)


@dataclass
class Plan:
    load_s: float
    total_s: float  # the whole budget
    left_s: float  # what was left when planning
    end_reserve_s: float
    pretrain_epochs: int
    pretrain_stride: int
    pretrain_s: float
    views: int
    cache_s: float
    epoch_s: float
    val_s: float
    epochs: int
    train_trials: int  # how many of the fold's training trials to use
    notes: list[str]
    done_epochs: int = 0  # finished before a --resume (not in ``epochs``)
    #: one epoch after a plateau releases deeper encoder groups (windows end to end through the
    #: encoder: ~11x ``epoch_s`` on the synthetic quick start); 0 without gradual release
    release_epoch_s: float = 0.0

    def describe(self) -> str:
        pre = ("pretrain skipped" if self.pretrain_epochs == 0 else
               f"pretrain {self.pretrain_s:.0f} s ({self.pretrain_epochs} epoch(s), every "
               f"{self.pretrain_stride}th frame)")
        done = (f"(after the {self.done_epochs} done before the stop) "
                if self.done_epochs else "")
        later = (f"; after a plateau releases deeper encoder layers, epochs take "
                 f"~{self.release_epoch_s:.0f} s" if self.release_epoch_s > 2 * self.epoch_s
                 else "")
        s = (f"budget plan ({self.total_s / 60:g} min): data loaded in {self.load_s:.0f} s, {pre}, "
             f"cache {self.cache_s:.0f} s ({self.views} view(s), {self.train_trials} training "
             f"trials), time for ~{self.epochs} temporal epochs {done}"
             f"of ~{self.epoch_s:.1f} s (fewer if early stopping or the end of the "
             f"learning-rate schedule comes first{later}), {self.end_reserve_s + self.val_s:.0f} s "
             f"kept for the final validation and writing")
        return s + "".join(f"\n  note: {n}" for n in self.notes)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _timed(fn, repeat: int = 2) -> float:
    """Best of ``repeat`` timings (the first call also warms up)."""
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def probe_step(model: torch.nn.Module, data, opts, mode: str = "trunk") -> float:
    """Seconds of one temporal training step on cached-level features (timed on the second of
    two steps); the model's weights, buffers, gradients and the global RNG are left exactly as
    they were. (The per-frame encoder time comes from the untrained-baseline validation pass,
    which every run makes anyway.)"""
    from affedge.training.embedding_cache import (
        centre_view,
        encoder_head,
        encoder_trunk,
        frames_tensor,
    )
    from affedge.training.losses import ccc_loss

    cs = data.feature_cfg.crop_size
    first = data.train[0]
    n = min(16, len(first))
    dev = next(model.parameters()).device
    x = frames_tensor(first.frames[:n], centre_view(data.feature_cfg.frame_size, cs), cs).to(dev)
    enc = model.encoder
    trunk_ok = mode == "trunk" and all(hasattr(enc, a) for a in ("input_layer", "body", "output_layer"))
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = {id(p): None if p.grad is None else p.grad.clone() for p in model.parameters()}
    was = model.training
    with torch.random.fork_rng(devices=[]):
        try:
            model.eval()
            with torch.no_grad():
                feat = encoder_trunk(enc, x) if trunk_ok else enc(x)
            b, w = opts.batch_size, opts.window
            idx = torch.arange(b * w) % n
            vis = feat[idx].reshape(b, w, *feat.shape[1:])
            aud = [torch.from_numpy(np.resize(a[:w], (w, a.shape[1]))).to(dev)[None].expand(b, w, -1)
                   for a in first.audio] if model.cfg.fusion else []
            lab = torch.zeros(b, w, 2, device=dev)
            model.train()

            def step():
                emb = encoder_head(enc, vis.reshape(b * w, *vis.shape[2:])) if trunk_ok else \
                    vis.reshape(b * w, -1)
                pred = model.temporal(emb.reshape(b, w, -1), aud)
                ccc_loss(pred, lab + 0.1 * torch.randn_like(lab)).backward()

            return _timed(step)
        finally:
            model.load_state_dict(saved)
            for p in model.parameters():
                p.grad = grads[id(p)]
            model.train(was)


def make_plan(opts, data, pr: Probe, left_s: float, total_s: float, load_s: float,
              pretraining: bool, done_epochs: int = 0) -> Plan:
    """Share ``left_s`` seconds between pretraining, the cache and the temporal epochs.
    ``done_epochs``: temporal epochs a resumed run had finished (they count against
    ``opts.epochs``)."""
    train_frames = sum(len(t) for t in data.train)
    val_frames = sum(len(t) for t in data.val)
    face_frames = sum(int(t.face.sum()) for t in data.train)
    from affedge.training.trainer import trial_windows

    n_win = sum(len(trial_windows(len(t), opts.window, opts.hop)) for t in data.train)
    n_val_win = sum(len(trial_windows(len(t), opts.window, opts.hop)) for t in data.val)
    steps = math.ceil(n_win / opts.batch_size)
    val_s = math.ceil(n_val_win / opts.batch_size) * pr.step_s / TRAIN_VS_FORWARD
    epoch_s = steps * pr.step_s + val_s
    end_s = END_RESERVE_S + END_RESERVE_SHARE * total_s
    avail = max(0.0, left_s - end_s - val_s)
    notes: list[str] = []

    n_trials = len(data.train)
    per_trial = train_frames / max(n_trials, 1)

    def cache_cost(v: int, n: int | None = None) -> float:
        frames = train_frames if n is None else n * per_trial
        return (frames * v + val_frames) * pr.cache_s_per_frame

    def epoch_cost(n: int) -> float:
        return math.ceil(n_win * n / max(n_trials, 1) / opts.batch_size) * pr.step_s + val_s

    # stage 0: full encoder forward + backward per frame (the trunk time is most of it)
    pre_epochs, stride, pre_s = 0, max(1, int(opts.pretrain_stride)), 0.0
    if pretraining and opts.pretrain_epochs > 0:
        per_epoch = face_frames * pr.cache_s_per_frame * TRAIN_VS_FORWARD * 1.1
        cap = PRETRAIN_SHARE * avail
        pre_epochs = int(opts.pretrain_epochs)
        while pre_epochs * per_epoch / stride > cap:
            if pre_epochs > 1:
                pre_epochs -= 1
            else:
                stride = max(stride, math.ceil(per_epoch / max(cap, 1e-9)))
                break
        if face_frames / stride < MIN_PRETRAIN_FRAMES:
            notes.append(f"stage-0 pretraining skipped: {PRETRAIN_SHARE:.0%} of the budget covers "
                         f"only {face_frames / stride:.0f} frames (< {MIN_PRETRAIN_FRAMES})")
            pre_epochs = 0
        elif (pre_epochs, stride) != (opts.pretrain_epochs, opts.pretrain_stride):
            notes.append(f"stage-0 pretraining cut to {pre_epochs} epoch(s) of every {stride}th "
                         f"frame to fit {PRETRAIN_SHARE:.0%} of the budget")
        pre_s = pre_epochs * per_epoch / stride
    views = int(opts.views)
    cap = CACHE_SHARE * (avail - pre_s)
    while views > 1 and cache_cost(views) - cache_cost(0) > cap:
        views -= 1
    if views != opts.views:
        notes.append(f"{views} cached view(s) instead of {opts.views}: more would take over "
                     f"{CACHE_SHARE:.0%} of the budget")
    # fewer trials only when even one view overfills the cache share: the number of training
    # steps the time allows does not depend on the trials per epoch, the data variety does
    use = n_trials  # (the validation frames are cached whatever the plan: not in the cap)
    while use > 1 and cache_cost(views, use) - cache_cost(0) > cap:
        use -= 1
    first = cache_cost(views, 1) + MIN_TEMPORAL_EPOCHS * epoch_cost(1)
    if first > avail - pre_s:  # not even one trial's cache and a few epochs: refuse now
        need = math.ceil(2 * (total_s - avail + first) / 60) / 2
        raise ValueError(
            f"--max-minutes {total_s / 60:g} is too short for encoder {opts.encoder!r} on this "
            f"machine: caching one training trial and the validation frames and "
            f"{MIN_TEMPORAL_EPOCHS} epochs take ~{first:.0f} s of the {max(avail, 0):.0f} s "
            f"left; give --max-minutes {need:g} or more"
            + (", or --encoder mobile" if opts.encoder != "mobile" else ""))
    if use < n_trials:
        notes.append(f"the budget is small for this machine's speed: training on {use} of the "
                     f"{n_trials} training trials so that caching them takes "
                     + (f"<= {CACHE_SHARE:.0%} of the budget" if cache_cost(views, use)
                        - cache_cost(0) <= cap else f"as little as it can ({use} trial)"))
    epoch_s = epoch_cost(use)
    epochs = int((avail - pre_s - cache_cost(views, use)) // max(epoch_s, 1e-9))
    if epochs < MIN_TEMPORAL_EPOCHS and pre_epochs:
        notes.append(f"stage-0 pretraining skipped: it would leave the temporal model "
                     f"{max(epochs, 0)} epochs (< {MIN_TEMPORAL_EPOCHS})")
        pre_epochs, pre_s = 0, 0.0
        epochs = int((avail - cache_cost(views, use)) // max(epoch_s, 1e-9))
    if epochs < MIN_TEMPORAL_EPOCHS:
        notes.append(f"only ~{max(epochs, 0)} temporal epochs fit: the model may not learn; "
                     "give more --max-minutes, fewer/shorter videos or a smaller --encoder")
    # after a plateau the trainer releases deeper encoder groups: windows then go end to end
    # through the encoder (trainer.e2e_step_estimate's cost per step) and validation too
    release_s = 0.0
    if opts.release:
        e2e_steps = math.ceil(n_win * use / max(n_trials, 1) / opts.e2e_batch_size)
        release_s = pr.cache_s_per_frame * (E2E_VS_FORWARD * e2e_steps * opts.e2e_batch_size
                                            * opts.window + 1.5 * val_frames)
    return Plan(load_s=load_s, total_s=total_s, left_s=left_s, end_reserve_s=end_s,
                pretrain_epochs=pre_epochs, pretrain_stride=stride, pretrain_s=pre_s,
                views=views, cache_s=cache_cost(views, use), epoch_s=epoch_s, val_s=val_s,
                epochs=max(0, min(epochs, int(opts.epochs) - int(done_epochs))),
                train_trials=use, notes=notes, done_epochs=int(done_epochs),
                release_epoch_s=release_s)
