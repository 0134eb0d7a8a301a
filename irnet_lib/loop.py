"""The training loop: the paper's Table 2 recipe, resumable, on a CPU, a GPU or several GPUs.

:func:`fit` is the whole loop; read it first. Below it, in the order it uses them: one epoch
(:func:`train_one_epoch`, an :class:`EagerStep` per batch), the test (:func:`evaluate`), and
:class:`TrainState`, what a run carries from epoch to epoch and what its checkpoint stores.

``fit`` trains any model on any pair of loaders that follow the data contract (``len``,
``set_epoch(e)``, yielding ``(x, y)`` already on the device); ``irnet_lib.train.train`` builds
IR-NET and its loaders and calls it. How a run executes (device, precision, the opt-in speed-ups)
is :class:`irnet_lib.runtime.Runtime`; the run's folder (checkpoints, history, resuming after a
kill) is :class:`irnet_lib.runs.RunFolder`.
"""
from __future__ import annotations

import functools
import itertools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .recipe import Recipe, make_optimizer, make_scheduler
from .runs import CHECKPOINT_FORMAT, Run, RunFolder, run_meta
from .runtime import Runtime, all_reduce, autocast, condconv_formulation, world

__all__ = ["fit", "train_one_epoch", "evaluate", "EagerStep", "TrainState", "NonFiniteError"]


def fit(model: nn.Module, train_loader, test_loader, recipe: Recipe = Recipe(), *, out_dir=None,  # noqa: B008
        meta: dict | None = None, runtime: Runtime | None = None, **runtime_fields) -> Run:
    """Train ``model`` with ``recipe``; checkpoint, record and resume in ``out_dir`` (a path or a
    :class:`~irnet_lib.runs.RunFolder`; ``None`` keeps nothing). ``runtime``, or any of its fields as
    keywords (``precision="fp32"``, ``fast=True``...), says how (:class:`~irnet_lib.runtime.Runtime`).
    ``meta`` says what the run is; its ``"config"`` entry must match a checkpoint to resume from it."""
    rt = replace(runtime or Runtime(), **runtime_fields)
    device, precision = rt.resolve(model)
    rank, processes = world()
    folder = RunFolder(out_dir, write=rank == 0) if isinstance(out_dir, (str, Path)) else out_dir
    model = model.to(device, memory_format=torch.channels_last if rt.channels_last else torch.preserve_format)
    meta = run_meta(meta, model, recipe, rt, device, precision, train_loader)
    speedups = rt.speedups(device, precision, processes)
    with condconv_formulation(speedups.condconv):   # fast=False: the core's CondConv, whatever was enabled
        steps_per_epoch = _check_data(model, train_loader, test_loader, rt.channels_last)
        optimizer = make_optimizer(model, recipe)
        loss_fn = functools.partial(F.cross_entropy, label_smoothing=recipe.label_smoothing)
        eager = EagerStep(_for_steps(model, rt, device, processes), optimizer, loss_fn, device, precision)
        state = TrainState(model, optimizer, make_scheduler(optimizer, recipe, steps_per_epoch),
                           speedups.make_step(eager, model, optimizer, loss_fn), _ema(model, recipe))
        epochs = recipe.train_num_epochs
        end = _resume(state, folder, meta, rt, epochs, device)
        eval_model = torch.compile(model) if rt.compile else model
        after_step = functools.partial(_after_step, state.scheduler if recipe.lr_step == "iteration" else None,
                                       state.ema, model)
        sync_every = rt.sync_every or (1 if device.type == "cpu" else 50)
        for epoch in range(len(state.history), end):
            lr = optimizer.param_groups[0]["lr"]
            for loader in (train_loader, test_loader):
                if hasattr(loader, "set_epoch"):
                    loader.set_epoch(epoch)
            model.train()
            t0, skipped = time.perf_counter(), getattr(state.step, "skipped", 0)
            try:
                totals = train_one_epoch(state.step, train_loader, channels_last=rt.channels_last,
                                         after_step=after_step, sync_every=sync_every,
                                         desc=f"{rt.label} epoch {epoch + 1}/{epochs}".strip(),
                                         show=rank == 0 and not rt.quiet)
                row = _row(epoch, lr, totals, time.perf_counter() - t0,
                           evaluate(eval_model, test_loader, precision=precision, channels_last=rt.channels_last))
                if state.ema is not None:
                    ema = _evaluate_ema(state.ema, train_loader, test_loader, epoch, precision, rt.channels_last)
                    row.update(test_loss_ema=ema["loss"], test_acc_ema=ema["acc"])
                if recipe.lr_step == "epoch":
                    state.scheduler.step()
                _check_finite(row["test_loss"], model)
            except NonFiniteError as e:
                raise e.stopped(epoch, lr, state.history, folder) from None
            if precision == "fp16":
                row["skipped_steps"] = state.step.skipped - skipped
            row["epoch_seconds"] = time.perf_counter() - t0
            improved = state.record(row)
            meta["speedups"] = speedups.record(state.step)
            if folder is not None:
                folder.save(state.checkpoint(meta, epoch, device), improved, meta)
            if processes > 1:
                torch.distributed.barrier()
            if rank == 0 and not rt.quiet:
                _print_epoch(row, rt.label, epochs)
    import pandas as pd
    return Run(pd.DataFrame(state.history), dict(meta, epochs_done=len(state.history)), model,
               folder.path if folder is not None else None)


def _resume(state: TrainState, folder, meta: dict, rt: Runtime, epochs: int, device) -> int:
    """Restore the run folder's last checkpoint into ``state``, if there is one and the run resumes;
    returns the epoch this call stops before (``rt.max_epochs`` more, at most the recipe's)."""
    ckpt = folder.resume(meta["config"], device) if folder is not None and rt.resume else None
    if ckpt is not None:
        state.restore(ckpt, device)
    end = epochs if rt.max_epochs is None else min(epochs, len(state.history) + rt.max_epochs)
    if ckpt is not None:
        meta["resumed_at_epochs"] = list(ckpt.get("resumed_at_epochs", []))
        if len(state.history) < end:   # a finished run started again trains nothing: no resume to record
            meta["resumed_at_epochs"].append(len(state.history))
        folder.repair(ckpt, meta)
    return end


def _row(epoch: int, lr: float, totals, train_seconds: float, test: dict) -> dict:
    """An epoch's line of the history (per-image means; ``epoch_seconds`` is added when it ends)."""
    loss_sum, correct, images = totals
    return {"epoch": epoch, "lr": lr, "train_loss": loss_sum / images, "train_acc": 100 * correct / images,
            "test_loss": test["loss"], "test_acc": test["acc"], "train_images": int(images),
            "test_images": test["images"], "train_seconds": train_seconds, "train_images_per_s": images / train_seconds}


# ----------------------------------------------------------------------------------- one epoch, one step, the test

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


def train_one_epoch(step, loader, *, channels_last=True, after_step=None, sync_every=1, desc="", show=True):
    """One pass over ``loader``: ``step(x, y)`` on every batch, then ``after_step()`` (a per-iteration
    lr schedule, the EMA). Returns (summed loss, correct predictions, images), over all processes.
    The running numbers are read every ``sync_every`` steps: a non-finite loss stops the epoch there."""
    from tqdm.auto import tqdm
    bar = tqdm(total=len(loader), desc=desc, leave=False, disable=not show, dynamic_ncols=True)
    stats, t0 = None, time.perf_counter()
    for i, (images, y) in enumerate(loader):
        x = images.contiguous(memory_format=torch.channels_last) if channels_last and images.dim() == 4 else images
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
            total = all_reduce(stats.clone()).tolist()
            if not math.isfinite(total[0]):
                bar.close()
                raise NonFiniteError(f"the training loss became non-finite by step {i} of {len(loader)}", step=i)
            bar.set_postfix(loss=f"{total[0] / total[2]:.3f}", acc=f"{100 * total[1] / total[2]:.1f}%",
                            img_s=f"{total[2] / (time.perf_counter() - t0):.0f}")
    bar.close()
    return total


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
        with autocast(self.device, self.precision):
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


def evaluate(model: nn.Module, loader, *, precision: str = "fp32", channels_last: bool = True) -> dict:
    """Test loss and accuracy (%) of ``model`` (on the loader's device) over ``loader``, in eval mode."""
    model.eval()
    sums = None
    with torch.inference_mode():
        for images, y in loader:
            if sums is None:
                sums = torch.zeros(3, device=images.device, dtype=torch.float64)
            x = images.contiguous(memory_format=torch.channels_last) if channels_last and images.dim() == 4 else images
            with autocast(x.device, precision):
                logits = model(x)
            sums[0] += F.cross_entropy(logits.float(), y, reduction="sum")
            sums[1] += (logits.argmax(1) == y).sum()
            sums[2] += y.numel()
    loss, correct, n = all_reduce(sums).tolist()
    return {"loss": loss / max(n, 1), "acc": 100 * correct / max(n, 1), "images": int(n)}


# ----------------------------------------------------------------------------------- what a run carries

@dataclass
class TrainState:
    """What a run carries from epoch to epoch, and what its checkpoint stores."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: Callable              # EagerStep, or the fast layer's step replayed as a CUDA graph
    ema: nn.Module | None = None
    history: list[dict] = field(default_factory=list)
    best_acc: float = -math.inf
    best_epoch: int | None = None

    def record(self, row: dict) -> bool:
        """Append an epoch's row, with the run's time so far; True where its test accuracy is the best yet."""
        row["elapsed_seconds"] = (self.history[-1]["elapsed_seconds"] if self.history else 0.0) + row["epoch_seconds"]
        self.history.append(row)
        improved = row["test_acc"] > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = row["test_acc"], row["epoch"]
        return improved

    def checkpoint(self, meta: dict, epoch: int, device: torch.device) -> dict:
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        scaler = getattr(self.step, "scaler", None)
        return {"format": CHECKPOINT_FORMAT, "config": meta["config"], "epoch": epoch,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
                "rng": rng, "history": self.history, "best_acc": self.best_acc, "best_epoch": self.best_epoch,
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "resumed_at_epochs": meta.get("resumed_at_epochs", [])}

    def restore(self, ckpt: dict, device: torch.device) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        scaler = getattr(self.step, "scaler", None)
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])
        if device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        self.history, self.best_acc, self.best_epoch = list(ckpt["history"]), ckpt["best_acc"], ckpt.get("best_epoch")


# ----------------------------------------------------------------------------------- fit's helpers

def _for_steps(model: nn.Module, rt: Runtime, device, processes: int) -> nn.Module:
    """The model the training steps call: shared over the processes (DDP), compiled if asked."""
    if processes > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model) if rt.compile else model


def _check_data(model, train_loader, test_loader, channels_last) -> int:
    """Batches per epoch, after one forward pass of a test batch: a model that cannot take the
    data's images, or whose output width is not the data's class count, is refused before training."""
    steps = len(train_loader)
    if steps < 1:
        raise ValueError("the training loader is empty: use more images or a smaller batch")
    x, _ = next(iter(test_loader))
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


def _check_finite(test_loss, model):
    """Before an epoch is saved: its test loss and every weight and BN statistic must be finite."""
    if not math.isfinite(test_loss):
        raise NonFiniteError(f"the test loss is {test_loss}")
    with torch.no_grad():
        bad = [n for n, t in itertools.chain(model.named_parameters(), model.named_buffers())
               if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteError(f"{len(bad)} weight tensors became non-finite (first: {bad[0]})")


def _after_step(scheduler, ema, model):
    if scheduler is not None:
        scheduler.step()
    if ema is not None:
        ema.update_parameters(model)


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
    with torch.no_grad(), autocast(device, precision):
        update_bn(itertools.islice(train_loader, EMA_BN_BATCHES), ema.module)
    return evaluate(ema.module, test_loader, precision=precision, channels_last=channels_last)


def _print_epoch(row, label, epochs):
    from tqdm.auto import tqdm
    # Counted from 1 like the progress bar; the files count from 0 like the course. The lr is the epoch's first.
    tqdm.write(f"{label + ' ' if label else ''}epoch {row['epoch'] + 1:>2}/{epochs} lr {row['lr']:.3g} | train loss "
               f"{row['train_loss']:.4f} acc {row['train_acc']:.2f}% | test loss {row['test_loss']:.4f} "
               f"acc {row['test_acc']:.2f}% | {row['epoch_seconds']:.1f} s, {row['train_images_per_s']:.1f} img/s")
