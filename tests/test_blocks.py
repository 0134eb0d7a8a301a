"""Figure 2's three blocks: structure, identity rule, SE, composition and argument checks."""
import inspect

import pytest
import torch
from torch import nn

from irnet_lib.blocks import BLOCKS, InvertedResidual, SqueezeExcite, condconv_block, se_block, standard_block
from irnet_lib.condconv import CondConv2d


def test_standard_block_layers_and_shapes():
    b = standard_block(16, 24, stride=2)
    assert (b.conv_pw.in_channels, b.conv_pw.out_channels, b.conv_pw.kernel_size) == (16, 64, (1, 1))
    assert (b.conv_dw.groups, b.conv_dw.kernel_size, b.conv_dw.stride, b.conv_dw.padding) == (64, (3, 3), (2, 2), (1, 1))
    assert (b.conv_pwl.in_channels, b.conv_pwl.out_channels) == (64, 24)
    assert all(m.bias is None for m in (b.conv_pw, b.conv_dw, b.conv_pwl))
    assert isinstance(b.se, nn.Identity) and not b.has_skip
    assert b(torch.randn(2, 16, 56, 56)).shape == (2, 24, 28, 28)


def test_no_relu_after_projection_nor_after_add():
    b = standard_block(8, 8).eval()
    relus = [n for n, m in b.named_modules() if isinstance(m, nn.ReLU)]
    assert relus == ["act1", "act2"]
    x = torch.randn(1, 8, 6, 6)
    # Linear bottleneck: the output can be negative, which a final ReLU would forbid.
    assert (b(x) - x).min() < 0


@pytest.mark.parametrize("ni,no,s,expected", [(16, 16, 1, True), (16, 24, 1, False), (24, 24, 2, False), (160, 320, 1, False)])
def test_identity_iff_same_channels_and_stride_1(ni, no, s, expected):
    assert standard_block(ni, no, stride=s).has_skip is expected


def test_identity_adds_the_input():
    b = standard_block(8, 8).eval()
    x = torch.randn(2, 8, 5, 5)
    branch = b.bn3(b.conv_pwl(b.se(b.act2(b.bn2(b.conv_dw(b.act1(b.bn1(b.conv_pw(x)))))))))
    torch.testing.assert_close(b(x), x + branch)


def test_identity_true_where_impossible_is_refused():
    with pytest.raises(ValueError, match="has_skip=True needs Ni == No and S == 1"):
        standard_block(16, 24, has_skip=True)


def test_se_layer_matches_figure_3():
    se = SqueezeExcite(64, reduction=4)
    assert (se.fc1.in_features, se.fc1.out_features, se.fc2.out_features) == (64, 16, 64)
    assert se.fc1.bias is not None and se.fc2.bias is not None
    x = torch.randn(2, 64, 7, 7)
    w = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean((2, 3))))))
    torch.testing.assert_close(se(x), x * w[:, :, None, None])


def test_se_block_sits_between_depthwise_and_projection():
    b = se_block(16, 16)
    names = [n for n, _ in b.named_children()]
    assert names.index("act2") < names.index("se") < names.index("conv_pwl")
    assert isinstance(b.se, SqueezeExcite) and b.se.fc1.out_features == 64 // 4


@pytest.mark.parametrize("routing", ["conv", "block"])
def test_condconv_block_makes_all_three_convs_conditional(routing):
    b = condconv_block(16, 24, stride=2, num_experts=4, routing=routing)
    convs = [b.conv_pw, b.conv_dw, b.conv_pwl]
    assert all(isinstance(c, CondConv2d) and c.num_experts == 4 for c in convs)
    assert b.conv_dw.groups == 64
    assert isinstance(b.se, SqueezeExcite)
    if routing == "conv":
        assert b.router is None and all(c.router is not None for c in convs)
    else:
        assert b.router is not None and all(c.router is None for c in convs)
        assert b.router.fc.in_features == 16
    assert b(torch.randn(3, 16, 14, 14)).shape == (3, 24, 7, 7)


def test_blocks_share_the_leading_arguments_take_only_their_own_and_are_one_class():
    common = ["in_channels", "out_channels", "expansion", "kernel_size", "stride", "has_skip"]
    own = {"standard": [], "se": ["se_reduction"], "condconv": ["se_reduction", "num_experts", "routing"]}
    for name, fn in BLOCKS.items():
        assert list(inspect.signature(fn).parameters) == common + own[name]
        assert type(fn(8, 8)) is InvertedResidual
        assert "Ni" in fn.__doc__ or "Ni" in InvertedResidual.__doc__
    with pytest.raises(TypeError):
        standard_block(8, 8, se_reduction=4)   # a knob the block does not use is not accepted


def test_irnet_refuses_a_changed_knob_its_block_does_not_use():
    import irnet_lib
    with pytest.raises(ValueError, match="num_experts=8 has no effect on the 'se' block; it applies to 'condconv'"):
        irnet_lib.irnet("se", num_experts=8)
    with pytest.raises(ValueError, match="se_reduction=8 .* 'standard'.*'se' and 'condconv'"):
        irnet_lib.irnet("standard", se_reduction=8)
    irnet_lib.irnet("standard", se_reduction=4, num_experts=4, routing="conv")   # the defaults are fine


def test_docstrings_name_every_paper_symbol():
    import irnet_lib.blocks as blocks
    for symbol in ("Ni", "Ne", "No", "F", "S", "ID", "R", "M"):
        assert f"\n{symbol} " in blocks.__doc__


@pytest.mark.parametrize("fn,kwargs,match", [
    (standard_block, dict(kernel_size=4), "kernel_size"),
    (standard_block, dict(stride=3), "stride"),
    (standard_block, dict(expansion=0), "expansion"),
    (se_block, dict(se_reduction=1000), "se_reduction"),
    (se_block, dict(se_reduction=0), "se_reduction"),
    (condconv_block, dict(num_experts=0), "num_experts"),
    (condconv_block, dict(routing="layer"), "routing"),
])
def test_bad_block_arguments_name_the_parameter(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(16, 16, **kwargs)
