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

Off (the default everywhere: the library, the notebooks, the command lines) it has no side effects:
nothing is imported, compiled or changed process-wide. It plugs in through the core's one plug point,
``irnet_lib.condconv.use_formulation``, and gives a training run its step (:func:`speedups`). On::

    import irnet_lib.fast
    irnet_lib.fast.enable()                   # for the rest of the process
    with irnet_lib.fast.enabled(): ...        # or for a block of code
    irnet_lib.train.train(..., fast=True)     # for one run (python -m irnet_lib.train --fast)
"""
from __future__ import annotations

from contextlib import contextmanager

from .. import condconv as _core_condconv

__all__ = ["enable", "disable", "enabled", "is_enabled", "status", "speedups"]


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
    return {"enabled": is_enabled(), "allocator": allocator.setting,
            "cpu_depthwise": depthwise._status,
            "cpu_matmul": "oneDNN" if is_enabled() and _onednn_fp32_is_exact() else "default"}


def speedups(runtime, device, precision: str, processes: int):
    """The fast layer's three speed-ups for a training run with ``runtime`` on ``device``, each
    decided on its own (the loop records in the run's metadata what ran):

    - CondConv's fast formulations, with ``runtime.fast``, on any device (plugged in for the run);
    - glibc keeping freed memory, with ``runtime.fast`` on a CPU: set here, process-wide;
    - the training step replayed as a CUDA graph: as ``runtime.cuda_graph`` says, by default with
      ``runtime.fast`` wherever graphs work (one CUDA GPU, bf16 or fp32, no torch.compile).
    """
    from ..runtime import Speedups
    from . import allocator, condconv, graphs
    if runtime.fast and device.type == "cpu":
        allocator.reuse_freed_memory()
    return Speedups(condconv=condconv.condconv2d if runtime.fast else None,
                    graph_step=graphs.step_builder(runtime, device, precision, processes),
                    details=_run_details if runtime.fast else None)


def _run_details() -> dict:
    from . import depthwise
    from .condconv import _onednn_fp32_is_exact
    return {"cpu_depthwise": depthwise._status, "cpu_matmul": "oneDNN" if _onednn_fp32_is_exact() else "default"}
