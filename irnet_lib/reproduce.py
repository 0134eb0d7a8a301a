"""The paper's pipeline in one command: Table 4, the three blocks trained with the Table 2 recipe,
Table 3 (Markdown + CSV) and Figure 5 (per-epoch accuracy and loss curves).

    python -m irnet_lib.reproduce --quick                        # embedded sample, a few CPU minutes
    python -m irnet_lib.reproduce --data imagenet64-100          # the paper's run: 55 epochs, GPU
    python -m irnet_lib.reproduce --from-results results/fashion-mnist-cpu   # tables + figure only

Every table and figure says which data, which hardware, how many epochs and how long; the paper's
numbers (ImageNet-100; the paper names no hardware) sit beside ours, never in place of them.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pandas as pd

from .blocks import BLOCKS
from .loop import NonFiniteError
from .recipe import TABLE_3, Recipe, add_recipe_arguments, recipe_from_args
from .runs import Run, RunFolder, read_history
from .runtime import Runtime
from .train import (
    add_data_arguments,
    add_runtime_arguments,
    check_data_arguments,
    runtime_from_args,
    train,
)

__all__ = ["QUICK", "quick_recipe", "data_label", "runs_label", "run_label", "figure5_reference", "report",
           "table3", "to_markdown", "figure5", "write_table3",
           "load_runs", "load_course_log", "reproduce", "main"]

LABELS = {p.block: p.label for p in TABLE_3}
#: The quick mode: the embedded sample (1,000 of its 1,200 training images, a stratified subset, and all
#: 400 test images), the recipe's shape in 2 epochs at batch 16: 126 optimizer steps per block, about 2.5
#: minutes for the three blocks on a 2-core CPU with the teaching code (notebook 06 trains the same). Enough
#: to leave chance (10 %) well behind (45.0-59.5 % on that CPU), far from converged: a check of the whole
#: pipeline, not
#: a result (the committed real runs are in results/). Batch 16, because a CPU gains little per image from
#: a larger batch: the small batch buys optimizer steps cheaply. The lr is stepped per iteration: with
#: one warm-up epoch the per-epoch schedule jumps 100x between two epochs, which the CondConv block does
#: not survive (measured on the sample and on the full data on a GPU, results/README.md); per iteration
#: the same curve ramps up over the warm-up epoch's steps.
QUICK = dict(data="fashion-mnist-sample", train_subset=1000, epochs=2, warmup_epochs=1, batch_size=16,
             lr_step="iteration")


def quick_recipe() -> Recipe:
    """The quick mode's recipe (:data:`QUICK`), as ``--quick`` builds it: notebook 06 trains with it."""
    return Recipe().scaled_to_batch(QUICK["batch_size"]).compressed(QUICK["epochs"], QUICK["warmup_epochs"],
                                                                     lr_step=QUICK["lr_step"])


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' own needs the optional ``tabulate``)."""
    cells = [[str(c) for c in df.columns]] + [["" if pd.isna(v) else str(v) for v in row]
                                               for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("---" for _ in df.columns) + "|")
    return "\n".join(lines) + "\n"


def _approximate_pipeline(run: Run) -> bool:
    """Did the run's training crops come from the tensor pipeline, whose resize approximates the
    course's torchvision transforms (``TensorLoader.approximations``)? Runs stored before the pipeline
    was recorded used the default, the tensor pipeline."""
    p = run.meta.get("pipeline")
    if isinstance(p, dict):
        return not p.get("exact", False)
    return run.meta.get("config", {}).get("pipeline", "auto") in ("auto", "tensor")


def _data(run: Run) -> str:
    m = run.meta
    test_crop = run.recipe.get("test_crop", 56)
    crops = "56 px crops" if test_crop == 56 else f"56 px training crops, {test_crop} px test crops"
    pipeline = "tensor pipeline: training crops resized approximately" if _approximate_pipeline(run) else \
        "torchvision pipeline"
    return (f"{m['dataset']} ({m['train_size']} train / {m['test_size']} test images, {m['num_classes']} classes, "
            f"64 px, {crops}, {pipeline})")


def data_label(run: Run) -> str:
    """Which data and hardware a run used."""
    return f"{_data(run)}, {run.meta['hardware']}"


def runs_label(runs: dict[str, Run]) -> str:
    """Which data and hardware a set of runs used; where the blocks ran on different machines,
    which block ran where (a results folder may gather runs of several sessions)."""
    by_hardware: dict[str, list[str]] = {}
    for block, run in runs.items():
        by_hardware.setdefault(run.meta["hardware"], []).append(LABELS.get(block, block))
    hardware = (next(iter(by_hardware)) if len(by_hardware) == 1 else
                "; ".join(f"{' and '.join(blocks)} on {hw}" for hw, blocks in by_hardware.items()))
    return f"{_data(next(iter(runs.values())))}, {hardware}"


def run_label(run: Run) -> str:
    """One line saying what a run is: data, sizes, hardware, epochs, wall time."""
    h = run.history
    return f"{data_label(run)}, {len(h)} epochs, {h['epoch_seconds'].sum() / 60:.1f} min"


def table3(runs: dict[str, Run]) -> pd.DataFrame:
    """Table 3 for our runs, next to the paper's numbers for the same block."""
    rows = []
    for paper in TABLE_3:
        run = runs.get(paper.block)
        if run is None:
            continue
        h, m = run.history, run.meta
        rows.append({
            "Block": paper.label,
            "Data (ours)": f"{m['dataset']} {m['train_size']}/{m['test_size']}",
            "Hardware (ours)": m["hardware"] + (", CUDA graphs" if m.get("cuda_graph") else ""),
            "Epochs": len(h),
            "Time (ours, min)": round(h["epoch_seconds"].sum() / 60, 1),
            "s/epoch": round(h["epoch_seconds"].mean(), 1),
            "Train img/s": round(h["train_images_per_s"].median(), 1),
            "Best acc % (ours)": round(h["test_acc"].max(), 2),
            "Best epoch": int(h["epoch"][h["test_acc"].idxmax()]),
            "Final acc % (ours)": round(h["test_acc"].iloc[-1], 2),
            "Paper time (h, ImageNet-100)": paper.training_hours,
            "Paper acc % (ImageNet-100)": paper.accuracy,
        })
    return pd.DataFrame(rows)


def write_table3(runs: dict[str, Run], out_dir) -> pd.DataFrame:
    out_dir = Path(out_dir)
    df = table3(runs)
    df.to_csv(out_dir / "table3.csv", index=False)
    first = next(iter(runs.values()))
    text = ("# Table 3, reproduced\n\n"
            f"Ours: {runs_label(runs)}; "
            f"recipe: Table 2's shape ({first.recipe['train_num_epochs']} epochs, "
            f"peak lr {first.recipe['train_lr_max']:.4g}, global batch "
            f"{first.recipe['data_batch_size']}, lr stepped per "
            f"{first.recipe.get('lr_step', 'epoch')}). Paper: ImageNet reduced to 100 classes, images "
            "downsampled by 4 (56x56 input), 55 epochs, hardware not named; its CondConv row is empty. "
            "The two are different data and hardware: compare the ranking of the blocks, not the numbers. "
            "Times are wall times (on a shared "
            "machine they include waiting for other jobs).\n\n" + to_markdown(df))
    unfinished = [f"{p.label} stopped after {len(run.history)} of {run.planned_epochs} epochs"
                  for p in TABLE_3 if (run := runs.get(p.block)) is not None and len(run.history) < run.planned_epochs]
    if unfinished:
        text += ("\n**Unfinished runs:** " + "; ".join(unfinished) + ". Their numbers are not final results; "
                 "where a run's `last.pt` is kept, the same command resumes it.\n")
    (out_dir / "table3.md").write_text(text)
    return df


def load_runs(folder, blocks=tuple(BLOCKS)) -> dict[str, Run]:
    """The stored histories ``folder/<block>/history.json`` that exist."""
    folder = Path(folder)
    runs = {b: read_history(folder / b) for b in blocks if (folder / b / "history.json").is_file()}
    if not runs:
        raise FileNotFoundError(f"no histories under {folder}/<block>/history.json; train first "
                                f"(python -m irnet_lib.reproduce ... or python -m irnet_lib.train ...)")
    return runs


def load_course_log(path=None) -> pd.DataFrame:
    """The course's logged standard-block run (ImageNet-100, Colab GPU), stored in results/."""
    path = Path(path or Path(__file__).resolve().parents[1] / "results" / "course_standard_log.csv")
    if not path.is_file():
        raise FileNotFoundError(f"no course log at {path}")
    return pd.read_csv(path)


def figure5(runs: dict[str, Run], path=None, title: str | None = None):
    """Figure 5: per-epoch test accuracy and loss (train dashed) of each block; returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    colors = dict(standard="C0", se="C1", condconv="C2")
    for block, run in runs.items():
        h, c = run.history, colors.get(block)
        unfinished = len(h) < run.planned_epochs
        name = LABELS.get(block, block) + (f", {len(h)} of {run.planned_epochs} epochs" if unfinished else "")
        ax_acc.plot(h.epoch, h.test_acc, "o-", color=c, label=f"{name} (test)")
        ax_acc.plot(h.epoch, h.train_acc, "--", color=c, alpha=0.6, label=f"{name} (train)")
        ax_loss.plot(h.epoch, h.test_loss, "o-", color=c, label=f"{name} (test)")
        ax_loss.plot(h.epoch, h.train_loss, "--", color=c, alpha=0.6, label=f"{name} (train)")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="Accuracy per epoch")
    # Log scale: the test loss of the peak-lr epoch (BN running statistics still settling) can be
    # ten times the rest and would flatten every other point.
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy (log scale)", title="Loss per epoch", yscale="log")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=7)
    first = next(iter(runs.values()))
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    per_iteration = first.recipe.get("lr_step") == "iteration"
    title = title or (f"Figure 5 reproduced: {runs_label(runs)}, {len(first.history)} epochs"
                      + (", lr stepped per iteration" if per_iteration else ""))
    fig.suptitle("\n".join(textwrap.wrap(title, 150)), fontsize=9)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def figure5_reference(course_log: pd.DataFrame, path=None):
    """The course's own standard-block curve (ImageNet-100, a Colab GPU: the course's run, not the paper's).
    A separate figure on purpose."""
    import matplotlib.pyplot as plt
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax_acc.plot(course_log.epoch, course_log.test_accuracy, "k.-")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="Course log, standard block: test accuracy")
    ax_loss.plot(course_log.epoch, course_log.mean_cross_entropy, "k.-")
    ax_loss.set(xlabel="epoch", ylabel="mean train cross-entropy", title="Course log: train loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    fig.suptitle("Reference (not ours, not the paper's): the course's log (ImageNet-100, a Colab GPU), "
                 f"55 epochs, best {course_log.test_accuracy.max():.2f} %", fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _table4(out_dir: Path, quiet: bool, blocks=tuple(BLOCKS)):
    """Table 4 (MACs and weights per operation, 56x56 input, the paper's 100 classes) of each block."""
    from .network import irnet
    from .tables import table4
    tables = {}
    for block in blocks:
        t4 = table4(irnet(block, num_classes=100)).reset_index()
        t4.to_csv(out_dir / f"table4_{block}.csv", index=False)
        (out_dir / f"table4_{block}.md").write_text(
            f"# Table 4, recomputed: IR-NET with the {block} block (56x56 input, 100 classes)\n\n" + to_markdown(t4))
        tables[block] = t4
    if not quiet:
        print("Table 4 (recomputed, standard block):")
        print(tables[blocks[0]].to_string(index=False))
    return tables


def reproduce(data="fashion-mnist-sample", *, out_dir=None, root="data", blocks=tuple(BLOCKS),
              recipe: Recipe | None = None, train_subset=None, test_subset=None, seed=0, figure=None,
              download=False, pipeline="auto", num_workers=None, runtime=None, **runtime_fields):
    """Table 4, the blocks trained (resuming what is already there), Table 3 and Figure 5, all in
    ``out_dir`` (default ``runs/<data>``; Figure 5 as ``out_dir/figure5.png`` unless ``figure``)."""
    out_dir = Path(out_dir or Path("runs") / data)
    rt = replace(runtime or Runtime(), **runtime_fields)
    for block in blocks:   # every run folder checked before anything is trained
        RunFolder(out_dir / block)
    _table4(out_dir, rt.quiet, tuple(blocks))
    runs = {block: train(block, data, recipe=recipe, out_dir=out_dir / block, root=root, download=download,
                         train_subset=train_subset, test_subset=test_subset, seed=seed, pipeline=pipeline,
                         num_workers=num_workers, runtime=rt)
            for block in blocks}
    return report(runs, out_dir, figure or out_dir / "figure5.png", rt.quiet)


def report(runs, out_dir, figure, quiet=False):
    """Table 3 (``out_dir/table3.md`` and ``.csv``) and Figure 5 (``figure``) of ``runs``."""
    out_dir = Path(out_dir)
    df = write_table3(runs, out_dir)
    import matplotlib
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.close(figure5(runs, figure))
    if not quiet:
        print((out_dir / "table3.md").read_text())
        print(f"Table 3 -> {out_dir / 'table3.md'}, {out_dir / 'table3.csv'}; Figure 5 -> {figure}")
    return df


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m irnet_lib.reproduce", description=__doc__.split("\n\n")[0],
                                epilog="Runs go to runs/ (git-ignored). The committed results/ are rewritten only "
                                       "when named: --out results/<name> --figure figures/fig5_<name>.png.")
    p.add_argument("--quick", action="store_true",
                   help=f"the embedded sample, a few CPU minutes: {QUICK}")
    p.add_argument("--from-results", default=None, metavar="FOLDER",
                   help="only rebuild Table 3 and Figure 5 (figures/fig5_<folder name>.png) from FOLDER/<block>/")
    p.add_argument("--out", default=None, help="results folder (default runs/<data>, or runs/quick-sample)")
    p.add_argument("--figure", default=None, help="Figure 5 path (default <out>/figure5.png)")
    p.add_argument("--blocks", nargs="+", default=list(BLOCKS), choices=list(BLOCKS))
    add_data_arguments(p)
    add_recipe_arguments(p)
    add_runtime_arguments(p)
    return p


def _quick_defaults(args, p: argparse.ArgumentParser) -> None:
    """``--quick``: :data:`QUICK` wherever a flag was left at its default."""
    for k, v in QUICK.items():
        if getattr(args, k) is None or (k == "data" and args.data == p.get_default("data")):
            setattr(args, k, v)
    args.out = args.out or os.path.join("runs", "quick-sample")


def main(argv=None):
    p = _parser()
    args = p.parse_args(argv)
    if args.from_results:
        folder = Path(args.from_results)
        figure = args.figure or Path("figures") / f"fig5_{folder.name}.png"
        return report(load_runs(folder, args.blocks), folder, figure, args.quiet)
    if args.quick:
        _quick_defaults(args, p)
    if args.quick and not args.quiet:
        print(f"Quick mode: a check of the whole pipeline (a few CPU minutes), not a result: {args.epochs} epochs "
              f"of {args.train_subset:,} training images per block. Results of real runs: results/README.md.")
    try:
        recipe, runtime = recipe_from_args(args), runtime_from_args(args)
        check_data_arguments(args)
        return reproduce(args.data, out_dir=args.out, root=args.root, blocks=args.blocks, recipe=recipe,
                         train_subset=args.train_subset, test_subset=args.test_subset, seed=args.seed,
                         figure=args.figure, download=args.download, pipeline=args.pipeline,
                         num_workers=args.workers, runtime=runtime)
    except (ValueError, FileNotFoundError, PermissionError, NotADirectoryError, NonFiniteError) as e:
        sys.exit(f"{p.prog}: error: {e}")


if __name__ == "__main__":
    main()
