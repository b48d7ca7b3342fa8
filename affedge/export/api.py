"""``export_bundle``: checkpoint -> bundle (fold, split, export every format, parity, manifest).

The model is exported as separate branches (ARCHITECTURE.md §4):

* ``encoder`` — folded face encoder, ``frames [N,3,S,S] -> embedding [N,E]`` (N dynamic: several
  faces per frame);
* ``step``    — :class:`~affedge.export.streaming.StreamingStep`, ``embedding [N,E]``,
  ``audio_<name> [N,D]``, ``state_<i> [N,C,L]`` -> ``va [N,n_out]``, ``state_out_<i>``;
* ``window``  — :class:`~affedge.export.streaming.WindowForm`, ``embedding [N,W,E]``,
  ``audio_<name> [N,W,D]`` -> ``va [N,W,n_out]`` (N and W dynamic).

Formats: ``onnx`` (always recommended: it is the runtime's portable format), ``torchscript``,
``torch-export`` (.pt2), ``aoti`` (AOTInductor package, slow to compile), ``tensorrt`` (ONNX ->
engine; skipped with the reason where TensorRT or a GPU is missing) and, with ``int8=True``, an
``onnx-int8`` encoder (ORT static QDQ). The weights travel as ``weights/model.safetensors`` for
the eager torch backend. Every artifact is then loaded through the runtime backends and checked
against eager PyTorch (:mod:`affedge.export.parity`); the records go into the manifest.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from affedge.bundle import (BundleError, foreign_entries, load_bundle, tensor_spec,
                            update_manifest, write_bundle)
from affedge.config import FeatureConfig, to_dict
from affedge.formats import BY_NAME, DEFAULT_EXPORT_FORMATS, EXPORT_FORMATS, RUNNERS
from affedge.log import Ticker
from affedge.preprocess import DEFAULT_CROP
from affedge.staged_write import replace_path

log = logging.getLogger(__name__)

FORMATS = EXPORT_FORMATS  # what `formats=` accepts (affedge.formats, the one table)
DEFAULT_FORMATS = DEFAULT_EXPORT_FORMATS
MAX_BATCH = 16  # TensorRT profile max for the encoder/step batch (faces per frame)


@dataclasses.dataclass
class ExportResult:
    bundle: Path
    parity: list[dict[str, Any]]
    skipped: dict[str, str]
    ok: bool
    seconds: dict[str, float]


@dataclasses.dataclass
class Branch:
    name: str
    module: Any
    args: tuple
    check_args: tuple
    input_names: list[str]
    output_names: list[str]
    dynamic: dict[str, dict[int, str]]


def _specs(names, tensors, dynamic) -> list[dict]:
    out = []
    for n, t in zip(names, tensors):
        shape = [dynamic.get(n, {}).get(i, int(d)) for i, d in enumerate(t.shape)]
        out.append(tensor_spec(n, shape, str(t.dtype).replace("torch.", "")))
    return out


def _branches(model, window: int) -> list[Branch]:
    """The three exportable modules with example inputs (batch 2 so N is not specialised)."""
    import torch

    from affedge.export.folding import fold_encoder
    from affedge.export.streaming import StreamingStep, WindowForm

    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    s = cfg.crop_size
    mods = []
    enc = fold_encoder(model.encoder)
    frames = torch.rand(2, 3, s, s, generator=g) * 2 - 1
    mods.append(Branch("encoder", enc, (frames,), (torch.rand(3, 3, s, s, generator=g) * 2 - 1,),
                        ["frames"], ["embedding"], {"frames": {0: "N"}, "embedding": {0: "N"}}))
    step = StreamingStep(model.temporal).eval()

    def step_args(n):
        emb = torch.randn(n, cfg.embed_dim, generator=g)
        audio = [torch.randn(n, d, generator=g) for d in step.audio_dims]
        states = [torch.randn(n, c, ln, generator=g) for _, (c, ln) in step.state_specs()]
        return (emb, *audio, *states)

    dyn = {n: {0: "N"} for n in step.input_names + step.output_names}
    mods.append(Branch("step", step, step_args(2), step_args(3), list(step.input_names),
                        list(step.output_names), dyn))
    win = WindowForm(model.temporal).eval()

    def win_args(n, w):
        emb = torch.randn(n, w, cfg.embed_dim, generator=g)
        return (emb, *[torch.randn(n, w, d, generator=g) for d in step.audio_dims])

    dyn = {n: {0: "N", 1: "W"} for n in win.input_names + win.output_names}
    mods.append(Branch("window", win, win_args(2, window), win_args(1, window + 7),
                        list(win.input_names), list(win.output_names), dyn))
    return mods


def _manifest_fields(model_cfg, feature_cfg: FeatureConfig, info: dict, fps: float,
                     step_mod: Branch) -> dict[str, Any]:
    norm = info.get("norm_stats") or {}
    audio_norm = {}
    for name, st in norm.items():
        if isinstance(st, dict) and "mean" in st and "std" in st:
            mean = np.atleast_1d(np.asarray(st["mean"], np.float64))
            std = np.atleast_1d(np.asarray(st["std"], np.float64))
            dim = dict(model_cfg.audio_streams).get(name)
            if dim is not None and mean.size == 1:  # scalar stats (reference style) -> per dim
                mean, std = np.full(dim, mean[0]), np.full(dim, std[0])
            audio_norm[name] = {"mean": mean.tolist(), "std": std.tolist()}
    extra = info.get("extra") or {}
    states = [tensor_spec(n, ["N", *shape[1:]]) for n, shape in
              [(n, t.shape) for n, t in zip(step_mod.input_names, step_mod.args)]
              if n.startswith("state_")]
    return {
        "model": to_dict(model_cfg),
        "features": to_dict(feature_cfg),
        "video": {"fps": float(fps), "note": "the model runs one step per video frame at the "
                  "source's native rate; fps is the training data's typical rate"},
        "crop": {"size": model_cfg.crop_size, "frame_size": feature_cfg.frame_size,
                 "aligned_size": feature_cfg.aligned_size, "color": "RGB", "layout": "NCHW",
                 **DEFAULT_CROP,
                 "resize": "INTER_AREA to frame_size, centre crop",
                 "filler": "black crop when no face (PAPER.md §1.3)"},
        "receptive_field": int(model_cfg.receptive_field),
        # the face front end the training crops came from (detector + crop recipe); the
        # runtime rebuilds it (None: a legacy checkpoint, Haar + box-v1)
        "face_frontend": extra.get("face_frontend"),
        "outputs": list(model_cfg.outputs),
        "audio_norm": audio_norm,
        "streaming": {"states": states,
                      "audio_inputs": [f"audio_{n}" for n, _ in model_cfg.audio_streams]
                      if model_cfg.fusion else [],
                      "initial_state": "zeros"},
        "provenance": {k: extra.get(k) for k in ("data", "folds", "seed", "metrics", "train_config",
                                                  "git", "created") if k in extra}
        | {"checkpoint_extra_keys": sorted(extra)},
    }


def training_record(checkpoint_dir: str | Path, info: dict, force: bool = False) -> dict[str, Any]:
    """The manifest's ``training`` section: the checkpoint's validation metrics and learning
    verdict (:mod:`affedge.training.verdict`). Raises ``ValueError`` for a checkpoint that did
    not beat the untrained model by the margin, unless ``force`` (then the section carries a
    warning)."""
    from affedge.training.verdict import (
        LEARN_MARGIN,
        UNFINISHED,
        describe,
        from_checkpoint_extra,
    )

    rec = from_checkpoint_extra(info.get("extra"))
    if rec is None:
        return {"verdict": "unknown", "note": "the checkpoint records no training verdict "
                "(written before affedge train recorded one, or by other code)"}
    rec = dict(rec)
    gain = rec.get("gain_mean_ccc")
    learned = bool(rec.get("learned")) and isinstance(gain, (int, float)) and gain >= LEARN_MARGIN
    if not learned:
        unfinished = rec.get("verdict") == UNFINISHED
        why = (f"{checkpoint_dir}: {rec.get('note', 'no training verdict')}" if unfinished
               else f"{checkpoint_dir}: the model {describe(rec)}" if isinstance(
                   gain, (int, float)) else f"{checkpoint_dir}: the model did NOT learn")
        if not force:
            raise ValueError(f"{why}; refusing to export it (--force exports it anyway, with a "
                             "warning in the bundle)")
        rec["forced"] = True
        rec["warning"] = ("exported with --force although its training did not finish" if
                          unfinished else
                          "exported with --force although the model did not learn "
                          f"(validation mean CCC gain over the untrained model "
                          f"{_num(gain)} < {LEARN_MARGIN})")
        log.warning("%s; exporting anyway (--force)", why)
    return rec


def _num(x) -> str:
    return f"{x:+.3f}" if isinstance(x, (int, float)) else str(x)


def calib_input_exists(calib: str | Path) -> bool:
    """``calib`` names what int8 calibration reads: a directory of face crops or a .npy file."""
    c = Path(calib)
    return c.is_dir() or (c.suffix == ".npy" and c.is_file())


def _export_bundle(checkpoint_dir: str | Path, out: str | Path,
                  formats: Sequence[str] = DEFAULT_FORMATS, fp16: bool = False,
                  int8: bool = False, calib: str | Path | None = None,
                  dynamic_batch: bool = True, data: str | Path | None = None,
                  opset: int = 18, window: int | None = None, parity_frames: int = 160,
                  fps: float = 30.0, quant_method: str = "static", overwrite: bool = True,
                  timing_cache: str | Path | None = None, onnx_exporter: str = "auto",
                  progress: Callable[[str], None] | None = None, force: bool = False) -> ExportResult:
    """Export a checkpoint directory (``model.safetensors`` + ``config.json``) to a bundle.

    ``out``: a directory or a path ending in ``.zip``. ``dynamic_batch=False`` fixes N=1 in
    the encoder/step graphs (some accelerators prefer static shapes). ``data``: an Aff-Wild2
    layout data set for parity inputs (else deterministic synthetic inputs). ``int8``: add an
    ``onnx-int8`` encoder (ORT static QDQ, calibrated on ``calib`` crops, or the parity frames
    when no ``calib`` is given) and, with ``tensorrt``, INT8 engines. ``onnx_exporter``:
    "auto" (dynamo, legacy fallback per module), "dynamo" or "legacy". A checkpoint whose
    training verdict says it did not learn is refused unless ``force`` (:func:`training_record`).
    Returns an :class:`ExportResult`; ``ok`` is False when any fp32/fp16 parity check failed.
    """
    import torch

    from affedge.export import parity as P
    from affedge.export.exporters import ExportContext
    from affedge.export.onnx_export import onnx_io_specs
    from affedge.export.tensorrt_build import build_engine, tensorrt_available
    from affedge.formats import load
    from affedge.training.model import AffectModel, load_checkpoint

    say = progress or (lambda m: log.info("%s", m))
    formats = [f.strip() for f in formats if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown export format(s) {bad}; choose from {FORMATS}")
    # refuse what cannot be honoured before any work (and before any temporary files)
    want_onnx = "onnx" in formats or "tensorrt" in formats or int8
    if want_onnx:
        from affedge.export.onnx_export import DYNAMO_MIN_OPSET, check_opset

        check_opset(opset, onnx_exporter)
    if calib is not None and not calib_input_exists(calib):
        raise FileNotFoundError(f"calibration data not found: {calib} (give a directory of "
                                "face-crop images or a .npy file)")
    if data is not None and not Path(data).is_dir():
        raise FileNotFoundError(f"parity data set not found: {data} (give an Aff-Wild2-layout "
                                "directory)")
    out = Path(out)
    if out.exists() and not out.is_file() and any(out.iterdir()):
        if not (out / "manifest.json").is_file() or not overwrite:
            raise FileExistsError(f"{out} exists and is not an affedge bundle; refusing to "
                                  "overwrite it")
        extra = foreign_entries(out)
        if extra:
            shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5
                                            else "")
            raise FileExistsError(f"{out} holds a bundle and {len(extra)} file(s) or "
                                  f"folder(s) that are not part of it ({shown}); replacing the "
                                  "bundle would delete them: move them away or choose "
                                  "another output")
    model, info = load_checkpoint(checkpoint_dir)
    if not isinstance(model, AffectModel):
        raise ValueError(f"{checkpoint_dir}: export needs a full AffectModel checkpoint, got "
                         f"{type(model).__name__}")
    training = training_record(checkpoint_dir, info, force)
    model.eval()
    mcfg = info["model_config"]
    fcfg = info["feature_config"] or FeatureConfig()
    window = int(window or min(mcfg.receptive_field, 64))
    if parity_frames < mcfg.receptive_field:  # (affedge export refuses it)
        log.warning("parity_frames=%d is shorter than the model's receptive field (%d): the "
                    "parity check does not cover a full receptive field", parity_frames,
                    mcfg.receptive_field)
    mods = _branches(model, window)
    if not dynamic_batch:
        for m in mods[:2]:
            m.args = tuple(a[:1] for a in m.args)
            m.check_args = tuple(a[:1] for a in m.check_args)
            m.dynamic = {}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    files: list[dict[str, Any]] = []
    tmp = tempfile.TemporaryDirectory(prefix="affedge-export-")
    stage = Path(tmp.name)
    try:
        shutil.copyfile(Path(checkpoint_dir) / "model.safetensors",
                        stage / "model.safetensors")
        files.append({"name": "weights", "format": "safetensors",
                      "source": stage / "model.safetensors", "file": "weights/model.safetensors",
                      "precision": "fp32", "inputs": [], "outputs": []})

        def add(m: Branch, fmt: str, file: str, precision: str, extra: dict, io=None):
            ins, outs = io or (_specs(m.input_names, m.args, m.dynamic),
                               _specs(m.output_names, _outputs(m), m.dynamic))
            files.append({"name": m.name, "format": fmt, "source": stage / file, "file": file,
                          "precision": precision, "inputs": ins, "outputs": outs, **extra})

        if want_onnx and opset < DYNAMO_MIN_OPSET and onnx_exporter == "auto":
            say(f"onnx: opset {opset} is below {DYNAMO_MIN_OPSET}, the lowest torch's dynamo "
                "exporter writes: using the legacy (TorchScript-based) exporter")
        per_branch = [BY_NAME[f] for f in EXPORT_FORMATS if BY_NAME[f].exporter is not None
                      and (f in formats or (f == "onnx" and want_onnx))]
        ctx = ExportContext(opset=opset, onnx_exporter=onnx_exporter)
        for fmt in per_branch:
            ok, why = fmt.available()
            if not ok:
                skipped[fmt.name] = why
                say(f"{fmt.name:9s} skipped: {why}")
                continue
            exporter = load(fmt.exporter)
            for m in mods:
                file = f"{m.name}{fmt.file_suffix}"
                t0 = time.perf_counter()
                with Ticker(f"{fmt.name:9s} {m.name:8s}"):
                    out_rec = exporter(m, stage / file, ctx)
                if out_rec is None:
                    continue
                rec, io = out_rec
                seconds[f"{fmt.name}/{m.name}"] = time.perf_counter() - t0
                say(f"{fmt.name:9s} {m.name:8s} {rec.get('exporter', '')} "
                    f"({seconds[f'{fmt.name}/{m.name}']:.1f} s)")
                add(m, fmt.name, file, "fp32", rec, io)
        if "onnx" not in formats and want_onnx:
            say("note: ONNX graphs are kept in the bundle (the TensorRT/int8 source and the "
                "portable fallback)")

        # parity inputs (also the default calibration crops)
        if data is not None:
            pin = P.data_inputs(data, mcfg, fcfg, parity_frames,
                                _manifest_fields(mcfg, fcfg, info, fps, mods[1])["audio_norm"])
        else:
            pin = P.synthetic_inputs(mcfg, parity_frames, seed=0)
        say(f"parity inputs: {pin.source}")

        if int8:
            from affedge.export.quantize import load_calibration_crops, quantize_encoder

            crops = (load_calibration_crops(calib, mcfg.crop_size) if calib is not None
                     else pin.frames)
            t0 = time.perf_counter()
            with Ticker("onnx-int8 encoder (calibrating)"):
                rec = quantize_encoder(stage / "encoder.onnx", stage / "encoder.int8.onnx",
                                       crops if quant_method == "static" else None,
                                       quant_method)
            seconds["onnx-int8/encoder"] = time.perf_counter() - t0
            rec["calibration_source"] = str(calib) if calib is not None else pin.source
            add(mods[0], "onnx-int8", "encoder.int8.onnx", "int8", rec,
                onnx_io_specs(stage / "encoder.int8.onnx"))

        if "tensorrt" in formats:
            ok, why = tensorrt_available()
            if not ok:
                skipped["tensorrt"] = why
                say(f"tensorrt  skipped: {why}")
            else:
                for m in mods:
                    prec = "int8" if int8 else ("fp16" if fp16 else "fp32")
                    profiles = _trt_profiles(m, window)
                    calib_batches = None
                    if int8 and m.name == "encoder":
                        c = crops
                        calib_batches = [{"frames": c[i:i + 8]} for i in range(0, len(c), 8)]
                    elif int8:
                        prec = "fp16" if fp16 else "fp32"  # step/window stay float
                    t0 = time.perf_counter()
                    with Ticker(f"tensorrt  {m.name:8s}"):
                        rec = build_engine(stage / f"{m.name}.onnx",
                                           stage / f"{m.name}.{prec}.engine", profiles,
                                           fp16=fp16, int8=int8 and m.name == "encoder",
                                           calib_batches=calib_batches,
                                           timing_cache=timing_cache)
                    seconds[f"tensorrt/{m.name}"] = time.perf_counter() - t0
                    add(m, "tensorrt", f"{m.name}.{prec}.engine", prec, rec,
                        onnx_io_specs(stage / f"{m.name}.onnx"))

        fields = _manifest_fields(mcfg, fcfg, info, fps, mods[1])
        fields["training"] = training
        if isinstance(training.get("person_baseline"), dict) and \
                "method" in training["person_baseline"]:  # fitted: the runtime applies it
            fields["person_baseline"] = training.pop("person_baseline")
        fields["export"] = {"formats": formats, "fp16": fp16, "int8": int8, "opset": opset,
                            "dynamic_batch": dynamic_batch, "window": window, "skipped": skipped,
                            "torch_version": torch.__version__}
        records: list[dict[str, Any]] = []

        def write_and_check(staged: Path) -> None:
            # parity through the runtime backends, on the written (staged) bundle, recorded in
            # its manifest before it takes the place of any previous bundle
            write_bundle(staged, fields, files)
            bundle = load_bundle(staged)
            ref = P.EagerReference(model, pin)
            for fmt, make in _parity_backends(bundle, formats, int8):
                try:
                    be = make()
                except Exception as exc:
                    skipped[f"parity/{fmt}"] = str(exc)
                    say(f"parity    {fmt}: backend unavailable ({exc})")
                    continue
                t0 = time.perf_counter()
                try:
                    arts = {m: be._spec(m) for m in be.models}
                    with Ticker(f"parity    {fmt}"):
                        records.extend(P.check_backend(
                            be, ref, arts, fmt, ("encoder",) if fmt == "onnx-int8" else None))
                finally:
                    be.close()
                seconds[f"parity/{fmt}"] = time.perf_counter() - t0
            if staged.is_dir():
                update_manifest(staged, parity=records, parity_inputs=pin.source)
                load_bundle(staged)  # still valid
            else:  # zip: rewrite with the parity records
                _rezip_with_parity(staged, records, pin.source)

        replace_path(out, write_and_check)
    finally:
        tmp.cleanup()
    # no record at all: no backend here could load any artifact, so nothing was checked
    ok = bool(records) and all(r["status"] != "FAIL" for r in records)
    return ExportResult(out, records, skipped, ok, seconds)


def _outputs(m: Branch):
    import torch

    with torch.no_grad():
        y = m.module(*m.args)
    return y if isinstance(y, (tuple, list)) else (y,)


def _trt_profiles(m: Branch, window: int) -> dict[str, tuple]:
    """min/opt/max shapes for every input with dynamic axes."""
    prof = {}
    for n, a in zip(m.input_names, m.args):
        axes = m.dynamic.get(n, {})
        if not axes:
            continue
        lo, opt, hi = list(a.shape), list(a.shape), list(a.shape)
        for ax, sym in axes.items():
            if sym == "N":
                lo[ax], opt[ax], hi[ax] = 1, 1, MAX_BATCH
            elif sym == "W":
                lo[ax], opt[ax], hi[ax] = 1, window, max(window, 512)
        prof[n] = (lo, opt, hi)
    return prof


def _parity_backends(bundle, formats, int8):
    """(format, factory) for every artifact format in the bundle that a backend here can run,
    through the runner the format table names for parity (its CPU runner, or its first)."""
    for fmt in (BY_NAME[a] for a in dict.fromkeys(x["format"] for x in bundle.artifacts)):
        if fmt.name == "safetensors" or (fmt.name == "onnx-int8" and not int8):
            continue  # eager torch is the reference itself
        name = fmt.cpu_runner or (fmt.runners[0].name if fmt.runners else None)
        if name is None:
            continue
        runner = RUNNERS[name]
        if fmt.name == "onnx-int8":
            yield fmt.name, lambda r=runner: r.make(bundle, precision="int8")
        else:
            yield fmt.name, lambda r=runner: r.make(bundle)


def _rezip_with_parity(zpath: Path, records, source: str) -> None:
    with tempfile.TemporaryDirectory() as t:
        import zipfile

        with zipfile.ZipFile(zpath) as zf:
            zf.extractall(t)  # our own freshly written, validated zip
        update_manifest(t, parity=records, parity_inputs=source)
        tmpzip = zpath.with_suffix(".tmp.zip")
        with zipfile.ZipFile(tmpzip, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(Path(t).rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(t).as_posix())
        tmpzip.replace(zpath)
    try:
        load_bundle(zpath)
    except BundleError as exc:  # pragma: no cover - would be a bug in the writer
        raise RuntimeError(f"rewritten bundle is invalid: {exc}") from None


def export_bundle(*args, **kwargs) -> ExportResult:
    """Export a checkpoint to a verified bundle (see :func:`_export_bundle` for the arguments).

    Runs under ``torch.no_grad()`` and leaves the caller's grad mode as it was (an earlier
    version switched autograd off process-wide, which broke training in the same process)."""
    import torch

    with torch.no_grad():
        return _export_bundle(*args, **kwargs)


export_bundle.__wrapped__ = _export_bundle  # type: ignore[attr-defined]
