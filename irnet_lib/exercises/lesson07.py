"""Notebook 07 · What MACs predict and what they do not: its exercises.

Two of them read the committed GPU runs in ``results/bench/`` (an H100's benchmark and profile)."""
from __future__ import annotations

import torch

from .core import Exercise, meta_irnet, stored_bench


def _mixed_megabytes(batch: int = 256, bytes_per_value: int = 4) -> float:
    """Megabytes of the CondConv network's mixed kernels for one batch: one kernel per conditional conv and image."""
    from ..condconv import CondConv2d
    net = meta_irnet("condconv")
    per_image = sum(m.weight.numel() // m.num_experts for m in net.modules() if isinstance(m, CondConv2d))
    return per_image * batch * bytes_per_value / 1e6


def _batchnorm_share() -> float:
    """BatchNorm kernels' share of the standard network's GPU time in one eager bf16 training step (H100 profile)."""
    profile = stored_bench("gpu-profile-h100.json")
    row = next(r for r in profile["rows"] if r["variant"] == "standard" and r["mode"] == "bf16"
               and r.get("fold_layout", "default") == "default")
    return sum(t["ms_per_step"] for t in row["top"] if "batch_norm" in t["kernel"]) / row["kernel_ms"]


def _mac_proportional_step_ms() -> float:
    """MobileNetV2's graphed training step on the H100 if time were proportional to MACs (from the standard one)."""
    from torchvision.models import mobilenet_v2

    from ..complexity import summary
    from ..network import irnet
    with torch.device("meta"):
        ratio = summary(mobilenet_v2(num_classes=100))["macs"] / summary(irnet("standard"))["macs"]
    run = stored_bench("cuda-h100.json")
    names = run.get("old_mode_names", {})
    step = next(r["train_step_ms"]["median"] for r in run["rows"]
                if r["variant"] == "standard" and names.get(r["mode"], r["mode"]) == "graph_bf16")
    return step * ratio


EXERCISES = {
    "07.1": Exercise(_mixed_megabytes, rtol=0.01,
                     hint="mixed weights per image (section 3 prints them) x 256 images x 4 bytes per fp32 value, "
                          "then divide by 1e6 for megabytes."),
    "07.2": Exercise(_batchnorm_share, rtol=0.02,
                     hint="in the `gpu` table, the standard row: BatchNorm kernels' ms divided by the GPU's busy ms "
                          "(use the table's values, not a rounded display of them)."),
    "07.3": Exercise(_mac_proportional_step_ms, rtol=0.02,
                     hint="the standard network's graphed step (the `gpu` table) times MobileNetV2's MACs relative "
                          "to the standard network's (the `counts` table, three decimals: a ratio rounded to two "
                          "is off by 4 %)."),
}
