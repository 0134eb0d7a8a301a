"""Faster formulations of CondConv, chosen per layer: the same function as the core's
:func:`irnet_lib.condconv.condconv2d`, held to the same per-example reference by the tests.

The core folds the batch into the channel axis for every conditional conv. Here, per layer:

- a 1x1 conv (not grouped) is one matrix product per example, ``x_b @ K_b``, in the input's
  memory format, inside one autograd function that mixes the per-example kernels again in the
  backward pass instead of keeping them (:class:`_PerExampleMatmul`); on a CPU the products run
  in oneDNN where a probe shows that to be exact (:func:`cpu_matmul_library`);
- a depthwise conv on a channels_last CPU tensor runs in the compiled per-example operator
  (:mod:`irnet_lib.fast.depthwise`): no fold at all;
- any other conv keeps the fold, arranged so that a channels_last tensor stays channels_last
  (``(1, H, W, B*C)`` in memory), the layout in which the depthwise kernels of PyTorch's CPU and
  GPU libraries are fast.

``docs/performance.md`` has the measurements behind each choice.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from . import depthwise

__all__ = ["condconv2d", "cpu_matmul", "cpu_matmul_library"]

_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)


def condconv2d(x, weight, routing_weights, stride=1, padding=0, groups=1):
    """:func:`irnet_lib.condconv.condconv2d`, with the fastest formulation for this layer."""
    kh, kw = weight.shape[-2:]
    r = routing_weights.to(x.dtype)
    weight = weight.to(x.dtype)
    if kh == kw == 1 and groups == 1 and padding == 0:
        with cpu_matmul(x):
            return _pointwise(x, weight, r, stride)
    if not _is_compiling() and depthwise.supports(x, weight, padding, groups):
        return depthwise.per_example_depthwise(x, weight, r, stride)
    return _folded(x, weight, r, stride, padding, groups)


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


# ------------------------------------------------------------------------------ 1x1: matmuls

# PyTorch hands an fp32 matmul to MKL, which on AMD CPUs runs a generic code path: on IR-NET's 1x1
# shapes it reached 38-42 GMAC/s on a 2-core AVX-512 EPYC, where oneDNN (the library behind
# PyTorch's CPU convolutions) reached 150-190. PyTorch sends an fp32 matmul to oneDNN only when it
# may use reduced precision (``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``), and
# oneDNN rounds to bf16 only where it has a bf16 matrix engine (Intel AMX). So that setting is
# switched on around CondConv's own matmuls only, and only where a probe shows the products stay
# fp32-exact (so that another thread's matmul caught by the process-wide switch is exact too).

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
    """The library that does CondConv's fp32 matmuls on this machine's CPU in the fast layer:
    "oneDNN", or PyTorch's default ("MKL" in the x86 wheels)."""
    if _onednn_fp32_is_exact():
        return "oneDNN"
    return "MKL" if torch.backends.mkl.is_available() else "default BLAS"


def cpu_matmul(t: torch.Tensor):
    """The context the fast layer runs matmuls on ``t`` in: oneDNN where that is exact, else unchanged."""
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
    multiply-adds per kernel weight, as fast on a 2-core CPU as keeping them, without holding
    1.42 million kernel values per example (IR-NET's 32 conditional 1x1 layers) until then.
    The kernel gradient of each example is formed once and serves both the routing and the experts.
    """

    @staticmethod
    def forward(ctx, x4, weight, r, kernel_shape, channels_last):
        ctx.kernel_shape, ctx.channels_last = kernel_shape, channels_last
        ctx.save_for_backward(x4, weight, r)
        B, _, H, W = x4.shape
        k = (r @ weight).view(B, *kernel_shape)
        x = _as_matrices(x4, channels_last)
        if channels_last:
            return torch.bmm(x, k).view(B, H, W, -1).permute(0, 3, 1, 2)
        return torch.bmm(k, x).view(B, -1, H, W)

    @staticmethod
    def backward(ctx, grad_out):
        x4, weight, r = ctx.saved_tensors
        cl = ctx.channels_last
        B, C, H, W = x4.shape
        with cpu_matmul(grad_out):
            layout = torch.channels_last if cl else torch.contiguous_format
            g = _as_matrices(grad_out.contiguous(memory_format=layout), cl)
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


def _pointwise(x, weight, r, stride):
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


# ------------------------------------------------------------------------------ the fold

def _folded(x, weight, r, stride, padding, groups):
    """The core's fold, keeping a channels_last tensor channels_last: (1, H, W, B*C) in memory,
    where the depthwise kernels of the CPU and GPU libraries are fast (measured 1.5-2.5x on a CPU
    against a one-image NCHW tensor, the two layout copies included)."""
    if not _channels_last(x):
        from ..condconv import condconv2d as core
        return core(x, weight, r, stride, padding, groups)
    B, C, H, W = x.shape
    c_out = weight.shape[1]
    w = (r @ weight.flatten(1)).reshape(B * c_out, *weight.shape[2:])
    xf = x.permute(2, 3, 0, 1).reshape(1, H, W, B * C).permute(0, 3, 1, 2)
    y = F.conv2d(xf, w, stride=stride, padding=padding, groups=B * groups)
    Ho, Wo = y.shape[-2:]
    y = y.permute(0, 2, 3, 1).reshape(Ho, Wo, B, c_out).permute(2, 3, 0, 1)
    return y.contiguous(memory_format=torch.channels_last)
