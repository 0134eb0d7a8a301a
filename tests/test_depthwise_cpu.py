"""The compiled per-example depthwise kernel: the definition's values and gradients, whatever the
threads; the cases it declines; a clear fallback when it cannot be built."""
import pytest
import torch

from irnet_lib import condconv, depthwise_cpu
from irnet_lib.condconv import CondConv2d, condconv2d_reference

needs_kernel = pytest.mark.skipif(not depthwise_cpu.available(), reason=depthwise_cpu.status())


def _case(batch, channels, h, w, kernel_size, stride, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    conv = CondConv2d(channels, channels, kernel_size, stride, groups=channels, num_experts=3).to(dtype)
    x = torch.randn(batch, channels, h, w, dtype=dtype).contiguous(memory_format=torch.channels_last)
    return conv, x.requires_grad_()


def _assert_matches_reference(conv, x, stride, tol):
    """Values and the gradients of x, the experts and the routing, against the per-example loop."""
    r = conv.routing(x)
    fast = depthwise_cpu.per_example_depthwise(x, conv.expert_weights, r, stride)
    ref = condconv2d_reference(x, conv.expert_weights, r, stride, conv.padding, conv.groups)
    assert fast.shape == ref.shape and fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, ref, atol=tol, rtol=tol)
    g = torch.randn_like(ref)
    wrt = (x, conv.weight, conv.routing.fc.weight)
    for a, b in zip(torch.autograd.grad(fast, wrt, g, retain_graph=True), torch.autograd.grad(ref, wrt, g)):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@needs_kernel
@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
# 83 channels = a block of 64, a vector of 16 and 3 single channels; 4x3 is smaller than the kernels
@pytest.mark.parametrize("shape", [(1, 5, 9, 9), (3, 8, 7, 10), (4, 16, 6, 5), (2, 83, 9, 11), (2, 83, 4, 3)],
                         ids=["b1", "b3-odd", "b4-tiny", "c83-blocks", "c83-smaller-than-kernel"])
def test_matches_the_per_example_loop(shape, stride, kernel_size):
    conv, x = _case(*shape, kernel_size, stride)
    assert depthwise_cpu.supports(x, conv.expert_weights, conv.padding, conv.groups)
    _assert_matches_reference(conv, x, stride, tol=1e-5)


@needs_kernel
@pytest.mark.parametrize("stride", [1, 2])
def test_gradcheck_in_double(stride):
    conv, x = _case(2, 3, 5, 6, 3, stride, dtype=torch.float64)
    w = conv.expert_weights.detach().requires_grad_()
    r = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, r: depthwise_cpu.per_example_depthwise(x, w, r, stride), (x, w, r))


@needs_kernel
@pytest.mark.parametrize("kernel_size", [3, 7])
def test_vector_blocks_in_double(kernel_size):
    conv, x = _case(2, 43, 9, 8, kernel_size, 1, dtype=torch.float64)  # 43 = 32 + 8 + 3 doubles
    _assert_matches_reference(conv, x, 1, tol=1e-12)


@needs_kernel
def test_results_do_not_depend_on_how_many_slices_the_batch_is_cut_into(monkeypatch):
    conv, x = _case(5, 24, 12, 12, 3, 1)
    r = conv.routing(x).detach()
    g = torch.randn(5, 24, 12, 12).contiguous(memory_format=torch.channels_last)
    outs = []
    for threads in (1, 2, 3):  # only the kernel's slicing changes; torch's own matmuls keep theirs
        for on_openmp in (True, False):  # PyTorch's OpenMP threads, or a pool of Python threads
            monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
            monkeypatch.setattr(depthwise_cpu, "_openmp", on_openmp and depthwise_cpu._openmp)
            y = depthwise_cpu.per_example_depthwise(x, conv.expert_weights, r, 1)
            outs.append((y, *torch.autograd.grad(y, (x, conv.weight), g)))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert torch.equal(a, b)


@needs_kernel
def test_condconv_takes_it_exactly_where_it_applies():
    conv, x = _case(2, 8, 6, 6, 3, 1)
    w = conv.expert_weights
    assert depthwise_cpu.supports(x, w, 1, 8)
    assert not depthwise_cpu.supports(x.contiguous(), w, 1, 8)              # NCHW: the free fold is better
    assert not depthwise_cpu.supports(x.bfloat16(), w, 1, 8)                # fp32 and fp64 only
    assert not depthwise_cpu.supports(x, w, 0, 8)                           # "same" padding only
    grouped = CondConv2d(8, 8, 3, groups=4).expert_weights
    assert not depthwise_cpu.supports(x, grouped, 1, 4)                     # depthwise only
    with torch.autocast("cpu", dtype=torch.bfloat16):                      # autocast asks for bf16
        assert not depthwise_cpu.supports(x, w, 1, 8)
    with depthwise_cpu.disabled():                                         # switched off on purpose
        assert not depthwise_cpu.supports(x, w, 1, 8)
    assert depthwise_cpu.supports(x, w, 1, 8)


def test_a_failed_build_falls_back_with_a_warning_that_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("IRNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    depthwise_cpu._library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no-such-compiler|could not build|No such file"):
            assert not depthwise_cpu.available()
        assert "folded grouped convolution" in depthwise_cpu.status()
        conv, x = _case(2, 8, 6, 6, 3, 1)  # CondConv still computes the same function
        r = conv.routing(x)
        torch.testing.assert_close(conv(x), condconv2d_reference(x, conv.expert_weights, r, 1, 1, 8),
                                   atol=1e-5, rtol=1e-5)
    finally:
        depthwise_cpu._library.cache_clear()


@needs_kernel
def test_builds_without_openmp_and_threads_the_slices_itself(monkeypatch, tmp_path):
    """Where PyTorch has no OpenMP runtime to share (or it cannot be found), the kernel is built
    without one and the batch slices run on a pool of Python threads: the same numbers."""
    conv, x = _case(3, 24, 8, 8, 3, 1)
    r = conv.routing(x).detach()
    before = depthwise_cpu.per_example_depthwise(x, conv.expert_weights, r, 1)
    monkeypatch.setenv("IRNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(depthwise_cpu, "_openmp_runtime", lambda: None)
    depthwise_cpu._library.cache_clear()
    try:
        assert depthwise_cpu.available() and "Python threads" in depthwise_cpu.status()
        assert torch.equal(depthwise_cpu.per_example_depthwise(x, conv.expert_weights, r, 1), before)
    finally:
        monkeypatch.undo()
        depthwise_cpu._library.cache_clear()
        depthwise_cpu.status()


def test_the_openmp_build_is_tried_first_and_linked_to_pytorchs_runtime(monkeypatch):
    monkeypatch.setattr(depthwise_cpu, "_openmp_runtime", lambda: "/opt/torch/lib/libgomp.so.1")
    (flags, link), *rest = depthwise_cpu._flag_sets()
    assert "-fopenmp" in flags and "/opt/torch/lib/libgomp.so.1" in link and "-Wl,-rpath,/opt/torch/lib" in link
    assert rest and all("-fopenmp" not in f and not l for f, l in rest)   # the fallbacks: no runtime at all
    monkeypatch.setattr(depthwise_cpu, "_openmp_runtime", lambda: None)
    assert all("-fopenmp" not in f for f, _ in depthwise_cpu._flag_sets())


def test_an_unwritable_cache_falls_back_to_a_temporary_folder(monkeypatch, tmp_path):
    locked = tmp_path / "locked"
    locked.write_text("a file where the cache folder should be")   # mkdir fails under it
    monkeypatch.setenv("IRNET_CACHE_DIR", str(locked / "cache"))
    monkeypatch.setattr(depthwise_cpu.tempfile, "gettempdir", lambda: str(tmp_path))
    folder = depthwise_cpu._cache_dir()
    assert folder.parent == tmp_path and folder.name.startswith("irnet_lib-")


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("IRNET_NATIVE", "0")
    depthwise_cpu._library.cache_clear()
    try:
        assert not depthwise_cpu.available()
        assert "IRNET_NATIVE=0" in depthwise_cpu.status()
    finally:
        depthwise_cpu._library.cache_clear()
