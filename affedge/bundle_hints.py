"""What a folder given as a bundle is instead, for the "not a bundle" error (a common mix-up)."""
from __future__ import annotations

from pathlib import Path


def not_a_bundle_hint(path: Path) -> str:
    """`` (this is a training checkpoint; make a bundle with: affedge export ...)`` when
    ``affedge train`` wrote ``path`` (a checkpoint or a run folder), `` (the bundle is in
    path/b1: ...)`` when one sub-folder holds a manifest, else ``""``."""
    ckpt = (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    run = (path / "crossval.json").is_file() or (path / "summary.json").is_file()
    what = "a training checkpoint" if ckpt else "a training run folder" if run else ""
    if not what:  # a zip of the bundle's folder, unzipped: the bundle is one level down
        inner = sorted(p for p in path.glob("*/manifest.json") if p.is_file()) \
            if path.is_dir() else []
        if len(inner) == 1:
            return f" (the bundle is in {inner[0].parent}: give that folder)"
    target = path if ckpt else path / "fold0" / "best"
    return f" (this is {what}; make a bundle with: affedge export {target} -o BUNDLE)" \
        if what else ""
