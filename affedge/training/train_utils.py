"""Small pieces of the training loop: optimiser state as files (no pickles), seeds, logs."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


# ============================================================================================
# Optimiser / scheduler state as safetensors + JSON (no pickles)
# ============================================================================================
def save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``safetensors.torch.save_file`` with the file mode every other file gets (the library
    creates its files 0600, whatever the umask: a checkpoint or bundle that others on the
    machine could not read)."""
    import os

    from safetensors.torch import save_file

    save_file(tensors, str(path))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def optimizer_to_files(opt: torch.optim.Optimizer, directory: Path) -> None:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"state.{idx}.{name}"] = v
    save_safetensors(tensors, directory / "optimizer.safetensors")
    (directory / "optimizer.json").write_text(json.dumps(
        {"param_groups": sd["param_groups"], "scalars": scalars}, indent=1))


def optimizer_from_files(opt: torch.optim.Optimizer, directory: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(directory / "optimizer.safetensors"))
    meta = json.loads((directory / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


# ============================================================================================
# Helpers
# ============================================================================================
def set_seed(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_pretrained_encoder(model: nn.Module, ckpt: str | Path) -> None:
    """Load ``encoder.*`` weights from a checkpoint directory (``model.safetensors`` +
    ``config.json``, as written by stage 0 or any affedge checkpoint) into ``model.encoder``."""
    from safetensors.torch import load_file

    d = Path(ckpt)
    w = d / "model.safetensors" if d.is_dir() else d
    if not w.is_file():
        raise FileNotFoundError(f"pretrained encoder checkpoint not found: {w}")
    cfg_path = w.parent / "config.json"
    if cfg_path.is_file():
        enc = json.loads(cfg_path.read_text()).get("model", {}).get("encoder")
        if enc and enc != model.cfg.encoder:
            raise ValueError(f"{cfg_path}: checkpoint encoder is {enc!r}, the run uses {model.cfg.encoder!r}")
    state = {k[len("encoder."):]: v for k, v in load_file(str(w)).items() if k.startswith("encoder.")}
    if not state:
        raise ValueError(f"{w}: no 'encoder.*' weights in this checkpoint")
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{w}: encoder weights do not fit {model.cfg.encoder!r}: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}")


class CsvLog:
    """Append-only per-epoch CSV (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))

def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, leave=False)
