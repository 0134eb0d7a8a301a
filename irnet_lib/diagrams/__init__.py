"""Figures 2 and 4 of the paper, drawn from the modules themselves.

Nothing here is typed in: every box is one field of a real block (``conv_pw``, ``bn1``, ``act1``,
``conv_dw``, ..., ``se``, ``conv_pwl``, ``bn3``, ``router``), labelled with its real layer type and
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

import matplotlib.pyplot as plt
import torch

from .blocks import block_figure, blocks_figure
from .condconv import condconv_figure
from .labels import block_labels, block_title, conv_label

__all__ = ["conv_label", "block_title", "block_labels", "block_figure", "blocks_figure", "condconv_figure", "main"]


def main() -> list:
    """Write ``fig2_blocks.png`` and ``fig4_condconv.png`` (see the module docstring)."""
    import matplotlib

    from ..notebook import figure_path
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
