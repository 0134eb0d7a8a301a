"""Notebook 01 · The inverted residual block: its exercises."""
from __future__ import annotations

import torch

from .core import CodeExercise, Exercise, compare, macs, meta_irnet, params, randomize_batchnorm, try_student_code


def _blocks_with_skip(**irnet_kwargs) -> int:
    net = meta_irnet("standard", **irnet_kwargs)
    return sum(block.has_skip for row in net.rows for block in row)


def _standard_block(*args, **kwargs):
    from ..blocks import standard_block
    return standard_block(*args, **kwargs)


def check_block_a(cls) -> tuple[bool, str]:
    """Notebook 01: the student's block [A] with ``standard_block``'s weights must give its outputs."""
    from ..blocks import standard_block
    for ni, no, s in [(16, 16, 1), (24, 40, 2)]:
        torch.manual_seed(1)
        reference = standard_block(ni, no, stride=s).eval()
        randomize_batchnorm(reference)
        name = f"{getattr(cls, '__name__', 'your block')}({ni}, {no}, stride={s})"
        mine, error = try_student_code(f"{name}.__init__", cls, ni, no, stride=s)
        if error:
            return False, error
        _, error = try_student_code(f"loading standard_block's weights into {name}", mine.load_state_dict,
                                    reference.state_dict())
        if error:
            return False, error + " (the field names and shapes must be standard_block's: print both)"
        if getattr(mine, "has_skip", None) != reference.has_skip:
            return False, f"{name}.has_skip should be {reference.has_skip}"
        x = torch.randn(2, ni, 12, 12)
        with torch.no_grad():
            y, error = try_student_code(f"{name}.forward", mine.eval(), x)
            problem = error or compare(name, y, reference(x))
        if problem:
            return False, problem
    return True, ("your block is block [A]: with standard_block's weights it gives the same outputs "
                  "(16 -> 16, 24 -> 40 S2).")


EXERCISES = {
    "01.1": Exercise(lambda: macs(_standard_block(16, 16), (1, 16, 56, 56)),
                     hint="three convs, each MACs = weights x output positions; at S = 1 all run at 56 x 56 = 3,136 "
                          "positions, and the depthwise conv has F^2 Ne weights, not F^2 Ne^2."),
    "01.2": Exercise(lambda: params(_standard_block(80, 160, stride=2)),
                     hint="Ne = 4 x 80 = 320; add the three convs' weights (no biases) and 2 per channel for each "
                          "of the three BatchNorms: count weights, not output positions."),
    "01.3": CodeExercise(check_block_a),
    "01.4": Exercise(lambda: _blocks_with_skip(width_mult=2.0),
                     hint="the rule is Ni == No and S == 1: does doubling every width change which widths are "
                          "equal, or any stride?"),
}
