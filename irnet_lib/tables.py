"""Tables 1 and 4 of the paper regenerated from the model.

:func:`table1` runs the network once on a single image and records, with forward hooks, the shape
entering every row of Table 1, writing each operation in the paper's words. :func:`table4` groups
:func:`irnet_lib.complexity.count`'s per-layer costs by those rows, as the paper's Table 4 does, with
every enhancement's extra cost (SE, CondConv's experts, mixing and routing, ...) in a column of its own.
``irnet_lib.paper`` sets the paper's printed Table 4 beside it.
"""
from __future__ import annotations

import pandas as pd

from .complexity import _check_input_size, _run_once, count
from .network import IRNet

__all__ = ["table1", "table4"]


def _fmt_shape(shape):
    return "x".join(str(s) for s in shape)


def _require_irnet(model, what):
    if not isinstance(model, IRNet):
        raise ValueError(f"{what} groups layers by the Table 1 rows of an IRNet (irnet_lib.irnet(...)), "
                         f"got {type(model).__name__}; for any other model use count(model) instead")


def _row_info(model: IRNet, input_size):
    """Per Table 1 row: repeat, the shape entering it, the operation as the paper writes it, a label."""
    def attach(m):
        entering = {}

        def pre(key):
            def hook(_module, args):   # must return None: a pre-hook's return value replaces the input
                entering.setdefault(key, tuple(args[0].shape[1:]))
            return hook

        def out_hook(_module, _args, output):
            entering["output"] = tuple(output.shape[1:])

        parts = [("stem", m.stem), *[(i, r) for i, r in enumerate(m.rows)], ("head", m.head), ("pool", m.pool)]
        handles = [mod.register_forward_pre_hook(pre(k)) for k, mod in parts]
        return handles + [m.register_forward_hook(out_hook)], entering

    _, entering = _run_once(model, input_size, attach)
    stem, head, fc = model.stem[0], model.head[0], model.classifier
    info = [dict(repeat=1, input=entering["stem"],
                 operation=f"Conv ({stem.kernel_size[0]}x{stem.kernel_size[1]}/{stem.stride[0]}), Batch Norm, ReLU",
                 label=f"Stem conv {stem.in_channels}->{stem.out_channels}")]
    for i, row in enumerate(model.rows):
        b = row[0]
        k = b.conv_dw.kernel_size
        k = k[0] if isinstance(k, tuple) else k
        info.append(dict(repeat=len(row), input=entering[i],
                         operation=f"Block (Ne={b.mid_channels / b.in_channels:g}Ni, F={k}, S={b.stride}, "
                                   f"ID={b.has_skip})",
                         label=f"Block {b.in_channels}->{b.out_channels}" + (f" S{b.stride}" if b.stride > 1 else "")))
    info.append(dict(repeat=1, input=entering["head"],
                     operation=f"Conv ({head.kernel_size[0]}x{head.kernel_size[1]}/{head.stride[0]}), Batch Norm, ReLU",
                     label=f"Head conv {head.in_channels}->{head.out_channels}"))
    info.append(dict(repeat=1, input=entering["pool"],
                     operation="Global Avg Pool, Linear" + (", Bias" if fc.bias is not None else ""),
                     label=f"GAP + linear {fc.in_features}->{fc.out_features}"))
    return info, entering["output"]


def table1(model: IRNet, input_size=(3, 56, 56)) -> pd.DataFrame:
    """Table 1 regenerated from the model: repeat, the shape entering each row (Ni x H x W) and the
    operation, in the paper's words, plus the final output row. Shapes come from forward hooks."""
    _require_irnet(model, "table1()")
    _check_input_size(input_size)
    info, out_shape = _row_info(model, input_size)
    rows = [dict(repeat=r["repeat"], input=_fmt_shape(r["input"]), operation=r["operation"]) for r in info]
    rows.append(dict(repeat=1, input=_fmt_shape((1, *out_shape)), operation="Output"))
    return pd.DataFrame(rows)


_EXTRA_COLUMNS = (  # (component, count column, table column), in display order
    ("se", "macs", "se_macs"), ("se", "params", "se_params"), ("se_scale", "macs", "se_scale_macs"),
    ("experts", "params", "expert_params"), ("mixing", "macs", "mixing_macs"),
    ("routing", "macs", "routing_macs"), ("routing", "params", "routing_params"),
    ("bn", "macs", "bn_macs"), ("bn", "params", "bn_params"), ("pool", "macs", "pool_macs"),
    ("activation", "macs", "activation_ops"),
)


def table4(model: IRNet, input_size=(3, 56, 56), **conventions) -> pd.DataFrame:
    """The paper's Table 4 computed from ``model``: one row per Table 1 operation (repeats summed),
    indexed by a short label, plus a ``Total`` row.

    Columns: ``operation`` (the paper's words), ``rep``, then the paper's two columns as they
    should read: ``macs`` and ``weights`` of the convs and linears (one expert's kernel for
    CondConv), ``biases``. Every enhancement's extra cost follows in its own columns, present only
    when the network has it and the conventions count it (``se_macs``, ``se_params``,
    ``se_scale_macs``, ``expert_params`` for the M - 1 extra kernels, ``mixing_macs``,
    ``routing_macs``, ``routing_params``, ``bn_*``, ``pool_macs``, ``activation_ops``), and then
    ``total_macs`` and ``total_params``. ``conventions`` are the switches of :func:`count`.
    """
    _require_irnet(model, "table4()")
    _check_input_size(input_size)
    layers = count(model, input_size, **conventions)
    info, _ = _row_info(model, input_size)
    base = layers[layers["component"].isin(["conv", "linear"])]
    by_row = base.groupby("row")[["macs", "weights", "biases"]].sum()
    table = pd.DataFrame({"operation": [r["operation"] for r in info],
                          "rep": pd.array([r["repeat"] for r in info], dtype="Int64")},
                         index=pd.Index([r["label"] for r in info], name="layer"))
    idx = range(len(info))
    for c in ("macs", "weights", "biases"):
        table[c] = by_row[c].reindex(idx, fill_value=0).to_numpy()
    extras = []
    for component, src, col in _EXTRA_COLUMNS:
        part = layers[layers["component"] == component]
        if len(part) and (src != "params" or part[src].sum() > 0):
            table[col] = part.groupby("row")[src].sum().reindex(idx, fill_value=0).to_numpy()
            extras.append((src, col))
    if extras:
        table["total_macs"] = table["macs"] + sum(table[c] for s, c in extras if s == "macs")
        table["total_params"] = (table["weights"] + table["biases"]
                                 + sum(table[c] for s, c in extras if s == "params"))
    total = table.drop(columns=["operation", "rep"]).sum()
    table.loc["Total"] = {"operation": "", "rep": pd.NA, **total.to_dict()}
    for c in table.columns[2:]:
        table[c] = table[c].astype("int64")
    return table
