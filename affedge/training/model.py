"""The full network: face encoder + causal TCNs + leader-follower fusion (PAPER.md §2-§4).

* :class:`TemporalFusion` — everything after the per-frame encoder: the visual TCN (512 -> 4x128),
  one TCN per audio stream (D_i -> 4x32) and the fusion head; ``cfg.fusion=False`` gives the
  visual-only model (TCN -> Linear(128, n_out), the reference ``my_2d1d``).
* :class:`AffectModel` — ``encoder`` (see :mod:`affedge.training.backbones`) + ``temporal``.
* :func:`save_checkpoint` / :func:`load_checkpoint` — ``model.safetensors`` + ``config.json``.
* :func:`map_reference_state_dict` — key mapping from the authors' ``my_2d1ddy``/``my_2d1d``
  (and ``my_res50``) state dicts to ours.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from affedge.config import FeatureConfig, ModelConfig, from_dict, to_dict
from affedge.training.backbones import build_encoder
from affedge.training.fusion import LeaderFollowerFusion
from affedge.training.tcn import TemporalConvNet

CHECKPOINT_FORMAT = "affedge-checkpoint"
CHECKPOINT_VERSION = 1


class TemporalFusion(nn.Module):
    """``forward(emb [B,T,E], audio: list of [B,T,D_i]) -> [B,T,n_out]`` (causal in T).

    Sub-modules: ``visual`` (TemporalConvNet), ``audio`` (ModuleList of TemporalConvNet, in
    ``cfg.audio_streams`` order; empty when ``cfg.fusion`` is False), and ``fusion``
    (LeaderFollowerFusion) or ``head`` (Linear) for the visual-only model.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        n_out = len(cfg.outputs)
        if n_out < 1:
            raise ValueError("ModelConfig.outputs must name at least one output")
        self.visual = TemporalConvNet(cfg.embed_dim, cfg.visual_channels, cfg.kernel_size,
                                      cfg.dropout)
        streams = cfg.audio_streams if cfg.fusion else ()
        self.audio = nn.ModuleList(
            TemporalConvNet(int(dim), cfg.audio_channels, cfg.kernel_size, cfg.dropout)
            for _, dim in streams)
        self.audio_names = tuple(name for name, _ in streams)
        self.audio_dims = tuple(int(dim) for _, dim in streams)
        if cfg.fusion:
            if not streams:
                raise ValueError("ModelConfig.fusion=True needs at least one audio stream")
            self.fusion = LeaderFollowerFusion(
                self.visual.out_channels, [t.out_channels for t in self.audio], cfg.attn_dim, n_out)
        else:
            self.head = nn.Linear(self.visual.out_channels, n_out)

    @property
    def receptive_field(self) -> int:
        return max([self.visual.receptive_field] + [t.receptive_field for t in self.audio])

    def check_inputs(self, emb: torch.Tensor, audio: Sequence[torch.Tensor]) -> None:
        """Raise ValueError naming the offending input when shapes do not fit the config."""
        if emb.dim() != 3 or emb.shape[-1] != self.cfg.embed_dim:
            raise ValueError(f"embedding must be [B, T, {self.cfg.embed_dim}], got {tuple(emb.shape)}")
        if not self.cfg.fusion:
            return
        if len(audio) != len(self.audio_dims):
            raise ValueError(f"expected {len(self.audio_dims)} audio streams {self.audio_names}, "
                             f"got {len(audio)}")
        for name, dim, a in zip(self.audio_names, self.audio_dims, audio):
            if a.dim() != 3 or a.shape[0] != emb.shape[0] or a.shape[1] != emb.shape[1] \
                    or a.shape[2] != dim:
                raise ValueError(f"audio stream {name!r} must be [B, T, {dim}] = "
                                 f"[{emb.shape[0]}, {emb.shape[1]}, {dim}], got {tuple(a.shape)}")

    def forward(self, emb: torch.Tensor, audio: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        if not torch.jit.is_tracing():
            self.check_inputs(emb, audio)
        h_v = self.visual(emb.transpose(1, 2)).transpose(1, 2)  # [B, T, 128]
        if not self.cfg.fusion:
            return self.head(h_v)
        h_a = [tcn(a.transpose(1, 2)).transpose(1, 2) for tcn, a in zip(self.audio, audio)]
        return self.fusion(h_v, h_a)


class AffectModel(nn.Module):
    """``forward(frames [B,T,3,S,S], audio list of [B,T,D_i]) -> [B,T,n_out]``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder, cfg)
        self.temporal = TemporalFusion(cfg)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B,T,3,S,S] -> [B,T,E]`` embeddings (one encoder call over all B*T frames)."""
        s = self.cfg.crop_size
        if frames.dim() != 5 or tuple(frames.shape[2:]) != (3, s, s):
            raise ValueError(f"frames must be [B, T, 3, {s}, {s}], got {tuple(frames.shape)}")
        b, t = frames.shape[:2]
        return self.encoder(frames.reshape(b * t, 3, s, s)).reshape(b, t, -1)

    def forward(self, frames: torch.Tensor, audio: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        return self.temporal(self.encode(frames), audio)


# --------------------------------------------------------------------------------------------
# Checkpoints: safetensors + JSON, no pickles
# --------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """numpy/torch arrays and scalars -> lists/floats so stats can go into JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if hasattr(value, "tolist"):  # numpy array or scalar
        return value.tolist()
    return value


def save_checkpoint(directory: str | Path, model: nn.Module, model_cfg: ModelConfig,
                    feature_cfg: FeatureConfig | None = None,
                    norm_stats: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` (the state dict) and ``config.json`` into ``directory``.

    ``config.json``: ``{"format", "version", "model": to_dict(model_cfg), "features":
    to_dict(feature_cfg) | null, "norm_stats": {...}, "extra": {...}}``.
    """
    from affedge.training.train_utils import save_safetensors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_safetensors(state, directory / "model.safetensors")
    info = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_class": type(model).__name__,
        "model": to_dict(model_cfg),
        "features": to_dict(feature_cfg) if feature_cfg is not None else None,
        "norm_stats": _jsonable(norm_stats or {}),
        "extra": _jsonable(extra or {}),
    }
    (directory / "config.json").write_text(json.dumps(info, indent=2))
    return directory


def check_same_model(ckpt_dir: str | Path, model_cfg: ModelConfig) -> None:
    """ValueError naming the differences when the checkpoint in ``ckpt_dir`` holds another
    model than ``model_cfg`` (e.g. ``train --resume --modality v`` against an av run: loading
    its weights failed with PyTorch's multi-kilobyte list of missing keys, and a finished fold
    was kept without a word)."""
    saved = json.loads((Path(ckpt_dir) / "config.json").read_text()).get("model") or {}
    mine = json.loads(json.dumps(to_dict(model_cfg)))
    diff = [k for k in mine if k in saved and saved[k] != mine[k]]

    def said(k, v) -> str:  # in the command's own words where an option sets it
        if k == "fusion":
            return f"--modality {'av' if v else 'v'}"
        return f"--encoder {v}" if k == "encoder" else f"{k}={v!r}"

    if diff:
        raise ValueError(f"--resume: {ckpt_dir} was trained with "
                         + ", ".join(said(k, saved[k]) for k in diff)
                         + "; this command asks for "
                         + ", ".join(said(k, mine[k]) for k in diff)
                         + " (resume with the run's options, or train into another --out)")


def load_checkpoint(directory: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved by :func:`save_checkpoint` (eval mode, CPU).

    Returns ``(model, info)`` with ``info = {"model_config": ModelConfig, "feature_config":
    FeatureConfig | None, "norm_stats": dict, "extra": dict, "model_class": str}``.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg_path, w_path = directory / "config.json", directory / "model.safetensors"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint file missing: {p}")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path}: not valid JSON ({e})") from None
    if raw.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{cfg_path}: not an affedge checkpoint (format={raw.get('format')!r})")
    if raw.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{cfg_path}: unsupported checkpoint version {raw.get('version')!r}")
    model_cfg = from_dict(ModelConfig, raw["model"])
    feature_cfg = from_dict(FeatureConfig, raw["features"]) if raw.get("features") else None
    cls_name = raw.get("model_class", "AffectModel")
    classes = {"AffectModel": AffectModel, "TemporalFusion": TemporalFusion}
    if cls_name not in classes:
        raise ValueError(f"{cfg_path}: unknown model_class {cls_name!r}")
    model = classes[cls_name](model_cfg)
    state = load_file(str(w_path))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{w_path}: weights do not match the config in {cfg_path.name}: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}, "
                         f"wrong shape {wrong[:3]} ({len(missing)}/{len(unexpected)}/{len(wrong)})")
    model.load_state_dict(state, strict=True)
    model.eval()
    info = {"model_config": model_cfg, "feature_config": feature_cfg,
            "norm_stats": raw.get("norm_stats", {}), "extra": raw.get("extra", {}),
            "model_class": cls_name}
    return model, info


# --------------------------------------------------------------------------------------------
# Reference (sucv/ABAW2) weights -> ours
# --------------------------------------------------------------------------------------------
_REF_FUSION = {"encoder": "key", "encoderQ": "query", "encoderV": "value"}


def _map_tcn_key(rest: str) -> str | None:
    """``network.<i>.<part>`` of the reference TCN -> ours (None = drop the duplicate key)."""
    m = re.fullmatch(r"network\.(\d+)\.(.+)", rest)
    if not m:
        raise KeyError(f"unrecognised reference TCN key {rest!r}")
    i, part = m.groups()
    if part.startswith("net."):  # the same convs again via the block's nn.Sequential
        return None
    part = (part.replace("weight_g", "parametrizations.weight.original0")
                .replace("weight_v", "parametrizations.weight.original1"))
    return f"network.{i}.{part}"


def map_reference_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a reference ``my_2d1ddy`` / ``my_2d1d`` / ``my_res50`` state dict onto AffectModel.

    The mapping (reference -> ours):

    * ``spatial.*`` (or ``backbone.*`` of ``my_res50``) -> ``encoder.*`` (same IR layout:
      ``input_layer``, ``body.<u>.res_layer``/``shortcut_layer``, ``output_layer``);
      ``logits.*`` (the FER+ classifier) is dropped;
    * ``temporal.network.<i>.*`` -> ``temporal.visual.network.<i>.*``; ``temporal1`` (VGGish /
      first audio stream) -> ``temporal.audio.0``, ``temporal2`` (MFCC) -> ``temporal.audio.1``;
      in a block ``conv{1,2}.weight_g`` -> ``conv{1,2}.parametrizations.weight.original0`` and
      ``weight_v`` -> ``original1``; ``downsample.*`` unchanged; the duplicate ``net.<j>.*``
      entries (the same convs registered again in ``TemporalBlock.net``) are dropped;
    * ``encoder{1,2,3}`` -> ``temporal.fusion.key.{0,1,2}``, ``encoderQ{1,2,3}`` ->
      ``temporal.fusion.query.{0,1,2}``, ``encoderV{1,2,3}`` -> ``temporal.fusion.value.{0,1,2}``;
      ``ln`` -> ``temporal.fusion.norm``; ``regressor`` -> ``temporal.fusion.regressor`` (with
      fusion) or ``temporal.head`` (visual-only ``my_2d1d``); the unused ``gn1``/``gn2`` are dropped.

    The result loads with ``strict=True`` into ``AffectModel(ModelConfig(encoder="ir50",
    audio_streams=(("vggish", 128), ("mfcc", 39)), outputs=("valence",)))`` (or ``fusion=False``
    for ``my_2d1d``).
    """
    fused = any(k.startswith("encoder1.") for k in sd)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        head, _, rest = key.partition(".")
        new: str | None
        if head in ("spatial", "backbone"):
            new = f"encoder.{rest}"
        elif head == "logits" or head in ("gn1", "gn2"):
            new = None
        elif head == "temporal":
            sub = _map_tcn_key(rest)
            new = None if sub is None else f"temporal.visual.{sub}"
        elif re.fullmatch(r"temporal\d+", head):
            sub = _map_tcn_key(rest)
            idx = int(head[len("temporal"):]) - 1
            new = None if sub is None else f"temporal.audio.{idx}.{sub}"
        elif m := re.fullmatch(r"(encoder|encoderQ|encoderV)(\d+)", head):
            new = f"temporal.fusion.{_REF_FUSION[m.group(1)]}.{int(m.group(2)) - 1}.{rest}"
        elif head == "ln":
            new = f"temporal.fusion.norm.{rest}"
        elif head == "regressor":
            new = f"temporal.fusion.regressor.{rest}" if fused else f"temporal.head.{rest}"
        else:
            raise KeyError(f"unrecognised reference key {key!r}")
        if new is not None:
            out[new] = value
    return out
