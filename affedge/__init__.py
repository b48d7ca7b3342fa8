"""affedge: continuous audio-visual emotion recognition (valence/arousal per video frame).

``from affedge import Recognizer`` is the runtime entry point. Importing this package never
imports torch, TensorRT or pyaudio; names below load their modules on first use.
"""
from __future__ import annotations

import os

__version__ = "0.1.0"

# ONNX Runtime's wheels (1.29 on) collect usage telemetry on Linux and macOS too: a device id
# and an event cache under ~/.cache/Microsoft/DeveloperTools/.onnxruntime, uploaded when a
# network is there. ORT_DISABLE_TELEMETRY=1, read when ONNX Runtime starts, turns all of it off
# (checked here: with it nothing is written); a value the user set wins
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

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
