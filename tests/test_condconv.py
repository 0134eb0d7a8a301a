"""CondConv against its definition, the per-example loop: values and gradients, every layout and
stride, with the fast layer off (the teaching code's batched formulation) and on."""
import pytest
import torch

from irnet_lib import fast
from irnet_lib.condconv import CondConv2d, Routing, condconv2d, condconv2d_reference


@pytest.fixture(params=[False, True], ids=["core", "fast"])
def fast_layer(request):
    with fast.enabled(request.param, keep_freed_memory=False):
        yield request.param


def _case(kind, stride, batch, channels_last, seed=0):
    torch.manual_seed(seed)
    c_in, c_out = (8, 8) if kind == "depthwise" else (6, 10)
    conv = CondConv2d(c_in, c_out, 3 if kind == "depthwise" else 1, stride,
                      groups=c_in if kind == "depthwise" else 1, num_experts=4)
    x = torch.randn(batch, c_in, 9, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return conv, x.requires_grad_()


def _assert_same_function(y, ref, wrt, atol=1e-5):
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, atol=atol, rtol=atol)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(y, wrt, g, retain_graph=True), torch.autograd.grad(ref, wrt, g)):
        torch.testing.assert_close(a, b, atol=atol, rtol=atol)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["pointwise", "depthwise"])
def test_matches_the_per_example_loop(fast_layer, kind, stride, batch, channels_last, train):
    conv, x = _case(kind, stride, batch, channels_last)
    conv.train(train)
    r = conv.router(x)
    y = conv(x)
    ref = condconv2d_reference(x, conv.expert_weights, r, conv.stride, conv.padding, conv.groups)
    _assert_same_function(y, ref, (x, conv.weight, conv.router.fc.weight))
    if fast_layer and channels_last:   # the fast layer keeps the layout from layer to layer
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_grouped_kernel_general_path(fast_layer, channels_last):
    torch.manual_seed(0)
    conv = CondConv2d(8, 12, 3, 1, groups=4, num_experts=3)
    x = torch.randn(3, 8, 7, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    ref = condconv2d_reference(x, conv.expert_weights, conv.router(x), 1, 1, 4)
    _assert_same_function(conv(x), ref, (x, conv.weight))


def test_the_core_function_is_the_batched_fold():
    """condconv2d itself (what the notebooks show) against the loop, without a module around it."""
    torch.manual_seed(0)
    x, w, r = torch.randn(5, 6, 8, 8), torch.randn(3, 6, 1, 3, 3), torch.rand(5, 3)
    torch.testing.assert_close(condconv2d(x, w, r, 2, 1, 6), condconv2d_reference(x, w, r, 2, 1, 6),
                               atol=1e-5, rtol=1e-5)


def test_one_hot_routing_is_that_expert_as_a_plain_conv(fast_layer):
    torch.manual_seed(0)
    conv = CondConv2d(4, 4, 3, groups=4, num_experts=3, own_routing=False)
    x = torch.randn(2, 4, 6, 6)
    r = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    expected = torch.nn.functional.conv2d(x, conv.expert_weights[1], padding=1, groups=4)
    torch.testing.assert_close(conv(x, r), expected)


def test_routing_is_sigmoid_of_pooled_linear():
    routing = Routing(5, 4)
    x = torch.randn(3, 5, 4, 4)
    r = routing(x)
    assert r.shape == (3, 4) and bool(((r > 0) & (r < 1)).all())
    torch.testing.assert_close(r, torch.sigmoid(x.mean((2, 3)) @ routing.fc.weight.T + routing.fc.bias))


def test_parameters_are_m_times_a_plain_conv_plus_routing():
    conv = CondConv2d(16, 32, 1, num_experts=4)
    assert conv.weight.numel() == 4 * 16 * 32
    assert conv.router.fc.weight.numel() + conv.router.fc.bias.numel() == 16 * 4 + 4


def test_per_block_conv_demands_routing_weights():
    conv = CondConv2d(4, 4, 1, own_routing=False)
    with pytest.raises(ValueError, match="routing_weights"):
        conv(torch.randn(1, 4, 3, 3))


@pytest.mark.parametrize("kwargs,match", [(dict(groups=4), "groups"), (dict(num_experts=0), "num_experts"),
                                          (dict(num_experts=True), "num_experts")])
def test_bad_arguments_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CondConv2d(6, 4, 3, **kwargs)


def test_batchnorm_into_depthwise_gradients_match_reference(fast_layer):
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(8)
    conv = CondConv2d(8, 8, 3, 1, groups=8, num_experts=4)
    x = torch.randn(4, 8, 9, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    h = bn(x)
    r = conv.router(h)
    ref = condconv2d_reference(h, conv.expert_weights, r, 1, 1, 8)
    _assert_same_function(conv(h, r), ref, (x, bn.weight, conv.weight, conv.router.fc.weight))


@pytest.mark.parametrize("kind", ["pointwise", "depthwise"])
def test_bf16_autocast_runs_forward_and_backward(fast_layer, kind):
    conv, x = _case(kind, 1, 3, channels_last=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad is not None and conv.weight.grad is not None
    ref = condconv2d_reference(x, conv.expert_weights, conv.router(x), conv.stride, conv.padding, conv.groups)
    torch.testing.assert_close(y.float(), ref, atol=0.1, rtol=0.05)


def test_the_whole_network_computes_the_same_with_the_fast_layer_on_and_off():
    import irnet_lib
    torch.manual_seed(0)
    net = irnet_lib.irnet("condconv", num_classes=10, width_mult=0.25).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    net = net.to(memory_format=torch.channels_last)
    outs = []
    for on in (False, True):
        with fast.enabled(on, keep_freed_memory=False):
            net.zero_grad()
            y = net(x)
            y.square().sum().backward()
            outs.append((y.detach(), [p.grad.clone() for p in net.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-10, rtol=1e-10)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
