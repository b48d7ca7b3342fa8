"""Voice-activity detection for ``Prediction.speech_present``: the registry and its entries.

``energy`` (:class:`VoiceActivity`, energy over an adaptive floor + speech-band ratio, 10 ms
hops) and ``silero`` (:class:`SileroVAD`, silero-vad's ONNX model on 32 ms windows, run by ONNX
Runtime). Build one with ``make_vad(name, feature_cfg, **options)``.
"""
from affedge.features.vad.energy import VoiceActivity, detect_voice  # registers "energy"
from affedge.features.vad.registry import DEFAULT_VAD, VADS, make_vad, register_vad
from affedge.features.vad.silero import SileroVAD  # registers "silero"

__all__ = ["DEFAULT_VAD", "VADS", "SileroVAD", "VoiceActivity", "detect_voice", "make_vad",
           "register_vad"]
