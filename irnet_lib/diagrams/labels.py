"""The texts, colours and shapes the two figures share: what each box of a block says, and the
shape of the tensor between two boxes, recorded on a meta-device copy."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..blocks import InvertedResidual, SqueezeExcite
from ..condconv import CondConv2d, Routing

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

def _arrow(ax, x0, y0, x1, y1, color="black", gid=None, lw=1.0, style="-|>"):
    a = ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle=style, color=color, lw=lw, shrinkA=0, shrinkB=0))
    if gid:
        a.set_gid(gid)
        a.arrow_patch.set_gid(gid)
    return a
