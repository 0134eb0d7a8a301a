"""CondConv's depthwise layer on a CPU, without folding the batch: a small compiled kernel.

A conditional depthwise conv is B depthwise convolutions with B different kernels. PyTorch has
no operator for that, so :mod:`irnet_lib.condconv` folds the batch into the channel axis and
runs one grouped convolution. On a channels_last tensor that fold is a transposing copy of the
whole feature map, and a training step needs four of them per layer (input and output, forward
and backward). ``csrc/per_example_depthwise.cpp`` convolves the NHWC tensors where they lie,
forward and backward, in plain C++ (OpenMP optional): each output summed in registers over its
taps, with the kernel's taps held in registers while a row of the image is swept. Measured on a
2-core AMD EPYC at batch 64, forward and backward: IR-NET's conditional depthwise layers 1.9-2.1x
faster than with the fold (routing included), the convolution itself as fast as PyTorch's own
depthwise convolution with one kernel for the batch; the CondConv network's training step 13 %
faster.

It is built on first use with the machine's C++ compiler (about two seconds; cached under
``$IRNET_CACHE_DIR`` or ``~/.cache/irnet_lib``, else a temporary folder; keyed by the source, the
flags and the CPU) and called through ``ctypes``, which releases the GIL. The batch is cut into
one slice per torch thread. Where PyTorch runs on an OpenMP runtime that can be found (Linux), the
kernel is linked against that same runtime and its slices run on PyTorch's own threads; threads
of our own would compete with PyTorch's, which keep spinning for a few milliseconds after each
operator (on 2 cores that made the kernel 1.8x slower right after a matmul). Elsewhere the slices
run on a pool of Python threads. Without a compiler, or with ``IRNET_NATIVE=0``, CondConv keeps
the folded grouped convolution: the same function, only slower (:func:`status` says which).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

__all__ = ["available", "status", "per_example_depthwise", "supports", "disabled"]

_SOURCE = Path(__file__).with_name("csrc") / "per_example_depthwise.cpp"
# Tried in order. -march=native: the CPU's widest vectors; without it the kernel still builds, with
# the compiler's baseline width. -fopenmp-simd only honours the ``omp simd`` hints, no runtime.
_FLAG_SETS = (["-O3", "-march=native", "-fopenmp-simd"], ["-O3", "-fopenmp-simd"], ["-O3"])
_OPENMP_NAMES = ("libgomp", "libiomp5", "libomp")
_status = "not built yet"
_switched_off = 0  # > 0 inside ``disabled()``
_openmp = False  # True: the kernel cuts and runs the slices itself, on PyTorch's OpenMP threads


def _cpu_identity() -> str:
    """What a binary built with -march=native depends on: the CPU's model and feature flags."""
    ident = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo") as f:
            ident += [line for line in f if line.startswith(("model name", "flags"))][:2]
    except OSError:
        pass
    return "|".join(ident)


def _cache_dir() -> Path:
    """``$IRNET_CACHE_DIR``, else ``~/.cache/irnet_lib``; a temporary folder where that cannot be
    written (a read-only home on a cluster), so that a locked cache costs a rebuild, not the kernel."""
    for folder in (os.environ.get("IRNET_CACHE_DIR") or Path.home() / ".cache" / "irnet_lib",
                   Path(tempfile.gettempdir()) / f"irnet_lib-{os.getuid() if hasattr(os, 'getuid') else 'user'}"):
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise RuntimeError("no writable folder for the compiled kernel: set IRNET_CACHE_DIR")


def _openmp_runtime() -> str | None:
    """The OpenMP runtime PyTorch has loaded into this process (Linux), or None: linked against
    it, the kernel's slices run on PyTorch's own threads (why: the module's docstring)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return None
    found = sorted(p for p in paths if Path(p).name.startswith(_OPENMP_NAMES) and ".so" in Path(p).name)
    return found[0] if len(found) == 1 else None  # none, or two already: do not add to the mix


def _flag_sets():
    """(compile flags, link flags) to try, the OpenMP build first where PyTorch has a runtime."""
    sets = [(flags, []) for flags in _FLAG_SETS]
    runtime = _openmp_runtime()
    if runtime:
        link = ["-Wl,--as-needed", runtime, f"-Wl,-rpath,{Path(runtime).parent}"]
        sets.insert(0, (["-O3", "-march=native", "-fopenmp"], link))
    return sets


def _build() -> Path:
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not cxx:
        raise RuntimeError("no C++ compiler found: install g++ (or clang++) or set CXX")
    source = _SOURCE.read_bytes()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    cache, machine = _cache_dir(), _cpu_identity().encode()
    errors = []
    for flags, link in _flag_sets():
        cmd = [*flags, "-shared", "-fPIC", "-std=c++14"]
        key = hashlib.sha256(b"\0".join([source, " ".join(cmd + link).encode(), version.encode(), machine])).hexdigest()[:16]
        out = cache / f"per_example_depthwise-{key}.so"
        if out.exists():
            return out
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # concurrent builders never share a file
        done = subprocess.run([cxx, *cmd, str(_SOURCE), "-o", str(tmp), *link], capture_output=True, text=True,
                              timeout=300)
        if done.returncode == 0:
            os.replace(tmp, out)
            return out
        errors.append(f"{cxx} {' '.join(cmd + link)}: {done.stderr.strip()[-500:]}")
    raise RuntimeError("could not build the per-example depthwise kernel:\n" + "\n".join(errors))


@functools.cache
def _library():
    global _status, _openmp
    if os.environ.get("IRNET_NATIVE", "1") == "0":
        _status = "off (IRNET_NATIVE=0): folded grouped convolution"
        return None
    try:
        lib = ctypes.CDLL(str(_build()))
    except Exception as e:  # no compiler, a failed build, an unloadable file: fall back, say why
        _status = f"unavailable ({e}): folded grouped convolution"
        warnings.warn(f"irnet_lib: CondConv's CPU depthwise kernel is {_status}; results are the same, "
                      "only slower. Set IRNET_NATIVE=0 to silence this.", RuntimeWarning, stacklevel=3)
        return None
    n = ctypes.c_int64
    p = ctypes.c_void_p
    for name in ("dw_forward_f32", "dw_forward_f64"):
        getattr(lib, name).argtypes = [p, p, p] + [n] * 10
        getattr(lib, name).restype = None
    for name in ("dw_backward_f32", "dw_backward_f64"):
        getattr(lib, name).argtypes = [p] * 5 + [n] * 10
        getattr(lib, name).restype = None
    # On OpenMP threads only where loading it did not bring in a second runtime next to PyTorch's.
    _openmp = bool(lib.dw_openmp()) and _openmp_runtime() is not None
    threads = "PyTorch's OpenMP threads" if _openmp else "Python threads"
    _status = f"compiled per-example kernel, on {threads}"
    return lib


@contextmanager
def disabled():
    """Inside this context CondConv folds the batch instead (to compare the two, or to rule the
    kernel out). Not thread-local: it switches the kernel off for the whole process."""
    global _switched_off
    _switched_off += 1
    try:
        yield
    finally:
        _switched_off -= 1


def available() -> bool:
    """Is the compiled kernel usable here (built now on first call)?"""
    return _library() is not None


def status() -> str:
    """How CondConv's depthwise layers run on this CPU, in words (for logs and benchmarks)."""
    _library()
    return _status


def supports(x: torch.Tensor, weight: torch.Tensor, padding: int, groups: int) -> bool:
    """Can this conditional conv take the compiled path? A channels_last fp32/fp64 CPU tensor
    outside autocast (which asks for bf16), a depthwise kernel (groups == C_in == C_out) of odd
    square size with "same" padding. (The caller keeps it out of ``torch.compile``: a ctypes call
    cannot be traced.)"""
    B, C, H, W = x.shape
    _, c_out, cin_g, kh, kw = weight.shape
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not _switched_off and not torch.is_autocast_enabled("cpu")
            and groups == C == c_out and cin_g == 1 and kh == kw and kh % 2 == 1 and padding == kh // 2
            and x.is_contiguous(memory_format=torch.channels_last) and available())


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="irnet-dw")


if hasattr(os, "register_at_fork"):  # a forked child (a DataLoader worker) has none of the parent's threads
    os.register_at_fork(after_in_child=_pool.cache_clear)


def _in_slices(fn, total: int, *args):
    """fn(*args, start, stop, slices) over ``total`` units cut into one slice per torch thread:
    in one call where the kernel runs them on OpenMP threads, else one call per slice, each on a
    thread of our pool. The cuts are the same either way, and so are the results."""
    n = max(1, min(torch.get_num_threads(), total))
    if _openmp or n == 1:
        fn(*args, 0, total, n)
        return
    cuts = [total * t // n for t in range(n + 1)]
    for f in [_pool().submit(fn, *args, cuts[t], cuts[t + 1], 1) for t in range(n)]:
        f.result()


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else None


def _suffix(t):
    return "f32" if t.dtype == torch.float32 else "f64"


class _PerExampleDepthwise(torch.autograd.Function):
    """y_b = depthwise_conv(x_b, K_b), K_b = r_b @ weight, for (B, C, H, W) channels_last tensors.

    ``weight`` holds the experts tap-major, (M, F * F * C), so that a mixed kernel is
    (B, F, F, C) with the channel axis contiguous, as the NHWC loops read it.
    """

    @staticmethod
    def forward(ctx, x, weight, r, kernel_size, stride):
        B, C, H, W = x.shape
        F_, S, P = kernel_size, stride, kernel_size // 2
        Ho, Wo = (H + 2 * P - F_) // S + 1, (W + 2 * P - F_) // S + 1
        k = r @ weight  # (B, F*F*C): 1/(H*W) of the conv's work; kept for the backward pass
        y = torch.empty((B, C, Ho, Wo), dtype=x.dtype, memory_format=torch.channels_last)
        fn = getattr(_library(), "dw_forward_" + _suffix(x))
        _in_slices(fn, B * Ho, _ptr(x), _ptr(k), _ptr(y), H, W, C, F_, S, Ho, Wo)
        ctx.save_for_backward(x, weight, r, k)
        ctx.geometry = (H, W, C, F_, S, Ho, Wo)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, r, k = ctx.saved_tensors
        need_x, need_w, need_r = ctx.needs_input_grad[:3]
        g = grad_y.contiguous(memory_format=torch.channels_last)
        gx = torch.empty_like(x, memory_format=torch.channels_last) if need_x else None
        gk = torch.empty_like(k) if (need_w or need_r) else None
        B = x.shape[0]
        fn = getattr(_library(), "dw_backward_" + _suffix(x))
        _in_slices(fn, B, _ptr(x), _ptr(k), _ptr(g), _ptr(gx), _ptr(gk), *ctx.geometry)
        grad_w = r.t() @ gk if need_w else None
        grad_r = gk @ weight.t() if need_r else None
        return gx, grad_w, grad_r, None, None


def per_example_depthwise(x, weight, routing_weights, stride):
    """Conditional depthwise conv: ``weight`` (M, C, 1, F, F), ``routing_weights`` (B, M).
    Check :func:`supports` first."""
    M, C, _, F_, _ = weight.shape
    w_taps = weight.reshape(M, C, F_ * F_).transpose(1, 2).reshape(M, F_ * F_ * C)
    return _PerExampleDepthwise.apply(x, w_taps, routing_weights, F_, stride)
