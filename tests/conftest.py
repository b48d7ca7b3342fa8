"""Shared fixtures: a tiny synthetic data set in the Aff-Wild2 layout (session scope)."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory):
    """6 short videos (3 s at 25 fps, ~25 % occluded) written by the real generator."""
    from affedge.training.data.synthetic import generate

    root = tmp_path_factory.mktemp("synth") / "ds"
    generate(root, 6, seed=7, seconds=3.0, fps=25.0, occlusion=0.25, progress=False)
    return root


@pytest.fixture(scope="session")
def synth_record(synth_dataset):
    """The generator's synthetic.json for ``synth_dataset``."""
    return json.loads((synth_dataset / "synthetic.json").read_text())
