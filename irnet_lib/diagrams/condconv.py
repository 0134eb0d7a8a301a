"""Figure 4: a conditional convolution drawn with its real weights: routing, the M experts, their mix."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyBboxPatch
from torch import nn

from ..blocks import InvertedResidual, condconv_block
from ..condconv import CondConv2d
from .labels import COLORS, CONDITIONAL, _arrow, _conv_text, _fmt, _routing_label, conv_label

# ----------------------------------------------------------------------------------- Figure 4

def _condconv_inputs(module: nn.Module, x, convs):
    """Run ``module`` (a block, or one CondConv2d) once on ``x`` and return, per conv to draw:
    (name, conv, its input, its routing weights)."""
    if isinstance(module, CondConv2d):
        if module.router is None:
            raise ValueError("this CondConv2d has no routing of its own (per-block routing): pass the whole "
                             "block, condconv_figure(block), so that the block's shared routing is used")
        named = [("conv", module)]
    elif isinstance(module, InvertedResidual):
        named = [(n, getattr(module, n)) for n in convs]
        for n, c in named:
            if not isinstance(c, CondConv2d):
                raise ValueError(f"the block's {n} is a {type(c).__name__}, not a CondConv2d: pass a [C] block "
                                 f"(irnet_lib.blocks.condconv_block)")
    else:
        raise ValueError(f"condconv_figure() takes a CondConv2d or a [C] block, got {type(module).__name__}")
    c_in = module.in_channels
    param = next(module.parameters())
    if x is None:
        x = torch.randn(1, c_in, 56, 56, generator=torch.Generator().manual_seed(0))
    x = x.to(param.device, param.dtype)
    if x.dim() != 4 or x.shape[1] != c_in:
        raise ValueError(f"x must be one (1, {c_in}, H, W) input, got shape {tuple(x.shape)}")
    x = x[:1]
    seen = {}
    hooks = [c.register_forward_pre_hook(lambda _m, args, n=n: seen.__setitem__(n, args)) for n, c in named]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(x)
    finally:
        module.train(was_training)
        for h in hooks:
            h.remove()
    out = []
    for n, c in named:
        args = seen[n]
        inp = args[0]
        with torch.no_grad():
            r = args[1] if len(args) > 1 else c.router(inp)
        shared = None
        if c.router is None:
            shared = (f"the block's routing: {_routing_label(module.router)}\n"
                      f"on the block input, shared by its 3 convs")
        out.append((n, c, inp, r[0], shared))
    return out


def _kernel_image(w: torch.Tensor, depthwise: bool) -> torch.Tensor:
    """What to show of one kernel: for a depthwise conv the FxF filter of channel 0; for a 1x1
    conv the (C_out x C_in) matrix, at most 16 x 16 of it; for a dense FxF conv channel 0 -> 0."""
    if depthwise or w.shape[-1] > 1:
        return w[0, 0]
    return w[:16, :16, 0, 0]


def _draw_condconv_row(ax, name, conv: CondConv2d, x, r, shared: str | None):
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 4.4)
    ax.axis("off")
    M = conv.num_experts
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    experts = conv.expert_weights.detach().float().cpu()
    r = r.detach().float().cpu()
    mixed = (r[:, None] * experts.reshape(M, -1)).sum(0).reshape(experts.shape[1:])
    h, w = x.shape[-2:]
    s = conv.stride
    out_hw = ((h + 2 * conv.padding - conv.kernel_size) // s + 1, (w + 2 * conv.padding - conv.kernel_size) // s + 1)

    def box(x0, y0, bw, bh, text, fc, ec="#555555", lw=0.9, fs=8.5, color="black", gid=None, ls="-"):
        p = FancyBboxPatch((x0, y0), bw, bh, boxstyle="round,pad=0.03", fc=fc, ec=ec, lw=lw, ls=ls)
        if gid:
            p.set_gid(gid)
        ax.add_patch(p)
        ax.text(x0 + bw / 2, y0 + bh / 2, text, ha="center", va="center", fontsize=fs, color=color)

    kind = ("fully grouped (depthwise): a '3D' tensor per expert" if depthwise
            else "not grouped: a '4D' tensor per expert")
    ax.text(0.05, 4.35, f"{name}: {conv_label(conv)}", ha="left", va="top", fontsize=11, fontweight="bold",
            color=CONDITIONAL)
    ax.text(0.05, 4.05, kind, ha="left", va="top", fontsize=8.5, color="#444444")

    # input -> conv -> output, along the top
    y_main = 3.25
    box(0.05, y_main - 0.25, 1.5, 0.5, f"x\n{_fmt(tuple(x.shape[1:]))}", COLORS["io"], fs=8.5)
    box(8.0, y_main - 0.3, 2.3, 0.6, f"{_conv_text(conv, conditional=False)}\nwith the mixed kernel W",
        COLORS["depthwise" if depthwise else "pointwise"], ec=CONDITIONAL, lw=1.6, fs=8, gid="conv")
    _arrow(ax, 1.55, y_main, 8.0, y_main)
    box(10.6, y_main - 0.25, 1.35, 0.5, f"y\n{_fmt((conv.out_channels, *out_hw))}", COLORS["io"], fs=8.5)
    _arrow(ax, 10.3, y_main, 10.6, y_main)

    # routing: GAP -> Linear -> sigmoid -> r
    y_r = 2.3
    values = [f"{v:.2f}" for v in r.tolist()]
    r_text = "r = (" + ",\n".join(", ".join(values[i:i + 4]) for i in range(0, len(values), 4)) + ")"
    if shared:
        box(0.3, y_r - 0.3, 3.95, 0.6, shared, COLORS["routing"], ec=CONDITIONAL, fs=8, color=CONDITIONAL,
            gid="routing", ls="--")
    else:
        fc = conv.router.fc
        _arrow(ax, 0.8, y_main - 0.25, 0.8, y_r + 0.22)
        steps = [(0.3, 1.0, f"GAP\n{fc.in_features}"), (1.6, 1.35, f"Linear\n{fc.in_features}->{fc.out_features}"),
                 (3.25, 1.0, "sigmoid")]
        for i, (x0, bw, text) in enumerate(steps):
            box(x0, y_r - 0.22, bw, 0.44, text, COLORS["routing"], ec=CONDITIONAL, fs=8, color=CONDITIONAL,
                gid="routing")
            if i:
                prev = steps[i - 1]
                _arrow(ax, prev[0] + prev[1], y_r, x0, y_r, color=CONDITIONAL)
    # r (its values for this x) feeds the mixing
    _arrow(ax, 4.25, y_r, 5.05, y_r, color=CONDITIONAL)
    ax.text(6.35, y_r, r_text, ha="center", va="center", fontsize=8.5, color=CONDITIONAL, gid="r")
    _arrow(ax, 6.35, y_r - 0.15, 6.35, 1.0, color=CONDITIONAL)

    # experts -> mixing -> W -> conv
    vmax = float(max(experts.abs().max(), mixed.abs().max()))
    size = min(0.8, 5.2 / M - 0.12)
    for m in range(M):
        xm = 0.15 + m * (5.2 / M)
        iax = ax.inset_axes([xm, 0.35, size, size], transform=ax.transData)
        iax.imshow(_kernel_image(experts[m], depthwise).numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        iax.set_xticks([])
        iax.set_yticks([])
        iax.set_title(f"$W_{m + 1}$", fontsize=9, pad=2)
        iax.set_gid("expert")
    shown = "channel 0's FxF filter" if depthwise or conv.kernel_size > 1 else "C_out x C_in matrix"
    if not depthwise and conv.kernel_size == 1 and (conv.out_channels > 16 or conv.in_channels // conv.groups > 16):
        shown += " (top-left 16x16)"
    ax.text(0.15, 0.12, f"M = {M} expert kernels, each {_fmt(tuple(experts.shape[1:]))}; shown: {shown}",
            ha="left", va="center", fontsize=7.5, color="#444444")
    box(5.55, 0.5, 1.6, 0.5, r"$W=\sum_m r_m W_m$", COLORS["routing"], ec=CONDITIONAL, fs=10, gid="mixing")
    _arrow(ax, 0.15 + (M - 1) * (5.2 / M) + size, 0.75, 5.55, 0.75, color=CONDITIONAL)
    _arrow(ax, 7.15, 0.75, 7.75, 0.75, color=CONDITIONAL)
    iax = ax.inset_axes([7.8, 0.35, size, size], transform=ax.transData)
    iax.imshow(_kernel_image(mixed, depthwise).numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    iax.set_xticks([])
    iax.set_yticks([])
    iax.set_title("$W$ (this x)", fontsize=9, pad=2)
    iax.set_gid("mixed")
    _arrow(ax, 8.6 + 0.05, 0.75, 9.15, 0.75, color=CONDITIONAL)
    ax.plot([9.15, 9.15], [0.75, y_main - 0.3], color=CONDITIONAL, lw=1.0)
    _arrow(ax, 9.15, y_main - 0.6, 9.15, y_main - 0.3, color=CONDITIONAL)
    ax.text(9.25, 1.9, "one kernel per example:\nthe convolution runs once", ha="left", va="center", fontsize=7.5,
            color="#444444")


def condconv_figure(module=None, x=None, convs=("conv_dw", "conv_pw")):
    """Figure 4: conditional convolution, drawn from a real CondConv2d and its real weights.

    One row per conditional conv: the input x, its routing (GAP -> Linear(C_in -> M) -> sigmoid, or
    the block's shared routing vector), the routing weights r it gives for this x, the M expert
    kernels W_m (as stored in ``expert_weights``), their mix W = sum_m r_m W_m, and the one
    convolution with W. The depthwise conv shows the paper's fully grouped "3D" case, a 1x1 conv the
    not grouped "4D" case.

    Args:
        module: a [C] block (``condconv_block(...)``) or one ``CondConv2d`` with its own routing.
            Default: ``condconv_block(16, 16)`` built with seed 0 (weights at initialisation).
        x: one input for ``module``, shape (1, C_in, H, W); default: standard normal, 56 x 56, seed 0.
            The block is run once on it (eval mode, no grad; its mode is restored) and every drawn
            conv's input and routing weights are recorded with hooks.
        convs: for a block, which of its convs to draw, one row each (any of "conv_pw", "conv_dw",
            "conv_pwl").
    Returns:
        the matplotlib Figure.
    """
    if module is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = condconv_block(16, 16)
    if isinstance(convs, str):
        convs = (convs,)
    rows = _condconv_inputs(module, x, convs)
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 4.4 * len(rows)), squeeze=False)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1, hspace=0.05)
    for ax, (name, conv, inp, r, shared) in zip(axes[:, 0], rows):
        _draw_condconv_row(ax, name, conv, inp, r, shared)
    return fig

