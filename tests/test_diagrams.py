"""Figures 2 and 4 drawn from the modules: they draw, they say what the modules are, and the
identity arrow appears exactly where the block has one."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.text import Text

from irnet_lib import diagrams
from irnet_lib.blocks import condconv_block, se_block, standard_block


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def texts(fig):
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def all_axes(fig):
    return [a for ax in fig.axes for a in (ax, *ax.child_axes)]


def has_gid(fig, gid):
    return any(getattr(a, "get_gid", lambda: None)() == gid for a in fig.findobj())


@pytest.mark.parametrize("make", [standard_block, se_block, condconv_block])
def test_each_block_draws_with_its_real_channel_counts(make):
    block = make(24, 40, stride=2)
    fig = diagrams.block_figure(block)
    found = "\n".join(texts(fig))
    for label in ("1x1 ", "24->96", "3x3 depthwise", "96 ch", "stride 2", "96->40", "input  24x56x56",
                  "output  40x28x28", "96x28x28"):
        assert label in found, label
    assert found.count("BN, ReLU") == 2 and "no ReLU" in found


def test_labels_follow_the_modules():
    a = diagrams.block_labels(standard_block(16, 16))
    assert a[0].startswith("1x1 conv 16->64") and "3x3 depthwise 64 ch" in a[1] and a[2].startswith("1x1 conv 64->16")
    b = diagrams.block_labels(se_block(16, 16, se_reduction=8))
    assert any(s.startswith("SE 64->8->64") for s in b)
    c = diagrams.block_labels(condconv_block(16, 16, num_experts=6))
    assert "1x1 CondConv 16->64, M=6" in c[0] and "own routing: GAP, Linear 16->6, sigmoid" in c[0]
    shared = diagrams.block_labels(condconv_block(16, 16, routing="block"))
    assert shared[0].startswith("routing (shared") and "Linear 16->4" in shared[0]
    assert diagrams.conv_label(torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)) == "3x3 conv 3->16"


def test_identity_arrow_only_when_the_block_has_a_skip():
    with_skip = standard_block(16, 16)
    assert with_skip.has_skip and has_gid(diagrams.block_figure(with_skip), "identity")
    for no_skip in (standard_block(24, 24, stride=2), standard_block(16, 24), se_block(160, 320)):
        assert not no_skip.has_skip
        fig = diagrams.block_figure(no_skip)
        assert not has_gid(fig, "identity")
        assert any(t.startswith("no identity") for t in texts(fig))


def test_figure_2_has_three_panels_titled_by_content():
    fig = diagrams.blocks_figure()
    assert len(fig.axes) == 3
    found = texts(fig)
    for title in ("[A] standard", "[B] SE", "[C] SE + CondConv"):
        assert title in found
    assert sum("SE 64->16->64" in t for t in found) == 2


def test_drawing_leaves_the_block_as_it_was():
    block = se_block(16, 16).train()
    before = {k: v.clone() for k, v in block.state_dict().items()}
    diagrams.block_figure(block)
    diagrams.condconv_figure(condconv_block(16, 16).train())
    assert block.training
    assert all(torch.equal(before[k], v) for k, v in block.state_dict().items())


def test_condconv_figure_shows_experts_routing_and_mixed_kernel():
    torch.manual_seed(0)
    block = condconv_block(16, 16, num_experts=5)
    fig = diagrams.condconv_figure(block, convs=("conv_dw", "conv_pw"))
    experts = [a for a in all_axes(fig) if a.get_gid() == "expert"]
    assert len(experts) == 2 * 5
    assert sum(a.get_gid() == "mixed" for a in all_axes(fig)) == 2
    found = "\n".join(texts(fig))
    assert "3x3 depthwise CondConv 64 ch, M=5" in found and "1x1 CondConv 16->64, M=5" in found
    assert "Linear\n64->5" in found and "Linear\n16->5" in found
    assert "'3D'" in found and "'4D'" in found
    assert "3x3 depthwise 64 ch\nwith the mixed kernel W" in found and "1x1 conv 16->64\nwith the mixed kernel W" in found
    # The mixed kernel drawn is sum_m r_m W_m for the routing weights of this input.
    x = torch.randn(1, 16, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        block.eval()
        r = block.conv_pw.router(x)[0]
    mixed = (r[:, None, None, None, None] * block.conv_pw.expert_weights).sum(0)
    shown = next(a for a in all_axes(fig) if a.get_gid() == "mixed" and a.bbox.y0 < fig.bbox.height / 2)
    torch.testing.assert_close(torch.as_tensor(shown.images[0].get_array().data), mixed[:16, :16, 0, 0].detach())


def test_condconv_figure_with_shared_routing_and_refusals():
    fig = diagrams.condconv_figure(condconv_block(16, 16, routing="block"), convs="conv_pwl")
    assert any("the block's routing" in t for t in texts(fig))
    with pytest.raises(ValueError, match="pass the whole block"):
        diagrams.condconv_figure(condconv_block(16, 16, routing="block").conv_pw)
    with pytest.raises(ValueError, match="not a CondConv2d"):
        diagrams.condconv_figure(se_block(16, 16))
    with pytest.raises(ValueError, match="draws blocks"):
        diagrams.blocks_figure([torch.nn.Conv2d(3, 3, 1)])


def test_entry_point_writes_both_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("IRNET_FIGURES", str(tmp_path))
    written = diagrams.main()
    assert sorted(p.name for p in written) == ["fig2_blocks.png", "fig4_condconv.png"]
    assert all(p.stat().st_size > 10_000 for p in written)
