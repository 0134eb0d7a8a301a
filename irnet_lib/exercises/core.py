"""How an exercise is checked: a number against the value the library computes, or the student's
code against the library's own module or function.

Verdicts are one line each, and an exercise not answered yet (``None``, or a skeleton that still
raises ``NotImplementedError``) says so instead of failing, so a notebook runs top to bottom as
handed out. The helpers below are what the lessons' checkers are built from.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Exercise", "CodeExercise", "try_student_code", "compare", "randomize_batchnorm", "macs", "params",
           "meta_irnet", "stored_bench"]


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

def try_student_code(what: str, fn: Callable, *args, **kwargs) -> tuple[Any, str | None]:
    """``fn(*args, **kwargs)``, the student's code; a skeleton still raising NotImplementedError is
    'not written yet', any other error the verdict."""
    try:
        return fn(*args, **kwargs), None
    except NotImplementedError:
        return None, f"not written yet ({what} still raises NotImplementedError): fill in the TODOs, run that cell, " \
                     "then this one."
    except Exception as e:   # the student's code: any error is the verdict, said in one line
        return None, f"{what} raised {type(e).__name__}: {' '.join(str(e).split())[:300]}"


def compare(name: str, y, expected: torch.Tensor, atol: float = 1e-5) -> str | None:
    """None where ``y`` is ``expected`` (to ``atol``), else what differs: type, shape or values."""
    if not isinstance(y, torch.Tensor):
        return f"{name} returns a {type(y).__name__}, not a tensor"
    if y.shape != expected.shape:
        return f"{name} returns shape {tuple(y.shape)}; expected {tuple(expected.shape)}"
    if not torch.allclose(y, expected, atol=atol, rtol=0):
        return f"{name} computes something else: largest difference {(y - expected).abs().max():.2e}"
    return None


def randomize_batchnorm(module: torch.nn.Module) -> None:
    """BN statistics and affine parameters that are not the identity, so that a missing BN shows."""
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.weight.uniform_(0.5, 1.5), bn.bias.normal_()
                bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)


def macs(module: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of ``module`` in eval mode on zeros of ``shape``."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module.eval()(torch.zeros(shape))
    return counter.get_total_flops() // 2


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_irnet(block: str = "standard", **knobs) -> torch.nn.Module:
    """``irnet(block, **knobs)`` in eval mode on the "meta" device: shapes only, built in milliseconds,
    enough for every count an exercise asks for."""
    from ..network import irnet
    with torch.device("meta"):
        return irnet(block, **knobs).eval()


def stored_bench(name: str) -> dict:
    """A committed benchmark file of ``results/bench/`` (the GPU runs the notebooks read)."""
    import json

    from ..notebook import ROOT
    return json.loads((ROOT / "results" / "bench" / name).read_text())
