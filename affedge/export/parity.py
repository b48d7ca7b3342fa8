"""Parity of every exported artifact against eager PyTorch, on real inputs.

Inputs (:func:`parity_inputs`): one held-out sequence of face crops + audio features (+ labels)
from a data set in the Aff-Wild2 layout (``--data DIR``, e.g. ``affedge synth`` output), or, when
no data is given, deterministic realistic inputs: smooth low-frequency images in the model's
[-1, 1] range and smooth, standardised audio features (fixed seed).

Reference = the ORIGINAL (unfolded) eager model in eval mode, so parity also covers folding.
Per artifact and output: ``max_abs`` = max |exported - eager|, ``max_rel`` = max_abs / max|eager|
(relative to the output's range; element-wise ratios explode near zero). Pass when
``max_abs <= tol * max(1, max|eager|)`` with ``tol`` = 1e-4 (fp32) or 1e-2 (fp16/bf16)
[the task's thresholds]. The step model is additionally run frame by frame, with its own state,
over the whole sequence (longer than the receptive field) after the exported encoder: its CCC
must be within 0.005 of eager's, both measured against the labels (the data set's, or
deterministic smooth pseudo-labels for synthetic inputs; CCC between exported and eager outputs
is also reported, but it is ill-conditioned for an untrained model whose output barely varies). int8 artifacts are reported (error and CCC
impact), not bounded.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from affedge.metrics import ccc

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 1e-2, "int8": None}
CCC_TOLERANCE = 0.005


@dataclasses.dataclass
class ParityInputs:
    frames: np.ndarray  # float32 [T, 3, S, S] model input
    audio: dict[str, np.ndarray]  # name -> float32 [T, D] (normalised)
    labels: np.ndarray | None  # float32 [T, n_out] or None
    source: str


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], axis_len: int,
                  k: int = 9) -> np.ndarray:
    """Noise low-pass filtered along the first axis (moving average of width k)."""
    x = rng.standard_normal((axis_len + k - 1,) + shape[1:]).astype(np.float32)
    c = np.cumsum(x, axis=0)
    c = np.concatenate([np.zeros_like(c[:1]), c])
    out = (c[k:] - c[:-k]) / np.sqrt(k)
    return out.astype(np.float32)


def synthetic_inputs(model_cfg, n_frames: int = 160, seed: int = 0) -> ParityInputs:
    """Deterministic realistic inputs: smooth images (blurred noise + gradients, [-1, 1]),
    temporally smooth standardised audio features."""
    import cv2

    rng = np.random.default_rng(seed)
    s = model_cfg.crop_size
    base = rng.standard_normal((4, s, s, 3)).astype(np.float32)
    frames = np.empty((n_frames, s, s, 3), np.float32)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    for t in range(n_frames):
        w = np.cos(2 * np.pi * (t / n_frames + np.arange(4) / 4.0))
        img = np.tensordot(w, base, axes=1)
        img = cv2.GaussianBlur(img, (0, 0), 2.0)
        img += (0.8 * (yy - 0.5) + 0.3 * np.sin(2 * np.pi * (xx + t / 50.0)))[..., None]
        frames[t] = np.tanh(img)
    audio = {name: _smooth_noise(rng, (n_frames, int(d)), n_frames)
             for name, d in (model_cfg.audio_streams if model_cfg.fusion else ())}
    # pseudo-labels: a smooth V/A trajectory in [-1, 1]; CCC against them is well conditioned
    # even when an untrained model's output barely varies (CCC exported-vs-eager is not).
    labels = np.tanh(_smooth_noise(rng, (n_frames, len(model_cfg.outputs)), n_frames, k=31))
    return ParityInputs(frames.transpose(0, 3, 1, 2).copy(), audio, labels.astype(np.float32),
                        f"deterministic synthetic inputs (seed {seed}, {n_frames} frames, "
                        "pseudo-labels)")


def data_inputs(data_dir: str | Path, model_cfg, feature_cfg, n_frames: int = 160,
                audio_norm: dict | None = None) -> ParityInputs:
    """One sequence from an Aff-Wild2-layout data set (validation trial preferred)."""
    from affedge.features.faces import frames_to_input

    try:
        from affedge.training.data.affwild2 import AffWild2VA
    except ImportError as exc:
        raise RuntimeError(f"--data needs affedge.training.data.affwild2 ({exc})") from None
    ds = AffWild2VA(Path(data_dir), feature_cfg, require_audio=bool(model_cfg.fusion))
    trials = []
    for part in ("Validation_Set", "validation", "Train_Set", "train"):
        try:
            trials = list(ds.trials(part))
        except Exception:
            continue
        if trials:
            break
    if not trials:
        raise RuntimeError(f"no trials found in {data_dir}")
    from affedge.preprocess import audio_normaliser

    td = ds.load(trials[0])
    t = min(n_frames, len(td.labels))
    frames = frames_to_input(td.frames[:t], model_cfg.crop_size)
    audio = {}
    for name, _dim in (model_cfg.audio_streams if model_cfg.fusion else ()):
        a = np.asarray(td.audio[name][:t], np.float32)
        if audio_norm and name in audio_norm:
            a = audio_normaliser({name: audio_norm[name]})[name](a)
        audio[name] = a
    labels = np.asarray(td.labels[:t], np.float32)[:, : len(model_cfg.outputs)]
    return ParityInputs(frames.astype(np.float32), audio, labels,
                        f"{data_dir}: trial {getattr(trials[0], 'name', trials[0])}, {t} frames")


def errors(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"parity: output shape {got.shape} != reference {ref.shape}")
    if not np.all(np.isfinite(got)):
        return {"max_abs": float("inf"), "max_rel": float("inf"), "ref_max": float(np.abs(ref).max())}
    d = np.abs(ref - got)
    m = float(np.abs(ref).max()) if ref.size else 0.0
    return {"max_abs": float(d.max()) if d.size else 0.0,
            "max_rel": float(d.max() / max(m, 1e-12)) if d.size else 0.0, "ref_max": m}


def within(err: dict[str, float], precision: str) -> bool | None:
    tol = TOLERANCE.get(precision)
    if tol is None:
        return None
    return err["max_abs"] <= tol * max(1.0, err["ref_max"])


class EagerReference:
    """Eager outputs of the original model on the parity inputs (computed once)."""

    def __init__(self, model, inputs: ParityInputs):
        import torch

        self.inputs = inputs
        with torch.no_grad():
            frames = torch.from_numpy(inputs.frames)
            self.embedding = model.encoder.eval()(frames).numpy()  # [T, E]
            emb = torch.from_numpy(self.embedding)[None]
            audio = [torch.from_numpy(inputs.audio[n])[None] for n in model.temporal.audio_names]
            self.y = model.temporal.eval()(emb, audio)[0].numpy()  # [T, n_out]
        from affedge.export.streaming import StreamingStep

        self.step = StreamingStep(model.temporal)


def run_step_sequence(run, step_names: Sequence[str], state_specs, embedding: np.ndarray,
                      audio: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Drive a step model ``run(inputs) -> outputs`` over a sequence from zero state."""
    t_len = embedding.shape[0]
    states = [np.zeros((1, c, ln), np.float32) for _, (c, ln) in state_specs]
    ys = []
    audio_names = [n for n in step_names if n.startswith("audio_")]
    for t in range(t_len):
        feeds = {"embedding": embedding[t:t + 1]}
        for n in audio_names:
            feeds[n] = audio[n[len("audio_"):]][t:t + 1]
        for (name, _), s in zip(state_specs, states):
            feeds[name] = s
        out = run(feeds)
        ys.append(out["va"][0])
        states = [out[f"state_out_{i}"] for i in range(len(states))]
    return np.stack(ys), states


def _ccc_cols(y: np.ndarray, yhat: np.ndarray) -> list[float]:
    return [float(ccc(y[:, j], yhat[:, j])) for j in range(y.shape[1])]


def check_backend(backend, ref: EagerReference, artifact_for: dict[str, dict],
                  fmt: str, models: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parity records for every model ``backend`` serves, or only ``models`` (the end-to-end
    pipeline record is added whenever the backend has both encoder and step)."""
    inp = ref.inputs
    records: list[dict[str, Any]] = []
    enc_out = None
    for model in backend.models:
        if models is not None and model not in models and model != "encoder":
            continue
        rec = artifact_for[model]
        prec = rec["precision"]
        outs: dict[str, dict[str, float]] = {}
        extra: dict[str, Any] = {}
        if model == "encoder":
            parts, i = [], 0
            # several batch sizes exercise a dynamic batch axis; a graph exported with a fixed
            # batch (export --static-batch) takes only its own
            batch = (rec.get("inputs") or [{}])[0].get("shape", ["N"])[0]
            sizes = (batch,) if isinstance(batch, int) else (1, 3, 4, 8)
            for n in sizes:
                while i < len(inp.frames):
                    chunk = inp.frames[i:i + n]
                    parts.append(backend.run("encoder", {"frames": chunk})["embedding"])
                    i += len(chunk)
                    if n != sizes[-1]:
                        break
            enc_out = np.concatenate(parts)
            outs["embedding"] = errors(ref.embedding, enc_out)
            if models is not None and "encoder" not in models:
                continue
        elif model == "step":
            names = backend.input_names("step")
            y, states = run_step_sequence(lambda f: backend.run("step", f), names,
                                          ref.step.state_specs(), ref.embedding, inp.audio)
            outs["va"] = errors(ref.y, y)
            # final states vs the eager step form driven the same way
            import torch

            with torch.no_grad():
                _, ref_states = run_step_sequence(
                    lambda f, names=names: dict(zip(ref.step.output_names, [
                        t.numpy() for t in ref.step(*[torch.from_numpy(f[n]) for n in names])])),
                    names, ref.step.state_specs(), ref.embedding, inp.audio)
            st = [errors(r, s) for r, s in zip(ref_states, states)]
            worst = max(st, key=lambda e: e["max_abs"] / max(1.0, e["ref_max"]))
            outs["state_out_*"] = worst
        elif model == "window":
            feeds = {"embedding": ref.embedding[None]}
            for n in backend.input_names("window")[1:]:
                feeds[n] = inp.audio[n[len("audio_"):]][None]
            outs["va"] = errors(ref.y, backend.run("window", feeds)["va"][0])
        oks = [within(e, prec) for e in outs.values()]
        status = "report" if None in oks else ("pass" if all(oks) else "FAIL")
        records.append({"artifact": model, "format": fmt, "precision": prec,
                        "file": rec["file"], "size": rec["size"], "outputs": outs,
                        "threshold": TOLERANCE.get(prec), "status": status, **extra})
    # end-to-end: exported encoder -> exported step, frame by frame with state
    if enc_out is not None and "step" in backend.models:
        names = backend.input_names("step")
        y, _ = run_step_sequence(lambda f: backend.run("step", f), names,
                                 ref.step.state_specs(), enc_out, inp.audio)
        rec = {"artifact": "pipeline", "format": fmt,
               "precision": artifact_for["encoder"]["precision"], "file": "",
               "size": 0, "outputs": {"va": errors(ref.y, y)},
               "threshold": CCC_TOLERANCE}
        if inp.labels is not None:
            c_eager = _ccc_cols(inp.labels, ref.y)
            c_exp = _ccc_cols(inp.labels, y)
            delta = max(abs(a - b) for a, b in zip(c_eager, c_exp))
            rec["ccc"] = {"eager": c_eager, "exported": c_exp, "max_delta": delta,
                          "against": "labels", "exported_vs_eager": _ccc_cols(ref.y, y)}
        else:
            c = _ccc_cols(ref.y, y)
            delta = max(1.0 - v for v in c)
            rec["ccc"] = {"exported_vs_eager": c, "max_delta": delta, "against": "eager"}
        rec["status"] = "pass" if delta <= CCC_TOLERANCE else (
            "report" if rec["precision"] == "int8" else "FAIL")
        records.append(rec)
    return records


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """The parity table printed by ``affedge export``."""
    head = (f"{'model':9s} {'format':13s} {'prec':5s} {'size MB':>8s} {'max abs err':>12s} "
            f"{'max rel err':>12s} {'CCC delta':>9s}  status")
    lines = [head, "-" * len(head)]
    for r in records:
        worst = max(r["outputs"].values(), key=lambda e: e["max_abs"])
        cd = r.get("ccc", {}).get("max_delta")
        size = f"{r['size'] / 1e6:.2f}" if r["size"] else "-"
        lines.append(
            f"{r['artifact']:9s} {r['format']:13s} {r['precision']:5s} "
            f"{size:>8s} {worst['max_abs']:12.3e} {worst['max_rel']:12.3e} "
            f"{'' if cd is None else f'{cd:.5f}':>9s}  {r['status']}")
    if any(r["status"] == "report" for r in records):
        lines.append(f"report: an int8 artifact outside the fp32 limit (CCC delta > "
                     f"{CCC_TOLERANCE:g}): kept, and a run with --precision int8 warns that "
                     f"its outputs moved")
    return "\n".join(lines)
