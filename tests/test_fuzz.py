"""Property-based fuzzing (hypothesis) of the two readers that take untrusted files: the WAV reader
(``affedge.features.audio_io.read_wav``) and the bundle/manifest reader (``affedge.bundle``).

Inputs: random bytes, truncations and bit flips of valid files, structured header mutations
(random ``fmt `` fields and chunk sizes), random JSON manifests and mutations of a valid one,
bit flips and truncations of a zipped bundle. The property: only the documented exceptions
escape (``WavFormatError``/``ValueError`` for WAV; ``BundleError``/``ValueError``/
``FileNotFoundError`` for bundles), never another exception, a crash or a hang (each example runs
under a 30 s alarm); what is accepted is well-formed (finite float32 mono PCM with a positive
rate; a Bundle whose artifacts verify).

``benchmarks/fuzz_long.py`` runs the same targets for minutes with random seeds; here the
examples are derandomized (fixed). ``OUTCOMES`` counts results.
"""
from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import shutil
import signal
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from affedge import bundle as B
from affedge.features.audio_io import WavFormatError, read_wav

OUTCOMES: collections.Counter = collections.Counter()
# a parse of these small files takes milliseconds; 30 s tells a hang from a machine that is
# merely loaded (10 s could fail under a load of 40 on 2 cores)
HANG_S = float(os.environ.get("AFFEDGE_FUZZ_HANG_S", "30"))
WORK = Path(tempfile.mkdtemp(prefix="affedge-fuzz-"))  # module-level: hypothesis targets use it
atexit.register(shutil.rmtree, WORK, True)  # removed when the process ends (suite or fuzz_long)

# benchmarks/fuzz_long.py sets these to run the same targets in long batches without shrinking,
# with fresh random seeds; in the suite the examples are derandomized (a fixed seed: the same
# examples every run, so a failure is reproducible and a pass is not luck)
_LONG_RUN = bool(os.environ.get("AFFEDGE_FUZZ_NO_SHRINK"))
FUZZ = settings(max_examples=int(os.environ.get("AFFEDGE_FUZZ_EXAMPLES", "300")), deadline=None,
                database=None, derandomize=not _LONG_RUN,
                phases=[Phase.generate] if _LONG_RUN else list(Phase),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Hang(Exception):
    """An example ran longer than HANG_S seconds."""


@contextlib.contextmanager
def no_hang(seconds: float = HANG_S):
    def fire(*_):
        raise Hang(f"example did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------- WAV
def wav_bytes(pcm: np.ndarray, sr: int = 16000, tag: int = 1, bits: int = 16,
              channels: int = 1, extra_chunk: bytes = b"") -> bytes:
    """A WAV file built by hand (independent of affedge's writer)."""
    x = np.clip(np.asarray(pcm, np.float64), -1, 1)
    x = np.repeat(x[:, None], channels, axis=1).reshape(-1)
    if tag == 3:
        data = x.astype("<f4" if bits == 32 else "<f8").tobytes()
    elif bits == 8:
        data = np.round(x * 127 + 128).astype(np.uint8).tobytes()
    elif bits == 24:
        v = np.round(x * (2**23 - 1)).astype("<i4")
        data = v.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        data = np.round(x * (2 ** (bits - 1) - 1)).astype(f"<i{bits // 8}").tobytes()
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, sr, sr * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunk
    body += b"data" + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


_SINE = np.sin(np.arange(400) * 0.07) * 0.5
VALID_WAVS = [
    wav_bytes(_SINE),
    wav_bytes(_SINE, 8000, 1, 8),
    wav_bytes(_SINE, 44100, 1, 24, 2),
    wav_bytes(_SINE, 48000, 3, 32, 2),
    wav_bytes(_SINE, 22050, 3, 64),
    wav_bytes(_SINE, 16000, 1, 32, 1, b"LIST" + struct.pack("<I", 5) + b"abcde\0"),
]


def check_wav(data: bytes) -> None:
    """read_wav on ``data`` raises only WavFormatError/ValueError, or returns sane PCM."""
    p = WORK / "fuzz.wav"
    p.write_bytes(data)
    try:
        with no_hang():
            pcm, sr = read_wav(p)
    except WavFormatError:
        OUTCOMES["wav:WavFormatError"] += 1
        return
    except ValueError:
        OUTCOMES["wav:ValueError"] += 1
        return
    except Exception as exc:  # a finding: counted, then it fails the property
        OUTCOMES[f"wav:ESCAPED {type(exc).__name__}"] += 1
        raise
    OUTCOMES["wav:accepted"] += 1
    assert isinstance(pcm, np.ndarray) and pcm.dtype == np.float32 and pcm.ndim == 1
    assert np.all(np.isfinite(pcm))  # float WAVs may hold (finite) values beyond [-1, 1]
    assert isinstance(sr, int) and sr > 0


def _flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for pos, bit in flips:
        b[pos % len(b)] ^= 1 << bit
    return bytes(b)


flips = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 7)), min_size=1, max_size=8)


@FUZZ
@given(st.binary(max_size=4096))
def test_wav_random_bytes(data):
    check_wav(data)
    check_wav(b"RIFF" + struct.pack("<I", len(data) + 4) + b"WAVE" + data)


@FUZZ
@given(st.sampled_from(VALID_WAVS), flips, st.integers(0, 1 << 16))
def test_wav_bit_flips_and_truncations(base, fl, cut):
    check_wav(_flip(base, fl))
    check_wav(base[: cut % (len(base) + 1)])


@FUZZ
@given(tag=st.sampled_from([0, 1, 2, 3, 6, 7, 0xFFFE, 0xFFFF]),
       channels=st.integers(0, 70000), sr=st.integers(0, 2**32 - 1),
       block=st.integers(0, 70000), bits=st.sampled_from([0, 1, 7, 8, 12, 16, 24, 32, 64, 65535]),
       fmt_extra=st.binary(max_size=40), data=st.binary(max_size=512),
       data_size=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
       fmt_size=st.one_of(st.none(), st.integers(0, 2**32 - 1)))
def test_wav_structured_header_mutations(tag, channels, sr, block, bits, fmt_extra, data,
                                         data_size, fmt_size):
    fmt = struct.pack("<HHIIHH", tag, channels % 65536, sr, 0, block % 65536, bits) + fmt_extra
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt) if fmt_size is None else fmt_size)
    body += fmt + b"data" + struct.pack("<I", len(data) if data_size is None else data_size)
    body += data
    check_wav(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_wav_valid_seeds_are_accepted():
    """The seeds of the mutation strategies are valid files (so mutations start from sense)."""
    for data in VALID_WAVS:
        p = WORK / "seed.wav"
        p.write_bytes(data)
        pcm, sr = read_wav(p)
        assert pcm.size == _SINE.size and sr > 0


# ---------------------------------------------------------------------------------- bundles
def _tiny_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def tiny_bundle(root: Path) -> tuple[Path, Path]:
    """A small valid bundle (ONNX + safetensors) as a directory and as a zip."""
    from safetensors.numpy import save_file

    from affedge.config import FeatureConfig, ModelConfig, to_dict

    d, z = root / "tiny_bundle", root / "tiny_bundle.zip"
    if (d / "manifest.json").is_file() and z.is_file():
        return d, z
    src = root / "tiny_src"
    src.mkdir(parents=True, exist_ok=True)
    _tiny_onnx(src / "m.onnx")
    save_file({"w": np.ones((3, 4), np.float32)}, str(src / "w.safetensors"))
    mc = ModelConfig(encoder="mobile")
    fields = {"model": to_dict(mc), "features": to_dict(FeatureConfig()), "video": {"fps": 25.0},
              "crop": {"size": 40}, "receptive_field": mc.receptive_field,
              "outputs": list(mc.outputs),
              "audio_norm": {"mfcc": {"mean": [0.0] * 39, "std": [1.0] * 39}}}
    files = [
        {"name": "encoder", "format": "onnx", "source": src / "m.onnx", "file": "encoder.onnx",
         "precision": "fp32", "inputs": [B.tensor_spec("x", ["N", 4])],
         "outputs": [B.tensor_spec("y", ["N", 4])]},
        {"name": "weights", "format": "safetensors", "source": src / "w.safetensors",
         "file": "weights/model.safetensors", "precision": "fp32", "inputs": [], "outputs": []},
    ]
    B.write_bundle(d, fields, files)
    B.write_bundle(z, fields, files)
    return d, z


TINY_DIR, TINY_ZIP = tiny_bundle(WORK)
VALID_MANIFEST = json.loads((TINY_DIR / "manifest.json").read_text())


def check_bundle(path: Path) -> None:
    """load_bundle raises only BundleError/ValueError/FileNotFoundError, or returns a Bundle
    whose artifacts verify."""
    try:
        with no_hang():
            b = B.load_bundle(path)
            b.verify()
    except B.BundleError:
        OUTCOMES["bundle:BundleError"] += 1
        return
    except (ValueError, FileNotFoundError) as exc:
        OUTCOMES[f"bundle:{type(exc).__name__}"] += 1
        return
    except Exception as exc:  # a finding: counted, then it fails the property
        OUTCOMES[f"bundle:ESCAPED {type(exc).__name__}"] += 1
        raise
    OUTCOMES["bundle:accepted"] += 1
    assert isinstance(b, B.Bundle) and b.artifacts


def check_manifest(manifest_bytes: bytes) -> None:
    d = WORK / "fuzz_bundle"
    d.mkdir(exist_ok=True)
    for f in ("encoder.onnx",):
        if not (d / f).exists():
            (d / f).write_bytes((TINY_DIR / f).read_bytes())
    (d / "weights").mkdir(exist_ok=True)
    if not (d / "weights" / "model.safetensors").exists():
        (d / "weights" / "model.safetensors").write_bytes(
            (TINY_DIR / "weights" / "model.safetensors").read_bytes())
    (d / "manifest.json").write_bytes(manifest_bytes)
    check_bundle(d)
    try:
        B.validate_manifest(json.loads(manifest_bytes))
    except (B.BundleError, ValueError, RecursionError):
        pass  # RecursionError only from json.loads on absurd nesting, before validation


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids,
                                                              max_size=4),
    max_leaves=30,
)


@FUZZ
@given(json_values)
def test_random_json_manifests(value):
    check_manifest(json.dumps(value).encode())


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


_MANIFEST_PATHS = [p for p in _paths(VALID_MANIFEST) if p]
_KEYS = sorted({k for p in _MANIFEST_PATHS for k in p if isinstance(k, str)})


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_MANIFEST_PATHS),
                          st.sampled_from(["replace", "delete", "wrap"]), json_values
                          | st.sampled_from(["../x.onnx", "/etc/passwd", "a.pt", "", "N",
                                             -1, 2**40, 1.0, True, 2, "onnx", "tensorrt"])),
                min_size=1, max_size=4))
def test_valid_manifest_mutations(mutations):
    import copy

    m = copy.deepcopy(VALID_MANIFEST)
    for path, op, value in mutations:
        parent, ok = m, True
        for k in path[:-1]:
            try:
                parent = parent[k]
            except (KeyError, IndexError, TypeError):
                ok = False
                break
        if not ok or not isinstance(parent, (dict, list)):
            continue
        k = path[-1]
        try:
            if op == "delete":
                del parent[k]
            elif op == "wrap":
                parent[k] = [parent[k]]
            else:
                parent[k] = value
        except (KeyError, IndexError, TypeError):
            continue
    check_manifest(json.dumps(m).encode())


def test_manifest_edge_cases():
    """Hand-picked nasty manifests: deep nesting, NaN std, float schema version, huge ints."""
    check_manifest(b"[" * 100000 + b"]" * 100000)  # too deep for json: refused, not a crash
    for patch in ({"schema_version": 1.0}, {"schema_version": 2**80}, {"receptive_field": 1e309},
                  {"audio_norm": {"mfcc": {"mean": [0.0], "std": [float("nan")]}}},
                  {"artifacts": [None]}, {"outputs": [1]}, {"artifacts": {}}):
        check_manifest(json.dumps(VALID_MANIFEST | patch).encode())
    check_manifest(b"\xef\xbb\xbf" + json.dumps(VALID_MANIFEST).encode())  # UTF-8 BOM
    check_manifest(b"")


def test_deeply_nested_manifest():
    deep = json.dumps(VALID_MANIFEST | {"provenance": json.loads("[" * 900 + "]" * 900)})
    check_manifest(deep.encode())


@settings(FUZZ)
@given(flips, st.integers(0, 1 << 16), st.booleans())
def test_zipped_bundle_bit_flips_and_truncations(fl, cut, truncate):
    data = TINY_ZIP.read_bytes()
    mutated = data[: cut % (len(data) + 1)] if truncate else _flip(data, fl)
    assume(mutated != data)
    p = WORK / "fuzz_bundle.zip"
    p.write_bytes(mutated)
    check_bundle(p)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_as_bundle_file(data):
    p = WORK / "random.zip"
    p.write_bytes(data)
    check_bundle(p)
    p.write_bytes(b"PK\x03\x04" + data)
    check_bundle(p)


@FUZZ
@given(st.sampled_from(["encoder.onnx", "weights/model.safetensors"]), flips,
       st.integers(0, 1 << 12), st.booleans())
def test_artifact_bit_flips_in_directory_bundle(name, fl, cut, truncate):
    """A modified artifact is always caught (checksum or size), whatever the modification."""
    import shutil

    d = WORK / "flip_bundle"
    if not d.exists():
        shutil.copytree(TINY_DIR, d)
    p = d / name
    good = (TINY_DIR / name).read_bytes()
    mutated = good[: cut % (len(good) + 1)] if truncate else _flip(good, fl)
    assume(mutated != good)
    p.write_bytes(mutated)
    try:
        with pytest.raises(B.BundleError, match="sha256|size"):
            B.load_bundle(d)
        OUTCOMES["bundle:BundleError (modified artifact)"] += 1
    finally:
        p.write_bytes(good)
