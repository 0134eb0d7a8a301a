"""The three interchangeable building blocks of IR-NET (Figure 2).

Paper symbols, and where each one lives in this library
--------------------------------------------------------
======  =======================================  ==========================================
symbol  meaning                                  argument
======  =======================================  ==========================================
Ni      input channels of a block                ``in_channels``
Ne      expanded channels, Ne = 4 Ni             ``expansion`` (Ne = expansion * Ni)
No      output channels of a block               ``out_channels``
F       depthwise filter size (F x F)            ``kernel_size``
S       stride of the block                      ``stride`` (sits in the depthwise conv)
ID      identity (residual) connection           ``identity`` (True iff Ni == No and S == 1)
R       SE internal rank reduction, R = 4        ``se_reduction`` (hidden units Ne // R)
M       number of CondConv experts, M = 4        ``num_experts``
======  =======================================  ==========================================

One class, :class:`InvertedResidual`, implements Figure 2A. Blocks [B] and [C] are the same
class with parts passed in: a squeeze-and-excite layer, and a conditional convolution in place
of ``nn.Conv2d``. The three public constructors :func:`standard_block`, :func:`se_block` and
:func:`condconv_block` take the same leading arguments (Ni, No, and the keywords Ne/Ni, F, S, ID),
so Table 1 can be built with any of them; each takes only the knobs its block uses.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from .condconv import CondConv2d, Routing
from .pooling import global_avg_pool

__all__ = ["SqueezeExcite", "InvertedResidual", "standard_block", "se_block", "condconv_block",
           "BLOCKS", "ROUTING_MODES"]

ROUTING_MODES = ("conv", "block")


class SqueezeExcite(nn.Module):
    """Figure 3: x * sigmoid(Linear(ReLU(Linear(GAP(x))))), with Ne // R hidden units.

    Both linears carry a bias, as Figure 3 labels them "Linear, Bias".
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        check_int("se_reduction (R)", reduction)
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"se_reduction={reduction} leaves no hidden unit for {channels} channels; "
                             f"use se_reduction <= {channels}")
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        self.gate = nn.Sigmoid()

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The learned, input-dependent weight of each channel, shape (B, C), each in (0, 1)."""
        return self.gate(self.fc2(self.act(self.fc1(global_avg_pool(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_weights(x)[:, :, None, None].to(x.dtype)


class InvertedResidual(nn.Module):
    """Inverted residual block: narrow (Ni) -> wide (Ne) -> narrow (No).

    1x1 expand + BN + ReLU -> FxF depthwise (stride S) + BN + ReLU -> [SE] -> 1x1 project + BN,
    plus the input when ID. No ReLU after the projection (MobileNetV2's *linear bottleneck*: a
    ReLU in the narrow No-channel space would throw information away), none after the add.

    Args:
        in_channels: Ni.
        out_channels: No.
        expansion: Ne / Ni (4 in Table 1). Ne = round(expansion * Ni).
        kernel_size: F, odd.
        stride: S, 1 or 2; applied in the depthwise conv, so the 1x1 expansion runs at the
            input resolution.
        identity: ID. ``None`` derives it (True iff Ni == No and S == 1); ``True`` where the
            shapes do not allow it is an error. There is never a projection shortcut.
        conv_layer: factory ``(c_in, c_out, kernel_size, stride, groups) -> module`` used for all
            three convolutions (``nn.Conv2d`` for [A] and [B], ``CondConv2d`` for [C]).
        se_layer: factory ``(Ne) -> module`` inserted after the depthwise ReLU, or ``None``.
        routing_layer: factory ``(Ni) -> module`` computing one routing vector per block from the
            block input and handing it to every conv (per-block CondConv routing), or ``None``.
    """

    def __init__(self, in_channels, out_channels, *, expansion=4, kernel_size=3, stride=1,
                 identity=None, conv_layer=None, se_layer=None, routing_layer=None):
        super().__init__()
        check_int("in_channels (Ni)", in_channels)
        check_int("out_channels (No)", out_channels)
        check_kernel_size(kernel_size)
        if stride not in (1, 2) or isinstance(stride, bool):
            raise ValueError(f"stride (S) must be 1 or 2, got {stride!r}")
        mid = round(expansion * in_channels) if _finite_positive(expansion) else 0
        if mid < 1:
            raise ValueError(f"expansion must be a finite number > 0 that leaves at least one expanded channel "
                             f"(Ne = round(expansion * Ni) >= 1), got {expansion!r}")
        can_skip = in_channels == out_channels and stride == 1
        if identity is None:
            identity = can_skip
        elif identity and not can_skip:
            raise ValueError(f"identity=True needs Ni == No and S == 1, got Ni={in_channels}, "
                             f"No={out_channels}, S={stride}")
        conv_layer = conv_layer or _plain_conv
        self.in_channels, self.out_channels, self.mid_channels = in_channels, out_channels, mid
        self.stride, self.has_skip = stride, bool(identity)

        self.routing = routing_layer(in_channels) if routing_layer else None
        self.conv_pw = conv_layer(in_channels, mid, 1, 1, 1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_dw = conv_layer(mid, mid, kernel_size, stride, mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = nn.ReLU(inplace=True)
        self.se = se_layer(mid) if se_layer else nn.Identity()
        self.conv_pwl = conv_layer(mid, out_channels, 1, 1, 1)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = () if self.routing is None else (self.routing(x),)   # per-block routing: one r for all three
        y = self.act1(self.bn1(self.conv_pw(x, *r)))
        y = self.act2(self.bn2(self.conv_dw(y, *r)))
        y = self.bn3(self.conv_pwl(self.se(y), *r))
        return x + y if self.has_skip else y


def _plain_conv(c_in, c_out, kernel_size, stride, groups):
    return nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)


def _finite_positive(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def check_int(name: str, value, minimum: int = 1) -> None:
    """The library's integer check: an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_kernel_size(kernel_size) -> None:
    check_int("kernel_size (F)", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size (F) must be odd, such as 3 or 5 (padding F // 2 keeps the size), "
                         f"got {kernel_size!r}")


def standard_block(in_channels, out_channels, *, expansion=4, kernel_size=3, stride=1, identity=None):
    """[A] Standard block (Figure 2A).

    Ni = ``in_channels``, No = ``out_channels``, Ne = ``expansion`` x Ni, F = ``kernel_size``,
    S = ``stride``, ID = ``identity``."""
    return InvertedResidual(in_channels, out_channels, expansion=expansion, kernel_size=kernel_size,
                            stride=stride, identity=identity)


def se_block(in_channels, out_channels, *, expansion=4, kernel_size=3, stride=1, identity=None, se_reduction=4):
    """[B] SE-enhanced block (Figures 2B, 3): block [A] with squeeze-and-excite on the Ne channels.

    Ni = ``in_channels``, No = ``out_channels``, Ne = ``expansion`` x Ni, F = ``kernel_size``,
    S = ``stride``, ID = ``identity``, R = ``se_reduction`` (Ne // R hidden units)."""
    return InvertedResidual(in_channels, out_channels, expansion=expansion, kernel_size=kernel_size,
                            stride=stride, identity=identity,
                            se_layer=partial(SqueezeExcite, reduction=se_reduction))


def condconv_block(in_channels, out_channels, *, expansion=4, kernel_size=3, stride=1, identity=None,
                   se_reduction=4, num_experts=4, routing="conv"):
    """[C] SE + CondConv block (Figures 2C, 4): block [B] whose three convs are conditional.

    Ni = ``in_channels``, No = ``out_channels``, Ne = ``expansion`` x Ni, F = ``kernel_size``,
    S = ``stride``, ID = ``identity``, R = ``se_reduction``, M = ``num_experts``.

    ``routing="conv"`` (default, as Figure 4 draws it): every conditional conv routes on its own
    input. ``routing="block"`` (EfficientNet-CondConv): one routing vector from the block input,
    shared by the three convs.
    """
    if routing not in ROUTING_MODES:
        raise ValueError(f"routing must be one of {ROUTING_MODES}, got {routing!r}")
    per_conv = routing == "conv"
    cond_conv = partial(_cond_conv, num_experts=num_experts, routing=per_conv)
    return InvertedResidual(in_channels, out_channels, expansion=expansion, kernel_size=kernel_size,
                            stride=stride, identity=identity, conv_layer=cond_conv,
                            se_layer=partial(SqueezeExcite, reduction=se_reduction),
                            routing_layer=None if per_conv else partial(Routing, num_experts=num_experts))


def _cond_conv(c_in, c_out, kernel_size, stride, groups, *, num_experts, routing):
    return CondConv2d(c_in, c_out, kernel_size, stride, groups, num_experts=num_experts, routing=routing)


BLOCKS = {"standard": standard_block, "se": se_block, "condconv": condconv_block}
