"""Keep freed memory in the process on Linux CPUs: a ~1.4x faster CPU training step, one call.

PyTorch's CPU tensors come from ``malloc``. glibc serves every block above its mmap threshold
(at most 32 MB) with a fresh ``mmap`` and returns it to the kernel on ``free``. IR-NET's feature
maps at batch 64 are up to 77 MB (64 x 96 x 56 x 56 floats), so every training step maps them
anew, and the kernel zero-fills each 4 kB page on first touch: on a 2-core CPU that was a third
of the step, in system time. Turning mmap off and raising the trim threshold makes glibc keep
freed blocks on its heap and hand them out again, as the CUDA caching allocator does on a GPU.

Measured on a 2-core AMD EPYC (batch 64, NHWC fp32, median of 6 steps; ``results/bench``):
standard 0.94 -> 0.69 s, SE 1.23 -> 0.86 s, CondConv 2.11 -> 1.42 s per training step
(``benchmarks/bench.py``, ``docs/performance.md``).

The cost: memory freed by the process is reused by it but not returned to the operating system
until it exits. ``irnet_lib.fast.enable()`` turns it on, and so does a CPU training run with
``fast=True`` (``--fast``); other platforms (macOS, Windows, musl) are left alone. Preloading jemalloc
or tcmalloc does the same job from outside the process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["reuse_freed_memory", "setting"]

# glibc's mallopt parameters (malloc.h) and its documented defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}
_KEEP = {_M_TRIM_THRESHOLD: 2**31 - 1, _M_MMAP_MAX: 0}
#: "reuse" after reuse_freed_memory() took effect, else "default" (what benchmarks and runs record).
setting = "default"


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:  # pragma: no cover - a Linux without a loadable libc
        return None


def reuse_freed_memory(on: bool = True) -> bool:
    """Make glibc keep freed memory for reuse (``on``) or go back to its default settings (``off``).

    Returns True where it took effect (Linux with glibc), False elsewhere, where nothing changes.
    ``off`` restores the documented default values, but not glibc's *dynamic* mmap threshold
    (which grows up to 32 MB as large blocks are freed): any mallopt call switches that off for
    good. A truly plain process is one that never called this.
    """
    global setting  # noqa: PLW0603 - glibc's setting is process-wide; this module mirrors it in one name
    libc = _libc()
    if libc is None:
        return False
    settings = _KEEP if on else _DEFAULTS
    ok = all(libc.mallopt(ctypes.c_int(k), ctypes.c_int(v)) == 1 for k, v in settings.items())
    if ok:
        setting = "reuse" if on else "default"
    return ok
