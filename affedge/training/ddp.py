"""Distributed data-parallel training on torch's standard engine (DDP + ``torchrun``).

Launch any training entry point with ``torchrun --nproc_per_node N -m affedge.cli train ...``
(or ``python -m torch.distributed.run``; add ``--nnodes/--node_rank/--master_addr`` for several
machines). :func:`context` reads the torchrun environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and initialises the process group once:
``nccl`` when CUDA is available, otherwise ``gloo`` (CPU). Without that environment it returns a
single-process context whose methods are no-ops, so the trainer has one code path.

What the trainer uses:

* :meth:`DistContext.wrap` — ``DistributedDataParallel`` around the module that is trained
  (gradients are averaged across ranks; rank 0's weights and buffers are broadcast at wrap time);
* :meth:`DistContext.shard` — the rank's part of the (once-shuffled) window order, through
  ``DistributedSampler`` (padded so every rank runs the same number of steps);
* :meth:`DistContext.gather_rows` / :meth:`mean` / :meth:`agree` — validation predictions from
  every rank (so all ranks compute the same overall CCC), averaged losses, and unanimous
  stop/release decisions;
* :attr:`DistContext.is_main` — only rank 0 logs and writes checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def device(self) -> torch.device:
        """``cuda:<local_rank>`` when CUDA is available, else the CPU."""
        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        dev = [self.local_rank] if torch.cuda.is_available() else None
        return DistributedDataParallel(module, device_ids=dev)

    def shard(self, order: np.ndarray, epoch: int, pad: bool = True) -> np.ndarray:
        """This rank's slice of ``order`` (keeps the given order; no reshuffling)."""
        order = np.asarray(order)
        if not self.enabled:
            return order
        if not pad:
            return order[self.rank::self.world_size]
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(range(len(order)), num_replicas=self.world_size, rank=self.rank,
                                     shuffle=False, drop_last=False)
        sampler.set_epoch(epoch)
        return order[np.fromiter(iter(sampler), dtype=np.int64)]

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return float(t.item() / self.world_size)

    def agree(self, flag: bool) -> bool:
        """True on every rank if it is true on any rank."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([int(bool(flag))], device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item())

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Concatenate every rank's ``[n_r, C]`` rows (rank order) on all ranks."""
        if not self.enabled:
            return rows
        x = torch.as_tensor(np.ascontiguousarray(rows, dtype=np.float32)).to(self.device)
        n = torch.tensor([x.shape[0]], device=self.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        tdist.all_gather(sizes, n)
        top = int(max(s.item() for s in sizes))
        padded = torch.zeros((top,) + tuple(x.shape[1:]), device=self.device)
        padded[:x.shape[0]] = x
        bufs = [torch.zeros_like(padded) for _ in range(self.world_size)]
        tdist.all_gather(bufs, padded)
        return torch.cat([b[:int(s.item())] for b, s in zip(bufs, sizes)]).cpu().numpy()

    def sync_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (e.g. BatchNorm running stats,
        which each rank updates from its own batches)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                tdist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()


_CONTEXT: DistContext | None = None


def context() -> DistContext:
    """The process's context; initialises the process group from torchrun's environment."""
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _CONTEXT = DistContext()
        return _CONTEXT
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world} but {var} is not set: launch with torchrun")
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    _CONTEXT = DistContext(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(_CONTEXT.local_rank)
    return _CONTEXT


def shutdown() -> None:
    """Destroy the process group (call once at the end of a distributed run)."""
    global _CONTEXT
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
    _CONTEXT = None
