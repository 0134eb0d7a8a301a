"""Figures 2 and 4 of the paper, drawn from the modules themselves.

Nothing here is typed in: every box is one field of a real block (``conv_pw``, ``bn1``, ``act1``,
``conv_dw``, ..., ``se``, ``conv_pwl``, ``bn3``, ``routing``), labelled with its real layer type and
channel counts, and every tensor shape between the boxes is recorded with forward hooks while a
copy of the block runs on PyTorch's "meta" device (shapes only, no arithmetic). The identity arrow
is drawn only when the block's ``has_skip`` is true. Change a block (another width, stride, R, M or
routing) and the drawing follows.

- :func:`block_figure` / :func:`blocks_figure`: Figure 2, one block or several side by side;
- :func:`condconv_figure`: Figure 4, a conditional convolution: routing (GAP -> Linear -> sigmoid),
  the M expert kernels and their mix into the one kernel that is convolved, with the real weights;
- :func:`block_labels`, :func:`conv_label`: the texts of the boxes, for use elsewhere.

Each function returns the matplotlib ``Figure``; the caller saves it. ``python -m irnet_lib.diagrams``
writes ``fig2_blocks.png`` and ``fig4_condconv.png`` into ``figures/`` (or the ``IRNET_FIGURES`` folder).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Circle, FancyBboxPatch
from torch import nn

from .blocks import InvertedResidual, SqueezeExcite, condconv_block, se_block, standard_block
from .condconv import CondConv2d, Routing

__all__ = ["conv_label", "block_title", "block_labels", "block_figure", "blocks_figure", "condconv_figure", "main"]

COLORS = {"pointwise": "#dbe9f6", "depthwise": "#d9efd3", "dense": "#e4e4f4", "se": "#fde3c9",
          "io": "#f2f2f2", "routing": "#efe3f7"}
CONDITIONAL = "#7b4ea3"      # edge and text colour of everything conditional (CondConv, routing)
IDENTITY = "#c0392b"


# ----------------------------------------------------------------------------------- labels

def _first(v):
    return v[0] if isinstance(v, tuple) else v


def conv_label(conv: nn.Module) -> str:
    """What a conv is, from its fields: "1x1 conv 16->64", "3x3 depthwise 64 ch, stride 2",
    "1x1 CondConv 16->64, M=4", "3x3 depthwise CondConv 64 ch, M=4"."""
    if not isinstance(conv, (nn.Conv2d, CondConv2d)):
        raise ValueError(f"conv_label() takes an nn.Conv2d or a CondConv2d, got {type(conv).__name__}")
    return _conv_text(conv, isinstance(conv, CondConv2d))


def _conv_text(conv, conditional: bool) -> str:
    k, s = _first(conv.kernel_size), _first(conv.stride)
    c_in, c_out, g = conv.in_channels, conv.out_channels, conv.groups
    name = "CondConv" if conditional else "conv"
    if g > 1 and g == c_in == c_out:
        text = f"{k}x{k} depthwise {'CondConv ' if conditional else ''}{c_in} ch"
    elif g == 1:
        text = f"{k}x{k} {name} {c_in}->{c_out}"
    else:
        text = f"{k}x{k} {name} {c_in}->{c_out}, groups {g}"
    if conditional:
        text += f", M={conv.num_experts}"
    if s != 1:
        text += f", stride {s}"
    return text


def _routing_label(routing: Routing) -> str:
    return f"GAP, Linear {routing.fc.in_features}->{routing.fc.out_features}, sigmoid"


def _post_label(*modules) -> str:
    """"BN, ReLU" from the modules that follow a conv (Identity skipped)."""
    names = {nn.BatchNorm2d: "BN", nn.ReLU: "ReLU", nn.ReLU6: "ReLU6", nn.Sigmoid: "sigmoid",
             nn.SiLU: "SiLU", nn.Hardswish: "h-swish"}
    return ", ".join(names.get(type(m), type(m).__name__) for m in modules if not isinstance(m, nn.Identity))


def block_title(block: InvertedResidual) -> str:
    """"[A] standard", "[B] SE" or "[C] SE + CondConv", from what the block contains."""
    conditional = any(isinstance(m, CondConv2d) for m in block.modules())
    se = isinstance(block.se, SqueezeExcite)
    if conditional:
        return "[C] SE + CondConv" if se else "[C'] CondConv (no SE)"
    return "[B] SE" if se else "[A] standard"


@dataclass
class _Box:
    fields: str                      # the block's fields this box stands for
    lines: list                      # text lines, first one bold
    color: str
    conditional: bool = False
    notes: list = field(default_factory=list)   # extra lines in the conditional colour


def _boxes(block: InvertedResidual) -> list:
    def conv_box(conv_name, post_names, color, last=False):
        conv = getattr(block, conv_name)
        post = _post_label(*(getattr(block, n) for n in post_names))
        if last:
            post += " (no ReLU: linear bottleneck)"
        notes = []
        if isinstance(conv, CondConv2d):
            notes.append("own routing: " + _routing_label(conv.router) if conv.router is not None
                         else "routing: the block's, shared")
        return _Box(", ".join([conv_name, *post_names]), [conv_label(conv), post], color,
                    isinstance(conv, CondConv2d), notes)

    dw = block.conv_dw
    boxes = [conv_box("conv_pw", ["bn1", "act1"], COLORS["pointwise"]),
             conv_box("conv_dw", ["bn2", "act2"], COLORS["depthwise"] if dw.groups > 1 else COLORS["dense"])]
    if not isinstance(block.se, nn.Identity):
        se = block.se
        if isinstance(se, SqueezeExcite):
            c, h = se.fc1.in_features, se.fc1.out_features
            lines = [f"SE {c}->{h}->{se.fc2.out_features}", f"GAP, Linear, ReLU, Linear, sigmoid, scale (R={c // h})"]
        else:
            lines = [type(se).__name__]
        boxes.append(_Box("se", lines, COLORS["se"]))
    boxes.append(conv_box("conv_pwl", ["bn3"], COLORS["pointwise"], last=True))
    return boxes


def block_labels(block: InvertedResidual) -> list[str]:
    """The text of every box of :func:`block_figure`, top to bottom (one string per box)."""
    if not isinstance(block, InvertedResidual):
        raise ValueError(f"block_labels() takes a block (irnet_lib.blocks.InvertedResidual), "
                         f"got {type(block).__name__}")
    out = [" | ".join(b.lines + b.notes) for b in _boxes(block)]
    if block.router is not None:
        out.insert(0, "routing (shared by the 3 convs): " + _routing_label(block.router))
    return out


# ----------------------------------------------------------------------------------- shapes

def _meta_copy(module: nn.Module) -> nn.Module:
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False) for p in module.parameters()}
    memo.update({id(b): torch.empty_like(b, device="meta") for b in module.buffers()})
    return copy.deepcopy(module, memo).eval()


def _shapes(block: InvertedResidual, input_hw) -> dict:
    """Output shape (without batch) of every field of ``block``, recorded by hooks on a meta copy."""
    twin = _meta_copy(block)
    shapes = {}
    hooks = [getattr(twin, n).register_forward_hook(lambda _m, _i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
             for n in ("act1", "act2", "se", "bn3")]
    try:
        with torch.no_grad():
            out = twin(torch.zeros(1, block.in_channels, *input_hw, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    shapes["input"] = (block.in_channels, *input_hw)
    shapes["output"] = tuple(out.shape[1:])
    return shapes


def _fmt(shape) -> str:
    return "x".join(str(s) for s in shape)


# ----------------------------------------------------------------------------------- Figure 2

_LINE = 0.21      # height of one text line, in inches (the axes are drawn 1 unit = 1 inch)
_GAP = 0.52       # vertical space between boxes (an arrow and a shape label)
_PANEL_W = 4.3
_BOX_W = 3.45


def _box_height(box: _Box) -> float:
    return _LINE * (len(box.lines) + len(box.notes)) + 0.2


def _panel_height(block: InvertedResidual) -> float:
    boxes = _boxes(block)
    return (0.75 + (0.75 if block.router is not None else 0) + 0.3 + sum(_box_height(b) + _GAP for b in boxes)
            + (0.66 if block.has_skip else 0) + 0.36 + 0.4 - 0.15)


def _arrow(ax, x0, y0, x1, y1, color="black", gid=None, lw=1.0, style="-|>"):
    a = ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle=style, color=color, lw=lw, shrinkA=0, shrinkB=0))
    if gid:
        a.set_gid(gid)
        a.arrow_patch.set_gid(gid)
    return a


def _draw_block(ax, block: InvertedResidual, input_hw, height: float, title: str | None):
    boxes = _boxes(block)
    shapes = _shapes(block, input_hw)
    cx = _PANEL_W / 2 + 0.15
    x0 = cx - _BOX_W / 2
    ax.set_xlim(0, _PANEL_W)
    ax.set_ylim(0, height)
    ax.axis("off")

    s = block.stride
    ax.text(cx, height - 0.08, title or block_title(block), ha="center", va="top", fontsize=11, fontweight="bold")
    ax.text(cx, height - 0.36, f"Ni={block.in_channels}, Ne={block.mid_channels}, No={block.out_channels}, "
            f"S={s}, ID={block.has_skip}", ha="center", va="top", fontsize=8.5, color="#444444")
    y = height - 0.75

    if block.router is not None:   # per-block routing, shared by the three convs
        r = block.router
        patch = FancyBboxPatch((x0 + 0.3, y - 0.42), _BOX_W - 0.6, 0.42, boxstyle="round,pad=0.02",
                               fc=COLORS["routing"], ec=CONDITIONAL, lw=1.2, ls="--", gid="routing")
        ax.add_patch(patch)
        ax.text(cx, y - 0.21, f"routing (shared by the 3 convs)\n{_routing_label(r)}", ha="center", va="center",
                fontsize=7.5, color=CONDITIONAL)
        y -= 0.75

    # input
    ax.text(cx, y, f"input  {_fmt(shapes['input'])}", ha="center", va="top", fontsize=9,
            bbox=dict(boxstyle="round,pad=0.25", fc=COLORS["io"], ec="#999999"))
    if block.router is not None:
        _arrow(ax, cx + 0.9, y - 0.12, cx + 0.9, y + 0.33, color=CONDITIONAL, gid="routing")
    y -= 0.3
    y_split = y - 0.12
    after = {"conv_pw": "act1", "conv_dw": "act2", "se": "se", "conv_pwl": "bn3"}
    for box in boxes:
        _arrow(ax, cx, y, cx, y - _GAP + 0.08)
        y -= _GAP
        h = _box_height(box)
        patch = FancyBboxPatch((x0, y - h), _BOX_W, h, boxstyle="round,pad=0.02", fc=box.color,
                               ec=CONDITIONAL if box.conditional else "#555555", lw=1.8 if box.conditional else 0.9)
        patch.set_gid(f"box:{box.fields.split(',')[0]}")
        ax.add_patch(patch)
        ax.text(x0 + 0.02, y + 0.04, box.fields, ha="left", va="bottom", fontsize=6.5, color="#777777",
                family="monospace")
        lines = box.lines + box.notes
        for i, line in enumerate(lines):
            ax.text(cx, y - 0.1 - _LINE * (i + 0.5), line, ha="center", va="center",
                    fontsize=8.5 if i == 0 else 7.5, fontweight="bold" if i == 0 else "normal",
                    color=CONDITIONAL if (i >= len(box.lines) or (i == 0 and box.conditional)) else "black")
        y -= h
        key = box.fields.split(",")[0]
        ax.text(cx + 0.08, y - _GAP / 2 - 0.02, _fmt(shapes[after[key]]), ha="left", va="center", fontsize=7.5,
                color="#555555")

    # the identity connection, or its absence
    if block.has_skip:
        _arrow(ax, cx, y, cx, y - 0.34)
        y_add = y - 0.5
        ax.add_patch(Circle((cx, y_add), 0.16, fc="white", ec=IDENTITY, lw=1.4, gid="identity"))
        ax.text(cx, y_add, "+", ha="center", va="center", fontsize=12, color=IDENTITY, gid="identity")
        x_id = x0 - 0.28
        line = ax.plot([cx, x_id, x_id], [y_split, y_split, y_add], color=IDENTITY, lw=1.4)[0]
        line.set_gid("identity")
        _arrow(ax, x_id, y_add, cx - 0.16, y_add, color=IDENTITY, gid="identity", lw=1.4)
        ax.text(x_id - 0.07, (y_split + y_add) / 2, "identity: + x", rotation=90, ha="right", va="center",
                fontsize=8, color=IDENTITY, gid="identity")
        y = y_add - 0.16
    else:
        why = "No != Ni" if block.in_channels != block.out_channels else f"S={s}"
        if block.in_channels != block.out_channels and s != 1:
            why = f"No != Ni, S={s}"
        ax.text(cx - _BOX_W / 2, y - 0.25, f"no identity ({why})", ha="left", va="center", fontsize=7.5,
                color="#888888", style="italic")
    _arrow(ax, cx, y, cx, y - 0.36)
    ax.text(cx, y - 0.4, f"output  {_fmt(shapes['output'])}", ha="center", va="top", fontsize=9,
            bbox=dict(boxstyle="round,pad=0.25", fc=COLORS["io"], ec="#999999"))


def blocks_figure(blocks=None, input_hw=(56, 56), titles=None):
    """Figure 2: blocks side by side, each drawn from its module.

    Args:
        blocks: a list of blocks (``InvertedResidual``); default: the first block of Table 1
            (16 -> 16, S = 1, ID) as [A] ``standard_block``, [B] ``se_block`` and [C] ``condconv_block``.
        input_hw: the (H, W) of the feature map entering the blocks, for the shapes between boxes.
        titles: one title per block (default: "[A] standard", "[B] SE", "[C] SE + CondConv",
            from what each block contains).
    Returns:
        the matplotlib Figure (the caller saves and shows it).
    """
    if blocks is None:
        blocks = [standard_block(16, 16), se_block(16, 16), condconv_block(16, 16)]
    if isinstance(blocks, nn.Module):
        blocks = [blocks]
    blocks = list(blocks)
    for b in blocks:
        if not isinstance(b, InvertedResidual):
            raise ValueError(f"blocks_figure() draws blocks (irnet_lib.blocks.InvertedResidual), "
                             f"got {type(b).__name__}")
    if titles is not None and len(titles) != len(blocks):
        raise ValueError(f"got {len(titles)} titles for {len(blocks)} blocks")
    height = max(_panel_height(b) for b in blocks)
    fig, axes = plt.subplots(1, len(blocks), figsize=(_PANEL_W * len(blocks), height), squeeze=False)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1, wspace=0)
    for i, (ax, b) in enumerate(zip(axes[0], blocks)):
        _draw_block(ax, b, input_hw, height, titles[i] if titles else None)
    return fig


def block_figure(block: InvertedResidual, input_hw=(56, 56), title: str | None = None):
    """One block of Figure 2, drawn from its module (see :func:`blocks_figure`)."""
    return blocks_figure([block], input_hw, [title] if title else None)


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


# ----------------------------------------------------------------------------------- entry point

def main() -> list:
    """Write ``fig2_blocks.png`` and ``fig4_condconv.png`` (see the module docstring)."""
    import matplotlib

    from .notebook import figure_path
    matplotlib.use("Agg")
    written = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for name, fig in (("fig2_blocks.png", blocks_figure()), ("fig4_condconv.png", condconv_figure())):
            path = figure_path(name)
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
            print("wrote", path)
    return written


if __name__ == "__main__":
    main()
