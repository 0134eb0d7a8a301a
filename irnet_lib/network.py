"""The IR-NET network, built from Table 1 of the paper written down as data.

Table 1 lists, row by row, how often an operation repeats, the shape of the feature map that
*enters* it (Ni x H x W), and the operation. The output channels No of a row are the input
channels of the next one, exactly as the paper leaves them to be read.
"""
from __future__ import annotations

import inspect
import math
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from .blocks import BLOCKS
from .checks import check_int, check_kernel_size, check_number

__all__ = ["Row", "TABLE_1", "IRNet", "irnet", "make_divisible", "table1_rows"]


class Row(NamedTuple):
    """One line of Table 1. ``op`` is "stem", "block", "head" or "classifier"."""
    repeat: int
    input: tuple[int, int, int]     # Ni x H x W entering the row (H x W for the paper's 56x56 input)
    op: str
    F: int = 1                      # filter size
    S: int = 1                      # stride
    ID: bool = False                # identity connection (blocks only)


TABLE_1 = (
    #   Rep  Input Ni x H x W   Operation
    Row(1, (3, 56, 56),    "stem", F=3, S=1),               # Conv (3x3/1), Batch Norm, ReLU
    Row(1, (16, 56, 56),   "block", F=3, S=1, ID=True),     # Block (Ne=4Ni, F=3, S=1, ID=True)
    Row(1, (16, 56, 56),   "block", F=3, S=1, ID=False),
    Row(1, (24, 56, 56),   "block", F=3, S=1, ID=True),
    Row(1, (24, 56, 56),   "block", F=3, S=2, ID=False),
    Row(2, (40, 28, 28),   "block", F=3, S=1, ID=True),
    Row(1, (40, 28, 28),   "block", F=3, S=2, ID=False),
    Row(3, (80, 14, 14),   "block", F=3, S=1, ID=True),
    Row(1, (80, 14, 14),   "block", F=3, S=2, ID=False),
    Row(4, (160, 7, 7),    "block", F=3, S=1, ID=True),
    Row(1, (160, 7, 7),    "block", F=3, S=1, ID=False),
    Row(1, (320, 7, 7),    "head", F=1, S=1),               # Conv (1x1/1), Batch Norm, ReLU
    Row(1, (1280, 7, 7),   "classifier"),                   # Global Avg Pool, Linear, Bias
)
EXPANSION = 4        # Ne = 4 Ni in every block row
SE_REDUCTION = 4     # R, section 3
NUM_EXPERTS = 4      # M, section 3


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` (never down by more than 10 %),
    the MobileNet convention, so that width multipliers give hardware-friendly widths.
    Every channel count of the unscaled network is already a multiple of 8."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def table1_rows(width_mult=1.0, depth_mult=1.0, kernel_size=3):
    """Table 1 after the design-space knobs: channels scaled by ``width_mult`` (rounded to a
    multiple of 8), repeats by ``depth_mult`` (rounded up), F replaced by ``kernel_size``.
    With the defaults this is ``TABLE_1`` itself."""
    rows = []
    for row in TABLE_1:
        c, h, w = row.input
        c = c if row.op == "stem" else make_divisible(c * width_mult)
        repeat = math.ceil(row.repeat * depth_mult) if row.op == "block" else row.repeat
        rows.append(row._replace(repeat=repeat, input=(c, h, w),
                                 F=kernel_size if row.op == "block" else row.F))
    return rows


class IRNet(nn.Module):
    """IR-NET: stem, the Table 1 block rows, head, pooling and classifier.

    ``self.rows`` is an ``nn.Sequential`` with one entry per Table 1 block row (each itself an
    ``nn.Sequential`` of ``repeat`` blocks), so the feature map entering row ``i`` can be hooked.
    """

    def __init__(self, block_fn, num_classes=100, rows=TABLE_1):
        super().__init__()
        stem, blocks, head = rows[0], rows[1:-2], rows[-2]   # the last row, the classifier, is built below
        out_of = [r.input[0] for r in rows[1:]]   # No of each row = Ni of the next
        c_stem, c_head = out_of[0], out_of[-1]
        self.stem = nn.Sequential(
            # Stride 1, not ImageNet's usual 2: the 56x56 images are already downsampled 4x.
            nn.Conv2d(stem.input[0], c_stem, stem.F, stem.S, stem.F // 2, bias=False),
            nn.BatchNorm2d(c_stem), nn.ReLU(inplace=True))
        self.rows = nn.Sequential()
        for row, c_out in zip(blocks, out_of[1:]):
            c_in = row.input[0]
            repeats = []
            for i in range(row.repeat):
                # Only the first repeat changes width or resolution (matters once depth_mult
                # repeats a transition row); the others are ID blocks by the rule.
                first = i == 0
                repeats.append(block_fn(c_in if first else c_out, c_out, kernel_size=row.F,
                                        stride=row.S if first else 1, has_skip=row.ID if first else True))
            self.rows.append(nn.Sequential(*repeats))
        self.head = nn.Sequential(
            nn.Conv2d(head.input[0], c_head, 1, bias=False), nn.BatchNorm2d(c_head), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_head, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rows(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.stem[0].in_channels:
            raise ValueError(f"IR-NET takes (batch, {self.stem[0].in_channels}, H, W) images, got a tensor of shape "
                             f"{tuple(x.shape)}; a grayscale batch becomes RGB with x.expand(-1, 3, -1, -1)")
        return self.classifier(self.pool(self.features(x)).flatten(1))


def irnet(block: str = "standard", num_classes: int = 100, *, width_mult: float = 1.0,
          depth_mult: float = 1.0, expansion: float = EXPANSION, kernel_size: int = 3,
          se_reduction: int = SE_REDUCTION, num_experts: int = NUM_EXPERTS, routing: str = "conv") -> IRNet:
    """Build IR-NET with one of the three blocks of Figure 2.

    Args:
        block: "standard" [A], "se" [B] or "condconv" [C].
        num_classes: size of the final linear layer (100 in the paper).
        width_mult, depth_mult: scale every row's channels / repeats (the paper's "width & depth").
        expansion: Ne / Ni ("residual expansion factor", 4 in the paper).
        kernel_size: F of the depthwise convs ("filter sizes", 3 in the paper).
        se_reduction: R, for "se" and "condconv" (4 in the paper).
        num_experts: M, for "condconv" (4 in the paper).
        routing: for "condconv": "conv" (one routing function per conditional conv, as Figure 4
            draws it) or "block" (one per block, shared by its three convs, as EfficientNet-CondConv).

    A knob of another block (``num_experts`` for "se", say) must keep its default: a changed value
    that would have no effect is an error, not silently dropped.
    """
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
    check_int("num_classes", num_classes)
    check_number("width_mult", width_mult)
    check_number("depth_mult", depth_mult)
    check_kernel_size(kernel_size)   # before Table 1 is rewritten with it
    knobs = {"se_reduction": se_reduction, "num_experts": num_experts, "routing": routing}
    takes = inspect.signature(BLOCKS[block]).parameters
    for name, value in knobs.items():
        if name not in takes and value != _knob_default(name):
            users = [b for b, fn in BLOCKS.items() if name in inspect.signature(fn).parameters]
            raise ValueError(f"{name}={value!r} has no effect on the {block!r} block; it applies to "
                             f"{' and '.join(repr(u) for u in users)} (leave it at its default otherwise)")
    block_fn = partial(BLOCKS[block], expansion=expansion, **{k: v for k, v in knobs.items() if k in takes})
    return IRNet(block_fn, num_classes, table1_rows(width_mult, depth_mult, kernel_size))


def _knob_default(name: str):
    """The default of a block knob (``se_reduction``, ``num_experts``, ``routing``) in :func:`irnet`."""
    return inspect.signature(irnet).parameters[name].default
