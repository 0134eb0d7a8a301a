"""Where a GPU training step's time goes, per IR-NET variant: kernels launched per step, the
time the GPU spends in them, and the wall time of the step, eager (bf16, channels_last, the fast
layer) and replayed as one CUDA graph (``irnet_lib.fast.graphs``); plus the kernels that take the
most time, and CondConv computed by the teaching code (the core's contiguous fold) for comparison.

    python benchmarks/gpu_profile.py --out results/bench      # needs a CUDA GPU; ~30 s

A step whose wall time is well above its kernel time is bound by the CPU launching the kernels,
which is what a CUDA graph removes. Prints a table and writes ``<out>/gpu-profile.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import bench


def kernels(case, steps: int):
    """(kernels per step, GPU kernel ms per step, the top kernels by time)."""
    train = case.callables()["train"]
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            train()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA and t > 0:
            rows.append((e.key, e.count, t))
    n = sum(c for _, c, _ in rows) / steps
    busy = sum(t for _, _, t in rows) / steps / 1e3
    top = sorted(rows, key=lambda r: -r[2])[:8]
    return n, busy, [{"kernel": k[:90], "calls_per_step": c / steps, "ms_per_step": t / steps / 1e3}
                     for k, c, t in top]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/bench")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--variants", nargs="+", default=["standard", "se", "condconv"])
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("gpu_profile.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    device = torch.device("cuda")
    result = {"hardware": bench.hardware(device), "batch": args.batch, "rows": []}
    # All wall times first: once a profiler has run in a process, its instrumentation can stay
    # behind and slow every later eager launch (measured: 55 ms for SE's step against 29 ms).
    cases = {(v, m): bench.Case(v, m, device, args.batch, bench.IMAGE_SIZE)
             for v in args.variants for m in ("fast_bf16", "graph_bf16")}
    if "condconv" in args.variants:
        # CondConv as the teaching code computes it (the batch folded into a contiguous image),
        # against the fast layer's channels_last fold: which grouped-conv kernel the GPU runs faster.
        cases["condconv", "bf16"] = bench.Case("condconv", "bf16", device, args.batch, bench.IMAGE_SIZE)
    for (variant, mode), case in cases.items():
        train = case.callables()["train"]
        for _ in range(3):
            train()
        result["rows"].append({"variant": variant, "mode": mode, "fast": bench.MODES[mode].fast,
                               "wall_ms": 1e3 * bench.time_per_call(train, 20, device)})
    for row in result["rows"]:
        case = cases.get((row["variant"], row["mode"]))
        if case is not None:
            row["kernels_per_step"], row["kernel_ms"], row["top"] = kernels(case, args.steps)
        busy = f", {row['kernel_ms']:6.2f} ms in {row['kernels_per_step']:5.0f} kernels" if "kernel_ms" in row else ""
        print(f"{row['variant']:>9s} {row['mode']:<10s} step {row['wall_ms']:6.2f} ms wall{busy}", flush=True)
        if row["mode"] == "fast_bf16" and "top" in row:
            for t in row["top"]:
                print(f"      {t['ms_per_step']:6.2f} ms  x{t['calls_per_step']:<4.0f} {t['kernel']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-profile.json").write_text(json.dumps(result, indent=1))
    print(f"saved {out / 'gpu-profile.json'}")


if __name__ == "__main__":
    main()
