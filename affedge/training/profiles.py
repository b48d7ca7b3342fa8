"""Training profiles: named sets of TrainOptions defaults (``paper`` for a GPU, ``fast`` for a CPU).

* ``paper`` — the published protocol (PAPER.md §5 table and §2.2): Adam lr 1e-5, up to 100
  epochs, best-state reload after every epoch, stage-0 encoder pretraining (our stand-in for the
  FER+ fine-tuned IR-50, 3 epochs), two cached augmentation views, gradual release.
* ``fast`` — what the CPU learning experiments found to work within minutes
  (docs/RESULTS.md, runs "clean 2/3" and "occlusion"): lr 2e-3, no stage-0 pretraining (the
  released output layer learns on top of the randomly initialised, cached trunk), one cached
  view, no best-state reload (with 1-2 validation trials it stalled learning), gradual release
  kept (it only starts once the LR has dropped below lr/10), and the per-person baseline
  (:mod:`affedge.sdk.person_baseline`) fitted on the validation videos: with the few people a
  CPU run trains on, each new person's constant offset is what held-out arousal lost
  (docs/RESULTS.md). ``paper`` leaves it off, as the paper has none. The kept epoch is chosen
  by the validation CCC averaged over 3 epochs (:mod:`affedge.training.selection`): one
  epoch's score on 1-2 validation videos is noisy. ``paper`` keeps the best single epoch.

Every value a profile sets is a default only: an explicit command-line option wins.
"""
from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"lr": 1e-5, "epochs": 100, "reload_best": True, "pretrain_epochs": 3,
              "views": 2, "release": True, "person_baseline": False, "select_window": 1},
    "fast": {"lr": 2e-3, "epochs": 100, "reload_best": False, "pretrain_epochs": 0,
             "views": 1, "release": True, "person_baseline": True, "select_window": 3},
}


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def default_profile() -> str:
    """``paper`` where a CUDA GPU is available, else ``fast``."""
    return "paper" if cuda_available() else "fast"


def resolve(profile: str | None, explicit: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """``(name, option values, why)``: the profile's values overridden by the ``explicit``
    options (those the user set; ``None`` values count as unset)."""
    why = "chosen with --profile"
    if profile is None:
        profile = default_profile()
        why = ("default: a CUDA GPU is available" if profile == "paper"
               else "default: no CUDA GPU, CPU training")
    if profile not in PROFILES:
        raise ValueError(f"--profile: unknown profile {profile!r} (choose from {sorted(PROFILES)})")
    values = dict(PROFILES[profile])
    values.update({k: v for k, v in explicit.items() if v is not None})
    return profile, values, why
