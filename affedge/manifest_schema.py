"""The manifest's meaning checked in full: types, ranges and cross-checks of every field used.

:func:`affedge.bundle.validate_manifest` checks the manifest's structure (required keys, paths,
artifact records); this module checks what the values *mean* before any inference session,
ring buffer or filter bank is built from them, because a manifest with valid checksums is
still data from a stranger:

* :func:`check_manifest` (pure data, called by ``validate_manifest``): the feature, model,
  video and crop settings are in sane ranges and agree with each other; the receptive field
  equals the one the model configuration implies (and is at most
  :data:`MAX_RECEPTIVE_FIELD`); ``outputs`` is exactly :data:`OUTPUTS`; every normalisation
  statistic has the dimension of its audio stream; tensor specs are bounded; and when the
  bundle has a ``step`` artifact (a bundle the streaming runtime can run) its encoder/step
  signatures form the engine's contract (embedding, ``audio_<stream>``, ``state_k`` ->
  ``state_out_k`` pairs, ``va`` with one column per output, float32 I/O), with the memory one
  stream implies bounded by :data:`MAX_STREAM_STATE_BYTES`.
* :func:`check_onnx_artifact` (called for each ONNX artifact after its sha256 matched): the
  graph's own inputs/outputs (names, element types, ranks, fixed dimensions) equal the
  manifest's records, and no tensor anywhere in the model (initializers, node attributes,
  subgraphs, functions) uses external data.

The ONNX files are read with a small protobuf reader here (:func:`read_onnx_signature`), so
the runtime needs neither the ``onnx`` package (a training/export dependency) nor an ONNX
Runtime session (which would be the very thing created before validation). The reader only
walks the message structure; it never interprets tensor payloads.

Every failure is a :class:`affedge.bundle.BundleError` whose one-line message names the field.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: the runtime's output columns, in this order (Prediction.valence / .arousal read them by name)
OUTPUTS = ("valence", "arousal")
#: audio streams the feature extractor implements (affedge.features.audio.STREAM_NAMES)
AUDIO_STREAMS = ("mfcc", "logmel")
ENCODERS = ("ir50", "ir18", "mobile")

# Ranges. Sample rates 8-96 kHz: the model is trained at 16 kHz (PAPER.md §1.4); below 6.8 kHz
# the VAD's 300-3400 Hz speech band does not exist. Hops 1 ms-1 s keep the feature rings
# (capacity / hop rows) bounded. Frame sizes up to 1024 px bound the crop buffers.
SAMPLE_RATE_RANGE = (8000, 96000)
MAX_N_FFT = 1 << 16
MAX_MELS = 512
MAX_IMAGE_SIDE = 1024
MAX_FPS = 1000.0
MAX_RECEPTIVE_FIELD = 10000
MAX_EMBED_DIM = 1 << 16
MAX_CHANNELS = 1 << 14
MAX_LEVELS = 32
MAX_DIM = 1 << 24  # any fixed tensor dimension
#: memory one model stream (one tracked face) may hold: its states plus the receptive field's
#: embedding history. The demo model needs 0.5 MiB; an IR-50 model ~0.8 MiB.
MAX_STREAM_STATE_BYTES = 64 << 20

_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1, "int32": 4,
             "int64": 8, "bool": 1}


def _err(msg: str):
    from affedge.bundle import BundleError

    return BundleError(msg)


# --------------------------------------------------------------------------------------------
# small typed getters (each names the field)


def _int(d: Mapping, key: str, where: str, lo: int, hi: int) -> int:
    v = d.get(key) if isinstance(d, Mapping) else None
    if key not in d:
        raise _err(f"{where}.{key}: required field is missing")
    if isinstance(v, bool) or not isinstance(v, int):
        raise _err(f"{where}.{key}: must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise _err(f"{where}.{key}: {v} is outside [{lo}, {hi}]")
    return v


def _num(d: Mapping, key: str, where: str, lo: float, hi: float, *, lo_open: bool = False,
         hi_open: bool = False) -> float:
    if key not in d:
        raise _err(f"{where}.{key}: required field is missing")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _err(f"{where}.{key}: must be a finite number, got {v!r}")
    if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise _err(f"{where}.{key}: {v} is outside {lb}{lo}, {hi}{rb}")
    return float(v)


def _str_list(d: Mapping, key: str, where: str, allowed: tuple[str, ...]) -> list[str]:
    v = d.get(key)
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise _err(f"{where}.{key}: must be a list of strings, got {v!r}")
    bad = [s for s in v if s not in allowed]
    if bad or len(set(v)) != len(v):
        raise _err(f"{where}.{key}: {v} must be distinct names from {list(allowed)}")
    return v


# --------------------------------------------------------------------------------------------
# sections


def _check_features(f: Any) -> None:
    from affedge.config import FeatureConfig

    w = "manifest.json: features"
    _check_known_keys(f, FeatureConfig, w)
    sr = _int(f, "sample_rate", w, *SAMPLE_RATE_RANGE)
    hop = _int(f, "hop_length", w, max(1, sr // 1000), sr)
    win = _int(f, "win_length", w, hop, sr)
    n_fft = _int(f, "n_fft", w, win, MAX_N_FFT)
    _num(f, "preemphasis", w, 0.0, 1.0, hi_open=True)
    bins = n_fft // 2 + 1
    n_mels = _int(f, "mfcc_n_mels", w, 1, min(MAX_MELS, bins))
    _int(f, "mfcc_n_ceps", w, 1, n_mels)
    _int(f, "mfcc_lifter", w, 0, 1000)
    for band in ("mfcc", "logmel"):
        lo = _num(f, f"{band}_fmin", w, 0.0, sr / 2)
        _num(f, f"{band}_fmax", w, lo, sr / 2, lo_open=True)
    _int(f, "delta_width", w, 1, 16)
    _int(f, "logmel_n_mels", w, 1, min(MAX_MELS, bins))
    _num(f, "logmel_offset", w, 0.0, 1e6, lo_open=True)  # log(0) would be -inf
    _str_list(f, "streams", w, AUDIO_STREAMS)
    aligned = _int(f, "aligned_size", w, 8, MAX_IMAGE_SIDE)
    frame = _int(f, "frame_size", w, 1, MAX_IMAGE_SIDE)
    _int(f, "crop_size", w, 1, frame)
    del aligned


def _check_frontend(rec: Any) -> None:
    """The face front-end record (affedge.features.frontend): its keys and their types; whether
    this install can reproduce it is the runtime's check (with the reason)."""
    from affedge.features.frontend import frontend_of

    try:
        rec = frontend_of(rec)
    except ValueError as exc:
        raise _err(f"manifest face_frontend: {exc}") from None
    sha = rec["detector_sha256"]
    if not (isinstance(rec["detector"], str) and isinstance(rec["crop_recipe"], str)
            and isinstance(rec["crop_recipe_version"], int)
            and not isinstance(rec["crop_recipe_version"], bool)
            and (sha is None or (isinstance(sha, str) and len(sha) == 64
                                 and all(c in "0123456789abcdef" for c in sha)))):
        raise _err(f"manifest face_frontend: detector/crop_recipe must be strings, "
                   f"crop_recipe_version an integer, detector_sha256 null or 64 hex digits; "
                   f"got {rec!r}")


def _check_known_keys(d: Any, cls, where: str) -> None:
    import dataclasses

    if not isinstance(d, Mapping):
        raise _err(f"{where}: must be an object")
    names = {x.name for x in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise _err(f"{where}: unknown keys {unknown}")
    missing = sorted(names - set(d))
    if missing:
        raise _err(f"{where}: missing keys {missing}")


def _int_list(d: Mapping, key: str, where: str, lo: int, hi: int, max_len: int) -> list[int]:
    v = d.get(key)
    if not isinstance(v, list) or not 1 <= len(v) <= max_len or any(
            isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi for x in v):
        raise _err(f"{where}.{key}: must be 1-{max_len} integers in [{lo}, {hi}], got {v!r}")
    return v


def _check_model(m: Any, features: Mapping) -> None:
    from affedge.config import ModelConfig

    w = "manifest.json: model"
    _check_known_keys(m, ModelConfig, w)
    if m["encoder"] not in ENCODERS:
        raise _err(f"{w}.encoder: {m['encoder']!r} is not one of {list(ENCODERS)}")
    _int(m, "embed_dim", w, 1, MAX_EMBED_DIM)
    crop = _int(m, "crop_size", w, 1, MAX_IMAGE_SIDE)
    if crop != features["crop_size"]:
        raise _err(f"{w}.crop_size: {crop} differs from features.crop_size "
                   f"{features['crop_size']}")
    _int_list(m, "visual_channels", w, 1, MAX_CHANNELS, MAX_LEVELS)
    _int_list(m, "audio_channels", w, 1, MAX_CHANNELS, MAX_LEVELS)
    _int(m, "kernel_size", w, 1, 64)
    _num(m, "dropout", w, 0.0, 1.0, hi_open=True)
    _num(m, "encoder_dropout", w, 0.0, 1.0, hi_open=True)
    _int(m, "attn_dim", w, 1, MAX_CHANNELS)
    if m["outputs"] != list(OUTPUTS):
        raise _err(f"{w}.outputs: must be exactly {list(OUTPUTS)}, got {m['outputs']!r}")
    if not isinstance(m["fusion"], bool):
        raise _err(f"{w}.fusion: must be true or false, got {m['fusion']!r}")
    streams = m["audio_streams"]
    if not isinstance(streams, list) or not all(
            isinstance(s, list) and len(s) == 2 and isinstance(s[0], str)
            and isinstance(s[1], int) and not isinstance(s[1], bool) for s in streams):
        raise _err(f"{w}.audio_streams: must be a list of [name, dim] pairs, got {streams!r}")
    if m["fusion"]:
        names = [s[0] for s in streams]
        if names != list(features["streams"]):
            raise _err(f"{w}.audio_streams: {names} differ from features.streams "
                       f"{list(features['streams'])}")
        for name, dim in streams:
            want = _stream_dim(features, name)
            if dim != want:
                raise _err(f"{w}.audio_streams: stream {name!r} has dim {dim}, the features "
                           f"give {want}")


def _stream_dim(features: Mapping, name: str) -> int:
    return 3 * features["mfcc_n_ceps"] if name == "mfcc" else features["logmel_n_mels"]


def _receptive_field(model: Mapping) -> int:
    """What affedge.config.ModelConfig.receptive_field gives for these settings."""
    dil = sum(2 ** i for i in range(len(model["visual_channels"])))
    return 1 + 2 * (model["kernel_size"] - 1) * dil


def _check_audio_norm(norm: Mapping, model: Mapping, features: Mapping) -> None:
    for stream, st in norm.items():
        w = f"manifest.json: audio_norm[{stream!r}]"
        if stream not in features["streams"]:
            raise _err(f"{w}: not one of the feature streams {list(features['streams'])}")
        want = _stream_dim(features, stream)
        for key in ("mean", "std"):
            if len(st[key]) != want:
                raise _err(f"{w}.{key}: has {len(st[key])} values, stream {stream!r} has "
                           f"{want} dimensions")


def _check_video_and_crop(video: Mapping, crop: Mapping, features: Mapping) -> None:
    _num(video, "fps", "manifest.json: video", 0.0, MAX_FPS, lo_open=True)
    w = "manifest.json: crop"
    for key, feat in (("size", "crop_size"), ("frame_size", "frame_size"),
                      ("aligned_size", "aligned_size")):
        if key in crop and crop[key] != features[feat]:
            raise _err(f"{w}.{key}: {crop[key]!r} differs from features.{feat} "
                       f"{features[feat]}")
    for key in ("mean", "std"):
        if key in crop:
            v = crop[key]
            if not isinstance(v, list) or len(v) != 3 or any(
                    isinstance(x, bool) or not isinstance(x, (int, float))
                    or not math.isfinite(x) for x in v):
                raise _err(f"{w}.{key}: must be 3 finite numbers, got {v!r}")
            if key == "std" and any(x <= 0 for x in v):
                raise _err(f"{w}.std: must be positive, got {v!r}")
    if "scale" in crop:
        _num(crop, "scale", w, 0.0, 1.0, lo_open=True)


def _spec_bytes(spec: Mapping) -> int:
    n = 1
    for d in spec["shape"]:
        n *= d if isinstance(d, int) else 1
    return n * _ITEMSIZE[spec["dtype"]]


def _check_spec_dims(a: Mapping, where: str) -> None:
    from affedge.bundle import MAX_TENSOR_ELEMENTS

    for kind in ("inputs", "outputs"):
        for s in a[kind]:
            if len(s["shape"]) > 8:
                raise _err(f"{where}.{kind} {s['name']!r}: rank {len(s['shape'])} above 8")
            n = 1
            for d in s["shape"]:
                if isinstance(d, int):
                    if d > MAX_DIM:
                        raise _err(f"{where}.{kind} {s['name']!r}: dimension {d} above "
                                   f"{MAX_DIM}")
                    n *= d
            if n > MAX_TENSOR_ELEMENTS:
                raise _err(f"{where}.{kind} {s['name']!r}: shape {s['shape']} has {n} "
                           f"elements, above {MAX_TENSOR_ELEMENTS}")


def _check_runtime_contract(m: Mapping) -> None:
    """The encoder/step signatures the streaming engine relies on (bundles with a step)."""
    model, features = m["model"], m["features"]
    embed = model["embed_dim"]
    crop = features["crop_size"]
    fused = [s for s, _ in model["audio_streams"]] if model["fusion"] else []
    encoders = [a for a in m["artifacts"] if a["name"] == "encoder"]
    steps = [a for a in m["artifacts"] if a["name"] == "step"]
    if not encoders:
        raise _err("manifest.json: artifacts: a bundle with a 'step' needs an 'encoder'")
    for a in encoders + steps:
        _check_batch_dims(a)
    for a in encoders:
        w = f"manifest.json: artifact 'encoder' ({a['format']})"
        ins, outs = a["inputs"], a["outputs"]
        if len(ins) != 1 or len(outs) != 1:
            raise _err(f"{w}: must have exactly one input and one output")
        _want_shape(ins[0], [None, 3, crop, crop], f"{w}.inputs")
        _want_shape(outs[0], [None, embed], f"{w}.outputs")
    for a in steps:
        w = f"manifest.json: artifact 'step' ({a['format']})"
        ins = {s["name"]: s for s in a["inputs"]}
        outs = {s["name"]: s for s in a["outputs"]}
        if "embedding" not in ins:
            raise _err(f"{w}.inputs: no 'embedding' input (has {sorted(ins)})")
        _want_shape(ins["embedding"], [None, embed], f"{w}.inputs")
        for s in fused:
            name = f"audio_{s}"
            if name not in ins:
                raise _err(f"{w}.inputs: no {name!r} input for fused stream {s!r}")
            _want_shape(ins[name], [None, _stream_dim(features, s)], f"{w}.inputs")
        states = [s for s in a["inputs"] if s["name"].startswith("state_")]
        known = {"embedding", *(f"audio_{s}" for s in fused), *(s["name"] for s in states)}
        extra = [n for n in ins if n not in known]
        if extra:
            raise _err(f"{w}.inputs: {extra} are inputs the runtime does not feed")
        per_stream = 0
        for s in states:
            ws = f"{w}.inputs {s['name']!r}"
            rest = s["shape"][1:]
            if not s["shape"] or not all(isinstance(d, int) and d >= 1 for d in rest):
                raise _err(f"{ws}: state shape {s['shape']} must be [N, fixed dims >= 1]")
            if s["dtype"] != "float32":
                raise _err(f"{ws}: state dtype must be float32, got {s['dtype']}")
            out = "state_out_" + s["name"][len("state_"):]
            if out not in outs:
                raise _err(f"{w}.outputs: input {s['name']!r} has no output {out!r}")
            if outs[out]["shape"][1:] != rest or outs[out]["dtype"] != "float32":
                raise _err(f"{w}.outputs {out!r}: shape/dtype {outs[out]['shape']} "
                           f"{outs[out]['dtype']} differ from {s['name']!r} {s['shape']}")
            per_stream += _spec_bytes(s)
        per_stream += m["receptive_field"] * embed * 4  # the stream's embedding history
        if per_stream > MAX_STREAM_STATE_BYTES:
            raise _err(f"{w}: states and history need {per_stream / 2**20:.1f} MiB per stream "
                       f"(bound {MAX_STREAM_STATE_BYTES >> 20} MiB)")
        if "va" not in outs:
            raise _err(f"{w}.outputs: no 'va' output (has {sorted(outs)})")
        _want_shape(outs["va"], [None, len(OUTPUTS)], f"{w}.outputs")
        for s in list(ins.values()) + [outs["va"]]:
            if s["dtype"] != "float32":
                raise _err(f"{w}: {s['name']!r} dtype must be float32, got {s['dtype']}")
    st = m.get("streaming")
    if isinstance(st, Mapping) and "states" in st and steps:
        declared = st["states"]
        actual = [{"name": s["name"], "shape": s["shape"][1:]} for s in steps[0]["inputs"]
                  if s["name"].startswith("state_")]
        ok = isinstance(declared, list) and all(
            isinstance(d, Mapping) and isinstance(d.get("shape"), list) for d in declared)
        if not ok or [{"name": d.get("name"), "shape": d["shape"][1:]}
                      for d in declared] != actual:
            raise _err("manifest.json: streaming.states: differ from the step artifact's "
                       "state inputs")


def _check_batch_dims(a: Mapping) -> None:
    """The runtime feeds one batch size to all inputs of a call: their leading dimensions must
    be one symbol, or all 1 (the engine then calls per stream); a symbol in another position
    must not be the batch symbol nor be shared between inputs (each input binds it alone)."""
    w = f"manifest.json: artifact {a['name']!r} ({a['format']}).inputs"
    lead = [s["shape"][0] if s["shape"] else None for s in a["inputs"]]
    if not a["inputs"]:
        raise _err(f"{w}: the runtime needs at least one input")
    if len(set(map(repr, lead))) != 1 or not (isinstance(lead[0], str) or lead[0] == 1):
        raise _err(f"{w}: leading (batch) dimensions {lead} must be one symbol or all 1")
    seen: dict[str, str] = {}
    for s in a["inputs"]:
        for d in s["shape"][1:]:
            if isinstance(d, str) and (d == lead[0]
                                       or seen.setdefault(d, s["name"]) != s["name"]):
                raise _err(f"{w} {s['name']!r}: symbolic dimension {d!r} of shape "
                           f"{s['shape']} is also the batch or another input's dimension")


def _want_shape(spec: Mapping, want: list, where: str) -> None:
    """``spec``'s shape equals ``want`` (None: any dimension). A symbolic dimension (an
    exporter may name a dimension it could not prove constant) passes; a different fixed one
    does not."""
    shape = spec["shape"]
    ok = len(shape) == len(want) and all(w is None or d == w or isinstance(d, str)
                                         for d, w in zip(shape, want))
    if not ok:
        shown = ["N" if w is None else w for w in want]
        raise _err(f"{where} {spec['name']!r}: shape {shape} must be {shown}")
    if spec["dtype"] != "float32":
        raise _err(f"{where} {spec['name']!r}: dtype must be float32, got {spec['dtype']}")


def check_manifest(m: Mapping[str, Any]) -> None:
    """Ranges and cross-checks of a structurally valid manifest (see the module docstring)."""
    features, model = m["features"], m["model"]
    _check_features(features)
    _check_model(model, features)
    rf = m["receptive_field"]
    if not 1 <= rf <= MAX_RECEPTIVE_FIELD:
        raise _err(f"manifest.json: receptive_field: {rf} is outside [1, {MAX_RECEPTIVE_FIELD}]")
    if rf != _receptive_field(model):
        raise _err(f"manifest.json: receptive_field: {rf} differs from the model's "
                   f"{_receptive_field(model)} (kernel_size and visual_channels)")
    if list(m["outputs"]) != list(OUTPUTS):
        raise _err(f"manifest.json: outputs: must be exactly {list(OUTPUTS)}, got "
                   f"{list(m['outputs'])!r}")
    _check_audio_norm(m["audio_norm"], model, features)
    if m.get("face_frontend") is not None:
        _check_frontend(m["face_frontend"])
    if m.get("person_baseline") is not None:
        from affedge.sdk.person_baseline import check_record
        try:
            check_record(m["person_baseline"], applying=False)  # the engine checks the method
        except ValueError as exc:
            raise _err(f"manifest person_baseline: {exc}") from None
    _check_video_and_crop(m["video"], m["crop"], features)
    for a in m["artifacts"]:
        _check_spec_dims(a, f"manifest.json: artifact {a['name']!r} ({a['format']})")
    if any(a["name"] == "step" for a in m["artifacts"]):
        _check_runtime_contract(m)


# --------------------------------------------------------------------------------------------
# ONNX: a minimal, dependency-free ModelProto reader (structure only)

# onnx.proto TensorProto.DataType -> the manifest's dtype names
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool",
               10: "float16", 16: "bfloat16", 11: "float64", 4: "uint16", 5: "int16",
               12: "uint32", 13: "uint64", 8: "string"}
_MAX_PROTO_DEPTH = 24


class _ProtoError(Exception):
    pass


def _varint(buf: memoryview, i: int, end: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= end or shift > 63:
            raise _ProtoError("truncated or overlong varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: memoryview, start: int, end: int):
    """Yield (field number, wire type, value) of one message; for wire type 2 the value is
    the (start, end) of the payload, for varints the integer."""
    i = start
    while i < end:
        key, i = _varint(buf, i, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise _ProtoError("field number 0")
        if wt == 0:
            v, i = _varint(buf, i, end)
            yield num, wt, v
        elif wt == 1:
            i += 8
            yield num, wt, None
        elif wt == 2:
            n, i = _varint(buf, i, end)
            if i + n > end:
                raise _ProtoError("length-delimited field runs past its message")
            yield num, wt, (i, i + n)
            i += n
        elif wt == 5:
            i += 4
            yield num, wt, None
        else:
            raise _ProtoError(f"unsupported wire type {wt}")
        if i > end:
            raise _ProtoError("field runs past its message")


def _text(buf: memoryview, span: tuple[int, int]) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _ProtoError("string field is not UTF-8") from None


def _value_info(buf, span) -> dict:
    """ValueInfoProto -> {"name", "dtype", "shape"} (dims: int, str symbol, or None)."""
    name, dtype, shape = "", None, None
    for num, wt, v in _fields(buf, *span):
        if num == 1 and wt == 2:
            name = _text(buf, v)
        elif num == 2 and wt == 2:  # TypeProto
            for tn, twt, tv in _fields(buf, *v):
                if tn == 1 and twt == 2:  # tensor_type
                    for kn, kwt, kv in _fields(buf, *tv):
                        if kn == 1 and kwt == 0:
                            dtype = ONNX_DTYPES.get(kv, f"onnx-type-{kv}")
                        elif kn == 2 and kwt == 2:  # TensorShapeProto
                            shape = []
                            for dn, dwt, dv in _fields(buf, *kv):
                                if dn == 1 and dwt == 2:
                                    dim = None
                                    for xn, xwt, xv in _fields(buf, *dv):
                                        if xn == 1 and xwt == 0:
                                            dim = xv if xv < (1 << 63) else xv - (1 << 64)
                                        elif xn == 2 and xwt == 2:
                                            dim = _text(buf, xv)
                                    shape.append(dim)
    return {"name": name, "dtype": dtype, "shape": shape}


def _check_tensor(buf, span, where: str) -> str:
    """TensorProto: refuse external data; return its name."""
    name, external = "", False
    for num, wt, v in _fields(buf, *span):
        if num == 8 and wt == 2:
            name = _text(buf, v)
        elif num == 13 and wt == 2 or num == 14 and wt == 0 and v == 1:
            external = True
    if external:
        raise _ProtoError(f"tensor {name!r} uses external data (refused: every weight must be "
                          f"inside the checksummed file) [{where}]")
    return name


def _check_sparse(buf, span, where: str) -> None:
    for num, wt, v in _fields(buf, *span):
        if num in (1, 2) and wt == 2:
            _check_tensor(buf, v, where)


def _walk_attribute(buf, span, depth: int) -> None:
    for num, wt, v in _fields(buf, *span):
        if wt != 2:
            continue
        if num in (5, 10):  # t, tensors
            _check_tensor(buf, v, "node attribute")
        elif num in (22, 23):  # sparse_tensor(s)
            _check_sparse(buf, v, "node attribute")
        elif num in (6, 11):  # g, graphs
            _walk_graph(buf, v, depth + 1)


def _walk_node(buf, span, depth: int) -> None:
    for num, wt, v in _fields(buf, *span):
        if num == 5 and wt == 2:
            _walk_attribute(buf, v, depth)


def _walk_graph(buf, span, depth: int, sig: dict | None = None) -> None:
    if depth > _MAX_PROTO_DEPTH:
        raise _ProtoError("subgraphs nested too deeply")
    inits: set[str] = set()
    inputs, outputs = [], []
    for num, wt, v in _fields(buf, *span):
        if wt != 2:
            continue
        if num == 1:
            _walk_node(buf, v, depth)
        elif num == 5:
            inits.add(_check_tensor(buf, v, "initializer"))
        elif num == 15:
            _check_sparse(buf, v, "sparse initializer")
        elif num == 11 and sig is not None:
            inputs.append(_value_info(buf, v))
        elif num == 12 and sig is not None:
            outputs.append(_value_info(buf, v))
    if sig is not None:  # graph inputs that are initializers (IR < 4 style) are not fed
        sig["inputs"] = [x for x in inputs if x["name"] not in inits]
        sig["outputs"] = outputs


def read_onnx_signature(path: str | Path) -> dict:
    """``{"inputs": [...], "outputs": [...], "opsets": {domain: version}}`` of an ONNX file.

    Raises BundleError if the file is not a well-formed ModelProto or if any tensor in it
    (initializers, node attributes, subgraphs, functions) uses external data."""
    data = Path(path).read_bytes()
    buf = memoryview(data)
    sig: dict = {"inputs": [], "outputs": [], "opsets": {}}
    try:
        graphs = 0
        for num, wt, v in _fields(buf, 0, len(buf)):
            if num == 7 and wt == 2:
                graphs += 1
                _walk_graph(buf, v, 0, sig)
            elif num == 8 and wt == 2:  # opset_import
                domain, version = "", None
                for on, owt, ov in _fields(buf, *v):
                    if on == 1 and owt == 2:
                        domain = _text(buf, ov)
                    elif on == 2 and owt == 0:
                        version = ov
                sig["opsets"][domain or "ai.onnx"] = version
            elif num == 14 and wt == 2:  # FunctionProto: its nodes may carry tensors
                for fn, fwt, fv in _fields(buf, *v):
                    if fn == 7 and fwt == 2:
                        _walk_node(buf, fv, 1)
        if graphs != 1:
            raise _ProtoError(f"{graphs} graphs in the model (expected 1)")
    except _ProtoError as exc:
        raise _err(f"{path}: not a valid ONNX model or refused content: {exc}") from None
    return sig


def check_onnx_artifact(path: str | Path, rec: Mapping[str, Any], where: str) -> dict:
    """The ONNX graph's signature equals the manifest record's, and it has no external data.
    Returns the signature (see :func:`read_onnx_signature`)."""
    try:
        sig = read_onnx_signature(path)
    except Exception as exc:  # noqa: BLE001  (BundleError or an unreadable file: one line)
        raise _err(f"{where}: {str(exc).split(': ', 1)[-1]}") from None
    for kind in ("inputs", "outputs"):
        graph, decl = sig[kind], list(rec[kind])
        gnames, dnames = [g["name"] for g in graph], [d["name"] for d in decl]
        if gnames != dnames:
            raise _err(f"{where}.{kind}: manifest names {dnames} differ from the graph's "
                       f"{gnames}")
        for g, d in zip(graph, decl):
            wk = f"{where}.{kind} {d['name']!r}"
            if g["dtype"] != d["dtype"]:
                raise _err(f"{wk}: manifest dtype {d['dtype']} differs from the graph's "
                           f"{g['dtype']}")
            if g["shape"] is None:
                continue  # the graph leaves the shape open
            if len(g["shape"]) != len(d["shape"]):
                raise _err(f"{wk}: manifest shape {list(d['shape'])} has another rank than "
                           f"the graph's {g['shape']}")
            for gd, dd in zip(g["shape"], d["shape"]):
                if isinstance(gd, int) and gd > 0 and gd != dd:
                    raise _err(f"{wk}: manifest shape {list(d['shape'])} differs from the "
                               f"graph's {g['shape']}")
    return sig
