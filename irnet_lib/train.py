"""The training loop: the Table 2 recipe, resumable, fast on a GPU, several GPUs under ``torchrun``.

Two levels:

* ``fit(model, train_loader, test_loader, recipe, out_dir=...)`` trains any model on any pair of
  loaders that follow the data contract (``len``, ``set_epoch(e)``, ``num_samples``, yielding
  ``(x, y)`` already on the device). Tests drive it with tiny models and stand-in loaders.
* ``train(block, data, ...)`` builds IR-NET and the loaders of ``irnet_lib.data`` and calls
  ``fit``; ``python -m irnet_lib.train --block se --data fashion-mnist`` is its command line.

What a run leaves in ``out_dir``: ``last.pt`` (every epoch) and ``best.pt`` (best test accuracy),
both written atomically, and ``history.csv`` / ``history.json`` (per-epoch numbers and the run's
metadata: which data, which hardware, how long). Running the same command again resumes.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
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

from .allocator import reuse_freed_memory, state as allocator_state
from .graphs import GraphedStep, graphs_available
from .recipe import Recipe, lr_at, make_optimizer, make_scheduler

__all__ = ["fit", "train", "evaluate", "Run", "NonFiniteLossError", "CheckpointMismatchError", "atomic_save",
           "load_checkpoint", "read_history", "hardware_name", "main"]

CHECKPOINT_FORMAT = 1
TIMING_COLUMNS = ("epoch_seconds", "train_seconds", "train_images_per_s", "elapsed_seconds")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; ``epoch`` and ``step`` say where (0-based)."""

    def __init__(self, message, epoch, step):
        super().__init__(message)
        self.epoch, self.step = epoch, step


class CheckpointMismatchError(ValueError):
    """A checkpoint in ``out_dir`` belongs to another run (variant, data or recipe)."""


@dataclass
class Run:
    """What ``fit``/``train`` return: the per-epoch history, the run's metadata and the model."""
    history: "pandas.DataFrame"  # noqa: F821
    meta: dict
    model: nn.Module
    out_dir: Path | None = None

    @property
    def best_accuracy(self) -> float:
        return float(self.history["test_acc"].max())

    @property
    def recipe(self) -> dict:
        """The run's recipe as stored in its metadata (``Recipe.to_dict``; empty if none was)."""
        return self.meta.get("config", {}).get("recipe", {})

    @property
    def planned_epochs(self) -> int:
        """The epochs its recipe spans (more than ``len(history)`` while a run is unfinished)."""
        return self.recipe.get("train_num_epochs", len(self.history))

    @property
    def final_accuracy(self) -> float:
        return float(self.history["test_acc"].iloc[-1])


# ----------------------------------------------------------------------------------- checkpoints

def atomic_save(obj, path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over it:
    a kill or an error at any moment leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if isinstance(obj, (str, bytes)):
                f.write(obj.encode() if isinstance(obj, str) else obj)
            else:
                torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (python -m irnet_lib.train ...)")
    # Only tensors and plain Python types are stored, so the safe loader suffices.
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"{path} is not a checkpoint of this training loop "
                                      f"(format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT})")
    return ckpt


def _model_signature(model: nn.Module) -> str:
    """A short hash of the parameter/buffer names and shapes: differs between the three blocks."""
    text = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _mismatch(stored: dict, current: dict) -> list[str]:
    keys = sorted(set(stored) | set(current))
    return [f"{k}: checkpoint has {stored.get(k)!r}, this run has {current.get(k)!r}"
            for k in keys if stored.get(k) != current.get(k)]


# ----------------------------------------------------------------------------------- helpers

def hardware_name(device: torch.device | str = "cpu") -> str:
    """'NVIDIA H100 ...' for a GPU, else the CPU model from /proc/cpuinfo and the core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def _world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    if _world()[1] > 1:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rng_state(device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _write_history(out_dir: Path, rows: list[dict], meta: dict):
    import pandas as pd
    atomic_save(pd.DataFrame(rows).to_csv(index=False, float_format="%.6g"), out_dir / "history.csv")
    atomic_save(json.dumps({"meta": meta, "epochs": rows}, indent=1, default=str) + "\n",
                out_dir / "history.json")


def read_history(path) -> Run:
    """A stored run (``history.json``, or the folder holding it) as a ``Run`` without a model."""
    import pandas as pd
    path = Path(path)
    if path.is_dir():
        path = path / "history.json"
    if not path.is_file():
        raise FileNotFoundError(f"no history at {path}; run python -m irnet_lib.train ... first")
    d = json.loads(path.read_text())
    return Run(pd.DataFrame(d["epochs"]), d["meta"], None, path.parent)


# ----------------------------------------------------------------------------------- the loop

def _autocast(device: torch.device, precision: str):
    """A factory of the context that each forward pass runs in: bf16 autocast, or nothing."""
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else nullcontext


def _use_cuda_graph(cuda_graph: bool | None, device: torch.device, compile: bool, world: int) -> bool:
    """Whether ``fit`` captures its steps as a CUDA graph: ``None`` decides, ``True`` insists."""
    if cuda_graph is None:
        return graphs_available(device) and not compile and world == 1
    if cuda_graph:
        if not graphs_available(device):
            raise ValueError(f"cuda_graph=True needs a CUDA device, got {device}: leave it unset (automatic) "
                             "or pass cuda_graph=False")
        if compile:
            raise ValueError("cuda_graph=True with compile=True: torch.compile brings its own CUDA graphs "
                             "(compile_kwargs={'mode': 'reduce-overhead'}); pick one of the two")
        if world > 1:
            raise ValueError(f"cuda_graph=True with {world} processes: graphed steps are single-process "
                             "here (DDP's gradient hooks run outside the graph); leave it unset under torchrun")
    return bool(cuda_graph)


def _capture(model, loss_fn, x, y, precision: str, strict: bool):
    """A GraphedStep from the first batch, or ``None`` (with a warning) where capture fails and
    graphs were not insisted on."""
    try:
        return GraphedStep(model, loss_fn, x, y, autocast_dtype=torch.bfloat16 if precision == "bf16" else None)
    except Exception as e:
        if strict:
            raise
        warnings.warn(f"CUDA graph capture failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                      "training eagerly. Pass cuda_graph=False to skip the attempt.", stacklevel=3)
        return None


def _test_sums(model, loader, device, autocast, channels_last) -> torch.Tensor:
    """(summed cross-entropy, correct, images) over ``loader``, on the device (no host sync)."""
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    with torch.inference_mode(), autocast():
        for x, y in loader:
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)
            sums[0] += F.cross_entropy(logits.float(), y, reduction="sum")
            sums[1] += (logits.argmax(1) == y).sum()
            sums[2] += y.numel()
    return sums


EMA_BN_BATCHES = 32


def _reestimate_bn(model, train_loader, epoch, autocast, batches=EMA_BN_BATCHES):
    """The BN running statistics of ``model`` recomputed (plain averages) on the first ``batches``
    training batches of ``epoch``: the statistics of these weights, not of the trained ones."""
    import itertools
    from torch.optim.swa_utils import update_bn
    train_loader.set_epoch(epoch)   # the same batches in every session: resuming stays exact
    with torch.no_grad(), autocast():
        update_bn(itertools.islice(train_loader, batches), model)


def evaluate(model: nn.Module, loader, *, device=None, precision: str = "fp32", channels_last: bool = True) -> dict:
    """Test loss and accuracy (%) of ``model`` on ``loader``, the way ``fit`` measures them each epoch."""
    device = torch.device(device or next(model.parameters()).device)
    autocast = _autocast(device, precision)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format).eval()
    loss, correct, n = _test_sums(model, loader, device, autocast, channels_last).tolist()
    return {"loss": loss / max(n, 1), "acc": 100 * correct / max(n, 1), "images": int(n)}


def fit(model: nn.Module, train_loader, test_loader, recipe: Recipe = Recipe(), *, out_dir=None,
        meta: dict | None = None, device=None, precision: str = "auto", channels_last: bool | None = None,
        compile: bool = False, compile_kwargs: dict | None = None, cuda_graph: bool | None = None,
        resume: bool = True,
        max_epochs: int | None = None, quiet: bool = False, sync_every: int | None = None,
        label: str = "") -> Run:
    """Train ``model`` with ``recipe``; checkpoint, record and resume in ``out_dir``.

    Args:
        train_loader, test_loader: loaders of the data contract (``irnet_lib.data.make_loader``).
        out_dir: folder for ``last.pt``, ``best.pt`` and the history; ``None`` keeps nothing.
        meta: what the run is (variant, dataset, sizes...); its ``"config"`` entry, together with
            the recipe and the model's layout, must match a checkpoint to resume from it.
        precision: "auto" (bf16 autocast on a GPU, fp32 on a CPU), "bf16" or "fp32".
        channels_last: NHWC memory format (default on): the fast layout for depthwise convs on
            GPUs and on CPUs alike (about 1.5x on a 2-core CPU, see ``irnet_lib.bench``).
        compile: wrap the model in ``torch.compile(**compile_kwargs)``.
        cuda_graph: replay each step's forward and backward as one CUDA graph
            (:class:`~irnet_lib.graphs.GraphedStep`). Default: on for a single CUDA process
            without ``compile`` (falling back to eager, with a warning, if capture fails).
        resume: continue from ``out_dir/last.pt`` when it exists (``False``: start over).
        max_epochs: stop after this many epochs *in this call* (a time-boxed session); calling
            again resumes. The schedule always spans ``recipe.train_num_epochs``.
        sync_every: steps between the host reads of the running loss (the non-finite check, the
            progress bar's numbers). Default 1 on a CPU, where a read costs nothing, 50 on a GPU.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    device = torch.device(device or next(model.parameters()).device)
    rank, world = _world()
    is_main = rank == 0
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    autocast = _autocast(device, precision)   # checks precision before any work
    channels_last = True if channels_last is None else channels_last
    sync_every = sync_every or (1 if device.type == "cpu" else 50)
    use_graph = _use_cuda_graph(cuda_graph, device, compile, world)
    if device.type == "cpu":
        reuse_freed_memory()  # ~1.4x on a CPU step: see irnet_lib.allocator
    out_dir = Path(out_dir) if out_dir is not None else None
    steps = len(train_loader)
    if steps < 1:
        raise ValueError("the training loader is empty: use more images or a smaller batch")

    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, steps)
    per_iteration = recipe.lr_step == "iteration"

    meta = dict(meta or {})
    config = dict(meta.get("config", {}), recipe=recipe.to_dict(), model=_model_signature(model))
    meta.update(config=config, precision=precision, channels_last=channels_last, compile=compile, cuda_graph=use_graph,
                device=str(device), hardware=hardware_name(device), world_size=world,
                allocator=allocator_state(),
                torch=torch.__version__, python=platform.python_version(),
                train_images_per_epoch=(train_loader.num_samples * world
                                        if hasattr(train_loader, "num_samples") else None),
                faithful_recipe=recipe.faithful)

    history, start_epoch, best_acc, ckpt_ema = [], 0, -math.inf, None
    last_path = out_dir / "last.pt" if out_dir else None
    if last_path is not None and resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, map_location=device)
        problems = _mismatch(ckpt["config"], config)
        if problems:
            raise CheckpointMismatchError(
                f"refusing to resume from {last_path}: it belongs to another run ("
                + "; ".join(problems) + "). Use another out_dir, or resume=False / --restart to start over.")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"], device)
        history, best_acc = list(ckpt["history"]), ckpt["best_acc"]
        ckpt_ema = ckpt.get("ema")
        start_epoch = ckpt["epoch"] + 1
        meta["resumed_at_epochs"] = list(ckpt.get("resumed_at_epochs", [])) + [start_epoch]

    ema = None
    if recipe.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        # Weights only. Averaging the BN running statistics as well (use_buffers=True) gave
        # chance-level accuracy on a 5-epoch CPU run: statistics averaged over a fast-moving
        # network do not describe the averaged weights. They are re-estimated before each test.
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=False)
        if ckpt_ema is not None:
            ema.load_state_dict(ckpt_ema)

    # The wrappers (compile, DDP) are for the steps; weights are saved from the plain module.
    step_model = model
    if world > 1:
        step_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        step_model = torch.compile(step_model, **(compile_kwargs or {}))
        eval_model = torch.compile(model, **(compile_kwargs or {}))
    else:
        eval_model = model
    memfmt = torch.channels_last if channels_last else torch.contiguous_format
    loss_fn = functools.partial(F.cross_entropy, label_smoothing=recipe.label_smoothing)
    graphed = None   # captured from this call's first batch

    end_epoch = recipe.train_num_epochs if max_epochs is None else min(recipe.train_num_epochs,
                                                                       start_epoch + max_epochs)
    elapsed = history[-1]["elapsed_seconds"] if history else 0.0
    show = is_main and not quiet
    no_bad = torch.iinfo(torch.int64).max
    for epoch in range(start_epoch, end_epoch):
        lr_epoch = optimizer.param_groups[0]["lr"]
        train_loader.set_epoch(epoch)
        model.train()
        stats = torch.zeros(3, device=device, dtype=torch.float64)   # loss sum, correct, images
        first_bad = torch.full((), no_bad, device=device, dtype=torch.int64)
        _sync(device)
        t0 = time.perf_counter()
        bar = tqdm(total=steps, desc=f"{label} epoch {epoch + 1}/{recipe.train_num_epochs}".strip(),
                   leave=False, disable=not show, dynamic_ncols=True)
        for step, (x, y) in enumerate(train_loader):
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=memfmt)
            if use_graph and graphed is None:
                graphed = _capture(model, loss_fn, x, y, precision, strict=bool(cuda_graph))
                use_graph = meta["cuda_graph"] = graphed is not None
            if graphed is not None:
                logits, loss = graphed(x, y)
            else:
                with autocast():
                    logits = step_model(x)
                    loss = loss_fn(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            if per_iteration:
                scheduler.step()
            with torch.no_grad():   # device-side bookkeeping: no host synchronisation here
                lf = loss.detach().float()
                stats[0] += lf * y.numel()
                stats[1] += (logits.argmax(1) == y).sum()
                stats[2] += y.numel()
                first_bad.masked_fill_(~torch.isfinite(lf) & (first_bad == no_bad), step)
            bar.update(1)
            if (step + 1) % sync_every == 0 or step + 1 == steps:
                bad = int(_all_reduce(first_bad.clone(), dist.ReduceOp.MIN if world > 1 else None))
                if bad != no_bad:
                    bar.close()
                    kept = (f"the last good checkpoint ({last_path}, after epoch {history[-1]['epoch']}) is kept"
                            if history and last_path is not None else "no checkpoint had been written yet")
                    raise NonFiniteLossError(
                        f"non-finite training loss at epoch {epoch} step {bad} (0-based; {steps} steps per "
                        f"epoch, lr {lr_epoch:.4g}): the run stopped and {kept}. Lower train_lr_max, "
                        f"check the data for NaNs, or use precision='fp32'.", epoch, bad)
                if show:
                    s = stats.tolist()
                    bar.set_postfix(loss=f"{s[0] / s[2]:.3f}", acc=f"{100 * s[1] / s[2]:.1f}%",
                                    img_s=f"{s[2] * world / (time.perf_counter() - t0):.0f}")
        bar.close()
        _sync(device)
        train_seconds = time.perf_counter() - t0
        tr = _all_reduce(stats).tolist()

        if hasattr(test_loader, "set_epoch"):
            test_loader.set_epoch(epoch)
        model.eval()
        te = _all_reduce(_test_sums(eval_model, test_loader, device, autocast, channels_last)).tolist()
        if ema is not None:
            _reestimate_bn(ema.module, train_loader, epoch, autocast)
            ema.eval()
            te_ema = _all_reduce(_test_sums(ema.module, test_loader, device, autocast, channels_last)).tolist()
        if not per_iteration:
            scheduler.step()
        _sync(device)
        epoch_seconds = time.perf_counter() - t0
        elapsed += epoch_seconds
        row = {"epoch": epoch, "lr": lr_epoch,
               "train_loss": tr[0] / tr[2], "train_acc": 100 * tr[1] / tr[2],
               "test_loss": te[0] / max(te[2], 1), "test_acc": 100 * te[1] / max(te[2], 1),
               "train_images": int(tr[2]), "test_images": int(te[2]),
               "epoch_seconds": epoch_seconds, "train_seconds": train_seconds,
               "train_images_per_s": tr[2] / train_seconds, "elapsed_seconds": elapsed}
        if ema is not None:
            row.update(test_loss_ema=te_ema[0] / max(te_ema[2], 1),
                       test_acc_ema=100 * te_ema[1] / max(te_ema[2], 1))
        history.append(row)
        improved = row["test_acc"] > best_acc
        best_acc = max(best_acc, row["test_acc"])
        if out_dir is not None and is_main:
            ckpt = {"format": CHECKPOINT_FORMAT, "config": config, "epoch": epoch,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(device), "history": history, "best_acc": best_acc,
                    "ema": ema.state_dict() if ema is not None else None,
                    "resumed_at_epochs": meta.get("resumed_at_epochs", [])}
            atomic_save(ckpt, out_dir / "last.pt")
            if improved:
                atomic_save(ckpt, out_dir / "best.pt")
            meta["epochs_done"] = epoch + 1
            _write_history(out_dir, history, meta)
        if world > 1:
            dist.barrier()
        if show:
            tqdm.write(f"{label + ' ' if label else ''}epoch {epoch:>2} lr {lr_epoch:.5f} | train loss "
                       f"{row['train_loss']:.4f} acc {row['train_acc']:.2f}% | test loss {row['test_loss']:.4f} "
                       f"acc {row['test_acc']:.2f}% | {epoch_seconds:.1f} s, {row['train_images_per_s']:.1f} img/s")
    meta["epochs_done"] = len(history)
    return Run(pd.DataFrame(history), meta, model, out_dir)


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
    return torch.device(device), rank, world


def train(block: str = "standard", data="fashion-mnist-sample", *, recipe: Recipe | None = None,
          out_dir=None, root="data", download: bool = False, train_subset: int | None = None,
          test_subset: int | None = None, seed: int = 0, device=None, pipeline: str = "auto", model_kwargs: dict | None = None,
          num_workers: int | None = None, **fit_kwargs) -> Run:
    """Train IR-NET with ``block`` on a dataset of ``irnet_lib.data`` (a name, or an ``ImageData``).

    The recipe's class count follows the data (Table 2's 100 is ImageNet-100's). Under
    ``torchrun`` each of the N processes takes ``recipe.data_batch_size / N`` images per step,
    so the global batch, and with it the results' meaning, stays the recipe's.
    Extra keyword arguments go to ``fit`` (precision, compile, max_epochs, quiet, resume...).
    """
    from . import irnet
    from .data import load_dataset, make_loader

    recipe = recipe or Recipe()
    device, rank, world = _init_distributed(device)
    if isinstance(data, str):
        data = load_dataset(data, root, download=download, train_subset=train_subset,
                            test_subset=test_subset, seed=seed)
    if data.num_classes != recipe.data_num_classes:
        recipe = replace(recipe, data_num_classes=data.num_classes)
    if recipe.data_batch_size % world:
        raise ValueError(f"the global batch {recipe.data_batch_size} does not split over {world} processes; "
                         f"pick a batch size divisible by the number of processes")
    batch = recipe.data_batch_size // world
    torch.manual_seed(seed)   # the same initial weights on every rank and in every resumed session
    model = irnet(block, num_classes=data.num_classes, **(model_kwargs or {}))
    cl = fit_kwargs.get("channels_last")
    cl = True if cl is None else cl
    loaders = [make_loader(data, split, batch, device=device, pipeline=pipeline, seed=seed, rank=rank,
                           world_size=world, channels_last=cl, num_workers=num_workers, test_crop=recipe.test_crop)
               for split in ("train", "test")]
    config = {"block": block, "dataset": data.name, "train_size": len(data.train), "test_size": len(data.test),
              "num_classes": data.num_classes, "seed": seed, "model_kwargs": model_kwargs or {},
              "pipeline": pipeline}
    meta = {"variant": block, "dataset": data.name, "train_size": len(data.train),
            "test_size": len(data.test), "train_subset": train_subset, "test_subset": test_subset,
            "num_classes": data.num_classes, "seed": seed, "batch_per_process": batch,
            "parameters": sum(p.numel() for p in model.parameters()), "config": config,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    return fit(model, *loaders, recipe, out_dir=out_dir, meta=meta, device=device, label=block, **fit_kwargs)


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """Where and how fast to train: the flags ``train`` and ``reproduce`` share."""
    p.add_argument("--device", default=None, help="default: cuda where there is a GPU, else cpu")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="replay each step as one CUDA graph (default: on for one GPU without --compile)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m irnet_lib.train",
        description="Train IR-NET with the paper's Table 2 recipe; running the same command again resumes.",
        epilog="Several GPUs: torchrun --nproc_per_node=N -m irnet_lib.train ... (global batch kept).")
    p.add_argument("--block", default="standard", choices=["standard", "se", "condconv"])
    p.add_argument("--data", default="fashion-mnist-sample", help="a name of irnet_lib.data.DATASETS")
    p.add_argument("--root", default="data", help="data folder (see irnet_lib.data.load_dataset)")
    p.add_argument("--download", action="store_true", help="fetch the dataset where there is internet")
    p.add_argument("--out", default=None, help="run folder (default results/<data>/<block>)")
    p.add_argument("--epochs", type=int, default=None,
                   help="compress the schedule's shape into this many epochs (default: Table 2's 55)")
    p.add_argument("--warmup-epochs", type=int, default=None,
                   help="warm-up epochs of a compressed schedule (default: 5 x epochs / 55, at least 1)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="global batch; the peak lr scales with it (linear rule) unless --lr-max is given")
    p.add_argument("--lr-max", type=float, default=None)
    p.add_argument("--lr-step", choices=["epoch", "iteration"], default="epoch")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="beyond the paper (default 0)")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="also test an exponential moving average of the weights, e.g. 0.999 (beyond the paper)")
    p.add_argument("--test-crop", type=int, default=56,
                   help="test images' centre crop; 64 evaluates the whole image (beyond the paper; default 56)")
    p.add_argument("--train-subset", type=int, default=None, help="stratified subset of the training set")
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    add_device_arguments(p)
    p.add_argument("--pipeline", default="auto", choices=["auto", "tensor", "torchvision"])
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--max-epochs", type=int, default=None, help="stop after this many epochs in this session")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    return p


def recipe_from_args(args) -> Recipe:
    recipe = Recipe(lr_step=args.lr_step, label_smoothing=args.label_smoothing,
                    test_crop=getattr(args, "test_crop", 56), ema_decay=getattr(args, "ema_decay", 0.0))
    if args.batch_size is not None:
        recipe = recipe.scaled_to_batch(args.batch_size)
    if args.lr_max is not None:
        recipe = replace(recipe, train_lr_max=args.lr_max)
    if args.epochs is not None:
        warm = args.warmup_epochs if args.warmup_epochs is not None else max(1, round(5 * args.epochs / 55))
        recipe = recipe.compressed(args.epochs, warm)
    return recipe


def main(argv=None) -> Run:
    args = _parser().parse_args(argv)
    recipe = recipe_from_args(args)
    out = args.out or os.path.join("results", args.data, args.block)
    run = train(args.block, args.data, recipe=recipe, out_dir=out, root=args.root, download=args.download,
                train_subset=args.train_subset, test_subset=args.test_subset, seed=args.seed,
                device=args.device, pipeline=args.pipeline, num_workers=args.workers,
                precision=args.precision, channels_last=args.channels_last, compile=args.compile,
                cuda_graph=args.cuda_graph, resume=not args.restart, max_epochs=args.max_epochs, quiet=args.quiet)
    if _world()[0] == 0 and len(run.history):
        print(f"{args.block} on {run.meta['dataset']}: best {run.best_accuracy:.2f} %, final "
              f"{run.final_accuracy:.2f} % after {len(run.history)} epochs, "
              f"{run.history['epoch_seconds'].sum() / 60:.1f} min on {run.meta['hardware']} -> {out}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return run


if __name__ == "__main__":
    main()
