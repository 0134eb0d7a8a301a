"""Table 1 as built: parameter counts, shapes entering every row, knobs and their errors."""
import itertools

import pytest
import torch

from irnet_lib import TABLE_1, irnet
from irnet_lib.network import make_divisible, table1_rows


def n_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("block,expected", [("standard", 2_029_572), ("se", 3_316_684)])
def test_exact_parameter_counts(block, expected):
    assert n_params(irnet(block)) == expected


def test_condconv_parameter_counts():
    # [C] = [B] + (M - 1) extra copies of every block conv + a routing Linear(C_in, M) per conv.
    assert n_params(irnet("condconv")) == 7_757_836
    assert n_params(irnet("condconv", routing="block")) == 7_715_468


@pytest.mark.parametrize("block", ["standard", "se", "condconv"])
def test_output_shape(block):
    assert irnet(block).eval()(torch.randn(2, 3, 56, 56)).shape == (2, 100)


@pytest.mark.parametrize("block", ["standard", "se", "condconv"])
def test_feature_map_entering_each_row_has_table1_shape(block):
    model = irnet(block).eval()
    seen = []
    hook = lambda m, args: seen.append(tuple(args[0].shape[1:]))
    model.stem.register_forward_pre_hook(hook)
    for row in model.rows:
        row.register_forward_pre_hook(hook)
    model.head.register_forward_pre_hook(hook)
    model.pool.register_forward_pre_hook(hook)
    model(torch.randn(1, 3, 56, 56))
    assert seen == [r.input for r in TABLE_1]


def test_table1_as_the_paper_prints_it():
    assert [r.repeat for r in TABLE_1] == [1, 1, 1, 1, 1, 2, 1, 3, 1, 4, 1, 1, 1]
    blocks = [r for r in TABLE_1 if r.op == "block"]
    assert all(r.F == 3 for r in blocks) and sum(r.repeat for r in blocks) == 16
    assert [r.S for r in blocks] == [1, 1, 1, 2, 1, 2, 1, 2, 1, 1]
    # The ID column is exactly the rule "Ni == No and S == 1" (No = the next row's Ni).
    for row, nxt in itertools.pairwise(TABLE_1[1:-1]):
        assert row.ID == (row.input[0] == nxt.input[0] and row.S == 1)


def test_model_layers_follow_table1():
    model = irnet()
    assert model.stem[0].stride == (1, 1) and model.stem[0].kernel_size == (3, 3)
    assert [len(r) for r in model.rows] == [r.repeat for r in TABLE_1 if r.op == "block"]
    assert [b.has_skip for r in model.rows for b in r] == [True, False, True, False, True, True, False,
                                                          True, True, True, False, True, True, True, True, False]
    assert all(b.mid_channels == 4 * b.in_channels for r in model.rows for b in r)
    assert (model.head[0].in_channels, model.head[0].out_channels) == (320, 1280)
    assert model.classifier.bias is not None and model.classifier.out_features == 100


def test_knobs_change_the_design():
    m = irnet("se", num_classes=10, width_mult=0.5, depth_mult=2, expansion=6, kernel_size=5, se_reduction=8)
    b = m.rows[1][0]
    assert (b.in_channels, b.mid_channels, b.conv_dw.kernel_size) == (8, 48, (5, 5))
    assert b.se.fc1.out_features == 6
    assert [len(r) for r in m.rows] == [2, 2, 2, 2, 4, 2, 6, 2, 8, 2]
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    cc = irnet("condconv", num_experts=2, routing="block")
    assert cc.rows[0][0].conv_pw.num_experts == 2 and cc.rows[0][0].router is not None


def test_defaults_reproduce_table1_exactly():
    assert table1_rows() == list(TABLE_1)
    assert [make_divisible(c) for c in (16, 24, 40, 80, 160, 320, 1280)] == [16, 24, 40, 80, 160, 320, 1280]


@pytest.mark.parametrize("kwargs,match", [
    (dict(block="resnet"), "block must be one of"),
    (dict(num_classes=0), "num_classes"),
    (dict(width_mult=0), "width_mult"),
    (dict(depth_mult=-1), "depth_mult"),
    (dict(expansion=0), "expansion"),
    (dict(kernel_size=4), "kernel_size"),
    (dict(block="se", se_reduction=0), "se_reduction"),
    (dict(block="se", se_reduction=100), "se_reduction"),
    (dict(block="condconv", num_experts=0), "num_experts"),
    (dict(block="condconv", routing="layer"), "routing"),
])
def test_bad_arguments_raise_value_error_naming_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        irnet(**kwargs)


@pytest.mark.parametrize("block", ["standard", "se", "condconv"])
def test_channels_last_and_bf16_autocast_match_fp32(block):
    torch.manual_seed(0)
    model = irnet(block, num_classes=10).eval()
    x = torch.randn(2, 3, 56, 56)
    ref = model(x)
    model_cl = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model_cl(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-4, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


@pytest.mark.parametrize("block", ["standard", "condconv"])
def test_torch_compile(block):
    torch.manual_seed(0)
    model = irnet(block, num_classes=10, width_mult=0.25, depth_mult=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)


def test_train_step_reduces_loss():
    torch.manual_seed(0)
    model = irnet("condconv", num_classes=4, width_mult=0.25, depth_mult=0.5)
    x, y = torch.randn(8, 3, 24, 24), torch.arange(8) % 4
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
