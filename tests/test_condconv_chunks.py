"""The CPU chunking of the per-example 1x1 kernels: same values and gradients, any chunk size."""
import pytest
import torch

from irnet_lib import condconv
from irnet_lib.condconv import CondConv2d, condconv2d, condconv2d_reference


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 6 * 10 * 4], ids=["one-example-chunks", "three-example-chunks"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_chunked_pointwise_matches_reference(monkeypatch, chunk_bytes, channels_last):
    monkeypatch.setattr(condconv, "_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    conv = CondConv2d(6, 10, 1, num_experts=4, method="mix")
    x = torch.randn(7, 6, 5, 5)  # 7 examples: the last chunk is partial
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    r = conv.routing(x)
    fast = condconv2d(x, conv.expert_weights, r, method="mix")
    ref = condconv2d_reference(x, conv.expert_weights, r)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ref)
    wrt = (x, conv.weight, conv.routing.fc.weight)
    for a, b in zip(torch.autograd.grad(fast, wrt, g, retain_graph=True), torch.autograd.grad(ref, wrt, g)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_chunk_size_fits_the_cache_budget_on_cpu_and_is_the_batch_elsewhere():
    assert condconv._chunk_size(64, 160 * 640, 4, torch.device("cpu")) == condconv._CHUNK_BYTES // (160 * 640 * 4)
    assert condconv._chunk_size(64, 10, 4, torch.device("cpu")) == 64
    assert condconv._chunk_size(64, 10**9, 4, torch.device("cpu")) == 1
    assert condconv._chunk_size(64, 160 * 640, 4, torch.device("meta")) == 64


def test_bf16_autocast_runs_the_pointwise_path_in_bf16():
    torch.manual_seed(0)
    conv = CondConv2d(16, 32, 1, num_experts=4)
    x = torch.randn(4, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    ref = conv(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)
