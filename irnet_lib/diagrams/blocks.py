"""Figure 2: a block drawn from its own fields, shapes recorded by hooks, the identity arrow where it has one."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyBboxPatch
from torch import nn

from ..blocks import InvertedResidual, condconv_block, se_block, standard_block
from .labels import COLORS, CONDITIONAL, IDENTITY, _arrow, _Box, _boxes, _fmt, _routing_label, _shapes, block_title

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

