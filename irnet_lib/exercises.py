"""The notebooks' exercises, checked without giving the answer away.

Every check cell of the series is one line that names its exercise, never its answer::

    check("01.1", answer)        # a number: compared with the value computed here, from the library
    check("01.3", MyBlock)       # code: run against the library's own module or function

The expected values are computed on demand from the library (one source of truth, nothing copied into
a cell), so a glance at the cell does not show them. A wrong answer gets a verdict and a hint: the
exercise's own hint (a unit, the formula's first step, a shape), and where the answer is off by a
telling factor (2, a power of ten) a word on that. The full solutions stay folded in the notebooks.

Verdicts are one line each, and an exercise not answered yet (``None``, or a skeleton that still
raises ``NotImplementedError``) says so instead of failing, so a notebook runs top to bottom as
handed out.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["check", "EXERCISES", "Exercise", "CodeExercise"]


@dataclass(frozen=True)
class Exercise:
    """A question with one numeric answer: ``expected()`` computes it from the library.

    rtol: relative tolerance (0: exact, for counts). hint: shown with every wrong answer."""
    expected: Callable[[], Any]
    hint: str
    rtol: float = 0.0

    def verdict(self, answer) -> tuple[bool, str]:
        expected = self.expected()
        try:
            got, want = float(answer), float(expected)
        except (TypeError, ValueError):
            return False, f"expected a number, got {type(answer).__name__} {answer!r}. Hint: {self.hint}"
        if not math.isfinite(got):
            return False, f"{answer!r} is not a finite number. Hint: {self.hint}"
        if math.isclose(got, want, rel_tol=self.rtol, abs_tol=0.0):
            return True, "correct."
        return False, f"not yet: {answer!r} is not it. {_telling_factor(got, want)}Hint: {self.hint}"


@dataclass(frozen=True)
class CodeExercise:
    """Code the student writes: ``checker(code)`` runs it against the library and returns
    ``(ok, message)``; a skeleton that raises ``NotImplementedError`` counts as not written yet."""
    checker: Callable[[Any], tuple[bool, str]]

    def verdict(self, code) -> tuple[bool, str]:
        return self.checker(code)


def _telling_factor(got: float, want: float) -> str:
    """A word on an answer that is off by a factor a student often slips by, without the answer."""
    if want == 0 or got == 0:
        return ""
    ratio = got / want
    if ratio < 0:
        return "The sign is wrong. "
    for factor, words in ((2, "twice"), (0.5, "half")):
        if math.isclose(ratio, factor, rel_tol=1e-3):
            return f"Yours is {words} the answer. "
    power = math.log10(ratio)
    if abs(power) >= 0.999 and math.isclose(power, round(power), abs_tol=1e-3):
        return f"Yours is off by a factor 10^{round(power)}: check the unit (%, MB, ms, thousands). "
    return f"Yours is {'larger' if ratio > 1 else 'smaller'} than the answer. "


# ----------------------------------------------------------------------------------- the checkers of code

def _try(what: str, fn: Callable, *args, **kwargs) -> tuple[Any, str | None]:
    """``fn(*args, **kwargs)``, the student's code; a skeleton still raising NotImplementedError is
    'not written yet', any other error the verdict."""
    try:
        return fn(*args, **kwargs), None
    except NotImplementedError as e:
        return None, f"not written yet ({e or what}): fill in the TODOs, run that cell, then this one."
    except Exception as e:   # the student's code: any error is the verdict, said in one line
        return None, f"{what} raised {type(e).__name__}: {' '.join(str(e).split())[:300]}"


def _compare(name: str, y, expected: torch.Tensor, atol: float = 1e-5) -> str | None:
    """None where ``y`` is ``expected`` (to ``atol``), else what differs: type, shape or values."""
    if not isinstance(y, torch.Tensor):
        return f"{name} returns a {type(y).__name__}, not a tensor"
    if y.shape != expected.shape:
        return f"{name} returns shape {tuple(y.shape)}; expected {tuple(expected.shape)}"
    if not torch.allclose(y, expected, atol=atol, rtol=0):
        return f"{name} computes something else: largest difference {(y - expected).abs().max():.2e}"
    return None


def _randomize_batchnorm(module: torch.nn.Module) -> None:
    """BN statistics and affine parameters that are not the identity, so that a missing BN shows."""
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.weight.uniform_(0.5, 1.5), bn.bias.normal_()
                bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)


def check_block_a(cls) -> tuple[bool, str]:
    """Notebook 01: the student's block [A] with ``standard_block``'s weights must give its outputs."""
    from .blocks import standard_block
    for ni, no, s in [(16, 16, 1), (24, 40, 2)]:
        torch.manual_seed(1)
        reference = standard_block(ni, no, stride=s).eval()
        _randomize_batchnorm(reference)
        name = f"{getattr(cls, '__name__', 'your block')}({ni}, {no}, stride={s})"
        mine, error = _try(f"{name}.__init__", cls, ni, no, stride=s)
        if error:
            return False, error
        _, error = _try(f"loading standard_block's weights into {name}", mine.load_state_dict, reference.state_dict())
        if error:
            return False, error + " (the field names and shapes must be standard_block's: print both)"
        if getattr(mine, "has_skip", None) != reference.has_skip:
            return False, f"{name}.has_skip should be {reference.has_skip}"
        x = torch.randn(2, ni, 12, 12)
        with torch.no_grad():
            y, error = _try(f"{name}.forward", mine.eval(), x)
            problem = error or _compare(name, y, reference(x))
        if problem:
            return False, problem
    return True, ("your block is block [A]: with standard_block's weights it gives the same outputs "
                  "(16 -> 16, 24 -> 40 S2).")


# ----------------------------------------------------------------------------------- the exercises

def _macs(module: torch.nn.Module, shape: tuple[int, ...]) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module.eval()(torch.zeros(shape))
    return counter.get_total_flops() // 2


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _blocks_with_skip(**irnet_kwargs) -> int:
    from .network import irnet
    with torch.device("meta"):
        net = irnet("standard", **irnet_kwargs)
    return sum(block.has_skip for row in net.rows for block in row)


def _standard_block(*args, **kwargs):
    from .blocks import standard_block
    return standard_block(*args, **kwargs)


EXERCISES: dict[str, Exercise | CodeExercise] = {
    # 01 · The inverted residual block
    "01.1": Exercise(lambda: _macs(_standard_block(16, 16), (1, 16, 56, 56)),
                     hint="three convs, each MACs = weights x output positions; at S = 1 all run at 56 x 56 = 3,136 "
                          "positions, and the depthwise conv has F^2 Ne weights, not F^2 Ne^2."),
    "01.2": Exercise(lambda: _params(_standard_block(80, 160, stride=2)),
                     hint="Ne = 4 x 80 = 320; add the three convs' weights (no biases) and 2 per channel for each "
                          "of the three BatchNorms. The stride changes the MACs, not the parameters."),
    "01.3": CodeExercise(check_block_a),
    "01.4": Exercise(lambda: _blocks_with_skip(width_mult=2.0),
                     hint="the rule is Ni == No and S == 1: does doubling every width change which widths are "
                          "equal, or any stride?"),
}


def check(exercise: str, answer) -> bool:
    """Check ``answer`` (a number, or the student's code) for ``exercise`` ("01.1", ...) and print one
    line: not answered yet, correct, or what is wrong with a hint. Returns whether it is correct."""
    if exercise not in EXERCISES:
        raise ValueError(f"no exercise {exercise!r}; the exercises are {', '.join(EXERCISES)}")
    if answer is None:
        ok, message = False, "not answered yet: replace None with your answer and run this cell again."
    else:
        ok, message = EXERCISES[exercise].verdict(answer)
    print(f"Exercise {exercise}: {message}")
    return ok

