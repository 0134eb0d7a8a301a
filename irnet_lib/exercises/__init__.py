"""The notebooks' exercises, checked without giving the answer away.

Every check cell of the series is one line that names its exercise, never its answer::

    check("01.1", answer)        # a number: compared with the value computed here, from the library
    check("01.3", MyBlock)       # code: run against the library's own module or function

The expected values are computed on demand from the library (one source of truth, nothing copied into
a cell), so a glance at the cell does not show them. A wrong answer gets a verdict and a hint: the
exercise's own hint (a unit, the formula's first step, a shape), and where the answer is off by a
telling factor (2, a power of ten) a word on that. The full solutions stay folded in the notebooks.
Each notebook's exercises live in ``lessonNN.py``; :mod:`.core` says how they are checked.
"""
from __future__ import annotations

from . import lesson00, lesson01, lesson02, lesson03, lesson04, lesson05, lesson06, lesson07, lesson08
from .core import CodeExercise, Exercise

__all__ = ["check", "EXERCISES", "Exercise", "CodeExercise"]

#: Every exercise of the series by its name, "NN.k": notebook NN, exercise k.
EXERCISES: dict[str, Exercise | CodeExercise] = {
    **lesson00.EXERCISES,
    **lesson01.EXERCISES,
    **lesson02.EXERCISES,
    **lesson03.EXERCISES,
    **lesson04.EXERCISES,
    **lesson05.EXERCISES,
    **lesson06.EXERCISES,
    **lesson07.EXERCISES,
    **lesson08.EXERCISES,
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

