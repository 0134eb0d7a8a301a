"""A candidate for the fast layer on a GPU: CondConv's per-example depthwise conv as Triton kernels.

On a GPU the fast layer runs a conditional depthwise conv as the core does, folding the batch into
the channel axis (``irnet_lib.fast.condconv._folded``), and the profile's largest CondConv kernel is
that fold's transposing copy. These kernels read the channels_last tensor where it lies: one
program per (example, tile of pixels, tile of channels) applies that example's own F x F kernel.
The same kernel, its taps mirrored, gives the input's gradient; a second sums the kernel's gradient
over the pixels.
The per-example kernels come in tap-major, (B, F, F, C), as the CPU operator takes them
(``irnet_lib.fast.depthwise``), so both are mixed the same way.

This is a candidate, not part of the library: it joins ``irnet_lib.fast`` only if a GPU measures
it faster than the fold. Two uses:

    python triton_depthwise.py --check                                   # against the fold, fp32 and bf16
    TRITON_INTERPRET=1 python triton_depthwise.py --check --device cpu   # the same, without a GPU
    python triton_depthwise.py --bench --out runs/triton-depthwise       # per layer + a training step

``--bench`` times, interleaved, IR-NET's 16 conditional depthwise layers (forward and backward, bf16,
batch 256) with the fold and with the kernels, then a whole training step of the CondConv network in
bf16 with either; it prints a table and writes ``bench.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# IR-NET's conditional depthwise layers at 56 px: (channels, input size, stride), from Table 1.
LAYERS = [(64, 56, 1)] * 2 + [(96, 56, 1), (96, 56, 2)] + [(160, 28, 1)] * 2 + [(160, 28, 2)] + \
         [(320, 14, 1)] * 3 + [(320, 14, 2)] + [(640, 7, 1)] * 5


@triton.jit
def _taps_kernel(src, k, dst, Hs, Ws, C, Hd, Wd, stride, FS: tl.constexpr, TRANSPOSED: tl.constexpr,
                 BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """dst[b, p] = sum over taps (i, j) of src[b, q] k[b, i, j], one program per (example, tile of dst
    pixels, tile of channels). Forward (src x, dst y): q = p * stride + tap - FS // 2. Gradient of the
    input (TRANSPOSED; src grad y, dst grad x): the q with q * stride + tap - FS // 2 = p."""
    b_tile, c_tile = tl.program_id(0), tl.program_id(1)
    tiles = tl.cdiv(Hd * Wd, BLOCK_P)
    b, p = b_tile // tiles, (b_tile % tiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = c_tile * BLOCK_C + tl.arange(0, BLOCK_C)
    hd, wd = p // Wd, p % Wd
    p_ok, c_ok = p < Hd * Wd, c < C
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for i in tl.static_range(FS):
        for j in tl.static_range(FS):
            if TRANSPOSED:
                th, tw = hd + FS // 2 - i, wd + FS // 2 - j
                hs, ws = th // stride, tw // stride
                ok = (th >= 0) & (tw >= 0) & (th % stride == 0) & (tw % stride == 0) & (hs < Hs) & (ws < Ws)
            else:
                hs, ws = hd * stride + i - FS // 2, wd * stride + j - FS // 2
                ok = (hs >= 0) & (hs < Hs) & (ws >= 0) & (ws < Ws)
            ok = ok & p_ok
            sv = tl.load(src + ((b * Hs + hs) * Ws + ws)[:, None] * C + c[None, :], mask=ok[:, None] & c_ok[None, :],
                         other=0.0)
            kv = tl.load(k + ((b * FS + i) * FS + j) * C + c, mask=c_ok, other=0.0)
            acc += sv.to(tl.float32) * kv.to(tl.float32)[None, :]
    tl.store(dst + ((b * Hd + hd) * Wd + wd)[:, None] * C + c[None, :], acc.to(dst.dtype.element_ty),
             mask=p_ok[:, None] & c_ok[None, :])


@triton.jit
def _grad_kernel_kernel(x, gy, gk, H, W, C, Ho, Wo, stride, FS: tl.constexpr, TAPS: tl.constexpr,
                        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """gk[b, i, j] = sum over output pixels of gy[b, ho, wo] x[b, ho * stride + i - FS // 2, ...]:
    one program per (example, channel tile) walks the pixels once, all taps at a time."""
    b, c_tile = tl.program_id(0), tl.program_id(1)
    c = c_tile * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    rows = tl.arange(0, TAPS)
    acc = tl.zeros([TAPS, BLOCK_C], dtype=tl.float32)
    for p0 in range(0, Ho * Wo, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        ho, wo = p // Wo, p % Wo
        p_ok = p < Ho * Wo
        gv = tl.load(gy + ((b * Ho + ho) * Wo + wo)[:, None] * C + c[None, :], mask=p_ok[:, None] & c_ok[None, :],
                     other=0.0).to(tl.float32)
        for i in tl.static_range(FS):
            for j in tl.static_range(FS):
                hi, wi = ho * stride + i - FS // 2, wo * stride + j - FS // 2
                ok = p_ok & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
                xv = tl.load(x + ((b * H + hi) * W + wi)[:, None] * C + c[None, :],
                             mask=ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
                tap_sum = tl.sum(gv * xv, axis=0)
                acc += tl.where((rows == i * FS + j)[:, None], tap_sum[None, :], 0.0)
    tl.store(gk + (b * FS * FS + rows)[:, None] * C + c[None, :], acc.to(gk.dtype.element_ty),
             mask=(rows < FS * FS)[:, None] & c_ok[None, :])


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    """The (B, H, W, C) storage of a channels_last (B, C, H, W) tensor, made dense if it is not."""
    return t.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)


TILE_P, TILE_C = 64, 32   # pixels x channels per program


def _taps(src, k, stride, out_hw, transposed):
    """:func:`_taps_kernel` on a channels_last (B, C, Hs, Ws) tensor; returns (B, C, Hd, Wd) channels_last."""
    B, C, Hs, Ws = src.shape
    Hd, Wd = out_hw
    dst = torch.empty((B, Hd, Wd, C), dtype=src.dtype, device=src.device)
    grid = (B * triton.cdiv(Hd * Wd, TILE_P), triton.cdiv(C, TILE_C))
    _taps_kernel[grid](_nhwc(src), k.contiguous(), dst, Hs, Ws, C, Hd, Wd, stride, FS=k.shape[1],
                       TRANSPOSED=transposed, BLOCK_P=TILE_P, BLOCK_C=TILE_C)
    return dst.permute(0, 3, 1, 2)


class PerExampleDepthwise(torch.autograd.Function):
    """y[b] = depthwise_conv(x[b], k[b]) with "same" padding; x (B, C, H, W) channels_last, k (B, F, F, C)."""

    @staticmethod
    def forward(ctx, x, k, stride):
        ctx.save_for_backward(x, k)
        ctx.stride = stride
        H, W = x.shape[-2:]
        return _taps(x, k, stride, ((H - 1) // stride + 1, (W - 1) // stride + 1), transposed=False)

    @staticmethod
    def backward(ctx, grad_y):
        x, k = ctx.saved_tensors
        B, C, H, W = x.shape
        FS = k.shape[1]
        gx = gk = None
        if ctx.needs_input_grad[0]:
            gx = _taps(grad_y, k, ctx.stride, (H, W), transposed=True)
        if ctx.needs_input_grad[1]:
            gk = torch.empty((B, FS, FS, C), dtype=k.dtype, device=k.device)
            Ho, Wo = grad_y.shape[-2:]
            _grad_kernel_kernel[(B, triton.cdiv(C, TILE_C))](
                _nhwc(x), _nhwc(grad_y), gk, H, W, C, Ho, Wo, ctx.stride, FS=FS,
                TAPS=triton.next_power_of_2(FS * FS), BLOCK_P=TILE_P, BLOCK_C=TILE_C)
        return gx, gk, None


def per_example_depthwise(x, weight, routing_weights, stride):
    """Conditional depthwise conv with :mod:`irnet_lib.fast.depthwise`'s signature: ``weight``
    (M, C, 1, F, F), ``routing_weights`` (B, M); the kernels mixed tap-major, (B, F, F, C)."""
    M, C, _, FS, _ = weight.shape
    taps = weight.reshape(M, C, FS * FS).transpose(1, 2).reshape(M, FS * FS * C)
    k = (routing_weights.to(x.dtype) @ taps.to(x.dtype)).view(-1, FS, FS, C)
    return PerExampleDepthwise.apply(x, k, stride)


def condconv2d(x, weight, routing_weights, stride=1, padding=0, groups=1):
    """The fast layer's CondConv with the depthwise layers of a CUDA tensor on these kernels."""
    from irnet_lib.fast import condconv as fast
    depthwise = groups == x.shape[1] == weight.shape[1] and weight.shape[2] == 1 and padding == weight.shape[-1] // 2
    if x.is_cuda and depthwise:
        return per_example_depthwise(x.contiguous(memory_format=torch.channels_last), weight.to(x.dtype),
                                     routing_weights, stride)
    return fast.condconv2d(x, weight, routing_weights, stride, padding, groups)


# ----------------------------------------------------------------------------------------- check

def check(device: str) -> None:
    """Forward and both gradients against the fold (``torch``'s grouped conv), every stride and a
    ragged shape; fp32 to 1e-5 and, on a GPU, bf16 to bf16's rounding."""
    from irnet_lib.condconv import condconv2d as fold
    g = torch.Generator().manual_seed(0)
    cases = [(2, 16, 8, 1), (2, 16, 8, 2), (3, 40, 7, 1), (3, 40, 7, 2), (2, 24, 9, 2)]
    dtypes = [torch.float32] + ([torch.bfloat16] if device == "cuda" else [])
    for dtype in dtypes:
        for B, C, S, stride in cases:
            x = torch.randn(B, C, S, S, generator=g).to(device).contiguous(memory_format=torch.channels_last)
            w = torch.randn(4, C, 1, 3, 3, generator=g).to(device)
            r = torch.rand(B, 4, generator=g).to(device)
            gy = None
            outs = []
            for impl in (fold, per_example_depthwise):
                xi, wi, ri = (t.clone().to(dtype).requires_grad_() for t in (x, w, r))
                xi = xi.contiguous(memory_format=torch.channels_last)
                xi.retain_grad()
                y = impl(xi, wi, ri, stride, 1, C) if impl is fold else impl(xi, wi, ri, stride)
                gy = torch.randn(y.shape, generator=g).to(device, dtype) if gy is None else gy
                y.backward(gy)
                outs.append([t.float() for t in (y, xi.grad, wi.grad, ri.grad)])
            tol = 1e-5 if dtype == torch.float32 else 3e-2
            for name, a, b in zip(("y", "grad x", "grad experts", "grad routing"), *outs):
                err = ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
                assert err < tol, f"{dtype} B={B} C={C} S={S} stride={stride}: {name} differs by {err:.2e}"
    print(f"per-example depthwise (Triton) agrees with the fold on {device}: {len(cases)} shapes x "
          f"{[str(d).split('.')[-1] for d in dtypes]}, forward and all gradients")


# ----------------------------------------------------------------------------------------- bench

def _cuda_ms(fn, reps):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def _layer_ms(C: int, S: int, stride: int, batch: int, reps: int, rounds: int) -> dict:
    """Forward + backward of one conditional depthwise layer in bf16, the fold against the kernels,
    interleaved: both see the same clocks and the same neighbours."""
    from irnet_lib.fast import condconv as fast
    x = torch.randn(batch, C, S, S, device="cuda", dtype=torch.bfloat16).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(4, C, 1, 3, 3, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    r = torch.rand(batch, 4, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    runs = {"fold": lambda: fast._folded(x, w, r, stride, 1, C),
            "triton": lambda: per_example_depthwise(x, w, r, stride)}
    gy = torch.randn_like(runs["fold"]())
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for name, f in runs.items():
            f().backward(gy)   # warm: the kernels compile on first use
            times[name].append(_cuda_ms(lambda f=f: f().backward(gy), reps))
    return {"channels": C, "size": S, "stride": stride, **{k: statistics.median(v) for k, v in times.items()}}


def bench(out: Path, batch: int, reps: int, rounds: int) -> dict:
    from irnet_lib import condconv as core
    from irnet_lib.fast import condconv as fast
    from irnet_lib.network import irnet
    dev = "cuda"
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "batch": batch, "dtype": "bfloat16", "layers": [], "step": {}}
    total = {"fold": 0.0, "triton": 0.0}
    for C, S, stride in LAYERS:
        row = _layer_ms(C, S, stride, batch, reps, rounds)
        result["layers"].append(row)
        for k in total:
            total[k] += row[k]
    result["layers_total_ms"] = total

    # A whole training step of the CondConv network in bf16, with either depthwise path.
    model = irnet("condconv", 100).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-5)
    xb = torch.randn(batch, 3, 56, 56, device=dev).contiguous(memory_format=torch.channels_last)
    yb = torch.randint(0, 100, (batch,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()

    impls = {"fold": fast.condconv2d, "triton": condconv2d}
    step_ms = {k: [] for k in impls}
    for _ in range(rounds):
        for name, impl in impls.items():
            core.use_formulation(impl)
            for _ in range(3):
                step()
            torch.cuda.synchronize()
            step_ms[name].append(_cuda_ms(step, reps))
    core.use_formulation(None)
    result["step"] = {k: {"ms": statistics.median(v), "images_per_s": batch / statistics.median(v) * 1000}
                      for k, v in step_ms.items()}
    out.mkdir(parents=True, exist_ok=True)
    result["host"] = platform.node()
    result["when"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    print(f"{result['device']}, batch {batch}, bf16; forward + backward per layer, ms (median of {rounds} "
          f"interleaved rounds of {reps}):")
    print(f"{'C':>5} {'size':>4} {'s':>2} {'fold':>8} {'triton':>8} {'ratio':>6}")
    for row in result["layers"]:
        print(f"{row['channels']:>5} {row['size']:>4} {row['stride']:>2} {row['fold']:8.3f} {row['triton']:8.3f} "
              f"{row['fold'] / row['triton']:6.2f}")
    print(f"16 layers: fold {total['fold']:.2f} ms, triton {total['triton']:.2f} ms")
    for k, v in result["step"].items():
        print(f"training step, CondConv network, {k}: {v['ms']:.2f} ms, {v['images_per_s']:,.0f} images/s")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true")
    p.add_argument("--bench", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="runs/triton-depthwise")
    args = p.parse_args(argv)
    if not (args.check or args.bench):
        p.error("ask for --check, --bench or both")
    if args.check:
        check(args.device)
    if args.bench:
        if args.device != "cuda":
            p.error("--bench needs a CUDA GPU")
        bench(Path(args.out), args.batch, args.reps, args.rounds)


if __name__ == "__main__":
    main()
