"""Valence/arousal label files: Aff-Wild2 annotations and ``frame,valence,arousal`` CSVs.

Two formats, one reader for each place that scores or trains:

* Aff-Wild2 annotation (the data set's ``annotations/VA_Set/*/<trial>.txt``, and what
  ``affedge synth`` writes): header ``valence,arousal``, then one row per video frame (row k =
  frame k, 0-based); -5 (:data:`INVALID`) marks an unannotated frame (PAPER.md §1.1-1.2).
* ``frame,valence,arousal`` CSV (the demo clip's labels, ``affedge demo``'s output): one row
  per labelled frame, in any order.

Light (numpy only): the runtime's ``affedge demo --labels`` and the training reader share it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: an unannotated frame's value (Aff-Wild2's convention)
INVALID = -5.0


def read_annotation(path: str | os.PathLike) -> np.ndarray:
    """Parse an Aff-Wild2 annotation file -> float32 [n, 2] (valence, arousal), -5 kept as
    is; clear errors (file and line) for a wrong header, column count, number or range."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text annotation file") from None
    lines = text.splitlines()
    if not lines or _header(lines[0]) != ["valence", "arousal"]:
        got = lines[0].strip()[:60] if lines else "(empty file)"
        raise ValueError(f"{path}: line 1 must be the header 'valence,arousal', got {got!r}")
    rows = []
    for k, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split(",")
        if len(parts) != 2:
            raise ValueError(f"{path}: line {k} has {len(parts)} columns, expected 2: {line!r}")
        try:
            v, a = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"{path}: line {k} is not numeric: {line!r}") from None
        for x in (v, a):
            if not (x == INVALID or -1.0 - 1e-6 <= x <= 1.0 + 1e-6):
                raise ValueError(f"{path}: line {k}: value {x} outside [-1, 1] (and not -5)")
        rows.append((v, a))
    if not rows:
        raise ValueError(f"{path}: no annotation rows after the header")
    return np.asarray(rows, np.float32)


def read_labels(path: str | os.PathLike) -> dict[int, tuple[float, float]]:
    """Either format -> {frame: (valence, arousal)} for the labelled frames only (a frame
    with -5 in either column is left out, as training and validation leave it out)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            first = fh.readline()
    except FileNotFoundError:
        raise FileNotFoundError(f"labels file not found: {path}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text labels file {FORMATS}") from None
    if _header(first) == ["valence", "arousal"]:
        ann = read_annotation(path)
        return {i: (float(v), float(a)) for i, (v, a) in enumerate(ann)
                if v != INVALID and a != INVALID}
    try:
        return _read_frame_csv(path)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text labels file {FORMATS}") from None


#: what read_labels takes, for its refusals
FORMATS = ("(labels are an Aff-Wild2 annotation, a 'valence,arousal' header and one row per "
           "frame, or a 'frame,valence,arousal' CSV)")


def coverage_note(labels: dict, n_frames: int) -> str | None:
    """A warning when labels cannot be the clip's: they label frames past its end (more than
    the 5-frame tolerance Aff-Wild2's reader allows), or end before 90 % of it."""
    if not labels or n_frames <= 0:
        return None
    last = max(labels) + 1
    if last > n_frames + 5 or last < 0.9 * n_frames:
        return (f"the labels cover frames 0-{last - 1} but the clip has {n_frames} frames: "
                f"labels of another clip?")
    return None


def _header(line: str) -> list[str]:
    return [c.strip().lower() for c in line.strip().lstrip("\ufeff").split(",")]


def _read_frame_csv(path: Path) -> dict[int, tuple[float, float]]:
    import csv

    out: dict[int, tuple[float, float]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        r = csv.DictReader(fh)
        need = {"frame", "valence", "arousal"}
        if r.fieldnames is None or not need <= {f.strip().lower() for f in r.fieldnames}:
            raise ValueError(f"{path}: a labels file is an Aff-Wild2 annotation (header "
                             f"'valence,arousal', a row per frame) or a CSV with columns "
                             f"frame,valence,arousal; got header {r.fieldnames}")
        r.fieldnames = [f.strip().lower() for f in r.fieldnames]
        for i, row in enumerate(r, start=2):
            try:
                frame, v, a = int(row["frame"]), float(row["valence"]), float(row["arousal"])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{i}: bad row {row}: {exc}") from None
            if v != INVALID and a != INVALID:
                out[frame] = (v, a)
    if not out:
        raise ValueError(f"{path}: no labelled rows")
    return out


__all__ = ["INVALID", "read_annotation", "read_labels"]
