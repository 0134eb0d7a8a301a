"""Notebook 05 · Complexity, Table 4 recomputed and reconciled: its exercises."""
from __future__ import annotations

from .core import Exercise, meta_irnet, params


def _recount(row, **miscounting) -> int:
    """The standard network's MACs of Table 1 row ``row`` (or "Total"), recounted the wrong way."""
    from ..complexity import PAPER, count
    from ..paper import recount
    return int(recount(count(meta_irnet(), **PAPER), **miscounting).loc[row, "macs"])


def _se_scale_macs(label: str, resolution: int) -> int:
    from ..tables import table4
    return int(table4(meta_irnet("se"), (3, resolution, resolution)).loc[label, "se_scale_macs"])


EXERCISES = {
    "05.1": Exercise(lambda: _recount("Total", dense_3x3=True),
                     hint="only the depthwise convs change: a dense 3x3 output element reads 9 inputs of every one "
                          "of the Ne input channels, a depthwise one 9 of its own channel, so each depthwise conv's "
                          "MACs grow by the factor in its `groups` column; add the other layers' MACs unchanged."),
    "05.2": Exercise(lambda: _recount(4, expand_at_output=True),
                     hint="Ni = 24, Ne = 96, No = 40; with the stride in the 1x1 expansion all three convs run at "
                          "the output's 28 x 28 positions: Ni Ne + 9 Ne + Ne No MACs per position."),
    "05.3": Exercise(lambda: params(meta_irnet("condconv", num_experts=8)),
                     hint="two things grow with M: each block conv holds M kernels (the `weights` column is one "
                          "kernel of each), and each routing Linear(C_in, M) has M (C_in + 1) parameters; BN, SE, "
                          "the stem, the head and the classifier do not change."),
    "05.4": Exercise(lambda: _se_scale_macs("Block 16->16", 112),
                     hint="the scaling multiplies every activation of the SE's input once: count the elements of "
                          "that tensor, Ne channels at the first block's resolution (the stem and the block keep "
                          "the input's 112 x 112)."),
}
