"""CondConv's depthwise layer on a CPU without folding the batch: a small compiled operator.

A conditional depthwise conv is B depthwise convolutions with B different kernels. PyTorch has
no operator for that, so the core (:func:`irnet_lib.condconv.condconv2d`) folds the batch into the
channel axis and runs one grouped convolution; on a channels_last tensor that fold is a
transposing copy of the whole feature map, four per layer and training step.
``csrc/per_example_depthwise.cpp`` convolves the NHWC tensors where they lie, forward and
backward, on PyTorch's own intra-op threads (``at::parallel_for``).

It is built on first use by ``torch.utils.cpp_extension`` (about 10 s, cached by PyTorch in
``~/.cache/torch_extensions``) and registered as the ``torch.ops.irnet.per_example_depthwise``
operator, with its autograd formula and its shapes for ``torch.compile`` registered here, so
that the profiler and the compiler see it like any other operator. Without a C++ compiler or
``ninja``, :func:`available` is False (with a warning that says why) and CondConv keeps the fold:
the same function, slower.
"""
from __future__ import annotations

import functools
import logging
import os
import warnings
from pathlib import Path

import torch

__all__ = ["available", "status", "supports", "per_example_depthwise"]

_SOURCE = Path(__file__).with_name("csrc") / "per_example_depthwise.cpp"
_status = "not built yet"


def _load(openmp: bool):
    from torch.utils import cpp_extension
    flags = ["-O3", "-march=native"] + (["-fopenmp"] if openmp else [])
    # Without -fopenmp at::parallel_for runs serially. The OpenMP library it links is found by
    # its soname, libgomp.so.1, which PyTorch's wheel has already loaded: no second runtime.
    cpp_extension.load(name="irnet_per_example_depthwise" + ("" if openmp else "_serial"),
                       sources=[str(_SOURCE)], extra_cflags=flags, extra_ldflags=flags[-1:] if openmp else [],
                       is_python_module=False, verbose=False)


@functools.cache
def _build() -> bool:
    global _status  # noqa: PLW0603 - the build's outcome, set once (functools.cache) and reported by status()
    if os.environ.get("IRNET_NATIVE", "1") == "0":
        _status = "off (IRNET_NATIVE=0): folded grouped convolution"
        return False
    logger = logging.getLogger("torch.utils.cpp_extension")
    level, logger.level = logger.level, logging.ERROR   # its CUDA_HOME notice concerns CUDA builds only
    errors = []
    try:
        for openmp in dict.fromkeys([torch.backends.openmp.is_available(), False]):
            try:
                _load(openmp)
                _register()
                threads = "PyTorch's threads" if openmp else "one thread"
                _status = f"compiled per-example kernel (torch.ops.irnet), on {threads}"
                return True
            except Exception as e:  # no compiler, no ninja, a failed build: its first error line
                lines = str(e).strip().splitlines() or [""]
                errors.append(next((line for line in lines if "error" in line.lower()), lines[-1])[:300])
    finally:
        logger.level = level
    _status = f"unavailable ({'; '.join(errors)}): folded grouped convolution"
    warnings.warn(f"irnet_lib.fast: CondConv's CPU depthwise kernel is {_status}; results are the same, only "
                  "slower. Install a C++ compiler and ninja (pip install ninja), or set IRNET_NATIVE=0 to "
                  "silence this.", RuntimeWarning, stacklevel=3)
    return False


def available() -> bool:
    """Is the compiled operator usable here (built now, on the first call)?"""
    return _build()


def status() -> str:
    """How CondConv's depthwise layers run on this CPU, in words (for logs and benchmarks)."""
    _build()
    return _status


def supports(x: torch.Tensor, weight: torch.Tensor, padding: int, groups: int) -> bool:
    """Can this conditional conv take the operator? A channels_last fp32/fp64 CPU tensor outside
    autocast (which asks for bf16), a depthwise kernel (groups == C_in == C_out) of odd square
    size with "same" padding."""
    C = x.shape[1]
    _, c_out, cin_g, kh, kw = weight.shape
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled("cpu")
            and groups == C == c_out and cin_g == 1 and kh == kw and kh % 2 == 1 and padding == kh // 2
            and x.is_contiguous(memory_format=torch.channels_last) and available())


def per_example_depthwise(x, weight, routing_weights, stride):
    """Conditional depthwise conv: ``weight`` (M, C, 1, F, F), ``routing_weights`` (B, M).
    Check :func:`supports` first. The kernels are mixed here, tap-major, (B, F, F, C); autograd
    carries their gradient back to the experts and the routing."""
    M, C, _, F_, _ = weight.shape
    taps = weight.reshape(M, C, F_ * F_).transpose(1, 2).reshape(M, F_ * F_ * C)
    k = (routing_weights.to(x.dtype) @ taps.to(x.dtype)).view(-1, F_, F_, C)
    return torch.ops.irnet.per_example_depthwise(x, k, stride)


def _setup_context(ctx, inputs, output):  # noqa: ARG001 - torch.library passes it by this name
    x, k, stride = inputs
    ctx.save_for_backward(x, k)
    ctx.stride = stride


def _backward(ctx, grad_y):
    x, k = ctx.saved_tensors
    need_x, need_k = ctx.needs_input_grad[:2]
    gx, gk = torch.ops.irnet.per_example_depthwise_backward(x, k, grad_y, ctx.stride, need_x, need_k)
    return (gx if need_x else None), (gk if need_k else None), None


def _register():
    """Autograd and shape functions of the two operators (once, after the build)."""
    torch.library.register_autograd("irnet::per_example_depthwise", _backward, setup_context=_setup_context)

    @torch.library.register_fake("irnet::per_example_depthwise")
    def _(x, k, stride):
        B, C, H, W = x.shape
        F_ = k.shape[1]
        Ho, Wo = (H + 2 * (F_ // 2) - F_) // stride + 1, (W + 2 * (F_ // 2) - F_) // stride + 1
        return x.new_empty((B, C, Ho, Wo)).contiguous(memory_format=torch.channels_last)

    @torch.library.register_fake("irnet::per_example_depthwise_backward")
    def _(x, k, _grad_y, _stride, need_x, need_k):
        gx = torch.empty_like(x, memory_format=torch.channels_last) if need_x else x.new_empty(0)
        return gx, (torch.empty_like(k) if need_k else k.new_empty(0))


