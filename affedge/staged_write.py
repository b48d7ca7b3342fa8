"""Replace a file or directory by a staged write, so an interrupted writer leaves the old one whole."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable


def replace_path(out: Path, write: Callable[[Path], Any]) -> None:
    """Write beside ``out`` (``write(staged_path)``) and only then put the result in ``out``'s
    place, so a writer that fails or is interrupted leaves the previous ``out`` whole (a
    bundle being re-exported, a training checkpoint being saved): a file is replaced
    atomically (``os.replace``); a directory is renamed aside, the new one renamed in, then
    the old one removed. A staged copy that did not make it is removed."""
    out = Path(out)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    staged = out.with_name(f".{out.stem}.partial-{tag}{out.suffix}")
    old = out.with_name(f".{out.name}.old-{tag}")
    try:
        write(staged)
        if out.is_dir():
            os.replace(out, old)
            os.replace(staged, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staged, out)
    finally:
        if staged.is_dir():
            shutil.rmtree(staged, ignore_errors=True)
        elif staged.exists():
            staged.unlink()
        if old.exists() and not out.exists():  # (renamed aside, the new one not in): put back
            os.replace(old, out)
