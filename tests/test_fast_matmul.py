"""Which library does the fast layer's CondConv fp32 matmuls on a CPU: oneDNN where it is exact,
MKL otherwise.

Both routes must compute the same function, leave PyTorch's global setting as they found it, and
never route where oneDNN would round to bf16.
"""
import pytest
import torch

from irnet_lib.condconv import CondConv2d, condconv2d_reference
from irnet_lib.fast import condconv
from irnet_lib.fast.condconv import condconv2d, cpu_matmul_library

if not hasattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision"):
    pytest.skip("this PyTorch has no per-library fp32 matmul switch: CondConv keeps the default library",
                allow_module_level=True)


def _precision():
    return torch.backends.mkldnn.matmul.fp32_precision


@pytest.mark.parametrize("onednn", [False, True], ids=["mkl", "onednn"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_both_routes_match_reference_and_restore_the_setting(monkeypatch, onednn, channels_last, kernel_size):
    if onednn and not condconv._onednn_fp32_is_exact():
        pytest.skip("oneDNN is not exact in fp32 on this CPU: CondConv never routes to it here")
    monkeypatch.setattr(condconv, "_onednn_fp32_is_exact", lambda: onednn)
    torch.manual_seed(0)
    groups = 8 if kernel_size == 3 else 1
    conv = CondConv2d(8, 8, kernel_size, groups=groups, num_experts=4)
    x = torch.randn(5, 8, 7, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    before = _precision()
    r = conv.router(x)
    fast = condconv2d(x, conv.expert_weights, r, padding=kernel_size // 2, groups=groups)
    ref = condconv2d_reference(x, conv.expert_weights, r, padding=kernel_size // 2, groups=groups)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ref)
    wrt = (x, conv.weight, conv.router.fc.weight)
    for a, b in zip(torch.autograd.grad(fast, wrt, g, retain_graph=True), torch.autograd.grad(ref, wrt, g)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert _precision() == before


def test_setting_is_restored_when_the_matmul_fails():
    before = _precision()
    with pytest.raises(RuntimeError):
        with condconv._mkldnn_fp32_precision("bf16"):
            torch.bmm(torch.ones(2, 3, 4), torch.ones(2, 5, 4))
    assert _precision() == before


def test_no_route_for_other_dtypes_devices_or_when_unavailable(monkeypatch):
    monkeypatch.setattr(condconv, "_onednn_fp32_is_exact", lambda: True)
    assert isinstance(condconv.cpu_matmul(torch.ones(1, dtype=torch.bfloat16)), type(condconv.nullcontext()))
    assert isinstance(condconv.cpu_matmul(torch.ones(1, dtype=torch.float64)), type(condconv.nullcontext()))
    assert isinstance(condconv.cpu_matmul(torch.ones(1, device="meta")), type(condconv.nullcontext()))
    monkeypatch.setattr(condconv, "_onednn_fp32_is_exact", lambda: False)
    assert isinstance(condconv.cpu_matmul(torch.ones(1)), type(condconv.nullcontext()))
    assert cpu_matmul_library() in ("MKL", "default BLAS")


def test_probe_refuses_a_library_that_rounds_to_bf16(monkeypatch):
    """Where oneDNN would round the inputs to bf16 (CPUs with AMX), the probe must say no."""
    real_bmm = torch.bmm

    def bf16_rounding_bmm(a, b, **kw):
        if _precision() == "bf16":
            return real_bmm(a.bfloat16().float(), b.bfloat16().float(), **kw)
        return real_bmm(a, b, **kw)

    monkeypatch.setattr(torch, "bmm", bf16_rounding_bmm)
    condconv._onednn_fp32_is_exact.cache_clear()
    try:
        assert condconv._onednn_fp32_is_exact() is False
    finally:
        monkeypatch.undo()
        condconv._onednn_fp32_is_exact.cache_clear()


def test_input_gradient_comes_back_in_the_input_layout():
    """channels_last in, channels_last out, both ways: no layout copy between the layers."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(2, 4 * 6, requires_grad=True)
    r = torch.rand(3, 2, requires_grad=True)
    y = condconv._PerExampleMatmul.apply(x, w, r, (4, 6), True)
    assert y.shape == (3, 6, 5, 5) and y.is_contiguous(memory_format=torch.channels_last)
    (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert gx.is_contiguous(memory_format=torch.channels_last)
