"""Six-fold cross-validation over train + validation (PAPER.md §5).

The sorted training trials are cut into five chunks in the paper's proportions
70/70/70/70/71 (of 351; generalised to any count by rounding the cumulative boundaries), P5 is
the original validation set. Fold f rolls [P0..P5] by f and validates on the last chunk:
fold 0 -> P5 (the official split), fold 1 -> P4, ..., fold 5 -> P0.
"""
from __future__ import annotations

__all__ = ["PAPER_CHUNKS", "fold_trials", "six_fold_split"]

PAPER_CHUNKS = (70, 70, 70, 70, 71)  # PAPER.md §5: train[0:70) ... [280:351)


def _chunks(names: list[str]) -> list[list[str]]:
    n = len(names)
    total = sum(PAPER_CHUNKS)
    bounds = [0]
    acc = 0
    for c in PAPER_CHUNKS:
        acc += c
        bounds.append(int(round(n * acc / total)))
    return [names[bounds[i] : bounds[i + 1]] for i in range(len(PAPER_CHUNKS))]


def six_fold_split(train_names, val_names) -> list[tuple[list[str], list[str]]]:
    """[(train_names, val_names)] for folds 0..5 (PAPER.md §5)."""
    train = sorted(str(x) for x in train_names)
    val = sorted(str(x) for x in val_names)
    if len(set(train)) != len(train) or len(set(val)) != len(val):
        raise ValueError("the same video name appears twice in one partition "
                         "(annotations/VA_Set/)")
    both = set(train) & set(val)
    if both:
        raise ValueError(f"these videos have annotations in both Train_Set and Validation_Set "
                         f"(annotations/VA_Set/): {sorted(both)[:5]}")
    if len(train) < len(PAPER_CHUNKS):
        raise ValueError(f"six_fold_split: need >= 5 training trials, got {len(train)}")
    if not val:
        raise ValueError("six_fold_split: the validation partition is empty")
    parts = _chunks(train) + [val]
    folds = []
    for f in range(6):
        rolled = parts[-f:] + parts[:-f] if f else list(parts)
        folds.append(([x for p in rolled[:-1] for x in p], list(rolled[-1])))
    return folds


def fold_trials(dataset, fold: int):
    """(train trials, validation trials) of ``fold`` (0-5) for an ``AffWild2VA`` reader."""
    fold = int(fold)
    if not 0 <= fold < 6:
        raise ValueError(f"fold must be in 0..5, got {fold}")
    train = {t.name: t for t in dataset.trials("Train_Set")}
    val = {t.name: t for t in dataset.trials("Validation_Set")}
    by_name = {**train, **val}
    tr, va = six_fold_split(list(train), list(val))[fold]
    return [by_name[n] for n in tr], [by_name[n] for n in va]
