"""The library's argument checks, one function per rule, so that every module refuses bad input the
same way: a ``ValueError`` that names the argument, what is allowed, and what it was given.

A ``bool`` is never taken for a number here (``True`` is an ``int`` in Python, and ``stride=True``
is a slip, not a 1).
"""
from __future__ import annotations

import math
from numbers import Integral, Real

__all__ = ["check_int", "check_number", "check_choice", "check_kernel_size", "check_device"]


def check_int(name: str, value, minimum: int = 1, maximum: int | None = None, *, why: str = "") -> int:
    """An int (a NumPy integer too, never a bool) from ``minimum`` to ``maximum`` (inclusive)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum or (
            maximum is not None and value > maximum):
        allowed = f"an int >= {minimum}" if maximum is None else f"an int from {minimum} to {maximum}"
        raise ValueError(f"{name} must be {allowed}{why}, got {value!r}")
    return int(value)


def check_number(name: str, value, low: float = 0.0, high: float = math.inf, *, low_open: bool = True,
                 high_open: bool = False, why: str = "") -> float:
    """A finite real number (not a bool) in the interval from ``low`` to ``high``; ``low_open`` and
    ``high_open`` say whether that end is excluded. The default is "a finite number > 0"."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        if high == math.inf:
            allowed = f"a finite number {'>' if low_open else '>='} {low:g}"
        else:
            allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be {allowed}{why}, got {value!r}")
    return float(value)


def check_choice(name: str, value, choices) -> None:
    """One of ``choices`` (compared with ``==``, so an unhashable value gets this error too)."""
    choices = tuple(choices)
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def check_kernel_size(kernel_size) -> int:
    """F of a depthwise conv: an odd int, so that padding F // 2 keeps the feature map's size."""
    check_int("kernel_size (F)", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size (F) must be odd, such as 3 or 5 (padding F // 2 keeps the size), "
                         f"got {kernel_size!r}")
    return kernel_size


def check_device(device):
    """A ``torch.device`` that is there: "cpu", "cuda" or "cuda:N" where PyTorch sees a GPU."""
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: PyTorch sees no CUDA GPU here (torch.cuda.is_available() is False); "
                         "leave the device unset or pass 'cpu' to run on the CPU")
    return dev
