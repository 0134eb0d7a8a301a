"""Conditional convolution (CondConv, Yang et al. 2019), the heart of block [C].

Figure 4 of the paper: M expert kernels W_1..W_M are mixed into one kernel per example,

    W(x) = sum_m r_m(x) * W_m,        r(x) = sigmoid(Linear(GAP(x))),

and that kernel is applied as an ordinary convolution. Mixing the *kernels* (not the outputs)
is what makes CondConv cheap: M times the parameters, but the convolution itself is done once.

Two kernel shapes matter here, both drawn in Figure 4:
- fully grouped (depthwise, ``groups == channels``): a "3D" weight tensor per expert;
- not grouped (the 1x1 convs): a "4D" weight tensor per expert.

The fast path never loops over the batch in Python: 1x1 kernels become one batched matmul,
every other kernel one grouped convolution over the whole batch (groups multiplied by B).
``condconv2d_reference`` is the plain per-example loop the tests compare against.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Routing", "CondConv2d", "condconv2d", "condconv2d_reference"]


class Routing(nn.Module):
    """r(x) = sigmoid(Linear(GAP(x))): one weight per expert and example, each in (0, 1).

    Sigmoid rather than softmax, as in the CondConv paper and Figure 4: experts are not forced
    to compete, several can be fully on at once.
    """

    def __init__(self, in_channels: int, num_experts: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(x.mean((2, 3))))


def _mix(routing_weights: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, M) x (M, *kernel) -> (B, *kernel): one kernel per example."""
    return (routing_weights @ weight.flatten(1)).view(-1, *weight.shape[1:])


def condconv2d(x, weight, routing_weights, stride=1, padding=0, groups=1):
    """Functional CondConv: ``weight`` is (M, C_out, C_in/groups, F, F), ``routing_weights`` (B, M)."""
    B, C, H, W = x.shape
    c_out, _, kh, kw = weight.shape[1:]
    w = _mix(routing_weights.to(weight.dtype), weight)  # (B, C_out, C_in/groups, F, F)

    if kh == kw == 1 and groups == 1 and padding == 0:
        # A 1x1 conv is a matmul over channels: y_b = W_b @ x_b, batched over b. Done in the
        # input's own memory format, so channels_last activations stay copy-free.
        if stride != 1:
            x = x[:, :, ::stride, ::stride]
        H, W = x.shape[-2:]
        w = w.view(B, c_out, C).to(x.dtype)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            y = torch.bmm(x.permute(0, 2, 3, 1).reshape(B, H * W, C), w.transpose(1, 2))
            return y.view(B, H, W, c_out).permute(0, 3, 1, 2)
        return torch.bmm(w, x.reshape(B, C, H * W)).view(B, c_out, H, W)

    # Any other kernel: fold the batch into the channel axis and run one grouped convolution
    # whose groups are (example, original group). For a depthwise conv this is again a
    # depthwise conv, with B*C channels, so it costs what the ordinary one costs.
    y = F.conv2d(
        x.reshape(1, B * C, H, W),
        w.reshape(B * c_out, *w.shape[2:]).to(x.dtype),
        stride=stride,
        padding=padding,
        groups=B * groups,
    )
    return y.view(B, c_out, *y.shape[-2:])


def condconv2d_reference(x, weight, routing_weights, stride=1, padding=0, groups=1):
    """The definition, one example at a time. Slow; kept only as the ground truth for tests."""
    outs = []
    for b in range(x.shape[0]):
        w_b = sum(routing_weights[b, m] * weight[m] for m in range(weight.shape[0]))
        outs.append(F.conv2d(x[b : b + 1], w_b, stride=stride, padding=padding, groups=groups))
    return torch.cat(outs)


class CondConv2d(nn.Module):
    """A bias-free Conv2d with M experts; a drop-in for ``nn.Conv2d`` inside the blocks.

    Args:
        in_channels, out_channels, kernel_size, stride, groups: as for ``nn.Conv2d``
            (padding is always ``kernel_size // 2``, "same" for odd F).
        num_experts: M, the number of expert kernels.
        routing: build an own routing function ``r(x)`` from this conv's input (Figure 4,
            the paper's drawing). With ``routing=False`` the caller passes ``routing_weights``
            to ``forward`` (the EfficientNet-CondConv form: one routing vector per block).
    """

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, groups=1, *,
                 num_experts=4, routing=True):
        super().__init__()
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
        self.routing = Routing(in_channels, num_experts) if routing else None
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
            if self.routing is None:
                raise ValueError("this CondConv2d was built with routing=False (per-block routing): "
                                 "pass routing_weights of shape (batch, num_experts)")
            routing_weights = self.routing(x)
        return condconv2d(x, self.expert_weights, routing_weights, self.stride, self.padding, self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, groups={self.groups}, num_experts={self.num_experts}")
