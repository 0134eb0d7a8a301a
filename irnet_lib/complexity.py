"""What a network costs: multiply-accumulates (MACs) and parameters, per layer, measured on the model.

The model is run once on one example with forward hooks on its layers; each hooked layer
reports what it did to the tensors it actually saw. Only shapes matter, so the run is done on a
copy of the model on PyTorch's "meta" device (no data, no arithmetic: milliseconds, whatever the
load of the CPU). Nothing is read off a table, so the counts follow every knob of
:func:`irnet_lib.irnet` (width, depth, expansion, F, R, M, routing, resolution) and work for
any ``nn.Module`` built from the layers listed below.

Conventions (all explicit)
--------------------------
- **MAC** = one multiply-accumulate, ``a += w * x``. A FLOP counter reports 2 per MAC.
- **Batch size 1**: every count is per example (CondConv's kernel mixing is per example too).
- **Always counted** (the paper's Table 4 convention, "conv/linear weights"):
  ``Conv2d`` of any ``groups`` (dense, grouped, depthwise): ``numel(out) x C_in/groups x kh x kw``
  (a CondConv2d is hooked as one module and counted the same way, analytically, not through the
  batched matmul or folded grouped conv it runs internally);
  ``Linear``: ``numel(out) x in_features``; biases are parameters but not MACs.
  The linears inside squeeze-and-excite (component ``"se"``) are linears and always counted.
  A ``CondConv2d`` counts as the ordinary convolution it computes once its kernel is mixed
  (component ``"conv"``), plus its M - 1 extra expert kernels as parameters (``"experts"``).
  This is the cost of CondConv as defined (mix the kernels, convolve once), whatever formulation
  ``irnet_lib.condconv`` picks at run time for speed.
- **Counted unless switched off** (costs the enhancements add; none exist in the standard network):
  ``se_scale``: SE's channel scaling ``x * s``, one multiply per element of its input;
  ``mixing``: CondConv's ``W = sum_m r_m W_m``, ``M x numel(W)`` MACs per example;
  ``routing``: CondConv's routing linears ``Linear(C_in, M)`` (per conv or per block).
- **Counted only when asked** (the paper leaves them out): ``bn``: BatchNorm folded to
  ``y = a x + b``, one MAC per element, and its ``2 C`` affine parameters; ``pool``: average
  pooling and the squeezes (GAP) of SE and routing, one accumulate per input element;
  ``activations``: one operation per element of every activation *module* (not a MAC; shown
  only to make the point that it is small).

``count`` returns one row per (layer, component). The columns ``macs``, ``weights`` (weight
coefficients), ``biases`` and ``params`` (everything trainable the row accounts for, BN affine
included) sum to the network's totals under the chosen conventions.
"""
from __future__ import annotations

import copy
from itertools import chain

import pandas as pd
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .blocks import InvertedResidual, SqueezeExcite
from .condconv import CondConv2d, Routing
from .network import IRNet

__all__ = ["count", "summary", "stage_totals", "COMPONENTS", "PAPER", "EVERYTHING"]

COMPONENTS = ("conv", "linear", "se", "se_scale", "experts", "mixing", "routing", "bn", "pool", "activation")
PAPER = dict(se_scale=False, mixing=False, routing=False, bn=False, pool=False, activations=False)
"""Only conv and linear weights and their MACs, as the paper's Table 4 counts."""
EVERYTHING = dict(se_scale=True, mixing=True, routing=True, bn=True, pool=True, activations=True)

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.Tanh,
                nn.LeakyReLU, nn.ELU)
_POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)
_HOOKED = (nn.Conv2d, nn.Linear, CondConv2d, SqueezeExcite, Routing, _BatchNorm) + _POOLS + _ACTIVATIONS
_COLUMNS = ["layer", "module", "component", "role", "kind", "row", "repeat", "stage", "input_shape",
            "output_shape", "kernel", "groups", "macs", "weights", "biases", "params"]


def _check_input_size(input_size):
    if (not isinstance(input_size, (tuple, list)) or len(input_size) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_size)):
        raise ValueError(f"input_size must be (channels, height, width) of positive ints for ONE example, "
                         f"e.g. (3, 56, 56), got {input_size!r}")


def _conv_kind(c_in, c_out, k, groups):
    if groups == 1:
        return "1x1" if k == (1, 1) else "dense"
    return "depthwise" if groups == c_in == c_out else "grouped"


def _irnet_roles(model: IRNet) -> dict:
    """Where each conv/linear sits in IR-NET, the names the paper's figures use."""
    roles = {model.stem[0]: "stem", model.head[0]: "head", model.classifier: "classifier"}
    for m in model.modules():
        if isinstance(m, InvertedResidual):
            roles.update({m.conv_pw: "expand 1x1", m.conv_dw: "depthwise", m.conv_pwl: "project 1x1"})
    return roles


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _costs(module, parent, x, out, roles, include):
    """The cost records of one call of ``module``: a list of dicts (component, role, macs, ...)."""
    rec = dict(module=type(module).__name__, input_shape=tuple(x.shape[1:]),
               output_shape=tuple(out.shape[1:]) if torch.is_tensor(out) else None,
               kernel=None, groups=None, kind=None, macs=0, weights=0, biases=0, params=0)
    n_in = _numel(x.shape[1:])
    n_out = _numel(out.shape[1:]) if torch.is_tensor(out) else 0
    if isinstance(module, (nn.Conv2d, CondConv2d)):
        return _conv_costs(module, rec, n_out, roles, include)
    if isinstance(module, nn.Linear):
        return _linear_costs(module, parent, rec, n_out, roles, include)
    if isinstance(module, SqueezeExcite):
        parts = (("se_scale", "scale"), ("pool", "pool"))   # the channel scaling x * s, and SE's own pool
        return [dict(rec, component=c, role="SE", kind=kind, macs=n_in) for c, kind in parts if include[c]]
    if isinstance(module, Routing):
        return [dict(rec, component="pool", role="routing", kind="pool", macs=n_in)] \
            if include["pool"] and include["routing"] else []
    if isinstance(module, _BatchNorm):
        affine = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
        return [dict(rec, component="bn", role="BN", kind="bn", macs=n_in, params=affine)] if include["bn"] else []
    if isinstance(module, _POOLS):
        return [dict(rec, component="pool", role="pool", kind="pool", macs=_pool_macs(module, n_in, n_out))] \
            if include["pool"] else []
    if isinstance(module, _ACTIVATIONS):
        return [dict(rec, component="activation", role="activation", kind=type(module).__name__,
                     macs=n_in)] if include["activations"] else []
    return []


def _conv_costs(module, rec, n_out, roles, include):
    """An ordinary conv, or a CondConv: its one mixed kernel, the other experts' weights, the mixing."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        bias = module.bias.numel() if module.bias is not None else 0
        experts = 1
    else:
        kh = kw = module.kernel_size
        bias, experts = 0, module.num_experts
    c_in, c_out, g = module.in_channels, module.out_channels, module.groups
    w1 = c_out * (c_in // g) * kh * kw                         # one kernel, as an ordinary conv
    kind = _conv_kind(c_in, c_out, (kh, kw), g)
    base = dict(rec, role=roles.get(module, f"{kind} conv"), kind=kind, kernel=f"{kh}x{kw}", groups=g)
    recs = [dict(base, component="conv", macs=n_out * (c_in // g) * kh * kw, weights=w1, biases=bias,
                 params=w1 + bias)]
    if experts > 1:
        recs.append(dict(base, component="experts", weights=(experts - 1) * w1, params=(experts - 1) * w1))
    if experts > 1 and include["mixing"]:
        recs.append(dict(base, component="mixing", macs=experts * w1))
    return recs


def _linear_costs(module, parent, rec, n_out, roles, include):
    """A linear layer: SE's, a CondConv router's, or the classifier."""
    component = ("se" if isinstance(parent, SqueezeExcite) else
                 "routing" if isinstance(parent, Routing) else "linear")
    if component == "routing" and not include["routing"]:
        return []
    bias = module.bias.numel() if module.bias is not None else 0
    w = module.weight.numel()
    role = {"se": "SE", "routing": "routing"}.get(component, roles.get(module, "linear"))
    return [dict(rec, component=component, role=role, kind="linear",
                 macs=n_out * module.in_features, weights=w, biases=bias, params=w + bias)]


def _pool_macs(module, n_in, n_out) -> int:
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return n_in
    k = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
    return n_out * k[0] * k[1]


def _meta_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on PyTorch's "meta" device: same
    modules, shapes and dtypes, no storage. Copying costs nothing and running it does no arithmetic."""
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in model.parameters()}
    memo.update({id(b): torch.empty_like(b, device="meta") for b in model.buffers()})
    return copy.deepcopy(model, memo)


def _run_once(model: nn.Module, input_size, attach):
    """Run ``model`` on one example of zeros with the hooks ``attach(m) -> (handles, result)`` puts on
    it, and return ``(m, result)``, ``m`` being the module that actually ran.

    Only shapes matter to the counter, so it runs a meta-device twin of the model (milliseconds,
    whatever the CPU load). A model that cannot run on "meta" (data-dependent control flow, an
    operator without a meta kernel) is run for real instead: eval mode, no grad, its train/eval
    mode restored afterwards. Both give the same counts."""
    p = next(chain(model.parameters(), model.buffers()), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    try:
        twin = _meta_twin(model).eval()
        handles, result = attach(twin)
        try:
            with torch.no_grad():
                twin(torch.zeros(1, *input_size, device="meta", dtype=dtype))
        finally:
            for h in handles:
                h.remove()
        return twin, result
    except (NotImplementedError, RuntimeError):
        pass
    handles, result = attach(model)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=p.device if p is not None else "cpu", dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return model, result


def _irnet_position(name: str):
    """(Table 1 row index, repeat index) of a module of an IRNet from its qualified name."""
    top, *rest = name.split(".")
    if top == "stem":
        return 0, 0
    if top == "rows":
        return int(rest[0]) + 1, int(rest[1]) if len(rest) > 1 else 0
    if top == "head":
        return -2, 0
    return -1, 0          # pool, classifier


def count(model: nn.Module, input_size=(3, 56, 56), *, se_scale: bool = True, mixing: bool = True,
          routing: bool = True, bn: bool = False, pool: bool = False, activations: bool = False) -> pd.DataFrame:
    """MACs and parameters of every layer of ``model`` on one example of shape ``input_size``.

    Runs the model once on one example with forward hooks: a parameter-free copy of it on the
    "meta" device (shapes only, no arithmetic), or the model itself in eval mode where it cannot
    run there (its train/eval mode and its weights are left as they were either way). See the
    module docstring for exactly what each switch counts; ``count(model, **PAPER)`` is the
    paper's convention.

    Returns one row per (layer, component) with columns: ``layer`` (qualified module name),
    ``module`` (class), ``component`` (one of ``COMPONENTS``), ``role`` (stem, expand 1x1,
    depthwise, project 1x1, head, classifier, SE, routing, BN, pool, activation; for other
    models the conv kind), ``kind`` (1x1 / dense / depthwise / grouped / linear / ...),
    ``row`` / ``repeat`` (Table 1 row index and repeat, IRNet only), ``stage`` (IRNet only: the
    output width of the row, "160 ch, 7x7"), ``input_shape``/``output_shape`` (without batch),
    ``kernel``, ``groups``, ``macs``, ``weights``, ``biases``, ``params``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"count() needs an nn.Module, got {type(model).__name__}")
    _check_input_size(input_size)
    include = dict(se_scale=se_scale, mixing=mixing, routing=routing, bn=bn, pool=pool, activations=activations)

    def attach(m):
        names = {mod: n for n, mod in m.named_modules()}
        parents = {c: p for p in m.modules() for c in p.children()}
        roles = _irnet_roles(m) if isinstance(m, IRNet) else {}
        records = []

        def hook(module, args, output):
            for r in _costs(module, parents.get(module), args[0], output, roles, include):
                records.append(dict(r, layer=names[module]))

        return [mod.register_forward_hook(hook) for mod in m.modules() if isinstance(mod, _HOOKED)], records

    _, records = _run_once(model, input_size, attach)
    df = pd.DataFrame(records, columns=_COLUMNS)
    if isinstance(model, IRNet):
        pos = [_irnet_position(n) for n in df["layer"]]
        n_rows = len(model.rows) + 3
        df["row"] = [r % n_rows for r, _ in pos]
        df["repeat"] = [j for _, j in pos]
        stages = _irnet_stages(model, df)
        df["stage"] = df["row"].map(stages)
    for c in ("row", "repeat", "groups"):
        df[c] = df[c].astype("Int64")
    for c in ("macs", "weights", "biases", "params"):
        df[c] = df[c].astype("int64")
    return df


def _irnet_stages(model: IRNet, df: pd.DataFrame) -> dict:
    """Row index -> stage label. A stage is the run of block rows with the same output width
    (the first of them changes the width or resolution), as MobileNetV2 groups its table."""
    stages = {0: "stem", len(model.rows) + 1: "head", len(model.rows) + 2: "classifier"}
    for i, _ in enumerate(model.rows):
        out = df.loc[(df["row"] == i + 1) & (df["role"] == "project 1x1"), "output_shape"].iloc[-1]
        stages[i + 1] = f"{out[0]} ch, {out[1]}x{out[2]}"
    return stages


def summary(model: nn.Module, input_size=(3, 56, 56), **conventions) -> pd.Series:
    """Totals in one line: MACs (under ``conventions``), conv/linear weight coefficients, all
    trainable parameters (``sum(p.numel())``) and the output shape for one example."""
    layers = count(model, input_size, **conventions)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out = layers["output_shape"].iloc[-1] if len(layers) else None
    return pd.Series({"macs": int(layers["macs"].sum()), "weights": int(layers["weights"].sum()),
                      "params": int(trainable), "output_shape": out})


def stage_totals(layers: pd.DataFrame, by: str = "stage") -> pd.DataFrame:
    """Sum ``macs`` and ``params`` of a :func:`count` table by ``by`` (e.g. "stage" or "role"),
    in network order, with each one's share of the total in per cent."""
    if by not in layers.columns:
        raise ValueError(f"cannot group by {by!r}: not a column of the count table ({list(layers.columns)})")
    order = list(dict.fromkeys(layers[by]))
    t = layers.groupby(by, sort=False)[["macs", "params"]].sum().reindex(order)
    t["macs_%"] = (100 * t["macs"] / t["macs"].sum()).round(1)
    t["params_%"] = (100 * t["params"] / t["params"].sum()).round(1)
    return t[["macs", "macs_%", "params", "params_%"]]
