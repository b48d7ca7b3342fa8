"""Per-frame face encoders: ``[N, 3, 40, 40] -> [N, 512]`` L2-normalised embeddings.

* ``ir50``  — the paper's ResNet-50 "IR" backbone (ArcFace style) with a stride-1 first stage,
  so a 40x40 crop ends as 5x5x512 (PAPER.md §2.1); ~6.05 GFLOPs per frame (PAPER.md §9).
* ``ir18``  — the same design with (2, 2, 2, 2) units per stage.
* ``mobile`` — a MobileFaceNet-style net (inverted residuals with depthwise 3x3 convs, PReLU,
  a global depthwise conv head) sized for 40x40 crops; well under 1/10 of IR-50's FLOPs.

Every encoder registers its parameters in the order ``input_layer``, ``output_layer``, ``body``
(PAPER.md §2.2 releases groups by index into ``parameters()`` in this order) and exposes
``release_groups()``: the groups to unfreeze, in the paper's order (output layer first, then
the last stage, then the last units before it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from affedge.config import ModelConfig


def _check_input(x: torch.Tensor, crop: int, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != crop or x.shape[3] != crop:
        raise ValueError(f"{name} expects frames [N, 3, {crop}, {crop}], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} expects a floating-point tensor, got {x.dtype}")


# --------------------------------------------------------------------------------------------
# IR-50 / IR-18 (PAPER.md §2.1)
# --------------------------------------------------------------------------------------------
class IRUnit(nn.Module):
    """bottleneck_IR: BN -> conv3x3 -> PReLU -> conv3x3(stride) -> BN, plus shortcut; no act."""

    def __init__(self, in_ch: int, depth: int, stride: int):
        super().__init__()
        if in_ch == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)  # identity or subsampling
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_ch, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


IR_UNITS = {50: (3, 4, 14, 3), 18: (2, 2, 2, 2)}  # PAPER.md §2.1 for 50
IR_DEPTHS = (64, 128, 256, 512)
IR_STRIDES = (1, 2, 2, 2)  # stride-1 first stage: 40 -> 40 -> 20 -> 10 -> 5


class IREncoder(nn.Module):
    """ResNet-IR backbone with the 5x5 output layer and L2-normalised output (PAPER.md §2.1)."""

    def __init__(self, num_layers: int = 50, embed_dim: int = 512, drop_ratio: float = 0.4,
                 crop_size: int = 40):
        super().__init__()
        if num_layers not in IR_UNITS:
            raise ValueError(f"IREncoder: num_layers must be one of {sorted(IR_UNITS)}")
        if crop_size % 8:
            raise ValueError(f"IREncoder: crop_size must be a multiple of 8, got {crop_size}")
        self.crop_size = crop_size
        self.units_per_stage = IR_UNITS[num_layers]
        side = crop_size // 8
        # registration order input_layer, output_layer, body (PAPER.md §2.2 indexes into it)
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(drop_ratio), nn.Flatten(),
            nn.Linear(512 * side * side, embed_dim), nn.BatchNorm1d(embed_dim))
        units = []
        in_ch = 64
        for depth, n, stride in zip(IR_DEPTHS, self.units_per_stage, IR_STRIDES):
            for j in range(n):
                units.append(IRUnit(in_ch, depth, stride if j == 0 else 1))
                in_ch = depth
        self.body = nn.Sequential(*units)

    def stage_units(self, stage: int) -> list[IRUnit]:
        start = sum(self.units_per_stage[:stage])
        return list(self.body[start:start + self.units_per_stage[stage]])

    def release_groups(self) -> list[list[nn.Parameter]]:
        """PAPER.md §2.2: output layer; all of stage 4; the last 3 units of stage 3."""
        return [
            list(self.output_layer.parameters()),
            [p for u in self.stage_units(3) for p in u.parameters()],
            [p for u in self.stage_units(2)[-3:] for p in u.parameters()],
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.crop_size, type(self).__name__)
        x = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(x, p=2.0, dim=1)


# --------------------------------------------------------------------------------------------
# Mobile (MobileFaceNet / MobileNetV2 style)
# --------------------------------------------------------------------------------------------
def conv_bn(in_ch: int, out_ch: int, k: int, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    """Conv2d(no bias) -> BN -> PReLU (or no activation: a linear bottleneck)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch)]
    if act:
        layers.append(nn.PReLU(out_ch))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise 3x3 (stride) -> 1x1 linear project; residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int):
        super().__init__()
        hidden = in_ch * expand
        layers = [] if expand == 1 else [conv_bn(in_ch, hidden, 1)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   conv_bn(hidden, out_ch, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_res else y


# (expansion, out channels, units, stride of first unit); 40 -> 20 -> 10 -> 5
MOBILE_STAGES = ((2, 32, 2, 2), (2, 64, 3, 2), (2, 96, 2, 1), (2, 128, 2, 2))


class MobileEncoder(nn.Module):
    """Light 40x40 face encoder; same interface and release-group convention as IREncoder."""

    def __init__(self, embed_dim: int = 512, drop_ratio: float = 0.4, crop_size: int = 40,
                 stages=MOBILE_STAGES, stem: int = 24, head: int = 256):
        super().__init__()
        if crop_size % 8:
            raise ValueError(f"MobileEncoder: crop_size must be a multiple of 8, got {crop_size}")
        self.crop_size = crop_size
        side = crop_size // 8
        self.input_layer = nn.Sequential(
            conv_bn(3, stem, 3, 1), conv_bn(stem, stem, 3, 1, groups=stem))
        last = stages[-1][1]
        # global depthwise conv (GDC) head as in MobileFaceNet, then the embedding
        self.output_layer = nn.Sequential(
            conv_bn(last, head, 1),
            nn.Conv2d(head, head, side, 1, 0, groups=head, bias=False), nn.BatchNorm2d(head),
            nn.Dropout(drop_ratio), nn.Flatten(),
            nn.Linear(head, embed_dim), nn.BatchNorm1d(embed_dim))
        body = []
        in_ch = stem
        for expand, out_ch, n, stride in stages:
            units = []
            for j in range(n):
                units.append(InvertedResidual(in_ch, out_ch, stride if j == 0 else 1, expand))
                in_ch = out_ch
            body.append(nn.Sequential(*units))
        self.body = nn.Sequential(*body)
        # trained from scratch (no pretrained weights exist): He (fan-in) init keeps activations
        # O(1) through the depthwise layers even before BN statistics are learnt
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in")

    def release_groups(self) -> list[list[nn.Parameter]]:
        """Head first, then the last stage, then the stage before it (cf. PAPER.md §2.2)."""
        return [list(self.output_layer.parameters()), list(self.body[-1].parameters()),
                list(self.body[-2].parameters())]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.crop_size, type(self).__name__)
        x = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(x, p=2.0, dim=1)


ENCODERS = ("ir50", "ir18", "mobile")


def build_encoder(name: str, cfg: ModelConfig | None = None) -> nn.Module:
    """Encoder by name (``ir50``, ``ir18``, ``mobile``), sized by ``cfg`` (embed_dim, crop)."""
    cfg = cfg or ModelConfig()
    if name == "ir50":
        return IREncoder(50, cfg.embed_dim, cfg.encoder_dropout, cfg.crop_size)
    if name == "ir18":
        return IREncoder(18, cfg.embed_dim, cfg.encoder_dropout, cfg.crop_size)
    if name == "mobile":
        return MobileEncoder(cfg.embed_dim, cfg.encoder_dropout, cfg.crop_size)
    raise ValueError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")


def count_flops(encoder: nn.Module, crop_size: int = 40) -> int:
    """FLOPs (2 x multiply-adds of convs/linears) for one frame, via torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            encoder(torch.zeros(1, 3, crop_size, crop_size))
    finally:
        encoder.train(was_training)
    return int(counter.get_total_flops())
