"""The complexity counter and Table 4: exact totals, every row of the reference table, the verdicts
on the paper's printed numbers, a cross-check with torch's own FLOP counter, hand arithmetic for
single layers, and MobileNetV2's published figures."""
import copy

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from irnet_lib import CondConv2d, SqueezeExcite, irnet, paper
from irnet_lib.complexity import EVERYTHING, PAPER, count, stage_totals, summary
from irnet_lib.tables import table1, table4

# The reference table ("Table 4, recomputed", shared/reference/README.md), typed in independently of
# irnet_lib.paper: (label, rep, paper MAC, correct MAC, paper Filter Cx, correct weights).
REFERENCE = [
    ("Stem conv 3->16", 1, 1_354_752, 1_354_752, 432, 432),
    ("Block 16->16", 1, 8_228_864, 8_228_864, 38_912, 2_624),
    ("Block 16->24", 1, 9_834_496, 9_834_496, 39_424, 3_136),
    ("Block 24->24", 1, 17_160_192, 17_160_192, 87_552, 5_472),
    ("Block 24->40 S2", 1, 5_494_272, 10_913_280, 89_088, 7_008),
    ("Block 40->40", 2, 22_328_320, 22_328_320, 486_400, 28_480),
    ("Block 40->80 S2", 1, 7_808_640, 7_808_640, 249_600, 20_640),
    ("Block 80->80", 3, 31_799_040, 31_799_040, 2_918_400, 162_240),
    ("Block 80->160 S2", 1, 7_667_520, 7_667_520, 998_400, 79_680),
    ("Block 160->160", 4, 41_269_760, 41_269_760, 15_564_800, 842_240),
    ("Block 160->320", 1, 15_335_040, 15_335_040, 3_993_600, 312_960),
    ("Head conv 320->1280", 1, 20_070_400, 20_070_400, 409_600, 409_600),
    ("GAP + linear 1280->100", 1, 128_000, 128_000, 0, 128_000),
]


def n_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def standard():
    return irnet("standard")


@pytest.fixture(scope="module")
def standard_table4(standard):
    return table4(standard)


# ---------------------------------------------------------------- the standard network, exactly

def test_standard_totals(standard):
    layers = count(standard)
    assert layers["macs"].sum() == 193_898_304
    assert layers.loc[layers["component"] == "conv", "macs"].sum() == 193_770_304   # without the linear
    assert layers["weights"].sum() == 2_002_512
    assert layers.loc[layers["component"] == "conv", "weights"].sum() == 1_874_512
    assert layers["biases"].sum() == 100
    assert count(standard, bn=True)["params"].sum() == 2_029_572 == n_params(standard)
    assert set(layers["component"]) == {"conv", "linear"}          # nothing else in [A] by default


def test_standard_default_is_the_paper_convention(standard):
    pd.testing.assert_frame_equal(count(standard), count(standard, **PAPER))


def test_every_row_of_the_reference_table(standard_table4):
    t = standard_table4
    assert list(t.index) == [r[0] for r in REFERENCE] + ["Total"]
    assert list(t["rep"].iloc[:-1]) == [r[1] for r in REFERENCE]
    assert list(t["macs"].iloc[:-1]) == [r[3] for r in REFERENCE]
    assert list(t["weights"].iloc[:-1]) == [r[5] for r in REFERENCE]
    assert list(t["biases"].iloc[:-1]) == [0] * 12 + [100]
    assert t.loc["Total", ["macs", "weights", "biases"]].tolist() == [193_898_304, 2_002_512, 100]
    assert list(t.columns) == ["operation", "rep", "macs", "weights", "biases"]   # no extras in [A]


def test_table4_operations_are_the_papers_words(standard_table4):
    assert list(standard_table4["operation"].iloc[:-1]) == [r.operation for r in paper.TABLE_4]


def test_table4_with_everything_counted_sums_to_all_parameters(standard):
    t = table4(standard, **EVERYTHING)
    assert t.loc["Total", "total_params"] == 2_029_572
    assert t.loc["Total", "bn_params"] == 26_960
    assert t.loc["Total", "total_macs"] == t.loc["Total", ["macs", "bn_macs", "pool_macs", "activation_ops"]].sum()


def test_resolution_scales_conv_macs_not_the_linear(standard):
    # At twice the side every conv does 4x the work; the classifier still sees a 1280-vector.
    assert count(standard, (3, 112, 112))["macs"].sum() == 4 * 193_770_304 + 128_000
    assert count(standard, (3, 112, 112))["weights"].sum() == 2_002_512


# ---------------------------------------------------------------- the paper's printed table

def test_printed_table_is_the_papers(standard_table4):
    assert [(r.rep, r.macs, r.filter_cx) for r in paper.TABLE_4] == [(r[1], r[2], r[4]) for r in REFERENCE]
    assert (paper.TABLE_4_TOTAL.macs, paper.TABLE_4_TOTAL.filter_cx) == (193_898_304, 24_876_208)
    # The printed Filter Cx total is the sum of its (wrong) column; the printed MAC total is not.
    assert sum(r.filter_cx for r in paper.TABLE_4) == 24_876_208
    assert sum(r.macs for r in paper.TABLE_4) == 188_479_296 == 193_898_304 - 5_419_008


def test_recount_without_alternatives_is_table4(standard, standard_table4):
    r = paper.recount(count(standard))
    assert r["macs"].tolist() == standard_table4["macs"].tolist()
    assert r["weights"].tolist() == standard_table4["weights"].tolist()


def test_recount_alternatives_reproduce_the_printed_columns(standard):
    layers = count(standard)
    dense = paper.recount(layers, dense_3x3=True, no_linear_weights=True)
    assert dense["weights"].tolist() == [r[4] for r in REFERENCE] + [24_876_208]
    late = paper.recount(layers, expand_at_output=True)
    assert late.loc[4, "macs"] == 5_494_272                  # the 24->40 row as printed
    # Counted the same way, the other stride-2 rows would lose 3/4 of their expansion MACs:
    # they do not in the paper, so only the 24->40 row was miscounted.
    assert late.loc[6, "macs"] == 7_808_640 - 40 * 160 * 28 * 28 * 3 // 4 != paper.TABLE_4[6].macs


def test_reconciliation_verdicts(standard):
    r = paper.reconcile_table4(standard)
    assert list(r.index) == [row[0] for row in REFERENCE] + ["Total"]
    assert r["printed_macs"].tolist()[:-1] == [row[2] for row in REFERENCE]
    assert r["macs"].tolist()[:-1] == [row[3] for row in REFERENCE]
    mac_verdicts = ["matches"] * 13
    mac_verdicts[4] = "expansion at output resolution"
    assert r["macs_verdict"].tolist() == mac_verdicts + ["matches; printed rows sum to 188,479,296"]
    assert r["weights_verdict"].tolist() == (["matches"] + ["3x3 counted dense"] * 10 + ["matches",
                                             "linear weights left out",
                                             "3x3 counted dense + linear weights left out"])
    assert r.loc["Block 24->40 S2", "macs_diff"] == -5_419_008
    assert r.loc["Total", "weights_diff"] == 24_876_208 - 2_002_512


def test_unexplained_numbers_are_called_so():
    assert paper._verdict(123, {(): 1, ("dense_3x3",): 2}) == "unexplained"


def test_reconcile_refuses_a_different_table():
    with pytest.raises(ValueError, match="irnet\\('standard'\\)"):
        paper.reconcile_table4(irnet(depth_mult=2))          # other repeats: not the printed table
    with pytest.raises(ValueError, match="irnet\\('standard'\\)"):
        paper.reconcile_table4(irnet(kernel_size=5))         # other operations


def test_table1_regenerated_is_the_papers(standard):
    pd.testing.assert_frame_equal(table1(standard), paper.table1())


def test_table1_follows_the_knobs():
    t = table1(irnet(width_mult=0.5, depth_mult=2), (3, 64, 64))
    assert t["input"].tolist()[:3] == ["3x64x64", "8x64x64", "8x64x64"]
    assert t["repeat"].tolist()[1:11] == [2, 2, 2, 2, 4, 2, 6, 2, 8, 2]
    assert t["input"].iloc[-1] == "1x100"


# ---------------------------------------------------------------- SE and CondConv networks

def test_se_table(standard_table4):
    model = irnet("se")
    t = table4(model)
    # The convs and the classifier are those of [A]; SE adds its own columns.
    assert t["macs"].tolist() == standard_table4["macs"].tolist()
    assert t["weights"].tolist() == standard_table4["weights"].tolist()
    assert list(t.columns) == ["operation", "rep", "macs", "weights", "biases", "se_macs", "se_params",
                               "se_scale_macs", "total_macs", "total_params"]
    # Block 16->16: Ne = 64, hidden 16: two 64x16 linears with biases; scaling 64 x 56 x 56.
    assert t.loc["Block 16->16", ["se_macs", "se_params", "se_scale_macs"]].tolist() == [2048, 2128, 200_704]
    # Block 24->40 S2: the SE sees the 96 x 28 x 28 map after the strided depthwise conv.
    assert t.loc["Block 24->40 S2", "se_scale_macs"] == 96 * 28 * 28
    assert t.loc["Total", ["se_macs", "se_params", "se_scale_macs"]].tolist() == [1_280_512, 1_287_112, 1_420_608]
    assert t.loc["Total", "total_macs"] == 196_599_424
    assert t.loc["Total", "total_params"] + 26_960 == 3_316_684 == n_params(model)


@pytest.mark.parametrize("routing,routing_macs,total_macs,total_params", [
    ("conv", 47_520, 202_504_864, 7_757_836), ("block", 5_280, 202_462_624, 7_715_468)])
def test_condconv_table(standard_table4, routing, routing_macs, total_macs, total_params):
    model = irnet("condconv", routing=routing)
    t = table4(model)
    assert t["macs"].tolist() == standard_table4["macs"].tolist()        # the conv work itself is unchanged
    blocks = t.iloc[1:11]
    assert (blocks["expert_params"] == 3 * blocks["weights"]).all()       # M - 1 = 3 extra kernels
    assert (blocks["mixing_macs"] == 4 * blocks["weights"]).all()         # M MACs per kernel coefficient
    assert t.loc["Total", "mixing_macs"] == 5_857_920
    assert t.loc["Total", "routing_macs"] == routing_macs
    assert t.loc["Total", "total_macs"] == total_macs
    assert t.loc["Total", "total_params"] + 26_960 == total_params == n_params(model)
    assert count(model, **EVERYTHING)["params"].sum() == n_params(model)


def test_paper_convention_drops_the_enhancement_extras():
    layers = count(irnet("condconv"), **PAPER)
    assert set(layers["component"]) == {"conv", "experts", "linear", "se"}


# ---------------------------------------------------------------- torch's FLOP counter

def _flops(model, input_size=(3, 56, 56)):
    # FLOPs depend on shapes only: a copy on the meta device is counted in milliseconds.
    twin = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        twin(torch.randn(1, *input_size, device="meta"))
    return fc


def test_flop_counter_agrees_per_layer_on_the_standard_network(standard):
    fc = _flops(standard)
    layers = count(standard)
    assert fc.get_total_flops() == 2 * 193_898_304
    per_module = fc.get_flop_counts()
    for layer, macs in zip(layers["layer"], layers["macs"]):
        assert sum(per_module[f"IRNet.{layer}"].values()) == 2 * macs, layer


@pytest.mark.parametrize("block,routing", [("se", "conv"), ("condconv", "conv"), ("condconv", "block")])
def test_flop_counter_agrees_on_what_it_counts(block, routing):
    """FlopCounterMode counts convolutions and matrix products only: the SE scaling (an elementwise
    multiply), BN and pooling are invisible to it, so they are left out of the comparison. The
    CondConv's own work *is* all matrix products and convolutions: its kernel mixing is an mm, its
    1x1 conv a bmm, its depthwise conv a grouped convolution over the folded batch, its routing an
    addmm. Those add up to what the counter reports analytically, per CondConv2d module too."""
    model = irnet(block, routing=routing)
    fc = _flops(model)
    layers = count(model, se_scale=False)
    assert fc.get_total_flops() == 2 * layers["macs"].sum()
    per_module = fc.get_flop_counts()
    for name, m in model.named_modules():
        if isinstance(m, CondConv2d):
            own = (layers["layer"] == name) | layers["layer"].str.startswith(name + ".")   # conv, mixing, routing
            mine = layers.loc[own, "macs"].sum()
            assert sum(per_module[f"IRNet.{name}"].values()) == 2 * mine, name


# ---------------------------------------------------------------- hand arithmetic, one layer at a time

def one(layer, input_size, **kw):
    return count(nn.Sequential(layer), input_size, **kw)


def test_dense_conv_by_hand():
    r = one(nn.Conv2d(3, 8, 3, padding=1), (3, 10, 10))
    assert r[["kind", "macs", "weights", "biases"]].values.tolist() == [["dense", 8 * 10 * 10 * 3 * 9, 216, 8]]


def test_grouped_conv_by_hand():
    r = one(nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4, bias=False), (8, 10, 10))
    assert r[["kind", "macs", "weights", "output_shape"]].values.tolist() == \
        [["grouped", 16 * 5 * 5 * (8 // 4) * 9, 16 * 2 * 9, (16, 5, 5)]]


def test_depthwise_conv_by_hand():
    r = one(nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False), (8, 6, 6))
    assert r[["kind", "macs", "weights"]].values.tolist() == [["depthwise", 8 * 36 * 25, 8 * 25]]


def test_pointwise_conv_by_hand():
    r = one(nn.Conv2d(8, 4, 1, bias=False), (8, 6, 6))
    assert r[["kind", "macs", "weights"]].values.tolist() == [["1x1", 4 * 36 * 8, 32]]


def test_linear_by_hand():
    r = one(nn.Linear(20, 7), (1, 2, 20))          # a Linear on (1, 2, 20): 2 rows of 20 features
    assert r[["macs", "weights", "biases", "params"]].values.tolist() == [[2 * 20 * 7, 140, 7, 147]]


def test_condconv_1x1_by_hand():
    r = one(CondConv2d(8, 16, 1, num_experts=3), (8, 5, 5), pool=True).set_index("component")
    w1 = 16 * 8
    assert r.loc["conv", ["macs", "weights"]].tolist() == [16 * 25 * 8, w1]
    assert r.loc["experts", ["macs", "weights"]].tolist() == [0, 2 * w1]
    assert r.loc["mixing", ["macs", "weights"]].tolist() == [3 * w1, 0]
    assert r.loc["routing", ["macs", "weights", "biases"]].tolist() == [8 * 3, 24, 3]
    assert r.loc["pool", "macs"] == 8 * 25                     # the routing's GAP
    assert r["params"].sum() == sum(p.numel() for p in CondConv2d(8, 16, 1, num_experts=3).parameters())


def test_condconv_depthwise_by_hand():
    conv = CondConv2d(8, 8, 3, stride=2, groups=8, num_experts=4)
    r = one(conv, (8, 6, 6), routing=False).set_index("component")
    assert r.loc["conv", ["kind", "macs", "weights"]].tolist() == ["depthwise", 8 * 3 * 3 * 9, 72]
    assert r.loc["mixing", "macs"] == 4 * 72
    assert "routing" not in r.index


def test_squeeze_excite_by_hand():
    r = one(SqueezeExcite(16, 4), (16, 5, 5), pool=True)
    assert r[["component", "macs", "params"]].values.tolist() == [
        ["se", 16 * 4, 16 * 4 + 4], ["se", 4 * 16, 4 * 16 + 16], ["se_scale", 16 * 25, 0], ["pool", 16 * 25, 0]]
    assert one(SqueezeExcite(16, 4), (16, 5, 5), se_scale=False)["component"].tolist() == ["se", "se"]


def test_batchnorm_pool_and_activations_only_when_asked():
    net = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    assert count(net, (8, 5, 5)).empty
    r = count(net, (8, 5, 5), bn=True, pool=True, activations=True)
    assert r[["component", "macs", "params"]].values.tolist() == [["bn", 200, 16], ["activation", 200, 0],
                                                                  ["pool", 200, 0]]


# ---------------------------------------------------------------- any model: MobileNetV2

def test_mobilenet_v2_published_figures():
    model = torchvision.models.mobilenet_v2()
    layers = count(model, (3, 224, 224))
    macs = layers["macs"].sum()
    assert abs(macs - 300e6) < 0.01 * 300e6          # "300 M multiply-adds"
    assert macs == _flops(model, (3, 224, 224)).get_total_flops() // 2
    params = count(model, (3, 224, 224), bn=True)["params"].sum()
    assert params == n_params(model) == 3_504_872     # "3.5 M parameters"
    assert abs(params - 3.5e6) < 0.01 * 3.5e6


# ---------------------------------------------------------------- behaviour and errors

def test_count_leaves_the_model_as_it_was(standard):
    standard.train()
    before = {k: v.clone() for k, v in standard.state_dict().items()}
    count(standard)
    assert standard.training
    assert all(torch.equal(before[k], v) for k, v in standard.state_dict().items())   # BN stats untouched
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in standard.modules())
    table4(standard)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in standard.modules())


def test_summary_and_stage_totals(standard):
    s = summary(standard)
    assert s.to_dict() == {"macs": 193_898_304, "weights": 2_002_512, "params": 2_029_572, "output_shape": (100,)}
    st = stage_totals(count(standard))
    assert list(st.index) == ["stem", "16 ch, 56x56", "24 ch, 56x56", "40 ch, 28x28", "80 ch, 14x14",
                              "160 ch, 7x7", "320 ch, 7x7", "head", "classifier"]
    assert st.loc["160 ch, 7x7", "params"] == 79_680 + 842_240          # the 160-channel stage
    assert st["params_%"].idxmax() == "160 ch, 7x7"
    roles = stage_totals(count(standard), "role")
    assert roles.loc["depthwise", "params"] == 47_520 and roles.loc["depthwise", "macs"] == 12_785_472


@pytest.mark.parametrize("bad", [(56, 56), (3, 56, 0), "3x56x56", (3.0, 56, 56), (1, 3, 56, 56)])
def test_bad_input_size_is_a_clear_error(standard, bad):
    with pytest.raises(ValueError, match="input_size"):
        count(standard, bad)


def test_tables_need_an_irnet():
    with pytest.raises(ValueError, match="count\\(model\\)"):
        table4(nn.Sequential(nn.Conv2d(3, 8, 3)))
    with pytest.raises(ValueError, match="count\\(model\\)"):
        table1(nn.Sequential(nn.Conv2d(3, 8, 3)))
    with pytest.raises(ValueError, match="nn.Module"):
        count("resnet18")
    with pytest.raises(ValueError, match="not a column"):
        stage_totals(count(irnet()), "colour")


class _Branchy(nn.Module):
    """Data-dependent control flow: cannot run on the meta device, so count() runs it for real."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y if y.sum() > 0 else -y


def test_models_that_cannot_run_on_meta_are_run_for_real():
    net = _Branchy().train()
    assert count(net, (3, 8, 8))["macs"].tolist() == [4 * 6 * 6 * 3 * 9]
    assert net.training and not net.conv._forward_hooks


def test_meta_run_and_real_run_agree(monkeypatch):
    import irnet_lib.complexity as cx

    model = irnet("condconv", routing="block")
    on_meta = count(model, (3, 24, 24), **EVERYTHING)

    def no_meta(m):
        raise NotImplementedError("forced real run")

    monkeypatch.setattr(cx, "_meta_twin", no_meta)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)      # a real run; one thread is far faster on a shared, loaded CPU
    try:
        real = count(model, (3, 24, 24), **EVERYTHING)
    finally:
        torch.set_num_threads(threads)
    pd.testing.assert_frame_equal(real, on_meta)
    assert table1(model, (3, 24, 24))["input"].tolist()[-3:] == ["320x3x3", "1280x3x3", "1x100"]
