#!/usr/bin/env python
"""Extract silero-vad's ONNX model from its PyPI wheel into affedge's package data.

Run by a developer, never at install or run time:

    python scripts/build_vad_model.py            # pip download -> extract -> NOTICE
    python scripts/build_vad_model.py --wheel W  # use an already downloaded wheel

The ``silero-vad`` wheel (MIT) depends on torch, so it is fetched with ``pip download --no-deps``
and only one file is read out of it: ``silero_vad/data/silero_vad_16k_sequence.onnx``. Of the
wheel's ONNX variants this is the 16 kHz model with explicit LSTM state (inputs
``input[n, 576]``, ``h``/``c[1, 1, 128]``): it takes any number of 32 ms windows in one call
and gives the same probabilities, bit for bit, as the per-window ``silero_vad.onnx`` (checked
here with ONNX Runtime 1.32: max |diff| 0 over 200 windows), at ~57 µs/window batched and
~110 µs one window per call on this CPU, vs ~220 µs for ``silero_vad.onnx`` (its ``If`` on the
sample rate). The script checks that the extracted graph has the inputs/outputs
:mod:`affedge.features.vad.silero` expects and writes ``NOTICE`` with licence, source and
sha256.
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "silero-vad"
VERSION = "6.2.3"  # pinned: the NOTICE and the tests' sha256 refer to this release
MEMBER = "silero_vad/data/silero_vad_16k_sequence.onnx"
LICENSE_MEMBER = f"silero_vad-{VERSION}.dist-info/licenses/LICENSE"
ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "affedge" / "assets" / "models" / "silero_vad"
OUT_NAME = "silero_vad_16k_sequence.onnx"


def download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "-d", str(dest), f"{PACKAGE}=={VERSION}"]
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("silero_vad-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one silero_vad wheel in {dest}, found {wheels}")
    return wheels[0]


def check_graph(path: Path) -> None:
    """Fail unless the model has the streaming interface the runtime wrapper feeds."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = {i.name: i.shape for i in sess.get_inputs()}
    outs = [o.name for o in sess.get_outputs()]
    want_in = {"input": 576, "h": [1, 1, 128], "c": [1, 1, 128]}
    if set(ins) != set(want_in) or ins["input"][-1] != 576 or ins["h"] != [1, 1, 128] \
            or ins["c"] != [1, 1, 128] or outs != ["speech_probs", "hn", "cn"]:
        raise SystemExit(f"{path.name}: unexpected graph interface inputs={ins} outputs={outs}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, help="an already downloaded silero_vad wheel")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        if f"-{VERSION}-" not in wheel.name:
            raise SystemExit(f"{wheel.name}: expected {PACKAGE} {VERSION}")
        with zipfile.ZipFile(wheel) as z:
            data = z.read(MEMBER)
            licence = z.read(LICENSE_MEMBER).decode("utf-8")
        wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / OUT_NAME
    model.write_bytes(data)
    check_graph(model)
    sha = hashlib.sha256(data).hexdigest()
    notice = f"""{OUT_NAME}
======================================================================
Silero VAD voice-activity model (16 kHz, batched-sequence ONNX export).

Source:   PyPI package {PACKAGE}=={VERSION}, file {MEMBER}
          (wheel {wheel.name}, sha256 {wheel_sha})
Project:  https://github.com/snakers4/silero-vad
Licence:  MIT (full text below, copied from the wheel's {LICENSE_MEMBER})
sha256:   {sha}  {OUT_NAME}
Built by: scripts/build_vad_model.py (extracted unchanged; no conversion)

{licence.strip()}
"""
    (args.out / "NOTICE").write_text(notice, encoding="utf-8")
    print(f"wrote {model} ({len(data)} bytes, sha256 {sha})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
