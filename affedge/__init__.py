"""affedge: continuous audio-visual emotion recognition (valence/arousal per video frame).

``from affedge import Recognizer`` is the runtime entry point. Importing this package never
imports torch, TensorRT or pyaudio; names below load their modules on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Recognizer", "Prediction", "load_bundle", "__version__"]


def __getattr__(name: str):
    if name == "Recognizer":
        from affedge.sdk.recognizer import Recognizer

        return Recognizer
    if name == "Prediction":
        from affedge.sdk.prediction import Prediction

        return Prediction
    if name == "load_bundle":
        from affedge.bundle import load_bundle

        return load_bundle
    raise AttributeError(f"module 'affedge' has no attribute {name!r}")
