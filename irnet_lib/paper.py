"""The paper's printed numbers as data, and their reconciliation with the counts of the real model.

The paper's Table 4 (MACs and "Filter Cx", filter coefficients, per Table 1 operation) is kept
here exactly as printed. :func:`reconcile_table4` puts it next to :func:`irnet_lib.tables.table4`
of the standard network and gives every printed number a verdict. The verdicts are *computed*:
each printed number is recounted from the model under the alternative conventions in
:data:`ALTERNATIVES`, alone and combined, and the smallest set of them that reproduces the
printed value is the verdict ("matches" when the correct count already does).
"""
from __future__ import annotations

from itertools import combinations
from typing import NamedTuple

import pandas as pd

from .complexity import PAPER, count
from .network import TABLE_1, IRNet, irnet
from .tables import table4

__all__ = ["PrintedRow", "TABLE_4", "TABLE_4_TOTAL", "ALTERNATIVES", "EXPLANATIONS", "table1",
           "recount", "reconcile_table4"]


class PrintedRow(NamedTuple):
    """One line of the paper's Table 4, as printed."""
    operation: str
    rep: int | None
    macs: int
    filter_cx: int


TABLE_4 = (
    PrintedRow("Conv (3x3/1), Batch Norm, ReLU", 1, 1354752, 432),
    PrintedRow("Block (Ne=4Ni, F=3, S=1, ID=True)", 1, 8228864, 38912),
    PrintedRow("Block (Ne=4Ni, F=3, S=1, ID=False)", 1, 9834496, 39424),
    PrintedRow("Block (Ne=4Ni, F=3, S=1, ID=True)", 1, 17160192, 87552),
    PrintedRow("Block (Ne=4Ni, F=3, S=2, ID=False)", 1, 5494272, 89088),
    PrintedRow("Block (Ne=4Ni, F=3, S=1, ID=True)", 2, 22328320, 486400),
    PrintedRow("Block (Ne=4Ni, F=3, S=2, ID=False)", 1, 7808640, 249600),
    PrintedRow("Block (Ne=4Ni, F=3, S=1, ID=True)", 3, 31799040, 2918400),
    PrintedRow("Block (Ne=4Ni, F=3, S=2, ID=False)", 1, 7667520, 998400),
    PrintedRow("Block (Ne=4Ni, F=3, S=1, ID=True)", 4, 41269760, 15564800),
    PrintedRow("Block (Ne=4Ni, F=3, S=1, ID=False)", 1, 15335040, 3993600),
    PrintedRow("Conv (1x1/1), Batch Norm, ReLU", 1, 20070400, 409600),
    PrintedRow("Global Avg Pool, Linear, Bias", 1, 128000, 0),
)
TABLE_4_TOTAL = PrintedRow("Total", None, 193898304, 24876208)

ALTERNATIVES = {
    "dense_3x3": "3x3 counted dense",
    "expand_at_output": "expansion at output resolution",
    "no_linear_weights": "linear weights left out",
}
"""The ways of miscounting that the verdicts try, by keyword of :func:`recount`."""

EXPLANATIONS = {
    "dense_3x3": "The 3x3 conv is depthwise (groups = Ne): Ne x 9 weights. Counted as a dense conv it "
                 "would have Ne x Ne x 9, which is what the printed Filter Cx holds for every block. The "
                 "printed MAC column, by contrast, counts the same conv as depthwise.",
    "expand_at_output": "The stride sits in the depthwise conv, so the 1x1 expansion before it runs at the "
                        "block's input resolution (56x56 for the 24->40 block). Counted at the output "
                        "resolution (28x28) it costs a quarter. Only the 24->40 row was counted that way; "
                        "the 40->80 and 80->160 rows count it at the input resolution.",
    "no_linear_weights": "The linear classifier has 1280 x 100 = 128,000 weights (+100 biases); the printed "
                         "Filter Cx gives it 0 although it counts its 128,000 MACs.",
}


def table1() -> pd.DataFrame:
    """The paper's Table 1 as printed, formatted from :data:`irnet_lib.network.TABLE_1`
    (same columns as :func:`irnet_lib.tables.table1`, for comparison)."""
    ops = {"stem": lambda r: f"Conv ({r.F}x{r.F}/{r.S}), Batch Norm, ReLU",
           "block": lambda r: f"Block (Ne=4Ni, F={r.F}, S={r.S}, ID={r.ID})",
           "head": lambda r: f"Conv ({r.F}x{r.F}/{r.S}), Batch Norm, ReLU",
           "classifier": lambda _r: "Global Avg Pool, Linear, Bias"}
    rows = [dict(repeat=r.repeat, input="x".join(map(str, r.input)), operation=ops[r.op](r)) for r in TABLE_1]
    rows.append(dict(repeat=1, input="1x100", operation="Output"))
    return pd.DataFrame(rows)


def recount(layers: pd.DataFrame, *, dense_3x3: bool = False, expand_at_output: bool = False,
            no_linear_weights: bool = False) -> pd.DataFrame:
    """MACs and weights of the convs and linears per Table 1 row, recounted from a
    :func:`irnet_lib.complexity.count` table of an IRNet under alternative (wrong) conventions.

    Args:
        dense_3x3: count every depthwise conv as a dense one (groups = 1): weights and MACs x groups.
        expand_at_output: count each block's 1x1 expansion at the block's output resolution.
        no_linear_weights: give the linear layers 0 weights (their MACs stay).

    Returns a DataFrame indexed by row with ``macs`` and ``weights`` and a last ``"Total"`` row.
    With no alternative it reproduces ``table4``'s ``macs`` and ``weights``.
    """
    if "row" not in layers or layers["row"].isna().any():
        raise ValueError("recount() needs the count() table of an IRNet (with Table 1 rows); "
                         "call count(irnet(...)) first")
    df = layers[layers["component"].isin(["conv", "linear"])].copy()
    macs, weights = df["macs"].astype("int64"), df["weights"].astype("int64")
    if dense_3x3:
        dw = (df["kind"] == "depthwise").to_numpy()
        groups = df["groups"].fillna(1).astype("int64")
        macs = macs.where(~dw, macs * groups)
        weights = weights.where(~dw, weights * groups)
    if expand_at_output:
        block = df["layer"].str.rsplit(".", n=1).str[0]
        dw = df[df["role"] == "depthwise"]
        out_hw = dict(zip(block[dw.index], dw["output_shape"].map(lambda s: s[1] * s[2])))
        for i in df.index[df["role"] == "expand 1x1"]:
            _, h, w = df.at[i, "input_shape"]
            macs[i] = macs[i] * out_hw[block[i]] // (h * w)
    if no_linear_weights:
        weights = weights.where(df["component"] != "linear", 0)
    t = pd.DataFrame({"row": df["row"], "macs": macs, "weights": weights}).groupby("row").sum()
    t.loc["Total"] = t.sum()
    return t


def _verdict(printed: int, candidates: dict) -> str:
    """The smallest set of alternatives whose recount gives ``printed`` (``()`` = the correct count)."""
    for combo, value in candidates.items():
        if value == printed:
            return " + ".join(ALTERNATIVES[k] for k in combo) if combo else "matches"
    return "unexplained"


def reconcile_table4(model: IRNet | None = None, input_size=(3, 56, 56)) -> pd.DataFrame:
    """The paper's Table 4 next to the counts of ``model`` (default: the standard IR-NET), with
    the difference and a computed verdict for each printed MAC and Filter Cx number.

    The ``Total`` MAC verdict also says when the printed rows do not sum to the printed total.
    """
    model = irnet("standard") if model is None else model
    computed = table4(model, input_size, **PAPER)
    ops = [(op, rep) for op, rep in zip(computed["operation"].iloc[:-1], computed["rep"].iloc[:-1])]
    if ops != [(r.operation, r.rep) for r in TABLE_4]:
        raise ValueError("this model's Table 1 operations or repeats differ from the paper's Table 4: "
                         "reconcile the network the paper describes, irnet('standard') (default knobs)")
    layers = count(model, input_size, **PAPER)
    keys = list(ALTERNATIVES)
    combos = [c for n in range(len(keys) + 1) for c in combinations(keys, n)]
    recounts = {c: recount(layers, **{k: True for k in c}) for c in combos}

    printed = list(TABLE_4) + [TABLE_4_TOTAL]
    rows = []
    for i, (label, p) in enumerate(zip(computed.index, printed)):
        key = "Total" if label == "Total" else i
        verdicts = {col: _verdict(getattr(p, pcol), {c: int(r.loc[key, col]) for c, r in recounts.items()})
                    for col, pcol in (("macs", "macs"), ("weights", "filter_cx"))}
        rows.append(dict(layer=label, rep=p.rep,
                         printed_macs=p.macs, macs=computed.loc[label, "macs"],
                         macs_diff=p.macs - computed.loc[label, "macs"], macs_verdict=verdicts["macs"],
                         printed_filter_cx=p.filter_cx, weights=computed.loc[label, "weights"],
                         weights_diff=p.filter_cx - computed.loc[label, "weights"],
                         weights_verdict=verdicts["weights"]))
    out = pd.DataFrame(rows).set_index("layer")
    out["rep"] = out["rep"].astype("Int64")
    for col, pcol in (("macs", "macs"), ("weights", "filter_cx")):
        row_sum = sum(getattr(p, pcol) for p in TABLE_4)
        if row_sum != getattr(TABLE_4_TOTAL, pcol):
            out.loc["Total", f"{col}_verdict"] += f"; printed rows sum to {row_sum:,}"
    return out
