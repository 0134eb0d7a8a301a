"""The opt-in fast layer: everything in ``irnet_lib`` that exists only for speed.

The teaching core (blocks, CondConv, network, recipe, training loop) computes the paper's network
in the plainest correct way. This package makes the same computation faster, and nothing here
changes a result beyond floating-point rounding (the tests hold every piece to the core or to the
per-example definition, with the fast layer on and off):

- :mod:`.condconv`: CondConv's per-layer formulations (batched matmuls for the 1x1 convs, on a CPU
  in oneDNN where that is exact; a channels_last-preserving fold);
- :mod:`.depthwise`: a compiled per-example depthwise operator for CondConv on a CPU
  (``torch.ops.irnet.per_example_depthwise``, built with ``torch.utils.cpp_extension``);
- :mod:`.allocator`: glibc told to keep freed memory, so that large CPU feature maps are not
  page-faulted in again at every step;
- :mod:`.graphs`: a training step's forward and backward replayed as one CUDA graph.

Off (the default for the library and the notebooks) it has no side effects: nothing is compiled,
no process-wide setting changes. On::

    import irnet_lib.fast
    irnet_lib.fast.enable()                   # for the rest of the process
    with irnet_lib.fast.enabled(): ...        # or for a block of code
    irnet_lib.train.train(..., fast=True)     # the same, for one run (the command lines' default)
"""
from __future__ import annotations

from contextlib import contextmanager

from .. import condconv as _core_condconv

__all__ = ["enable", "disable", "enabled", "is_enabled", "status"]


def enable(*, keep_freed_memory: bool = True) -> None:
    """Turn the fast layer on for this process: CondConv's fast formulations, and (Linux, glibc,
    ``keep_freed_memory``) freed memory kept for reuse. Nothing else is changed or undone."""
    from . import allocator, condconv
    _core_condconv.use_formulation(condconv.condconv2d)
    if keep_freed_memory:
        allocator.reuse_freed_memory()


def disable() -> None:
    """CondConv back to the core's formulation. The allocator setting stays: glibc cannot be
    returned to its exact initial state (see :mod:`.allocator`)."""
    _core_condconv.use_formulation(None)


def is_enabled() -> bool:
    """Whether CondConv computes with the fast layer's formulations now."""
    from . import condconv
    return _core_condconv.formulation() is condconv.condconv2d


@contextmanager
def enabled(on: bool = True, **kwargs):
    """``with enabled():`` the fast layer is on inside the block; ``with enabled(False):`` it is off
    there, even where it was enabled before; after the block CondConv computes as it did before it."""
    previous = _core_condconv.use_formulation(None)
    if on:
        enable(**kwargs)
    try:
        yield
    finally:
        _core_condconv.use_formulation(previous)


def status() -> dict:
    """What the fast layer does on this machine, for logs and run metadata. Building nothing:
    the CPU depthwise kernel reports "not built yet" until CondConv first needs it."""
    from . import allocator, depthwise
    from .condconv import _onednn_fp32_is_exact
    return {"enabled": is_enabled(), "allocator": allocator.state(),
            "cpu_depthwise": depthwise._status,
            "cpu_matmul": "oneDNN" if is_enabled() and _onednn_fp32_is_exact() else "default"}
