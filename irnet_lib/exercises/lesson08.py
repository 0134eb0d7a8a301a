"""Notebook 08 · Appendix, the engineering behind the speed: its exercises.

One of them reads the committed H100 runs in ``results/bench/`` (the benchmark and the profile)."""
from __future__ import annotations

from .core import Exercise, meta_irnet, stored_bench


def _rank_share(world_size: int = 7) -> int:
    from ..data import load_dataset, make_loader
    from ..notebook import ROOT
    data = load_dataset("fashion-mnist-sample", root=ROOT / "data")
    return make_loader(data, "train", 256, rank=0, world_size=world_size).num_samples


def _launch_microseconds(variant: str = "se") -> float:
    """If the eager step's extra time over the graphed replay were all launches: microseconds per kernel (H100)."""
    run = stored_bench("cuda-h100.json")
    names = run.get("old_mode_names", {})
    step = {names.get(r["mode"], r["mode"]): r["train_step_ms"]["median"] for r in run["rows"]
            if r["variant"] == variant}
    kernels = next(r["kernels_per_step"] for r in stored_bench("gpu-profile-h100.json")["rows"]
                   if r["variant"] == variant and r["mode"] == "bf16" and r.get("fold_layout", "default") == "default")
    return 1e3 * (step["fast_bf16"] - step["graph_bf16"]) / kernels


def _pointwise_kernel_megabytes(batch: int = 64, bytes_per_value: int = 4) -> float:
    """Megabytes of per-example 1x1 kernels of the CondConv network that the fast layer does not keep."""
    from ..condconv import CondConv2d
    net = meta_irnet("condconv")
    per_example = sum(m.in_channels * m.out_channels for m in net.modules()
                      if isinstance(m, CondConv2d) and m.kernel_size == 1)
    return per_example * batch * bytes_per_value / 1e6


EXERCISES = {
    "08.1": Exercise(_rank_share,
                     hint="every rank gets the same number of indices: divide the sample's train images by the "
                          "world size and round up (the order is padded to a multiple of 7)."),
    "08.2": Exercise(_launch_microseconds, rtol=0.05,
                     hint="(eager ms - graphed ms) of SE on the H100, from `graphs`, divided by its kernels per step; "
                          "ms to microseconds is x 1,000."),
    "08.3": Exercise(_pointwise_kernel_megabytes, rtol=0.01,
                     hint="kernel weights per example x 64 examples x 4 bytes per fp32 value, divided by 1e6."),
}
