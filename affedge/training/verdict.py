"""The learning verdict: did training beat the untrained model on the same validation frames?

A run *learned* when its best validation mean CCC (mean of valence and arousal CCC over the
concatenated validation frames) exceeds the untrained model's — same architecture, same seed,
freshly initialised, measured on the same frames — by at least :data:`LEARN_MARGIN`. The verdict
is written into the best checkpoint's ``config.json`` (``extra.training``) so that ``affedge
export`` can refuse a checkpoint that did not learn and copy the numbers into the bundle.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# An untrained model scores |CCC| up to ~0.2 on one output of a 1-2 trial validation set
# (docs/RESULTS.md: -0.07..0.06 held-out; 0.18 valence on a 2-trial test set), and a 3-minute run
# on the loaded CPU with a mean gain of +0.11 on validation scored 0.06 / 0.00 held-out through
# `affedge run` (docs/RESULTS.md, product runs). Runs that generalise gained +0.27..+0.55.
LEARN_MARGIN = 0.20
LEARNED, NOT_LEARNED = "learned", "did NOT learn"
#: the verdict a checkpoint carries until its run's verdict replaces it: a run stopped by
#: Ctrl-C, SIGTERM or an error leaves best/ and last/ with this one
UNFINISHED = "unfinished"
OUTPUTS = ("valence", "arousal")


def make_verdict(val: dict[str, float], untrained: dict[str, float], margin: float = LEARN_MARGIN,
                 **context: Any) -> dict[str, Any]:
    """The ``training`` record: val / untrained CCC per output, gain, margin, verdict."""
    v = {f"{o}_ccc": float(val[f"{o}_ccc"]) for o in OUTPUTS}
    u = {f"{o}_ccc": float(untrained[f"{o}_ccc"]) for o in OUTPUTS}
    v["mean_ccc"] = sum(v.values()) / len(OUTPUTS)
    u["mean_ccc"] = sum(u.values()) / len(OUTPUTS)
    gain = v["mean_ccc"] - u["mean_ccc"]
    learned = bool(gain >= margin)  # NaN compares False: not learned
    return {"verdict": LEARNED if learned else NOT_LEARNED, "learned": learned,
            "val_ccc": v, "untrained_ccc": u, "gain_mean_ccc": gain, "margin": margin, **context}


def unfinished_record() -> dict[str, Any]:
    """The ``training`` record of a checkpoint written while its run goes on."""
    return {"verdict": UNFINISHED, "learned": False,
            "note": "no training verdict: the run stopped before it (interrupted or failed), "
                    "or this is a run's last/ state (its verdict is in best/)"}


def describe(rec: dict[str, Any]) -> str:
    """One line: ``learned: validation CCC V 0.88 / A 0.90 vs untrained V 0.01 / A -0.03 ...``."""
    v, u = rec["val_ccc"], rec["untrained_ccc"]
    return (f"{rec['verdict']}: validation CCC V {v['valence_ccc']:.3f} / A {v['arousal_ccc']:.3f}"
            f" vs the untrained model's V {u['valence_ccc']:.3f} / A {u['arousal_ccc']:.3f} on the"
            f" same frames (mean gain {rec['gain_mean_ccc']:+.3f}; 'learned' needs >= "
            f"+{rec['margin']:.2f})")


def write_to_checkpoint(ckpt_dir: str | Path, rec: dict[str, Any]) -> None:
    """Store ``rec`` as ``extra.training`` in the checkpoint's ``config.json``."""
    path = Path(ckpt_dir) / "config.json"
    info = json.loads(path.read_text())
    info.setdefault("extra", {})["training"] = rec
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(path)


def from_checkpoint_extra(extra: dict[str, Any] | None) -> dict[str, Any] | None:
    """The verdict record of a loaded checkpoint's ``extra`` (None for older checkpoints)."""
    rec = (extra or {}).get("training")
    return rec if isinstance(rec, dict) and "verdict" in rec else None
