"""Name -> VAD class table; ``make_vad`` builds the VAD a config names.

A VAD class takes ``(cfg: FeatureConfig | None, **options)`` and has ``push(pcm) -> (times
float64[k], speech[k])`` (bool or probability-like float; the engine says speech when the
value is > 0.5), ``reset()`` and the attributes ``name``, ``delay_s`` and ``model_sha256``
(``None`` when no model file is involved). ``times`` are seconds from the stream start at which
each decision becomes available (the end of the samples it depends on). Adding a VAD is one
file that decorates its class with :func:`register_vad`, imported by ``vad/__init__.py``.
"""
from __future__ import annotations

from collections.abc import Callable

from affedge.config import FeatureConfig

__all__ = ["DEFAULT_VAD", "VADS", "make_vad", "register_vad"]

VADS: dict[str, type] = {}

# Chosen by benchmarks/bench_vad.py (table in its docstring): in music at 5 dB SNR silero flags
# 2 % of non-speech hops at 0.95 recall, the energy VAD 37 %; silero's recall is also higher in
# white/brown noise. The energy VAD stays available as "energy".
DEFAULT_VAD = "silero"


def register_vad(name: str) -> Callable[[type], type]:
    """Class decorator: make ``cls`` available as ``make_vad(name, ...)``."""
    def deco(cls: type) -> type:
        if name in VADS and VADS[name] is not cls:
            raise ValueError(f"VAD name {name!r} is already registered to {VADS[name].__name__}")
        VADS[name] = cls
        return cls
    return deco


def make_vad(name: str, feature_cfg: FeatureConfig | None = None, **opts):
    """A fresh VAD ``name`` for audio described by ``feature_cfg``; options go to its class."""
    try:
        cls = VADS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown VAD {name!r}; choose one of: {', '.join(sorted(VADS))}") \
            from None
    return cls(feature_cfg, **opts)
