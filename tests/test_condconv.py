"""The fast CondConv path against the per-example definition: values and gradients."""
import pytest
import torch

from irnet_lib import condconv
from irnet_lib.condconv import CondConv2d, Routing, choose_method, condconv2d, condconv2d_reference


def _case(kind, stride, batch, channels_last, seed=0):
    torch.manual_seed(seed)
    c_in, c_out = (8, 8) if kind == "depthwise" else (6, 10)
    conv = CondConv2d(c_in, c_out, 3 if kind == "depthwise" else 1, stride,
                      groups=c_in if kind == "depthwise" else 1, num_experts=4)
    x = torch.randn(batch, c_in, 9, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return conv, x.requires_grad_()


@pytest.mark.parametrize("method", ["mix", "wide", "auto"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["pointwise", "depthwise"])
def test_fast_path_matches_per_example_loop(kind, stride, batch, channels_last, train, method):
    conv, x = _case(kind, stride, batch, channels_last)
    conv.train(train)
    r = conv.routing(x)
    fast = condconv2d(x, conv.expert_weights, r, conv.stride, conv.padding, conv.groups, method=method)
    ref = condconv2d_reference(x, conv.expert_weights, r, conv.stride, conv.padding, conv.groups)
    assert fast.shape == ref.shape
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)

    g = torch.randn_like(ref)
    grads_fast = torch.autograd.grad(fast, (x, conv.weight, conv.routing.fc.weight), g, retain_graph=True)
    grads_ref = torch.autograd.grad(ref, (x, conv.weight, conv.routing.fc.weight), g)
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fold", ["channels_last", "contiguous"])
def test_both_fold_layouts_match_the_loop_and_keep_channels_last(monkeypatch, fold):
    monkeypatch.setitem(condconv.FOLD_LAYOUT, "cpu", fold)
    conv, x = _case("depthwise", 2, 3, channels_last=True)
    r = conv.routing(x)
    with condconv.depthwise_cpu.disabled():  # the fold, not the compiled kernel
        fast = condconv2d(x, conv.expert_weights, r, conv.stride, conv.padding, conv.groups, method="mix")
    ref = condconv2d_reference(x, conv.expert_weights, r, conv.stride, conv.padding, conv.groups)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ref)
    fast_grads = torch.autograd.grad(fast, (x, conv.weight), g, retain_graph=True)   # r is shared
    for a, b in zip(fast_grads, torch.autograd.grad(ref, (x, conv.weight), g)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("method", ["mix", "wide"])
def test_grouped_kernel_general_path(method, channels_last):
    torch.manual_seed(0)
    conv = CondConv2d(8, 12, 3, 1, groups=4, num_experts=3, method=method)
    x = torch.randn(3, 8, 7, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    r = conv.routing(x)
    torch.testing.assert_close(conv(x), condconv2d_reference(x, conv.expert_weights, r, 1, 1, 4), atol=1e-5, rtol=1e-5)


def test_cost_rule_mixes_on_irnet_maps_and_goes_wide_on_tiny_ones():
    # IR-NET's feature maps are 56x56 down to 7x7: always the per-example kernels there.
    assert all(choose_method(64, 4, s * s) == "mix" for s in (7, 14, 28, 56))
    assert choose_method(64, 4, 2 * 2) == "wide"
    # One expert: the "wide" conv is the ordinary conv of the r-scaled input, no extra work at all.
    assert choose_method(64, 1, 56 * 56) == "wide"


def test_wide_small_map_output_keeps_channels_last():
    conv = CondConv2d(6, 10, 1, num_experts=4)
    x = torch.randn(2, 6, 2, 2).contiguous(memory_format=torch.channels_last)
    assert choose_method(2, 4, 4) == "wide"
    r = conv.routing(x)
    y = conv(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, condconv2d_reference(x, conv.expert_weights, r), atol=1e-5, rtol=1e-5)


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="method"):
        CondConv2d(4, 4, 1, method="fast")
    with pytest.raises(ValueError, match="method"):
        condconv2d(torch.randn(1, 4, 3, 3), torch.randn(2, 4, 4, 1, 1), torch.rand(1, 2), method="fast")


def test_one_hot_routing_is_that_expert_as_a_plain_conv():
    torch.manual_seed(0)
    conv = CondConv2d(4, 4, 3, groups=4, num_experts=3, routing=False)
    x = torch.randn(2, 4, 6, 6)
    r = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    expected = torch.nn.functional.conv2d(x, conv.expert_weights[1], padding=1, groups=4)
    torch.testing.assert_close(conv(x, r), expected)


def test_channels_last_output_keeps_memory_format_for_1x1():
    conv = CondConv2d(6, 10, 1, num_experts=2)
    x = torch.randn(2, 6, 5, 5).contiguous(memory_format=torch.channels_last)
    assert conv(x).is_contiguous(memory_format=torch.channels_last)


def test_routing_is_sigmoid_of_pooled_linear():
    routing = Routing(5, 4)
    x = torch.randn(3, 5, 4, 4)
    r = routing(x)
    assert r.shape == (3, 4) and bool(((r > 0) & (r < 1)).all())
    torch.testing.assert_close(r, torch.sigmoid(x.mean((2, 3)) @ routing.fc.weight.T + routing.fc.bias))


def test_parameters_are_m_times_a_plain_conv_plus_routing():
    conv = CondConv2d(16, 32, 1, num_experts=4)
    assert conv.weight.numel() == 4 * 16 * 32
    assert conv.routing.fc.weight.numel() + conv.routing.fc.bias.numel() == 16 * 4 + 4


def test_per_block_conv_demands_routing_weights():
    conv = CondConv2d(4, 4, 1, routing=False)
    with pytest.raises(ValueError, match="routing_weights"):
        conv(torch.randn(1, 4, 3, 3))


def test_groups_must_divide_channels():
    with pytest.raises(ValueError, match="groups"):
        CondConv2d(6, 4, 3, groups=4)


def test_batchnorm_into_depthwise_gradients_match_reference():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(8)
    conv = CondConv2d(8, 8, 3, 1, groups=8, num_experts=4)
    x = torch.randn(4, 8, 9, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    h = bn(x)
    r = conv.routing(h)
    fast = condconv2d(h, conv.expert_weights, r, 1, 1, 8)
    ref = condconv2d_reference(h, conv.expert_weights, r, 1, 1, 8)
    g = torch.randn_like(ref)
    params = (x, bn.weight, conv.weight, conv.routing.fc.weight)
    for a, b in zip(torch.autograd.grad(fast, params, g, retain_graph=True), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["pointwise", "depthwise"])
def test_bf16_autocast_fast_path_runs_forward_and_backward(kind):
    conv, x = _case(kind, 1, 3, channels_last=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad is not None and conv.weight.grad is not None
    ref = condconv2d_reference(x, conv.expert_weights, conv.routing(x), conv.stride, conv.padding, conv.groups)
    torch.testing.assert_close(y.float(), ref, atol=0.1, rtol=0.05)
