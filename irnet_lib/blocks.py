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
ID      identity (residual) connection           ``has_skip`` (True iff Ni == No and S == 1)
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

from functools import partial

import torch
from torch import nn

from .checks import check_choice, check_int, check_kernel_size, check_number
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
        has_skip: ID. ``None`` derives it (True iff Ni == No and S == 1); ``True`` where the
            shapes do not allow it is an error. There is never a projection shortcut.
        conv_layer: factory ``(c_in, c_out, kernel_size, stride, groups) -> module`` used for all
            three convolutions (``nn.Conv2d`` for [A] and [B], ``CondConv2d`` for [C]).
        se_layer: factory ``(Ne) -> module`` inserted after the depthwise ReLU, or ``None``.
        router_layer: factory ``(Ni) -> module`` computing one routing vector per block from the
            block input and handing it to every conv (per-block CondConv routing), or ``None``.
    """

    def __init__(self, in_channels, out_channels, *, expansion=4, kernel_size=3, stride=1,
                 has_skip=None, conv_layer=None, se_layer=None, router_layer=None):
        super().__init__()
        check_int("in_channels (Ni)", in_channels)
        check_int("out_channels (No)", out_channels)
        check_kernel_size(kernel_size)
        check_choice("stride (S)", stride, (1, 2))
        check_number("expansion", expansion)
        mid = round(expansion * in_channels)
        check_int("Ne = round(expansion * Ni)", mid, why=" (a smaller expansion leaves no expanded channel)")
        can_skip = in_channels == out_channels and stride == 1
        if has_skip is None:
            has_skip = can_skip
        elif has_skip and not can_skip:
            raise ValueError(f"has_skip=True needs Ni == No and S == 1, got Ni={in_channels}, "
                             f"No={out_channels}, S={stride}")
        conv_layer = conv_layer or _plain_conv
        self.in_channels, self.out_channels, self.mid_channels = in_channels, out_channels, mid
        self.stride, self.has_skip = stride, bool(has_skip)

        self.router = router_layer(in_channels) if router_layer else None
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
        shortcut = x
        r = () if self.router is None else (self.router(x),)   # per-block routing: one r for all three
        x = self.act1(self.bn1(self.conv_pw(x, *r)))
        x = self.act2(self.bn2(self.conv_dw(x, *r)))
        x = self.bn3(self.conv_pwl(self.se(x), *r))
        if self.has_skip:
            x = x + shortcut
        return x


def _plain_conv(c_in, c_out, kernel_size, stride, groups):
    return nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)


def standard_block(in_channels, out_channels, *, expansion=4, kernel_size=3, stride=1, has_skip=None):
    """[A] Standard block (Figure 2A).

    Ni = ``in_channels``, No = ``out_channels``, Ne = ``expansion`` x Ni, F = ``kernel_size``,
    S = ``stride``, ID = ``has_skip``."""
    return InvertedResidual(in_channels, out_channels, expansion=expansion, kernel_size=kernel_size,
                            stride=stride, has_skip=has_skip)


def se_block(in_channels, out_channels, *, expansion=4, kernel_size=3, stride=1, has_skip=None, se_reduction=4):
    """[B] SE-enhanced block (Figures 2B, 3): block [A] with squeeze-and-excite on the Ne channels.

    Ni = ``in_channels``, No = ``out_channels``, Ne = ``expansion`` x Ni, F = ``kernel_size``,
    S = ``stride``, ID = ``has_skip``, R = ``se_reduction`` (Ne // R hidden units)."""
    return InvertedResidual(in_channels, out_channels, expansion=expansion, kernel_size=kernel_size,
                            stride=stride, has_skip=has_skip,
                            se_layer=partial(SqueezeExcite, reduction=se_reduction))


def condconv_block(in_channels, out_channels, *, expansion=4, kernel_size=3, stride=1, has_skip=None,
                   se_reduction=4, num_experts=4, routing="conv"):
    """[C] SE + CondConv block (Figures 2C, 4): block [B] whose three convs are conditional.

    Ni = ``in_channels``, No = ``out_channels``, Ne = ``expansion`` x Ni, F = ``kernel_size``,
    S = ``stride``, ID = ``has_skip``, R = ``se_reduction``, M = ``num_experts``.

    ``routing="conv"`` (default, as Figure 4 draws it): every conditional conv routes on its own
    input. ``routing="block"`` (EfficientNet-CondConv): one routing vector from the block input,
    shared by the three convs.
    """
    check_choice("routing", routing, ROUTING_MODES)
    per_conv = routing == "conv"
    cond_conv = partial(_cond_conv, num_experts=num_experts, own_routing=per_conv)
    return InvertedResidual(in_channels, out_channels, expansion=expansion, kernel_size=kernel_size,
                            stride=stride, has_skip=has_skip, conv_layer=cond_conv,
                            se_layer=partial(SqueezeExcite, reduction=se_reduction),
                            router_layer=None if per_conv else partial(Routing, num_experts=num_experts))


def _cond_conv(c_in, c_out, kernel_size, stride, groups, *, num_experts, own_routing):
    return CondConv2d(c_in, c_out, kernel_size, stride, groups, num_experts=num_experts, own_routing=own_routing)


BLOCKS = {"standard": standard_block, "se": se_block, "condconv": condconv_block}
