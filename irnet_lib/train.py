"""IR-NET trained with the paper's Table 2 recipe, from Python or the command line.

    python -m irnet_lib.train --block se --data fashion-mnist          # run it again to resume
    torchrun --nproc_per_node 4 -m irnet_lib.train --block standard --data imagenet64-100

:func:`train` builds IR-NET and the loaders of :mod:`irnet_lib.data` and calls the loop,
:func:`irnet_lib.loop.fit`, which is where to read how a network is trained. The command line's
flags are the fields of the recipe (:class:`irnet_lib.recipe.Recipe`), of the data and of how the
run executes (:class:`irnet_lib.runtime.Runtime`); ``python -m irnet_lib.reproduce`` shares them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import torch
import torch.distributed as dist

from .blocks import BLOCKS
from .checks import check_choice, check_int
from .loop import NonFiniteError, fit
from .recipe import Recipe, add_recipe_arguments, recipe_from_args
from .runs import Run, RunFolder
from .runtime import PRECISIONS, Runtime, init_distributed, world

__all__ = ["train", "main", "add_data_arguments", "add_runtime_arguments", "runtime_from_args",
           "check_data_arguments"]


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
    from .data import DATASETS, load_dataset, make_loader
    from .network import irnet

    check_choice("block", block, BLOCKS)
    if isinstance(data, str):
        check_choice("data", data, DATASETS)
    recipe = recipe or Recipe()
    rt = replace(runtime or Runtime(), **runtime_fields)
    device, rank, processes = init_distributed(rt.device)
    rt = replace(rt, device=device, label=rt.label or block)
    folder = RunFolder(out_dir, write=rank == 0) if out_dir is not None else None
    if recipe.data_batch_size % processes:
        raise ValueError(f"the global batch {recipe.data_batch_size} does not split over {processes} processes; "
                         f"pick a batch size divisible by the number of processes")
    if isinstance(data, str):
        data = load_dataset(data, root, download=download, train_subset=train_subset,
                            test_subset=test_subset, seed=seed)
    if data.num_classes != recipe.data_num_classes:
        recipe = replace(recipe, data_num_classes=data.num_classes)
    batch = recipe.data_batch_size // processes
    torch.manual_seed(seed)   # the same initial weights on every rank and in every resumed session
    model = irnet(block, num_classes=data.num_classes, **(model_kwargs or {}))
    loaders = [make_loader(data, split, batch, device=device, pipeline=pipeline, seed=seed, rank=rank,
                           world_size=processes, channels_last=rt.channels_last, num_workers=num_workers,
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
    g.add_argument("--fast", action=argparse.BooleanOptionalAction, default=False,
                   help="the opt-in fast layer, irnet_lib.fast: CondConv's fast formulations, glibc keeping freed "
                        "memory on a CPU, CUDA graphs on one GPU (default off: the teaching code alone)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="replay each step as one CUDA graph (default: with --fast, on one GPU)")
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
    check_choice("--data", args.data, DATASETS)
    for name in ("train_subset", "test_subset"):
        if getattr(args, name) is not None:
            check_int(f"--{name.replace('_', '-')}", getattr(args, name), why=" (or left out for the whole split)")
    if args.workers is not None:
        check_int("--workers", args.workers, minimum=0, why=" (0: load in the main process)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m irnet_lib.train",
        description="Train IR-NET with the paper's Table 2 recipe; running the same command again resumes.",
        epilog="Several GPUs: torchrun --nproc_per_node=N -m irnet_lib.train ... (global batch kept).")
    p.add_argument("--block", default="standard", choices=list(BLOCKS))
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
    if world()[0] == 0 and len(run.history):
        print(f"{args.block} on {run.meta['dataset']}: best {run.best_accuracy:.2f} %, final "
              f"{run.final_accuracy:.2f} % after {len(run.history)} epochs, "
              f"{run.history['epoch_seconds'].sum() / 60:.1f} min on {run.meta['hardware']} -> {out}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return run


if __name__ == "__main__":
    main()
