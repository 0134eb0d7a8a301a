"""Speed of the three IR-NET variants (and torchvision's MobileNetV2 as a familiar reference).

    python benchmarks/bench.py --short                     # CI-sized: a minute on a 2-core CPU
    python benchmarks/bench.py                             # the full CPU run (several minutes)
    python benchmarks/bench.py --device cuda               # on a GPU: batch 256 (compiling takes minutes)

For every network and every *mode* it measures, at the paper's 56x56 input and 100 classes:

- training throughput: forward + backward + SGD step (the recipe's optimiser), images/s, at batch 64
  on a CPU and 256 on a GPU;
- inference throughput at batch 256, images/s;
- latency at batch 1, ms.

Modes: ``eager`` (contiguous fp32, the plain PyTorch default, the teaching code as it is),
``channels_last`` (NHWC fp32, the teaching code), ``bf16`` (the same in bf16 autocast), ``fast``
(NHWC fp32 with the fast layer,
:mod:`irnet_lib.fast`: what the command lines train with on a CPU with ``--fast``), ``fast_bf16`` (the same in bf16
autocast), ``compile`` (``fast`` + ``torch.compile``) and, on a GPU, ``compile_bf16``,
``graph_bf16`` (the fast layer in bf16 with each training step's forward and backward replayed as one
CUDA graph, :mod:`irnet_lib.fast.graphs`: what ``--fast`` trains with on one GPU; inference
stays eager) and ``reduce_overhead_bf16`` (``torch.compile(mode="reduce-overhead")``: compiled
kernels replayed as CUDA graphs). Warm-up calls (and compilation) are excluded, and so is one untimed pass in the
timed order, in which the process's memory reaches its high-water mark; each figure is the median over
``reps`` repetitions with the spread (IQR and min/max). Repetitions are *interleaved*: every
repetition times all networks and modes one after the other, so a burst of load from other
processes on a shared machine hits all of them alike, and ratios are taken per repetition
(paired) before the median. The printed ratios:

1. CondConv training step / SE training step (the cost of the conditional convolutions);
2. the fast training path (``fast`` on a CPU, ``graph_bf16`` on a GPU) against contiguous fp32 eager;
3. the 55-epoch recipe on ImageNet-100-sized data (~130k images of 64 px, random uint8 tensors
   through ``irnet_lib.data.make_loader``'s tensor pipeline), projected from measured steps.

Results go to ``<out>/<device>[-short].json`` with the hardware and library versions.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from irnet_lib import fast
from irnet_lib.fast import allocator, depthwise
from irnet_lib.fast.condconv import cpu_matmul_library
from irnet_lib.fast.graphs import GraphedStep
from irnet_lib.network import irnet
from irnet_lib.runs import atomic_save
from irnet_lib.runtime import cpu_name

__all__ = ["VARIANTS", "MODES", "DEFAULT_MODE", "build", "hardware", "run", "main", "summarise", "time_per_call"]

VARIANTS = ("standard", "se", "condconv", "mobilenet_v2")


class Mode(NamedTuple):
    channels_last: bool
    bf16: bool                # bf16 autocast
    compiled: bool            # torch.compile
    graphed: bool = False     # the training step's forward and backward as one CUDA graph
    fast: bool = True         # the fast layer (irnet_lib.fast) on
    compile_mode: str | None = None


MODES = {
    "eager": Mode(False, False, False, fast=False),
    "channels_last": Mode(True, False, False, fast=False),
    "bf16": Mode(True, True, False, fast=False),
    "fast": Mode(True, False, False),
    "fast_bf16": Mode(True, True, False),
    "compile": Mode(True, False, True),
    "compile_bf16": Mode(True, True, True),
    "graph_bf16": Mode(True, True, False, graphed=True),
    "reduce_overhead_bf16": Mode(True, True, True, compile_mode="reduce-overhead"),
}
GPU_ONLY_MODES = ("compile_bf16", "graph_bf16", "reduce_overhead_bf16")
# The fastest training path of the command lines on each device (python -m irnet_lib.train --fast).
DEFAULT_MODE = {"cpu": "fast", "cuda": "graph_bf16"}
PAPER_HOURS = {"standard": 5.5, "se": 6.0}   # Table 3, 55 epochs (the paper names no hardware)
RECIPE = dict(epochs=55, train_images=130_000, test_images=5_000, image_px=64, batch_size=256)
IMAGE_SIZE, NUM_CLASSES = 56, 100
NOISE_NOTE = ("Timings on a machine shared with other processes are noisy: repetitions are interleaved "
              "across networks and modes, and ratios are medians of per-repetition (paired) ratios.")


def build(variant: str, num_classes: int = NUM_CLASSES) -> nn.Module:
    """One of ``VARIANTS``: an IR-NET block variant, or torchvision's MobileNetV2 (as shipped)."""
    if variant == "mobilenet_v2":
        from torchvision.models import mobilenet_v2
        return mobilenet_v2(num_classes=num_classes)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return irnet(variant, num_classes)


def hardware(device: torch.device) -> dict:
    """What the numbers were measured on, and with which software."""
    info = {
        "device": device.type,
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "allocator": allocator.setting,
        # Where CondConv's per-example fp32 matmuls run on the CPU in the fast layer.
        "cpu_matmul": cpu_matmul_library(),
        # How its depthwise layers run on a channels_last CPU tensor in the fast layer.
        "cpu_depthwise": depthwise.status(),
    }
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - torchvision is a dependency
        info["torchvision"] = None
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stats(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return {"median": statistics.median(times), "q1": q[0], "q3": q[2], "min": min(times),
            "max": max(times), "n": len(times)}


@dataclass
class Case:
    """One network in one mode: its model, optimiser and the three timed callables."""
    variant: str
    mode: str
    device: torch.device
    batch: int
    image_size: int
    infer_batch: int = 256
    compile_s: float = 0.0
    times: dict = field(default_factory=lambda: {"train": [], "infer": [], "latency": []})

    def __post_init__(self):
        channels_last, bf16, compiled, graphed, self.fast, compile_mode = MODES[self.mode]
        torch.manual_seed(0)  # every mode of a variant starts from the same weights
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = build(self.variant).to(self.device, memory_format=fmt)
        # The recipe's optimiser (SGD, Nesterov momentum 0.9, weight decay 5e-5 on everything);
        # a small learning rate keeps random-label training finite.
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                                   weight_decay=5e-5)
        self.net = torch.compile(self.model, dynamic=False, mode=compile_mode) if compiled else self.model
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
        g = torch.Generator().manual_seed(1)
        x = torch.randn(self.batch, 3, self.image_size, self.image_size, generator=g)
        self.x = x.to(self.device).contiguous(memory_format=fmt)
        self.x1 = self.x[:1].clone(memory_format=fmt)
        xi = torch.randn(self.infer_batch, 3, self.image_size, self.image_size, generator=g)
        self.xi = xi.to(self.device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, NUM_CLASSES, (self.batch,), generator=g).to(self.device)
        self.graphed = None
        if graphed:
            self.model.train()
            with fast.enabled(self.fast, keep_freed_memory=False):
                self.graphed = GraphedStep(self.model, F.cross_entropy, self.x, self.y,
                                           autocast_dtype=torch.bfloat16 if bf16 else None)

    def train_step(self):
        self.model.train()
        if self.graphed is not None:
            self.graphed(self.x, self.y)
        else:
            self.opt.zero_grad(set_to_none=True)
            with self.autocast():
                loss = F.cross_entropy(self.net(self.x), self.y)
            loss.backward()
        self.opt.step()

    def infer(self, x):
        self.model.eval()
        with torch.inference_mode(), self.autocast():
            return self.net(x)

    def callables(self):
        """The three timed calls, each with the fast layer as this case's mode has it (it is
        process-wide, and the cases are interleaved)."""
        def in_mode(fn):
            def call():
                with fast.enabled(self.fast, keep_freed_memory=False):
                    return fn()
            return call
        return {"train": in_mode(self.train_step), "infer": in_mode(lambda: self.infer(self.xi)),
                "latency": in_mode(lambda: self.infer(self.x1))}


def time_per_call(fn, iters: int, device) -> float:
    """Seconds per call of ``fn``, over ``iters`` calls, the device's queue drained at both ends."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / iters


def _paired(a: list[float], b: list[float]) -> dict:
    return _stats([x / y for x, y in zip(a, b)])


@dataclass
class Settings:
    device: str = "cpu"
    short: bool = False
    batch: int | None = None          # training batch; default 64 (CPU) / 256 (GPU)
    infer_batch: int | None = None    # inference throughput batch; default 256 (32 with short)
    image_size: int = IMAGE_SIZE
    reps: int | None = None
    variants: tuple = VARIANTS
    modes: tuple | None = None
    compile: bool | None = None       # None: off in --short mode on a CPU, else on
    project: bool = True
    warmup: int = 2
    plain_allocator: bool = False     # True: glibc's defaults (a plain PyTorch process) on a CPU

    def resolve(self):
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for but torch.cuda.is_available() is False: "
                             "run with --device cpu, or on a machine with a GPU")
        gpu = self.device == "cuda"
        self._fill_defaults(gpu)
        for name, v in (("batch", self.batch), ("infer_batch", self.infer_batch), ("reps", self.reps),
                        ("image_size", self.image_size),
                        ("warmup", self.warmup + 1)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"unknown variant(s) {bad}: choose from {VARIANTS}")
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise ValueError(f"unknown mode(s) {bad}: choose from {tuple(MODES)}")
        bad = [m for m in self.modes if not gpu and m in GPU_ONLY_MODES]
        if bad:
            raise ValueError(f"mode(s) {bad} need a GPU: run with --device cuda, or pick from "
                             f"{tuple(m for m in MODES if m not in GPU_ONLY_MODES)}")
        # iterations per timed repetition: long enough to dwarf timer and launch overheads
        # (a CPU training step at batch 64 already takes seconds)
        self.iters = {"train": 1, "infer": 1, "latency": 5} if not gpu else {"train": 10, "infer": 10, "latency": 50}
        if self.short:
            self.iters = {k: max(1, v // 5) for k, v in self.iters.items()}
        return self

    def _fill_defaults(self, gpu: bool) -> None:
        if self.batch is None:
            self.batch = (64 if gpu else 16) if self.short else (256 if gpu else 64)
        if self.infer_batch is None:
            self.infer_batch = 32 if self.short else 256
        if self.reps is None:
            self.reps = 3 if self.short else (10 if gpu else 5)
        if self.compile is None:
            self.compile = gpu or not self.short
        if self.modes is None:
            # One compiled mode per device: compiling costs minutes per network (67-81 s per IR-NET
            # variant for its training graph alone on an H200), and a GPU trains in bf16.
            compiled = "compile_bf16" if gpu else "compile"
            self.modes = tuple(m for m in MODES if (gpu or m not in GPU_ONLY_MODES)
                               and (not MODES[m].compiled or (self.compile and m == compiled)))


def run(settings: Settings, log=print, save=None) -> dict:
    """Measure, compute the ratios, and return everything as one JSON-able dict.

    ``save(result)``, if given, is called as soon as the table is measured and again after each
    projected variant, so that a run stopped part-way (a time limit) keeps what it measured.
    """
    s = settings.resolve()
    device = torch.device(s.device)
    if device.type == "cpu" and not s.plain_allocator:
        # As the fast layer does for a CPU run, for every mode of this process. "Plain" leaves malloc
        # untouched: glibc's true defaults include a dynamic mmap threshold that any mallopt call
        # would switch off, so a plain process is a separate run (--plain-allocator).
        allocator.reuse_freed_memory()
    hw = hardware(device)
    log(f"hardware: {hw['gpu'] or 'no GPU'} | CPU {hw['cpu']}, {hw['cpu_cores']} cores, "
        f"{hw['torch_threads']} torch threads | torch {hw['torch']}, torchvision {hw['torchvision']}, "
        f"python {hw['python']}")
    log(f"settings: training batch {s.batch}, inference batch {s.infer_batch}, latency batch 1, "
        f"{s.image_size}x{s.image_size} input, {s.reps} "
        f"interleaved repetitions, modes {list(s.modes)}, variants {list(s.variants)}")
    log(NOISE_NOTE)

    if any(MODES[m].compiled for m in s.modes):
        # The three IR-NET variants share IRNet.forward, and each is compiled for training, batched
        # inference and batch 1: more graphs per code object than dynamo's default limit of 8,
        # past which it silently falls back to eager. Raised for this run only.
        import torch._dynamo as dynamo
        with dynamo.config.patch(recompile_limit=max(dynamo.config.recompile_limit, 64),
                                 accumulated_recompile_limit=max(dynamo.config.accumulated_recompile_limit, 1024)):
            return _run(s, device, hw, log, save)
    return _run(s, device, hw, log, save)


def _warm_up(s, device, log) -> tuple[list, dict]:
    """Every (variant, mode) case built and warmed up (compiled, captured); those that fail are reported."""
    cases, skipped = [], {}
    for mode in s.modes:
        for variant in s.variants:
            try:
                t0 = time.perf_counter()
                case = Case(variant, mode, device, s.batch, s.image_size, s.infer_batch)  # a graph is captured here
                for fn in case.callables().values():   # warm-up (and compilation) excluded
                    for _ in range(s.warmup):
                        fn()
                _sync(device)
                case.compile_s = time.perf_counter() - t0
            except Exception as e:  # e.g. no C++ compiler for torch.compile: report, do not die
                skipped[f"{variant}/{mode}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                log(f"skipped {variant}/{mode}: {skipped[f'{variant}/{mode}']}")
                continue
            cases.append(case)
            log(f"  warmed up {variant:>12s} / {mode:<13s} in {case.compile_s:6.1f} s")
    return cases, skipped


def _time(cases, s, device, log) -> None:
    """The timed repetitions, interleaved over the cases, into each case's ``times``."""
    # One untimed pass in the timed order first. Warming each case on its own does not reach the
    # memory high-water mark of the interleaved loop (every case's activations, inference at the
    # large batch): on a CPU the first interleaved pass then grows the heap, and the kernel
    # zero-fills each new page (100,000 page faults, over a second of system time, in one
    # CondConv training step of a full run).
    for kind in ("train", "infer", "latency"):
        for case in cases:
            case.callables()[kind]()
    _sync(device)
    for rep in range(s.reps):
        for kind in ("train", "infer", "latency"):
            for case in cases:
                case.times[kind].append(time_per_call(case.callables()[kind], s.iters[kind], device))
        log(f"  repetition {rep + 1}/{s.reps} done")


def _row(c) -> dict:
    tr, inf, lat = (_stats(c.times[k]) for k in ("train", "infer", "latency"))
    return {
        "variant": c.variant, "mode": c.mode, "batch": c.batch, "infer_batch": c.infer_batch,
        "train_step_ms": {k: v * 1e3 if k != "n" else v for k, v in tr.items()},
        "train_img_s": c.batch / tr["median"],
        "train_img_s_iqr": [c.batch / tr["q3"], c.batch / tr["q1"]],
        "infer_img_s": c.infer_batch / inf["median"],
        "infer_img_s_iqr": [c.infer_batch / inf["q3"], c.infer_batch / inf["q1"]],
        "latency_ms": {k: v * 1e3 if k != "n" else v for k, v in lat.items()},
        "warmup_s": c.compile_s,
        "raw_s": c.times,
    }


def _run(s, device, hw, log, save) -> dict:
    cases, skipped = _warm_up(s, device, log)
    _time(cases, s, device, log)
    by = {(c.variant, c.mode): c for c in cases}
    default = DEFAULT_MODE[s.device] if DEFAULT_MODE[s.device] in s.modes else s.modes[-1]
    ratios = {"default_mode": default}
    cc_se = {m: _paired(by["condconv", m].times["train"], by["se", m].times["train"])
             for m in s.modes if ("condconv", m) in by and ("se", m) in by}
    ratios["condconv_over_se_train"] = {"by_mode": cc_se}
    speedup = {v: _paired(by[v, "eager"].times["train"], by[v, default].times["train"])
               for v in s.variants if (v, "eager") in by and (v, default) in by}
    ratios["default_over_eager_train_speedup"] = {"default_mode": default, "by_variant": speedup}

    rows = [_row(c) for c in cases]
    result = {"hardware": hw, "settings": {k: v for k, v in vars(s).items()}, "rows": rows, "skipped": skipped,
              "ratios": ratios, "note": NOISE_NOTE}
    if save is not None:
        save(result)
    if s.project:
        def progress(projection):
            result["projection"] = projection
            save(result)

        result["projection"] = project(s, device, default, rows, log=log,
                                       progress=progress if save is not None else None)
    if hasattr(os, "getloadavg"):
        hw["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return result


def _random_imagenet100(n_train: int, px: int, num_classes: int = NUM_CLASSES):
    """ImageNet-100-sized stand-in: random uint8 images of ``px`` pixels as an ImageData."""
    from irnet_lib.data import ImageData
    from irnet_lib.data.images import TensorImages
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n_train, 3, px, px), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, num_classes, (n_train,), generator=g)
    test = TensorImages(imgs[:1], labels[:1], size=px)  # unused: the projection only trains
    return ImageData("random-imagenet100", [str(i) for i in range(num_classes)], TensorImages(imgs, labels, size=px),
                     test, image_size=px, source="random uint8 tensors (bench)")


def project(s: Settings, device, mode: str, rows: list[dict], log=print, progress=None) -> dict:
    """The recipe's wall time (55 epochs of ~130k images, plus a 5k-image test pass per epoch),
    projected from measured training steps *through the data pipeline* where it exists (random
    uint8 images of 64 px, ``make_loader``'s tensor pipeline), else from the model-only table;
    plus, once, the measured set-up (model, CUDA graph, the first step of each batch size)."""
    r = RECIPE
    steps_per_epoch = math.ceil(r["train_images"] / s.batch)
    infer = {row["variant"]: row["infer_img_s"] for row in rows if row["mode"] == mode}
    out = {"recipe": dict(r, batch_size=s.batch), "mode": mode, "device": device.type, "variants": {}}
    from irnet_lib.data import make_loader
    measure = 2 if s.short else (5 if device.type == "cpu" else steps_per_epoch)
    warm = 1 if s.short else 3
    # On a GPU the whole 130k set lives in GPU memory; on a CPU a pool of just the images the
    # measured steps use (a step's cost does not depend on how many images are in the pool).
    pool = r["train_images"] if device.type == "cuda" and not s.short else (measure + warm) * s.batch
    data = _random_imagenet100(pool, r["image_px"])
    last = r["train_images"] % s.batch   # the size of each epoch's last, partial batch
    for variant in [v for v in s.variants if v != "mobilenet_v2"]:
        _sync(device)
        t_setup = time.perf_counter()
        case = Case(variant, mode, device, s.batch, s.image_size, s.infer_batch)
        loader = make_loader(data, "train", s.batch, device=device, pipeline="tensor",
                             channels_last=MODES[mode].channels_last)

        step = _data_step(case, _epochs(loader))
        for _ in range(warm):
            step()
        if last:
            # A batch size's first step costs one-time set-up (on a GPU, cuDNN building its
            # execution plans for every layer's new shapes: seconds). A run pays it once, not once
            # per epoch, so it is timed here, apart, and added once below.
            full = case.x, case.y
            case.x, case.y = full[0][:last], full[1][:last]
            case.callables()["train"]()
            case.x, case.y = full
        _sync(device)
        setup_s = time.perf_counter() - t_setup
        t = time_per_call(step, measure, device)
        test_s = r["test_images"] / infer[variant] if variant in infer else 0.0
        total_s = setup_s + r["epochs"] * (steps_per_epoch * t + test_s)
        entry = {"step_s": t, "measured_steps": measure, "data_pipeline": True, "setup_s": setup_s,
                 "epoch_s": steps_per_epoch * t + test_s, "total_s": total_s,
                 "total_h": total_s / 3600, "paper_h": PAPER_HOURS.get(variant)}
        out["variants"][variant] = entry
        if progress is not None:
            progress(out)
        log(f"  projected {variant}: {t * 1e3:.0f} ms/step -> {total_s / 3600:.2f} h for the recipe")
    return out


def _epochs(loader):
    """The loader's batches, epoch after epoch, without end."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def _data_step(case, batches):
    """A training step of ``case`` on the next batch of ``batches``."""
    train = case.callables()["train"]

    def step():
        case.x, case.y = next(batches)
        train()
    return step


def summarise(result: dict) -> str:
    """The table and the three ratios, as printed."""
    import pandas as pd
    hw = result["hardware"]
    cpu = hw["device"] == "cpu"
    lines = [f"Hardware: {hw['gpu'] or 'no GPU'} | CPU: {hw['cpu']}, {hw['cpu_cores']} cores, "
             f"{hw['torch_threads']} torch threads | torch {hw['torch']}, torchvision {hw['torchvision']}"
             + (f" | malloc: {hw['allocator']}" if hw.get("allocator") and hw["device"] == "cpu" else "")
             + (f" | CondConv CPU matmuls: {hw['cpu_matmul']}" if cpu and hw.get("cpu_matmul") else "")
             + (f" | CondConv CPU depthwise: {hw['cpu_depthwise']}" if cpu and hw.get("cpu_depthwise") else "")]
    if "load_average_at_start" in hw:
        lines.append(f"Load average (1, 5, 15 min) at start {hw['load_average_at_start']}, "
                     f"at end {hw.get('load_average_at_end')}")
    table = pd.DataFrame([{
        "variant": r["variant"], "mode": r["mode"],
        "train img/s": r["train_img_s"], "train IQR": "{:.0f}-{:.0f}".format(*r["train_img_s_iqr"]),
        "infer img/s": r["infer_img_s"], "infer IQR": "{:.0f}-{:.0f}".format(*r["infer_img_s_iqr"]),
        "latency ms": r["latency_ms"]["median"],
        "latency min-max": "{:.1f}-{:.1f}".format(r["latency_ms"]["min"], r["latency_ms"]["max"]),
    } for r in result["rows"]])
    b = result["settings"]["batch"]
    bi = result["settings"].get("infer_batch") or b
    lines.append(f"\nBatch {b} for training, {bi} for inference throughput, 1 for latency; "
                 f"median over {result['settings']['reps']} interleaved repetitions.")
    lines.append(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    rt = result["ratios"]
    lines.append("\nRatios (" + result["note"] + ")")
    cc = rt["condconv_over_se_train"]["by_mode"]
    for m, st in cc.items():
        mark = "  <- default path" if m == rt["default_mode"] else ""
        lines.append(f"(1) condconv / se training step time, {m:>13s}: {st['median']:.2f}x "
                     f"(IQR {st['q1']:.2f}-{st['q3']:.2f}){mark}")
    for v, st in rt["default_over_eager_train_speedup"]["by_variant"].items():
        lines.append(f"(2) {rt['default_mode']} over contiguous fp32 eager, training, {v:>12s}: "
                     f"{st['median']:.2f}x faster (IQR {st['q1']:.2f}-{st['q3']:.2f})")
    if "projection" in result:
        p = result["projection"]
        rc = p["recipe"]
        for v, e in p["variants"].items():
            paper = f", paper: {e['paper_h']} h (hardware not named)" if e["paper_h"] else ""
            how = "with the tensor data pipeline" if e["data_pipeline"] else "model only"
            setup = f" + {e['setup_s']:.0f} s set-up once" if "setup_s" in e else ""
            lines.append(f"(3) {v:>8s}: {rc['epochs']} epochs x {rc['train_images']:,} images ({rc['image_px']} px, "
                         f"batch {rc['batch_size']}, {p['mode']}, {how}) projected from {e['measured_steps']} "
                         f"measured steps{setup}: {e['total_h']:.2f} h ({e['total_s'] / 60:.1f} min) "
                         f"on {p['device']}{paper}")
    if result["skipped"]:
        lines.append("Skipped: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items()))
    return "\n".join(lines)


def _parser():
    p = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--short", action="store_true", help="CI-sized: batch 16 on CPU, 3 repetitions, no compile")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default="results/bench", help="folder for the JSON results")
    p.add_argument("--batch", type=int, help="batch size (default 64 on CPU, 256 on GPU; 16/64 with --short)")
    p.add_argument("--infer-batch", type=int, help="inference throughput batch (default 256; 32 with --short)")
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 5 CPU, 10 GPU, 3 short)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--modes", nargs="+", choices=list(MODES), help="default: every mode that applies")
    p.add_argument("--compile", dest="compile", action="store_true", default=None, help="include torch.compile")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
    p.add_argument("--no-project", dest="project", action="store_false", help="skip the 55-epoch projection")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls of each kind before timing")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--plain-allocator", action="store_true",
                   help="leave glibc's malloc at its defaults (the fast layer keeps freed memory: "
                        "irnet_lib.fast.allocator)")
    return p


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = Settings(device=args.device, short=args.short, batch=args.batch, infer_batch=args.infer_batch,
                 image_size=args.image_size, reps=args.reps,
                 variants=tuple(args.variants), modes=tuple(args.modes) if args.modes else None,
                 compile=args.compile, project=args.project, warmup=args.warmup,
                 plain_allocator=args.plain_allocator)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ("-short" if args.short else "") + ("-plain-allocator" if args.plain_allocator else "")
    path = out / f"{args.device}{suffix}.json"

    def save(result):
        result["summary"] = summarise(result)
        atomic_save(json.dumps(result, indent=1, default=str), path)

    result = run(s, save=save)
    save(result)
    print("\n" + result["summary"])
    print(f"\nsaved {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
