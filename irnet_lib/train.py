"""The training loop: the paper's Table 2 recipe, resumable, on a CPU, a GPU or several GPUs.

Read :func:`fit` first: it is the whole loop, built on :func:`train_one_epoch` and
:func:`evaluate`. Around it:

* ``fit(model, train_loader, test_loader, recipe, out_dir=...)`` trains any model on any pair of
  loaders that follow the data contract (``len``, ``set_epoch(e)``, yielding ``(x, y)`` already
  on the device). Tests drive it with tiny models and stand-in loaders.
* ``train(block, data, ...)`` builds IR-NET and the loaders of ``irnet_lib.data`` and calls ``fit``;
  ``python -m irnet_lib.train --block se --data fashion-mnist`` is its command line.
* :class:`Runtime` says *how* a run executes (device, precision, memory format, the opt-in fast
  layer :mod:`irnet_lib.fast`); none of it changes *what* is computed beyond rounding.
* :mod:`irnet_lib.runs` keeps the run's folder: checkpoints, history, resuming after a kill.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import math
import os
import platform
import random
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from . import fast
from .recipe import Recipe, add_recipe_arguments, make_optimizer, make_scheduler, recipe_from_args
from .runs import CHECKPOINT_FORMAT, Run, RunFolder

__all__ = ["fit", "train", "train_one_epoch", "evaluate", "Runtime", "auto_precision", "NonFiniteError",
           "EagerStep", "hardware_name", "cpu_name", "main"]

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


class NonFiniteError(RuntimeError):
    """A loss or a weight became NaN or infinite; ``epoch`` and ``step`` say where (0-based)."""

    def __init__(self, message, epoch=None, step=None):
        super().__init__(message)
        self.epoch, self.step = epoch, step

    def stopped(self, epoch, lr, history, folder) -> NonFiniteError:
        """The same error, saying what was kept and what to do."""
        kept = (f"the last finite epoch is {history[-1]['epoch']}" + (f" ({folder.last})" if folder else "")
                if history else "no epoch had finished")
        return NonFiniteError(f"epoch {epoch} (0-based, lr {lr:.4g}): {self}. Nothing of this epoch was saved; "
                              f"{kept}. Lower the peak lr (train_lr_max, --lr-max), check the data for NaN, or "
                              "train in fp32.", epoch, self.step)


# ----------------------------------------------------------------------------------- how a run executes

def auto_precision(device) -> str:
    """The precision a run on ``device`` uses by default: ``"bf16"`` autocast where the GPU computes
    in bf16 natively (compute capability >= 8.0: A100, H100, RTX 30xx and newer), ``"fp16"``
    autocast with loss scaling on older GPUs (Colab's T4, V100: 7.x), ``"fp32"`` on a CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"


@dataclass(frozen=True)
class Runtime:
    """How a run executes; nothing here changes what is computed, beyond rounding.

    device: "cpu", "cuda", "cuda:1"...; ``None``: where the model is (``train``: a GPU if any).
    precision: "auto" (:func:`auto_precision`), "bf16", "fp16" (GPU; with a gradient scaler), "fp32".
    channels_last: NHWC feature maps, the fast layout for depthwise convs on CPUs and GPUs.
    fast: the opt-in fast layer (:mod:`irnet_lib.fast`); on a GPU it replays each step as a CUDA graph.
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
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("max_epochs", "sync_every"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be an int >= 1 (or None), got {v!r}")
        if self.device is not None:
            try:
                dev = torch.device(self.device)
            except (RuntimeError, TypeError):
                raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}") from None
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"device {self.device!r}: PyTorch sees no CUDA GPU here "
                                 "(torch.cuda.is_available() is False); leave the device unset to train on the CPU")

    def resolve(self, model: nn.Module) -> tuple[torch.device, str]:
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


def _world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if _world()[1] > 1:
        dist.all_reduce(t)
    return t


def _autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


# ----------------------------------------------------------------------------------- the loop

class EagerStep:
    """``logits, loss = step(x, y)``: forward (in autocast), backward and optimizer step on one batch.

    The gradient scaler is on for fp16 only (elsewhere it is a pass-through); ``skipped`` counts the
    steps it skipped because the scaled gradients overflowed, as it lowers the scale."""

    def __init__(self, model, optimizer, loss_fn, device, precision):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.device, self.precision = device, precision
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.skipped = 0

    def __call__(self, x, y):
        with _autocast(self.device, self.precision):
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if scale is not None and self.scaler.get_scale() < scale:
            self.skipped += 1
        return logits, loss


def train_one_epoch(step, loader, *, channels_last=True, after_step=None, sync_every=1, desc="", show=True):
    """One pass over ``loader``: ``step(x, y)`` on every batch, then ``after_step()`` (a per-iteration
    lr schedule, the EMA). Returns (summed loss, correct predictions, images), over all processes.
    The running numbers are read every ``sync_every`` steps: a non-finite loss stops the epoch there."""
    from tqdm.auto import tqdm
    bar = tqdm(total=len(loader), desc=desc, leave=False, disable=not show, dynamic_ncols=True)
    stats, t0 = None, time.perf_counter()
    for i, (x, y) in enumerate(loader):
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        logits, loss = step(x, y)
        if after_step is not None:
            after_step()
        with torch.no_grad():   # bookkeeping on the device, no host synchronisation
            if stats is None:
                stats = torch.zeros(3, device=loss.device, dtype=torch.float64)
            stats[0] += loss.detach().double() * y.numel()
            stats[1] += (logits.argmax(1) == y).sum()
            stats[2] += y.numel()
        bar.update()
        if (i + 1) % sync_every == 0 or i + 1 == len(loader):
            total = _all_reduce(stats.clone()).tolist()
            if not math.isfinite(total[0]):
                bar.close()
                raise NonFiniteError(f"the training loss became non-finite by step {i} of {len(loader)}", step=i)
            bar.set_postfix(loss=f"{total[0] / total[2]:.3f}", acc=f"{100 * total[1] / total[2]:.1f}%",
                            img_s=f"{total[2] / (time.perf_counter() - t0):.0f}")
    bar.close()
    return total


def evaluate(model: nn.Module, loader, *, precision: str = "fp32", channels_last: bool = True) -> dict:
    """Test loss and accuracy (%) of ``model`` (on the loader's device) over ``loader``, in eval mode."""
    model.eval()
    sums = None
    with torch.inference_mode():
        for x, y in loader:
            if sums is None:
                sums = torch.zeros(3, device=x.device, dtype=torch.float64)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(x.device, precision):
                logits = model(x)
            sums[0] += F.cross_entropy(logits.float(), y, reduction="sum")
            sums[1] += (logits.argmax(1) == y).sum()
            sums[2] += y.numel()
    loss, correct, n = _all_reduce(sums).tolist()
    return {"loss": loss / max(n, 1), "acc": 100 * correct / max(n, 1), "images": int(n)}


def fit(model: nn.Module, train_loader, test_loader, recipe: Recipe = Recipe(), *, out_dir=None,  # noqa: B008
        meta: dict | None = None, runtime: Runtime | None = None, **runtime_fields) -> Run:
    """Train ``model`` with ``recipe``; checkpoint, record and resume in ``out_dir`` (a path or a
    :class:`~irnet_lib.runs.RunFolder`; ``None`` keeps nothing). ``runtime``, or any of its fields as
    keywords (``precision="fp32"``, ``fast=True``...), says how (:class:`Runtime`). ``meta`` says what
    the run is; its ``"config"`` entry must match a checkpoint to resume from it."""
    rt = replace(runtime or Runtime(), **runtime_fields)
    device, precision = rt.resolve(model)
    rank, world = _world()
    folder = RunFolder(out_dir, write=rank == 0) if isinstance(out_dir, (str, Path)) else out_dir
    model = model.to(device, memory_format=torch.channels_last if rt.channels_last else torch.preserve_format)
    steps = _check_data(model, train_loader, test_loader, rt.channels_last)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, steps)
    meta = _run_meta(meta, model, recipe, rt, device, precision, train_loader)
    ema = _ema(model, recipe)
    history, best_acc, best_epoch = [], -math.inf, None
    ckpt = folder.resume(meta["config"], device) if folder is not None and rt.resume else None
    with fast.enabled(rt.fast, keep_freed_memory=device.type == "cpu"):
        step = _make_step(model, optimizer, functools.partial(F.cross_entropy, label_smoothing=recipe.label_smoothing),
                          device, precision, rt, world)
        if ckpt is not None:
            history, best_acc, best_epoch = _restore(ckpt, model, optimizer, scheduler, step, ema, device, meta)
            folder.repair(ckpt, meta)
        eval_model = torch.compile(model) if rt.compile else model
        after_step = functools.partial(_after_step, scheduler if recipe.lr_step == "iteration" else None, ema, model)
        end = recipe.train_num_epochs if rt.max_epochs is None else min(recipe.train_num_epochs,
                                                                         len(history) + rt.max_epochs)
        for epoch in range(len(history), end):
            lr = optimizer.param_groups[0]["lr"]
            train_loader.set_epoch(epoch)
            if hasattr(test_loader, "set_epoch"):
                test_loader.set_epoch(epoch)
            model.train()
            t0 = time.perf_counter()
            skipped = getattr(step, "skipped", 0)
            try:
                tr = train_one_epoch(step, train_loader, channels_last=rt.channels_last, after_step=after_step,
                                     sync_every=rt.sync_every or (1 if device.type == "cpu" else 50),
                                     desc=f"{rt.label} epoch {epoch + 1}/{recipe.train_num_epochs}".strip(),
                                     show=rank == 0 and not rt.quiet)
                train_seconds = time.perf_counter() - t0
                te = evaluate(eval_model, test_loader, precision=precision, channels_last=rt.channels_last)
                if ema is not None:
                    te_ema = _evaluate_ema(ema, train_loader, test_loader, epoch, precision, rt.channels_last)
                if recipe.lr_step == "epoch":
                    scheduler.step()
                _check_finite(te["loss"], model)
            except NonFiniteError as e:
                raise e.stopped(epoch, lr, history, folder) from None
            row = _row(epoch, lr, tr, te, train_seconds, time.perf_counter() - t0, history)
            if ema is not None:
                row.update(test_loss_ema=te_ema["loss"], test_acc_ema=te_ema["acc"])
            if precision == "fp16":
                row["skipped_steps"] = step.skipped - skipped
            history.append(row)
            improved = row["test_acc"] > best_acc
            if improved:
                best_acc, best_epoch = row["test_acc"], epoch
            meta.update(cuda_graph=bool(getattr(step, "captured", False)), fast=fast.status() if rt.fast else False)
            if folder is not None:
                folder.save(_checkpoint(meta, epoch, model, optimizer, scheduler, step, ema, history, best_acc,
                                        best_epoch, device), improved, meta)
            if world > 1:
                dist.barrier()
            if rank == 0 and not rt.quiet:
                _print_epoch(row, rt.label, recipe.train_num_epochs)
    import pandas as pd
    return Run(pd.DataFrame(history), dict(meta, epochs_done=len(history)), model,
               folder.path if folder is not None else None)


# ----------------------------------------------------------------------------------- fit's helpers

def _check_data(model, train_loader, test_loader, channels_last) -> int:
    """Batches per epoch, after one forward pass of a test batch: a model that cannot take the
    data's images, or whose output width is not the data's class count, is refused before training."""
    steps = len(train_loader)
    if steps < 1:
        raise ValueError("the training loader is empty: use more images or a smaller batch")
    x, y = next(iter(test_loader))
    was_training = model.training
    try:
        with torch.no_grad():
            x = x[:2].contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x[:2]
            width = model.eval()(x).shape[-1]
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"the model cannot take the data's images {tuple(x.shape)} ({str(e).splitlines()[0][:160]}); "
                         "build it for this data (3-channel 56x56 images for IR-NET)") from None
    finally:
        model.train(was_training)
    classes = getattr(train_loader, "num_classes", None)
    if classes is not None and width != classes:
        raise ValueError(f"the model has {width} outputs but the data has {classes} classes; build it with "
                         f"num_classes={classes}")
    return steps


def _model_signature(model: nn.Module) -> str:
    """A short hash of the parameter/buffer names and shapes: differs between the three blocks."""
    text = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _run_meta(meta, model, recipe, rt, device, precision, train_loader) -> dict:
    meta = dict(meta or {})
    config = dict(meta.get("config", {}), recipe=recipe.to_dict(), model=_model_signature(model))
    world = _world()[1]
    meta.update(config=config, precision=precision, channels_last=rt.channels_last, compile=rt.compile,
                device=str(device), hardware=hardware_name(device),
                world_size=world, torch=torch.__version__, python=platform.python_version(),
                train_images_per_epoch=getattr(train_loader, "num_samples", 0) * world or None,
                faithful_recipe=recipe.faithful)
    return meta


def _ema(model, recipe):
    """An exponential moving average of the weights (beyond the paper; off unless the recipe asks)."""
    if not recipe.ema_decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    # Weights only. Averaging the BN running statistics as well (use_buffers=True) gave
    # chance-level accuracy on a 5-epoch CPU run: statistics averaged over a fast-moving
    # network do not describe the averaged weights. They are re-estimated before each test.
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=False)


EMA_BN_BATCHES = 32


def _evaluate_ema(ema, train_loader, test_loader, epoch, precision, channels_last) -> dict:
    """The EMA weights tested, after their BN statistics are recomputed on the first
    ``EMA_BN_BATCHES`` training batches of ``epoch`` (the same ones in every session: exact resume)."""
    from torch.optim.swa_utils import update_bn
    train_loader.set_epoch(epoch)
    device = next(ema.module.parameters()).device
    with torch.no_grad(), _autocast(device, precision):
        update_bn(itertools.islice(train_loader, EMA_BN_BATCHES), ema.module)
    return evaluate(ema.module, test_loader, precision=precision, channels_last=channels_last)


def _after_step(scheduler, ema, model):
    if scheduler is not None:
        scheduler.step()
    if ema is not None:
        ema.update_parameters(model)


def _make_step(model, optimizer, loss_fn, device, precision, rt, world):
    """The step ``fit`` runs: eager, or (the fast layer, one GPU) replayed as a CUDA graph."""
    step_model = model
    if world > 1:
        step_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if rt.compile:
        step_model = torch.compile(step_model)
    eager = EagerStep(step_model, optimizer, loss_fn, device, precision)
    why_not = ("a CUDA device" if device.type != "cuda" else "one process" if world > 1 else
               "no torch.compile (it brings its own graphs)" if rt.compile else
               "bf16 or fp32 (fp16's gradient scaler reads its overflow flag on the host)" if precision == "fp16"
               else None)
    if rt.cuda_graph is True and why_not:
        raise ValueError(f"cuda_graph=True needs {why_not}; leave it unset (automatic) or pass cuda_graph=False")
    if rt.cuda_graph is False or why_not or not (rt.fast or rt.cuda_graph):
        if rt.fast and precision == "fp16" and device.type == "cuda" and rt.cuda_graph is None:
            warnings.warn("fp16: training eagerly, without CUDA graphs (the gradient scaler reads its overflow "
                          "flag on the host every step)", stacklevel=3)
        return eager
    from .fast.graphs import GraphedTrainingStep
    return GraphedTrainingStep(model, optimizer, loss_fn, precision, eager, strict=rt.cuda_graph is True)


def _restore(ckpt, model, optimizer, scheduler, step, ema, device, meta):
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler = getattr(step, "scaler", None)
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if ema is not None and ckpt.get("ema") is not None:
        ema.load_state_dict(ckpt["ema"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    random.setstate(ckpt["rng"]["python"])
    if device.type == "cuda" and "cuda" in ckpt["rng"]:
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
    meta["resumed_at_epochs"] = list(ckpt.get("resumed_at_epochs", [])) + [ckpt["epoch"] + 1]
    return list(ckpt["history"]), ckpt["best_acc"], ckpt.get("best_epoch")


def _checkpoint(meta, epoch, model, optimizer, scheduler, step, ema, history, best_acc, best_epoch, device) -> dict:
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    scaler = getattr(step, "scaler", None)
    return {"format": CHECKPOINT_FORMAT, "config": meta["config"], "epoch": epoch, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            "rng": rng, "history": history, "best_acc": best_acc, "best_epoch": best_epoch,
            "ema": ema.state_dict() if ema is not None else None,
            "resumed_at_epochs": meta.get("resumed_at_epochs", [])}


def _check_finite(test_loss, model):
    """Before an epoch is saved: its test loss and every weight and BN statistic must be finite."""
    if not math.isfinite(test_loss):
        raise NonFiniteError(f"the test loss is {test_loss}")
    with torch.no_grad():
        bad = [n for n, t in itertools.chain(model.named_parameters(), model.named_buffers())
               if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteError(f"{len(bad)} weight tensors became non-finite (first: {bad[0]})")


TIMING_COLUMNS = ("epoch_seconds", "train_seconds", "train_images_per_s", "elapsed_seconds")


def _row(epoch, lr, tr, te, train_seconds, epoch_seconds, history) -> dict:
    return {"epoch": epoch, "lr": lr, "train_loss": tr[0] / tr[2], "train_acc": 100 * tr[1] / tr[2],
            "test_loss": te["loss"], "test_acc": te["acc"], "train_images": int(tr[2]), "test_images": te["images"],
            "epoch_seconds": epoch_seconds, "train_seconds": train_seconds,
            "train_images_per_s": tr[2] / train_seconds,
            "elapsed_seconds": (history[-1]["elapsed_seconds"] if history else 0.0) + epoch_seconds}


def _print_epoch(row, label, epochs):
    from tqdm.auto import tqdm
    # Counted from 1 like the progress bar; the files count from 0 like the course. The lr is the epoch's first.
    tqdm.write(f"{label + ' ' if label else ''}epoch {row['epoch'] + 1:>2}/{epochs} lr {row['lr']:.3g} | train loss "
               f"{row['train_loss']:.4f} acc {row['train_acc']:.2f}% | test loss {row['test_loss']:.4f} "
               f"acc {row['test_acc']:.2f}% | {row['epoch_seconds']:.1f} s, {row['train_images_per_s']:.1f} img/s")


# ----------------------------------------------------------------------------------- IR-NET runs

def _init_distributed(device):
    """Join the process group that ``torchrun`` describes in the environment (once)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = _world()
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    return str(device), rank, world


def train(block: str = "standard", data="fashion-mnist-sample", *, recipe: Recipe | None = None, out_dir=None,
          root="data", download: bool = False, train_subset: int | None = None, test_subset: int | None = None,
          seed: int = 0, pipeline: str = "auto", num_workers: int | None = None, model_kwargs: dict | None = None,
          runtime: Runtime | None = None, **runtime_fields) -> Run:
    """Train IR-NET with ``block`` on a dataset of ``irnet_lib.data`` (a name, or an ``ImageData``).

    The recipe's class count follows the data (Table 2's 100 is ImageNet-100's). Under ``torchrun``
    each of the N processes takes ``recipe.data_batch_size / N`` images per step, so the global
    batch, and with it the results' meaning, stays the recipe's. ``runtime`` or its fields as
    keywords (``fast=True``, ``precision=...``, ``max_epochs=...``) go to ``fit``. The run folder
    and the arguments are checked before any data is loaded.
    """
    from . import irnet
    from .blocks import BLOCKS
    from .data import DATASETS, load_dataset, make_loader

    if block not in BLOCKS:
        raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
    if isinstance(data, str) and data not in DATASETS:
        raise ValueError(f"unknown dataset {data!r}; choose one of {list(DATASETS)}")
    recipe = recipe or Recipe()
    rt = replace(runtime or Runtime(), **runtime_fields)
    device, rank, world = _init_distributed(rt.device)
    rt = replace(rt, device=device, label=rt.label or block)
    folder = RunFolder(out_dir, write=rank == 0) if out_dir is not None else None
    if recipe.data_batch_size % world:
        raise ValueError(f"the global batch {recipe.data_batch_size} does not split over {world} processes; "
                         f"pick a batch size divisible by the number of processes")
    if isinstance(data, str):
        data = load_dataset(data, root, download=download, train_subset=train_subset,
                            test_subset=test_subset, seed=seed)
    if data.num_classes != recipe.data_num_classes:
        recipe = replace(recipe, data_num_classes=data.num_classes)
    batch = recipe.data_batch_size // world
    torch.manual_seed(seed)   # the same initial weights on every rank and in every resumed session
    model = irnet(block, num_classes=data.num_classes, **(model_kwargs or {}))
    loaders = [make_loader(data, split, batch, device=device, pipeline=pipeline, seed=seed, rank=rank,
                           world_size=world, channels_last=rt.channels_last, num_workers=num_workers,
                           test_crop=recipe.test_crop) for split in ("train", "test")]
    config = {"block": block, "dataset": data.name, "train_size": len(data.train), "test_size": len(data.test),
              "num_classes": data.num_classes, "seed": seed, "model_kwargs": model_kwargs or {},
              "pipeline": pipeline}
    meta = {"variant": block, "dataset": data.name, "train_size": len(data.train),
            "test_size": len(data.test), "train_subset": train_subset, "test_subset": test_subset,
            "num_classes": data.num_classes, "seed": seed, "batch_per_process": batch,
            "parameters": sum(p.numel() for p in model.parameters()), "config": config,
            "pipeline": loaders[0].describe(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    return fit(model, *loaders, recipe, out_dir=folder, meta=meta, runtime=rt)


# ----------------------------------------------------------------------------------- command line

def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """Which data: the flags ``train`` and ``reproduce`` share."""
    g = p.add_argument_group("data")
    g.add_argument("--data", default="fashion-mnist-sample", help="a name of irnet_lib.data.DATASETS")
    g.add_argument("--root", default="data", help="data folder (see irnet_lib.data.load_dataset)")
    g.add_argument("--download", action="store_true", help="fetch the dataset where there is internet")
    g.add_argument("--train-subset", type=int, default=None, help="stratified subset of the training set")
    g.add_argument("--test-subset", type=int, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--pipeline", default="auto", choices=["auto", "tensor", "torchvision"])
    g.add_argument("--workers", type=int, default=None, help="worker processes of the torchvision pipeline")


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    """Where and how: the flags ``train`` and ``reproduce`` share (the fields of :class:`Runtime`)."""
    g = p.add_argument_group("how it runs (Runtime)")
    g.add_argument("--device", default=None, help="default: cuda where there is a GPU, else cpu")
    g.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 on GPUs that have it, fp16 (loss scaling) on older GPUs, fp32 on a CPU")
    g.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True,
                   help="the fast layer, irnet_lib.fast (default on; --no-fast: the plain teaching code)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="replay each step as one CUDA graph (default: with --fast on one GPU)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--max-epochs", type=int, default=None, help="stop after this many epochs in this session")
    g.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    g.add_argument("--quiet", action="store_true")


def runtime_from_args(args) -> Runtime:
    return Runtime(device=args.device, precision=args.precision, channels_last=args.channels_last, fast=args.fast,
                   compile=args.compile, cuda_graph=args.cuda_graph, max_epochs=args.max_epochs,
                   resume=not args.restart, quiet=args.quiet)


def check_data_arguments(args) -> None:
    from .data import DATASETS
    if args.data not in DATASETS:
        raise ValueError(f"--data must be one of {list(DATASETS)}, got {args.data!r}")
    for name in ("train_subset", "test_subset"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1 (or left out for the whole split), got {v}")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be >= 0 (0: load in the main process), got {args.workers}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m irnet_lib.train",
        description="Train IR-NET with the paper's Table 2 recipe; running the same command again resumes.",
        epilog="Several GPUs: torchrun --nproc_per_node=N -m irnet_lib.train ... (global batch kept).")
    p.add_argument("--block", default="standard", choices=["standard", "se", "condconv"])
    p.add_argument("--out", default=None, help="run folder (default runs/<data>/<block>)")
    add_data_arguments(p)
    add_recipe_arguments(p)
    add_runtime_arguments(p)
    return p


def main(argv=None) -> Run:
    p = _parser()
    args = p.parse_args(argv)
    out = args.out or os.path.join("runs", args.data, args.block)
    try:
        recipe, runtime = recipe_from_args(args), runtime_from_args(args)
        check_data_arguments(args)
        run = train(args.block, args.data, recipe=recipe, out_dir=out, root=args.root, download=args.download,
                    train_subset=args.train_subset, test_subset=args.test_subset, seed=args.seed,
                    pipeline=args.pipeline, num_workers=args.workers, runtime=runtime)
    except (ValueError, FileNotFoundError, PermissionError, NotADirectoryError, NonFiniteError) as e:
        sys.exit(f"{p.prog}: error: {e}")
    if _world()[0] == 0 and len(run.history):
        print(f"{args.block} on {run.meta['dataset']}: best {run.best_accuracy:.2f} %, final "
              f"{run.final_accuracy:.2f} % after {len(run.history)} epochs, "
              f"{run.history['epoch_seconds'].sum() / 60:.1f} min on {run.meta['hardware']} -> {out}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return run


if __name__ == "__main__":
    main()
