"""Notebook 04 · IR-NET's architecture: its exercises."""
from __future__ import annotations

from .core import Exercise, meta_irnet


def _first_expansion_macs() -> int:
    from ..complexity import count
    layers = count(meta_irnet()).set_index("layer")
    return int(layers.loc["rows.0.0.conv_pw", "macs"])


def _blocks(**knobs) -> int:
    return sum(len(row) for row in meta_irnet(**knobs).rows)


def _macs(resolution: int, **knobs) -> int:
    from ..complexity import summary
    return int(summary(meta_irnet(**knobs), (3, resolution, resolution))["macs"])


EXERCISES = {
    "04.1": Exercise(_first_expansion_macs,
                     hint="a 1x1 conv does Ni x Ne multiply-adds at every output position; Ne = 4 Ni, and at stride 1 "
                          "the output has as many positions as the 56 x 56 input."),
    "04.2": Exercise(lambda: _blocks(depth_mult=1.5),
                     hint="round each block row's repeat up on its own, ceil(1.5 x r), for the ten block rows of "
                          "Table 1 (repeats 1, 1, 1, 1, 2, 1, 3, 1, 4, 1), then add them up."),
    "04.3": Exercise(lambda: _macs(112, width_mult=0.5),
                     hint="start from the width_mult=0.5 row of the knob table: every conv's MACs grow with the "
                          "number of output pixels (x4 at 112 x 112); the classifier after the pooling does not "
                          "(its 640 x 100 MACs stay)."),
}
