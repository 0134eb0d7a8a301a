"""Training-step speed of this checkout's IR-NET against another commit's, in one process, interleaved.

    python benchmarks/compare_commits.py 54b2c8e                 # batch 64, 7 repetitions, the 3 blocks
    python benchmarks/compare_commits.py 54b2c8e --batch 16 --reps 3 --blocks condconv

The other commit's ``irnet_lib`` is extracted with ``git archive`` into a temporary folder and imported
under another name, beside this checkout's. Every repetition times one training step (forward,
backward, SGD with the recipe's momentum and weight decay; random 56x56 images, 100 classes) of every
(block, code) pair one after the other, so that load from other processes hits all of them alike; the
printed ratios are medians of per-repetition (paired) ratios. Measured, for this checkout:

- ``core``: the teaching code alone (``irnet_lib.fast`` off), channels_last fp32;
- ``fast``: the same with ``irnet_lib.fast`` on (what the command lines train with ``--fast``);

and the same two for the other commit (its fast layer where it has one). Freed memory is kept in the
process for all of them (``irnet_lib.fast.allocator``, process-wide); run ``bench.py --plain-allocator``
for a process without it.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _interleave import interleaved  # noqa: E402

import irnet_lib  # noqa: E402
from irnet_lib.fast import allocator  # noqa: E402
from irnet_lib.runtime import hardware_name  # noqa: E402


def import_commit(rev: str, folder: Path):
    """``irnet_lib`` as it was at ``rev``, imported as the package ``irnet_at_<rev>``."""
    name = f"irnet_at_{rev[:10]}"
    archive = folder / "src.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "irnet_lib"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    (folder / "irnet_lib").rename(folder / name)
    sys.path.insert(0, str(folder))
    return importlib.import_module(name)


class Step:
    def __init__(self, package, block, batch, use_fast: bool):
        torch.manual_seed(0)
        self.model = package.irnet(block, num_classes=100).to(memory_format=torch.channels_last).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-5)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(batch, 3, 56, 56, generator=g).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 100, (batch,), generator=g)
        self.fast = importlib.import_module(package.__name__ + ".fast") if use_fast else None

    def __call__(self) -> float:
        with self.fast.enabled(keep_freed_memory=False) if self.fast else contextlib.nullcontext():
            t0 = time.perf_counter()
            self.opt.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(self.x), self.y).backward()
            self.opt.step()
            return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rev", help="the other commit (any git revision)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--blocks", nargs="+", default=["standard", "se", "condconv"])
    args = p.parse_args(argv)
    allocator.reuse_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        other = import_commit(args.rev, Path(tmp))
        other_fast = importlib.util.find_spec(other.__name__ + ".fast") is not None
        codes = {"core": (irnet_lib, False), "fast": (irnet_lib, True), args.rev: (other, False)}
        if other_fast:
            codes[args.rev + "+fast"] = (other, True)
        steps = {(block, code): Step(package, block, args.batch, on)
                 for block in args.blocks for code, (package, on) in codes.items()}
        times = interleaved(steps, args.reps, warmup=3)
    print(f"{hardware_name('cpu')}, torch {torch.__version__}, batch {args.batch}, channels_last fp32, "
          f"{args.reps} interleaved repetitions; images/s (median), and paired ratios of step times")

    def ratio(block, a, b):
        return statistics.median(x / y for x, y in zip(times[block, a], times[block, b]))

    for block in args.blocks:
        speeds = " | ".join(f"{code} {args.batch / statistics.median(times[block, code]):6.1f}" for code in codes)
        pairs = [("core", args.rev)] + ([("fast", args.rev + "+fast")] if other_fast else [("fast", args.rev)])
        print(f"{block:>9}: {speeds} img/s;  step time " + ", ".join(f"{a}/{b} {ratio(block, a, b):.3f}"
                                                               for a, b in pairs + [("core", "fast")]))


if __name__ == "__main__":
    main()
