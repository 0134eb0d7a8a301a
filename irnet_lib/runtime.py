"""How a training run executes: device, precision, processes, and what it does only for speed.

Nothing here changes *what* a run computes beyond floating-point rounding. :class:`Runtime` says
how; :class:`Speedups` names the three things the opt-in fast layer (:mod:`irnet_lib.fast`) may
do for a run, each decided on its own and recorded in the run's metadata as what actually ran.
"""
from __future__ import annotations

import os
import platform
import sys
import warnings
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from . import condconv
from .checks import check_choice, check_device, check_int

__all__ = ["Runtime", "Speedups", "PRECISIONS", "auto_precision", "autocast", "autocast_dtype", "hardware_name",
           "cpu_name", "world", "all_reduce", "init_distributed", "condconv_formulation", "allocator_setting"]

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype autocast computes in for ``precision`` ("bf16", "fp16"), or None (fp32: no autocast)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    dtype = autocast_dtype(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


def auto_precision(device) -> str:
    """The precision a run on ``device`` uses by default: ``"bf16"`` autocast where the GPU computes
    in bf16 natively (compute capability >= 8.0: A100, H100, RTX 30xx and newer), ``"fp16"``
    autocast with loss scaling on older GPUs (Colab's T4, V100: 7.x), ``"fp32"`` on a CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"


@dataclass(frozen=True)
class Speedups:
    """What a run does only for speed; ``Speedups()`` is nothing: the teaching core alone.

    condconv: a faster formulation of CondConv plugged in for the run, or None (the core's).
    graph_step: ``(eager_step, model, optimizer, loss_fn) -> step`` replaying each training step as
        a CUDA graph, or None (eager steps).
    details: what the fast layer reports about itself, for the run's metadata, or None.
    The third speed-up, glibc keeping freed memory on a CPU, is process-wide: the fast layer sets
    it when it decides a run's speed-ups, and :func:`allocator_setting` reports it.
    """
    condconv: Callable | None = None
    graph_step: Callable | None = None
    details: Callable[[], dict] | None = None

    def make_step(self, eager, model, optimizer, loss_fn):
        return self.graph_step(eager, model, optimizer, loss_fn) if self.graph_step else eager

    def record(self, step) -> dict:
        """What ran, for the run's metadata."""
        ran = {"condconv": "fast" if self.condconv else "core", "allocator": allocator_setting(),
               "cuda_graph": bool(getattr(step, "captured", False))}
        return dict(ran, **self.details()) if self.details else ran


@dataclass(frozen=True)
class Runtime:
    """How a run executes; nothing here changes what is computed, beyond rounding.

    device: "cpu", "cuda", "cuda:1"...; ``None``: where the model is (``train``: a GPU if any).
    precision: "auto" (:func:`auto_precision`), "bf16", "fp16" (GPU; with a gradient scaler), "fp32".
    channels_last: NHWC feature maps, the fast layout for depthwise convs on CPUs and GPUs.
    fast: the opt-in fast layer (:mod:`irnet_lib.fast`), off by default here and on the command
        line (``--fast``): CondConv's fast formulations; on a CPU, glibc keeping freed memory; on
        one GPU, each step replayed as a CUDA graph. ``fast=False`` runs the core alone, even
        after ``irnet_lib.fast.enable()``.
    compile: ``torch.compile`` the model. cuda_graph: ``None`` lets ``fast`` decide, ``False`` never,
        ``True`` insists. max_epochs: stop after this many epochs in this call (calling again resumes).
    resume: continue from the run folder's ``last.pt``. sync_every: steps between host reads of the
        running loss (the non-finite check, the progress bar); default 1 on a CPU, 50 on a GPU.
    """
    device: str | None = None
    precision: str = "auto"
    channels_last: bool = True
    fast: bool = False
    compile: bool = False
    cuda_graph: bool | None = None
    max_epochs: int | None = None
    resume: bool = True
    quiet: bool = False
    label: str = ""
    sync_every: int | None = None

    def __post_init__(self):
        check_choice("precision", self.precision, PRECISIONS)
        for name in ("max_epochs", "sync_every"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), why=" (or None)")
        if self.device is not None:
            check_device(self.device)

    def resolve(self, model: torch.nn.Module) -> tuple[torch.device, str]:
        """The device and the precision of a run of ``model``."""
        device = torch.device(self.device) if self.device else next(model.parameters()).device
        precision = auto_precision(device) if self.precision == "auto" else self.precision
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("precision 'fp16' (with loss scaling) is for CUDA GPUs; on a CPU use 'bf16' or 'fp32'")
        if precision == "bf16" and device.type == "cuda" and auto_precision(device) != "bf16":
            cap = ".".join(map(str, torch.cuda.get_device_capability(device)))
            warnings.warn(f"bf16 on {torch.cuda.get_device_name(device)} (compute capability {cap}): this GPU has "
                          "no bf16 tensor cores, so bf16 runs several times slower than fp16; precision='auto' "
                          "picks fp16 with a gradient scaler here", stacklevel=3)
        return device, precision

    def speedups(self, device: torch.device, precision: str, processes: int) -> Speedups:
        """The speed-ups a run on ``device`` uses: none, or what the fast layer decides."""
        if not (self.fast or self.cuda_graph):
            return Speedups()
        from .fast import speedups  # imported only by the runs that ask for the fast layer
        return speedups(self, device, precision, processes)


@contextmanager
def condconv_formulation(fn):
    """CondConv computes with ``fn`` (None: the core's own) inside the block, as before after it."""
    previous = condconv.use_formulation(fn)
    try:
        yield
    finally:
        condconv.use_formulation(previous)


def allocator_setting() -> str:
    """glibc's malloc setting in this process: "reuse" once the fast layer has told it to keep freed
    memory (process-wide, and not undone), else "default". Read without calling into the fast layer."""
    allocator = sys.modules.get("irnet_lib.fast.allocator")   # loaded only where the fast layer ran
    return allocator.setting if allocator is not None else "default"


# ----------------------------------------------------------------------------------- hardware and processes

def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def hardware_name(device: torch.device | str = "cpu") -> str:
    """'NVIDIA H100 ...' for a GPU, else the CPU model, its cores and torch's threads."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def world() -> tuple[int, int]:
    """(this process's rank, the number of processes): (0, 1) outside ``torchrun``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the processes, in place (itself where there is one process)."""
    if world()[1] > 1:
        dist.all_reduce(t)
    return t


def init_distributed(device: str | None) -> tuple[str, int, int]:
    """Join the process group that ``torchrun`` describes in the environment (once); returns the
    device of this process, its rank and the number of processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, size = world()
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    return str(device), rank, size
