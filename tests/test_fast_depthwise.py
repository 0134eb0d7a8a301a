"""The fast layer's compiled per-example depthwise operator: the definition's values and gradients
whatever the threads, an operator that torch.compile and autograd see, the cases it declines, and a
clear fallback where it cannot be built."""
import pytest
import torch

from irnet_lib import fast
from irnet_lib.condconv import CondConv2d, condconv2d_reference
from irnet_lib.fast import depthwise

needs_kernel = pytest.mark.skipif(not depthwise.available(), reason=depthwise.status())


def _case(batch, channels, h, w, kernel_size, stride, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    conv = CondConv2d(channels, channels, kernel_size, stride, groups=channels, num_experts=3).to(dtype)
    x = torch.randn(batch, channels, h, w, dtype=dtype).contiguous(memory_format=torch.channels_last)
    return conv, x.requires_grad_()


def _assert_matches_reference(conv, x, stride, tol):
    """Values and the gradients of x, the experts and the routing, against the per-example loop."""
    r = conv.router(x)
    y = depthwise.per_example_depthwise(x, conv.expert_weights, r, stride)
    ref = condconv2d_reference(x, conv.expert_weights, r, stride, conv.padding, conv.groups)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, ref, atol=tol, rtol=tol)
    g = torch.randn_like(ref)
    wrt = (x, conv.weight, conv.router.fc.weight)
    for a, b in zip(torch.autograd.grad(y, wrt, g, retain_graph=True), torch.autograd.grad(ref, wrt, g)):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@needs_kernel
@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
# 83 channels = a block of 64, a vector of 16 and 3 single channels; 4x3 is smaller than the kernels
@pytest.mark.parametrize("shape", [(1, 5, 9, 9), (3, 8, 7, 10), (4, 16, 6, 5), (2, 83, 9, 11), (2, 83, 4, 3)],
                         ids=["b1", "b3-odd", "b4-tiny", "c83-blocks", "c83-smaller-than-kernel"])
def test_matches_the_per_example_loop(shape, stride, kernel_size):
    conv, x = _case(*shape, kernel_size, stride)
    assert depthwise.supports(x, conv.expert_weights, conv.padding, conv.groups)
    _assert_matches_reference(conv, x, stride, tol=1e-5)


@needs_kernel
@pytest.mark.parametrize("stride", [1, 2])
def test_gradcheck_in_double(stride):
    conv, x = _case(2, 3, 5, 6, 3, stride, dtype=torch.float64)
    w = conv.expert_weights.detach().requires_grad_()
    r = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, r: depthwise.per_example_depthwise(x, w, r, stride), (x, w, r))


@needs_kernel
@pytest.mark.parametrize("kernel_size", [3, 7])
def test_vector_blocks_in_double(kernel_size):
    conv, x = _case(2, 43, 9, 8, kernel_size, 1, dtype=torch.float64)  # 43 = 32 + 8 + 3 doubles
    _assert_matches_reference(conv, x, 1, tol=1e-12)


@needs_kernel
@pytest.mark.parametrize("stride", [1, 2])
def test_results_do_not_depend_on_the_number_of_threads(stride):
    """The operator alone (the kernel mixing is an ordinary matmul, whose rounding may depend on
    threads): each output is summed by one thread in a fixed order, however the work is cut."""
    torch.manual_seed(0)
    x = torch.randn(5, 24, 12, 12).contiguous(memory_format=torch.channels_last)
    k = torch.randn(5, 3, 3, 24)
    g = torch.randn(5, 24, 12 // stride, 12 // stride).contiguous(memory_format=torch.channels_last)
    threads, outs = torch.get_num_threads(), []
    try:
        for n in (1, 2, 3):   # at::parallel_for cuts the rows and examples differently each time
            torch.set_num_threads(n)
            outs.append((torch.ops.irnet.per_example_depthwise(x, k, stride),
                         *torch.ops.irnet.per_example_depthwise_backward(x, k, g, stride, True, True)))
    finally:
        torch.set_num_threads(threads)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert torch.equal(a, b)


@needs_kernel
def test_a_registered_operator_that_autograd_and_the_compiler_see():
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    k = torch.randn(2, 3, 3, 8, dtype=torch.float64)
    torch.library.opcheck(torch.ops.irnet.per_example_depthwise, (x.requires_grad_(), k.requires_grad_(), 2))
    compiled = torch.compile(lambda x, k: torch.ops.irnet.per_example_depthwise(x, k, 1), backend="eager",
                             fullgraph=True)
    torch.testing.assert_close(compiled(x, k), torch.ops.irnet.per_example_depthwise(x, k, 1))


@needs_kernel
def test_condconv_takes_it_exactly_where_it_applies():
    conv, x = _case(2, 8, 6, 6, 3, 1)
    w = conv.expert_weights
    assert depthwise.supports(x, w, 1, 8)
    assert not depthwise.supports(x.contiguous(), w, 1, 8)              # NCHW: the free fold is better
    assert not depthwise.supports(x.bfloat16(), w, 1, 8)                # fp32 and fp64 only
    assert not depthwise.supports(x, w, 0, 8)                           # "same" padding only
    grouped = CondConv2d(8, 8, 3, groups=4).expert_weights
    assert not depthwise.supports(x, grouped, 1, 4)                     # depthwise only
    with torch.autocast("cpu", dtype=torch.bfloat16):                  # autocast asks for bf16
        assert not depthwise.supports(x, w, 1, 8)


def test_a_failed_build_falls_back_with_a_warning_that_says_why(monkeypatch):
    def no_compiler(openmp):
        raise RuntimeError("Error building extension: c++: error: no such compiler")

    monkeypatch.setattr(depthwise, "_load", no_compiler)
    monkeypatch.setattr(depthwise, "_status", depthwise._status)
    depthwise._build.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no such compiler"):
            assert not depthwise.available()
        assert "folded grouped convolution" in depthwise.status()
        conv, x = _case(2, 8, 6, 6, 3, 1)   # CondConv still computes the same function
        with fast.enabled(keep_freed_memory=False):
            y = conv(x)
        torch.testing.assert_close(y, condconv2d_reference(x, conv.expert_weights, conv.router(x), 1, 1, 8),
                                   atol=1e-5, rtol=1e-5)
    finally:
        depthwise._build.cache_clear()


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("IRNET_NATIVE", "0")
    monkeypatch.setattr(depthwise, "_status", depthwise._status)
    depthwise._build.cache_clear()
    try:
        assert not depthwise.available()
        assert "IRNET_NATIVE=0" in depthwise.status()
    finally:
        depthwise._build.cache_clear()
