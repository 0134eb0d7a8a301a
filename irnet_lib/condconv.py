"""Conditional convolution (CondConv, Yang et al. 2019), the heart of block [C].

Figure 4 of the paper: M expert kernels W_1..W_M are mixed into one kernel per example,

    W(x) = sum_m r_m(x) * W_m,        r(x) = sigmoid(Linear(GAP(x))),

and that kernel is applied as an ordinary convolution. Mixing the *kernels* (not the outputs)
is what makes CondConv cheap: M times the parameters, but the convolution itself is done once.

Figure 4 draws two kernel shapes, and both occur in block [C]:
- fully grouped (depthwise, ``groups == channels``): a "3D" weight tensor per expert;
- not grouped (the 1x1 convs): a "4D" weight tensor per expert.

:func:`condconv2d` computes it for a whole batch at once, without a Python loop: the B mixed
kernels become the groups of one grouped convolution over the batch folded into the channel axis.
:func:`condconv2d_reference` is the definition, one example at a time, that the tests hold it to.
:func:`use_formulation` is the one place where a faster formulation of :func:`condconv2d` may be
plugged in (``irnet_lib.fast`` plugs its own); nothing here depends on one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_int
from .pooling import global_avg_pool

__all__ = ["Routing", "CondConv2d", "condconv2d", "condconv2d_reference", "use_formulation", "formulation"]


class Routing(nn.Module):
    """r(x) = sigmoid(Linear(GAP(x))): one weight per expert and example, each in (0, 1).

    Sigmoid rather than softmax, as in the CondConv paper and Figure 4: experts are not forced
    to compete, several can be fully on at once.
    """

    def __init__(self, in_channels: int, num_experts: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(global_avg_pool(x)))


def condconv2d(x, weight, routing_weights, stride=1, padding=0, groups=1):
    """CondConv for a batch: ``x`` (B, C_in, H, W), ``weight`` (M, C_out, C_in/groups, F, F),
    ``routing_weights`` (B, M).

    1. Mix: one kernel per example, ``(B, M) @ (M, C_out * C_in/groups * F * F)``.
    2. Convolve: fold the batch into the channel axis, (1, B * C_in, H, W), and run one grouped
       convolution whose groups are (example, original group), so that every example meets only
       its own kernel. For a depthwise conv that is again a depthwise conv, with B * C channels.
    """
    B, C, H, W = x.shape
    M, c_out = weight.shape[:2]
    kernels = (routing_weights.to(weight.dtype) @ weight.reshape(M, -1)).reshape(B * c_out, *weight.shape[2:])
    y = F.conv2d(x.reshape(1, B * C, H, W), kernels, stride=stride, padding=padding, groups=B * groups)
    return y.reshape(B, c_out, *y.shape[-2:])


_formulation = None   # None: condconv2d above. Changed only through use_formulation().


def use_formulation(fn):
    """Make every :class:`CondConv2d` compute with ``fn``, a function with :func:`condconv2d`'s
    signature and result, or with :func:`condconv2d` itself for ``None``; returns the formulation it
    replaces, so that the caller can put it back. ``irnet_lib.fast`` plugs its formulations in here;
    a training run without the fast layer plugs ``None`` for its duration."""
    global _formulation
    previous, _formulation = _formulation, fn
    return previous


def formulation():
    """The function every :class:`CondConv2d` computes with now: :func:`condconv2d` or a plugged one."""
    return _formulation or condconv2d


class CondConv2d(nn.Module):
    """A bias-free Conv2d with M experts; a drop-in for ``nn.Conv2d`` inside the blocks.

    Args:
        in_channels, out_channels, kernel_size, stride, groups: as for ``nn.Conv2d``
            (padding is always ``kernel_size // 2``, "same" for odd F).
        num_experts: M, the number of expert kernels.
        own_routing: give this conv its own router ``r(x)``, computed from its input (Figure 4,
            the paper's drawing). With ``own_routing=False`` the caller passes ``routing_weights``
            to ``forward`` (the EfficientNet-CondConv form: one routing vector per block).
    """

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, groups=1, *,
                 num_experts=4, own_routing=True):
        super().__init__()
        check_int("num_experts (M)", num_experts)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.padding = kernel_size // 2
        self.num_experts = num_experts
        # Stored flat per expert, (M, C_out, C_in/groups * F * F): a 5-D parameter would make
        # ``model.to(memory_format=torch.channels_last)`` fail. ``expert_weights`` is the 5-D view.
        self.weight = nn.Parameter(
            torch.empty(num_experts, out_channels, in_channels // groups * kernel_size * kernel_size))
        self.router = Routing(in_channels, num_experts) if own_routing else None
        self.reset_parameters()

    @property
    def expert_weights(self) -> torch.Tensor:
        """The M expert kernels W_m, shape (M, C_out, C_in/groups, F, F)."""
        k = self.kernel_size
        return self.weight.view(self.num_experts, self.out_channels, -1, k, k)

    def reset_parameters(self):
        # Each expert starts as PyTorch would start an ordinary Conv2d of that shape.
        for w in self.expert_weights:
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))

    def forward(self, x, routing_weights=None):
        if routing_weights is None:
            if self.router is None:
                raise ValueError("this CondConv2d was built with own_routing=False (per-block routing): "
                                 "pass routing_weights of shape (batch, num_experts)")
            routing_weights = self.router(x)
        return formulation()(x, self.expert_weights, routing_weights, self.stride, self.padding, self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, groups={self.groups}, num_experts={self.num_experts}")


def condconv2d_reference(x, weight, routing_weights, stride=1, padding=0, groups=1):
    """The definition, one example at a time. Slow; kept as the ground truth for tests."""
    outs = []
    for b in range(x.shape[0]):
        w_b = sum(routing_weights[b, m] * weight[m] for m in range(weight.shape[0]))
        outs.append(F.conv2d(x[b : b + 1], w_b, stride=stride, padding=padding, groups=groups))
    return torch.cat(outs)
