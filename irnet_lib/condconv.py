"""Conditional convolution (CondConv, Yang et al. 2019), the heart of block [C].

Figure 4 of the paper: M expert kernels W_1..W_M are mixed into one kernel per example,

    W(x) = sum_m r_m(x) * W_m,        r(x) = sigmoid(Linear(GAP(x))),

and that kernel is applied as an ordinary convolution. Mixing the *kernels* (not the outputs)
is what makes CondConv cheap: M times the parameters, but the convolution itself is done once.

Two kernel shapes matter here, both drawn in Figure 4:
- fully grouped (depthwise, ``groups == channels``): a "3D" weight tensor per expert;
- not grouped (the 1x1 convs): a "4D" weight tensor per expert.

The fast path never loops over the batch in Python. Two formulations, chosen per layer by a
multiply-add count (:func:`choose_method`):
- "mix": one kernel per example. 1x1 kernels are mixed and applied by batched matmuls inside one
  autograd function (on a CPU in oneDNN where that is exact: :func:`cpu_matmul_library`); a
  depthwise kernel on a channels_last CPU tensor is applied by a small compiled kernel that
  convolves each example with its own kernel in place (:mod:`irnet_lib.depthwise_cpu`); every
  other kernel becomes one grouped convolution over the whole batch (groups multiplied by B),
  the batch folded into the channel axis;
- "wide": the input is scaled by each r_m and stacked M times along channels, then one ordinary
  conv with all M experts side by side: no per-example kernel, but M times the conv's work. It
  pays only on feature maps of a few pixels, smaller than any in IR-NET.
``condconv2d_reference`` is the plain per-example loop the tests compare against.
"""
from __future__ import annotations

import functools
import math
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from . import depthwise_cpu
from .pooling import global_avg_pool

__all__ = ["Routing", "CondConv2d", "condconv2d", "condconv2d_reference", "choose_method", "METHODS",
           "cpu_matmul", "cpu_matmul_library"]


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


def _mix(routing_weights: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, M) x (M, *kernel) -> (B, *kernel): one kernel per example."""
    return (routing_weights @ weight.flatten(1)).view(-1, *weight.shape[1:])


METHODS = ("auto", "mix", "wide")

# How many GEMM multiply-adds one multiply-add of kernel mixing costs. Mixing is a skinny (B x M)
# by (M x kernel) product: memory-bound; it writes B kernels, the batched per-example conv reads
# them back, and the backward pass writes and reads B kernel gradients again; a batched matmul of
# small per-example matrices is also less efficient than one big GEMM. Measured on a 2-core
# AVX-512 CPU (fwd+bwd, batch 64, 1x1 convs of IR-NET's widths): mixing 2x faster than wide at
# 7x7, wide 2.6x faster at 3x3, break-even near 5x5; (M - 1) * 23 / M ~ 17.
_MIX_COST_FACTOR = 16.0


def choose_method(batch: int, num_experts: int, out_hw: int) -> str:
    """The cheaper of the two formulations for one conditional conv, by counting multiply-adds.

    - "mix": per-example kernels; the extra work over an ordinary conv is the mixing itself,
      ``B * M * C_out * C_in/g * F * F`` (weighted by ``_MIX_COST_FACTOR``).
    - "wide": the input scaled by each r_m and stacked M times along channels, then one ordinary
      conv against all experts at once; no per-example kernel, but the conv is M times wider, so the
      extra is ``(M - 1) * B * H_out * W_out * C_out * C_in/g * F * F``.

    The kernel size and channel counts cancel: wide wins only where ``(M - 1) * H_out * W_out``
    is below ``_MIX_COST_FACTOR * M`` (with M = 4: feature maps of 4x4 or smaller). IR-NET's
    smallest maps are 7x7, so it always mixes; the wide form is there for smaller inputs.
    """
    del batch  # both extras scale with B, it cancels too
    return "wide" if (num_experts - 1) * out_hw < _MIX_COST_FACTOR * num_experts else "mix"


def _out_size(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


# Which library multiplies the per-example matrices on a CPU. PyTorch hands an fp32 matmul to
# MKL, which on AMD CPUs runs a generic code path: on IR-NET's 1x1 shapes it reached 38-42 GMAC/s
# on a 2-core AVX-512 EPYC, where oneDNN (the library behind PyTorch's CPU convolutions) reached
# 150-190 on the same products. PyTorch sends an fp32 matmul to oneDNN only when it may use reduced
# precision (``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``), and oneDNN rounds to bf16
# only where it has a bf16 matrix engine (Intel AMX); elsewhere it computes in full fp32. So that
# setting is switched on around CondConv's own matmuls only, and only where a probe shows the
# products stay fp32-exact (so another thread's matmul caught by the process-wide switch is exact
# too). On that CPU it cut the 1x1 CondConvs' time by 30 % and the CondConv network's training
# step from 1.65x to 1.35-1.5x the SE network's.


@contextmanager
def _mkldnn_fp32_precision(value: str):
    m = torch.backends.mkldnn.matmul
    old, m.fp32_precision = m.fp32_precision, value
    try:
        yield
    finally:
        m.fp32_precision = old


@functools.cache
def _onednn_fp32_is_exact() -> bool:
    """Does oneDNN, allowed reduced precision, still multiply fp32 matrices in fp32 on this CPU?"""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.backends.mkldnn, "matmul")
            and hasattr(torch.backends.mkldnn.matmul, "fp32_precision")):
        return False  # older PyTorch: no per-library switch, MKL it is
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 64, 256, generator=g), torch.randn(4, 256, 64, generator=g)
    with torch.no_grad(), _mkldnn_fp32_precision("bf16"):
        y = torch.bmm(a, b)
    exact = torch.bmm(a.double(), b.double())
    # fp32 rounding leaves ~1e-7 of the largest entry here, bf16 inputs ~1e-3.
    return ((y.double() - exact).abs().max() / exact.abs().max()).item() < 1e-5


def cpu_matmul_library() -> str:
    """The library that does CondConv's fp32 matmuls on this machine's CPU: "oneDNN", or PyTorch's
    default ("MKL" in the x86 wheels)."""
    if _onednn_fp32_is_exact():
        return "oneDNN"
    return "MKL" if torch.backends.mkl.is_available() else "default BLAS"


_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)


def cpu_matmul(t: torch.Tensor):
    """The context CondConv runs its matmuls on ``t`` in: oneDNN where that is exact, else unchanged.
    Use it as ``with cpu_matmul(x): torch.bmm(...)``."""
    if (t.device.type == "cpu" and t.dtype == torch.float32 and not _is_compiling()
            and _onednn_fp32_is_exact()):
        return _mkldnn_fp32_precision("bf16")
    return nullcontext()


def _as_matrices(x4: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A (B, C, H, W) tensor as one matrix per example, without a copy: (B, H*W, C) for
    channels_last, (B, C, H*W) for contiguous."""
    B, C, H, W = x4.shape
    return x4.permute(0, 2, 3, 1).reshape(B, H * W, C) if channels_last else x4.reshape(B, C, H * W)


class _PerExampleMatmul(torch.autograd.Function):
    """A 1x1 conv with one kernel per example, ``K_b = (r_b @ weight).view(kernel_shape)``.

    Takes and returns (B, C, H, W) tensors; inside, each example is a matrix, ``x_b @ K_b`` for
    channels_last (kernel (C, C_out)) or ``K_b @ x_b`` for contiguous (kernel (C_out, C)).
    The per-example kernels are not kept for the backward pass but mixed again there: M
    multiply-adds per kernel weight, as fast on a 2-core CPU as keeping them (12 interleaved
    training steps each way), without holding 1.42 million kernel values per example (IR-NET's
    32 conditional 1x1 layers) until the backward pass. The kernel gradient of each example is
    formed once and serves both the routing's gradient and the experts'.
    """

    @staticmethod
    def forward(ctx, x4, weight, r, kernel_shape, channels_last):
        ctx.kernel_shape, ctx.channels_last = kernel_shape, channels_last
        ctx.save_for_backward(x4, weight, r)
        # The forward pass runs inside condconv2d's ``cpu_matmul`` context; the backward sets its own.
        B, _, H, W = x4.shape
        k = (r @ weight).view(B, *kernel_shape)
        x = _as_matrices(x4, channels_last)
        if channels_last:
            return torch.bmm(x, k).view(B, H, W, -1).permute(0, 3, 1, 2)
        return torch.bmm(k, x).view(B, -1, H, W)

    @staticmethod
    def backward(ctx, grad_out):
        with cpu_matmul(grad_out):
            return _PerExampleMatmul._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        x4, weight, r = ctx.saved_tensors
        cl = ctx.channels_last
        B, C, H, W = x4.shape
        g = _as_matrices(grad_out.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format), cl)
        x = _as_matrices(x4, cl)
        k = (r @ weight).view(B, *ctx.kernel_shape)
        need_x, need_w, need_r = ctx.needs_input_grad[:3]
        grad_x4 = grad_w = grad_r = None
        if need_x:  # in the input's layout, as the forward pass returns its output
            if cl:
                grad_x4 = torch.bmm(g, k.transpose(1, 2)).view(B, H, W, C).permute(0, 3, 1, 2)
            else:
                grad_x4 = torch.bmm(k.transpose(1, 2), g).view(B, C, H, W)
        if need_w or need_r:
            # d out / d K_b, one kernel gradient per example, flattened like ``weight``'s rows
            gk = (torch.bmm(x.transpose(1, 2), g) if cl else torch.bmm(g, x.transpose(1, 2))).view(B, -1)
            grad_r = gk @ weight.t() if need_r else None
            grad_w = r.t() @ gk if need_w else None
        return grad_x4, grad_w, grad_r, None, None


def _mixed_pointwise(x, weight, r, stride):
    """1x1, not grouped: y_b = W(x_b) x_b, batched matmuls in the input's memory format."""
    C = x.shape[1]
    M, c_out = weight.shape[:2]
    channels_last = _channels_last(x)  # before striding: a strided view is neither layout
    if stride != 1:
        x = x[:, :, ::stride, ::stride]
    # Dense in its layout, so that each example is a matrix the matmuls read in place.
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    dev = x.device.type
    no_autocast = nullcontext()
    if torch.amp.is_autocast_available(dev):  # not on the "meta" device the counters use
        no_autocast = torch.autocast(dev, enabled=False)
        if torch.is_autocast_enabled(dev):
            # The Function's backward runs outside autocast, so its forward must not leave the
            # dtype to autocast: cast once to the dtype autocast would have used, compute with it off.
            dtype = torch.get_autocast_dtype(dev)
            x, weight, r = x.to(dtype), weight.to(dtype), r.to(dtype)
    with no_autocast:
        if channels_last:
            # (B, H*W, C) @ (B, C, C_out): the kernels are mixed already transposed, so that the
            # per-example kernel gradients come out in the layout of the experts' rows.
            w_t = weight.view(M, c_out, C).transpose(1, 2).reshape(M, C * c_out)
            return _PerExampleMatmul.apply(x, w_t, r, (C, c_out), True)
        return _PerExampleMatmul.apply(x, weight.view(M, c_out * C), r, (c_out, C), False)


# How a channels_last batch is folded into one image for the grouped conv, per device:
# "channels_last", (1, H, W, B*C) in memory, or "contiguous", (1, B*C, H, W). Either costs two
# layout copies; which conv kernel is faster on the folded image depends on the library.
FOLD_LAYOUT = {"cpu": "channels_last", "cuda": "channels_last"}


def _mixed_grouped(x, weight, r, stride, padding, groups):
    """Any other kernel: fold the batch into the channel axis and run one grouped convolution
    whose groups are (example, original group). For a depthwise conv this is again a depthwise
    conv, with B*C channels, so it costs what the ordinary one costs."""
    B, C, H, W = x.shape
    c_out = weight.shape[1]
    w = _mix(r, weight)
    w = w.reshape(B * c_out, *w.shape[2:])
    cl = _channels_last(x)
    if cl and FOLD_LAYOUT.get(x.device.type, "channels_last") == "channels_last":
        # Folded channels_last, (1, H, W, B*C) in memory: the depthwise kernels of the CPU
        # library are fast in that layout and slow on a one-image NCHW tensor (measured 1.5-2.5x
        # for the whole fwd+bwd including the two layout copies).
        xf = x.permute(2, 3, 0, 1).reshape(1, H, W, B * C).permute(0, 3, 1, 2)
        y = F.conv2d(xf, w, stride=stride, padding=padding, groups=B * groups)
        Ho, Wo = y.shape[-2:]
        y = y.permute(0, 2, 3, 1).reshape(Ho, Wo, B, c_out).permute(2, 3, 0, 1)
        return y.contiguous(memory_format=torch.channels_last)
    y = F.conv2d(x.reshape(1, B * C, H, W), w, stride=stride, padding=padding, groups=B * groups)
    y = y.view(B, c_out, *y.shape[-2:])
    return y.contiguous(memory_format=torch.channels_last) if cl else y


def _wide(x, weight, r, stride, padding, groups):
    """sum_m r_m (W_m * x) = [W_1 .. W_M] * [r_1 x; ..; r_M x]: the input scaled by each expert's
    routing weight and stacked along channels, then one ordinary conv with all experts' kernels
    side by side. No per-example kernel; M times the conv's multiply-adds."""
    B, C, H, W = x.shape
    M, c_out, cin_g, kh, kw = weight.shape
    # Channel order (group, expert, channel-in-group) so each group of the wide conv sees its
    # own channels once per expert.
    w_cat = (weight.view(M, groups, c_out // groups, cin_g, kh, kw).permute(1, 2, 0, 3, 4, 5)
             .reshape(c_out, M * cin_g, kh, kw))
    if _channels_last(x):
        xw = x.permute(0, 2, 3, 1).view(B, H, W, groups, 1, cin_g) * r.view(B, 1, 1, 1, M, 1)
        xw = xw.reshape(B, H, W, groups * M * cin_g).permute(0, 3, 1, 2)
        if kh == kw == 1 and groups == 1 and padding == 0:
            # A 1x1 conv is one plain GEMM over all pixels of all examples.
            if stride != 1:
                xw = xw[:, :, ::stride, ::stride]
            Ho, Wo = xw.shape[-2:]
            y = xw.permute(0, 2, 3, 1).reshape(B * Ho * Wo, M * C) @ w_cat.view(c_out, M * C).t()
            return y.view(B, Ho, Wo, c_out).permute(0, 3, 1, 2)
    else:
        xw = (x.view(B, groups, 1, cin_g, H, W) * r.view(B, 1, M, 1, 1, 1)).reshape(B, groups * M * cin_g, H, W)
    return F.conv2d(xw, w_cat, stride=stride, padding=padding, groups=groups)


def condconv2d(x, weight, routing_weights, stride=1, padding=0, groups=1, *, method="auto"):
    """Functional CondConv: ``weight`` is (M, C_out, C_in/groups, F, F), ``routing_weights`` (B, M).

    ``method``: "mix" (one kernel per example, then one batched conv), "wide" (M-times-wider input,
    one ordinary conv, no per-example kernel) or "auto" (the cheaper by :func:`choose_method`).
    All three compute the same function; the tests hold each against ``condconv2d_reference``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    B, C, H, W = x.shape
    M, c_out, _, kh, kw = weight.shape
    r = routing_weights.to(x.dtype)
    weight = weight.to(x.dtype)
    if method == "auto":
        out_hw = _out_size(H, kh, stride, padding) * _out_size(W, kw, stride, padding)
        method = choose_method(B, M, out_hw)
    with cpu_matmul(x):
        if method == "wide":
            return _wide(x, weight, r, stride, padding, groups)
        if kh == kw == 1 and groups == 1 and padding == 0:
            return _mixed_pointwise(x, weight, r, stride)
        if not _is_compiling() and depthwise_cpu.supports(x, weight, padding, groups):
            return depthwise_cpu.per_example_depthwise(x, weight, r, stride)
        return _mixed_grouped(x, weight, r, stride, padding, groups)


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
        method: how the conv is computed, "auto" (default), "mix" or "wide"; see
            :func:`condconv2d`. Same function either way; only the speed differs.
    """

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, groups=1, *,
                 num_experts=4, routing=True, method="auto"):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.padding = kernel_size // 2
        self.num_experts = num_experts
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method = method
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
        return condconv2d(x, self.expert_weights, routing_weights, self.stride, self.padding, self.groups,
                          method=self.method)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, groups={self.groups}, num_experts={self.num_experts}")
