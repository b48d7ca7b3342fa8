"""The validation score that picks the kept epoch: the mean CCC, averaged over recent epochs.

With the one or two validation videos of a small (CPU) run, one epoch's validation CCC is
noisy: in a 10-minute ``affedge train`` on ``affedge synth``'s default data (seed 0), validation
arousal jumped 0.19 -> 0.83 -> 0.63 between epochs 6-8, epoch 7's spike was kept, and the last
state scored +0.13 held-out arousal over it (docs/RESULTS.md). A trailing mean over ``window``
epochs (the epoch itself and the ones before it) keeps an epoch whose neighbourhood validated
well; its weights are that epoch's own (no averaging of weights). ``window=1`` is the paper's
rule (PAPER.md §5: the best single epoch). The scheduler, early stopping and the release
checks see the same score, so "improved" means one thing everywhere.
"""
from __future__ import annotations

import math


class SelectionScore:
    """``push(mean_ccc) -> score``: the mean of the last ``window`` pushed values (fewer at the
    start). A non-finite value (a validation that diverged) makes the score -inf while it is in
    the window, so such an epoch, or one next to it, is never kept."""

    def __init__(self, window: int = 1, recent: list[float] | None = None):
        check_window(window)
        self.window = int(window)
        self.recent: list[float] = [float(x) for x in (recent or [])][-self.window:]

    def push(self, value: float) -> float:
        self.recent = (self.recent + [float(value)])[-self.window:]
        return self.score

    @property
    def score(self) -> float:
        if not self.recent or not all(math.isfinite(x) for x in self.recent):
            return -math.inf
        return sum(self.recent) / len(self.recent)


def check_window(window: int, epochs: int | None = None) -> None:
    """ValueError unless 1 <= ``window`` (<= ``epochs`` when given: a longer window scores no
    epoch on a full window)."""
    if int(window) < 1:
        raise ValueError(f"select_window must be >= 1, got {window}")
    if epochs is not None and int(window) > int(epochs):
        raise ValueError(f"select_window ({window}) is more than epochs ({epochs}): no epoch "
                         f"would be scored on a full window")
