"""Data pipeline throughput: images per second of train batches (RandomResizedCrop(56) + flip +
normalisation), for the tensor pipeline on the CPU (and on the GPU where there is one) and for the
classic torchvision DataLoader pipeline.

    python benchmarks/data_pipeline.py                      # a few seconds, the committed sample
    python benchmarks/data_pipeline.py --dataset fashion-mnist --images 60000

Only the pipeline is timed (no model): decoding into the tensor cache is timed separately, once.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from irnet_lib.data import load_dataset, make_loader


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def throughput(loader, images: int, device) -> tuple[float, int]:
    """Images per second over whole epochs until at least ``images`` were served (after one
    warm-up batch)."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    next(iter(loader))
    sync()
    seen, epoch, start = 0, 0, time.perf_counter()
    while seen < images:
        loader.set_epoch(epoch)
        for x, _ in loader:
            seen += len(x)
        epoch += 1
    sync()
    return seen / (time.perf_counter() - start), seen


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist-sample")
    p.add_argument("--root", default="data")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--images", type=int, default=3000, help="images per measurement (default: short)")
    p.add_argument("--workers", type=int, default=None, help="torchvision pipeline workers (default: CPU count, max 8)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    data = load_dataset(args.dataset, args.root)
    print(data)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}; "
          f"torch {torch.__version__}")
    cpu = torch.device("cpu")
    runs = [("tensor", cpu, None), ("torchvision", cpu, args.workers), ("torchvision", cpu, 0)]
    if torch.cuda.is_available():
        runs.insert(0, ("tensor", torch.device("cuda"), None))
        print("GPU:", torch.cuda.get_device_name())
    t = time.perf_counter()
    data.tensor_cache("train")
    print(f"tensor cache: {len(data.train)} train images decoded in {time.perf_counter() - t:.2f} s "
          f"(once; loading took {t - t0:.2f} s)")
    print(f"{'pipeline':<12} {'device':<8} {'workers':>7} {'images/s':>10} {'images':>8}")
    for pipeline, device, workers in runs:
        loader = make_loader(data, "train", args.batch_size, device=device, pipeline=pipeline, num_workers=workers)
        rate, seen = throughput(loader, args.images, device)
        shown = "-" if pipeline == "tensor" else str(loader.num_workers)
        print(f"{pipeline:<12} {device.type:<8} {shown:>7} {rate:>10,.0f} {seen:>8}", flush=True)


if __name__ == "__main__":
    main()
