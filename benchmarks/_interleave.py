"""Interleaved timing for the comparison scripts: each repetition runs every case once, so that load from
other processes hits all of them alike."""
from __future__ import annotations

import sys


def interleaved(cases: dict, reps: int, warmup: int = 2) -> dict:
    """``cases`` maps a name to a call that runs one step and returns its seconds. Every case runs ``warmup``
    untimed passes (kernel builds, first-touch memory), then ``reps`` timed ones; returns name -> seconds."""
    for _ in range(warmup):
        for step in cases.values():
            step()
    times = {k: [] for k in cases}
    for rep in range(reps):
        for k, step in cases.items():
            times[k].append(step())
        print(f"repetition {rep + 1}/{reps}", file=sys.stderr)
    return times
