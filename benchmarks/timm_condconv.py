"""IR-NET [C]'s training step with timm's CondConv layer against this library's, interleaved.

    pip install timm && python benchmarks/timm_condconv.py            # batch 64, 7 repetitions
    python benchmarks/timm_condconv.py --batch 16 --reps 3

timm's ``CondConv2d`` (``timm.layers``, the EfficientNet-CondConv implementation) mixes the experts
into one kernel per example and runs one grouped convolution over the batch folded into the channel
axis, as this library's teaching code does. Here every conditional conv of the same IR-NET [C] is
computed three ways, the routing (this library's) and everything else unchanged:

- ``core``: ``irnet_lib.condconv.condconv2d`` (``irnet_lib.fast`` off);
- ``fast``: ``irnet_lib.fast`` on (the per-layer formulations the command lines train with);
- ``timm``: each conv's expert weights copied into a ``timm.layers.CondConv2d``, called with the routing.

One training step (forward, backward, SGD) of each, one after the other in every repetition, channels_last
fp32, random 56x56 images; medians, and paired ratios of step times.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _interleave import interleaved

import irnet_lib
from irnet_lib import fast
from irnet_lib.condconv import CondConv2d
from irnet_lib.fast import allocator
from irnet_lib.runtime import hardware_name


def with_timm_layers(model):
    """``model`` with each CondConv2d computed by a timm CondConv2d holding a copy of its experts."""
    from timm.layers import CondConv2d as TimmCondConv2d
    for m in model.modules():
        if isinstance(m, CondConv2d):
            t = TimmCondConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, padding=m.padding,
                               groups=m.groups, num_experts=m.num_experts)
            t.weight.data.copy_(m.weight.data.view(m.num_experts, -1))
            m.weight.requires_grad_(False)   # the timm layer's copy is trained instead
            m.timm = t

            def forward(x, routing_weights=None, m=m):
                return m.timm(x, m.router(x) if routing_weights is None else routing_weights)
            m.forward = forward
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args(argv)
    allocator.reuse_freed_memory()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, 56, 56, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (args.batch,), generator=g)
    cases = {}
    for name in ("core", "fast", "timm"):
        torch.manual_seed(0)
        model = irnet_lib.irnet("condconv").to(memory_format=torch.channels_last).train()
        if name == "timm":
            model = with_timm_layers(model)
        params = [q for q in model.parameters() if q.requires_grad]
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-5)

        def step(model=model, opt=opt, on=name == "fast"):
            with fast.enabled(on, keep_freed_memory=False):
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()
                return time.perf_counter() - t0
        cases[name] = step
    with torch.no_grad():   # the three compute the same network (train mode: BN on the batch's statistics)
        outs = {}
        for name, step in cases.items():
            with fast.enabled(name == "fast", keep_freed_memory=False):
                outs[name] = step.__defaults__[0](x[:8])
    print("largest difference of the logits from core's (train mode, 8 images):",
          {k: f"{(v - outs['core']).abs().max().item():.1e}" for k, v in outs.items() if k != "core"})
    times = interleaved(cases, args.reps)
    print(f"IR-NET [C], {hardware_name('cpu')}, torch {torch.__version__}, batch {args.batch}, channels_last fp32, "
          f"{args.reps} interleaved repetitions")
    for k in cases:
        print(f"{k:>5}: {args.batch / statistics.median(times[k]):6.1f} training images/s")
    for a, b in (("fast", "timm"), ("core", "timm"), ("fast", "core")):
        r = statistics.median(u / v for u, v in zip(times[a], times[b]))
        print(f"step time {a}/{b}: {r:.3f}")


if __name__ == "__main__":
    main()
