"""Why the CondConv network collapses when the warm-up lr is stepped once per epoch, and what prevents it.

The 3-epoch sample recipe (the embedded 1,200 / 400-image Fashion-MNIST sample, 3 epochs, 1 warm-up
epoch, batch 32, peak lr 0.025; the figures' "quick recipe") stepped per epoch runs epoch 0 at lr
0.00025 and epoch 1 at 0.025: a 100x jump between two steps. This script trains IR-NET with its own
small, instrumented loop built from the library's public pieces (``irnet``, ``load_dataset`` /
``make_loader``, ``Recipe`` / ``make_optimizer`` / ``make_scheduler``), so that the batches, the
initial weights and the update rule are those of ``python -m irnet_lib.train`` for the same seed.
The "library" CondConv formulation is the one that command runs with ``--fast`` and that produced
the stored results beside this script (``experiments/condconv-collapse/``):
``irnet_lib.fast.condconv.condconv2d`` (see ``set_impl``).

Sub-commands, run from this folder (each skips what its output folder already holds; ``--force`` redoes it):

    python condconv_collapse.py trace      # per-step instrumentation, CondConv and SE, seed 0
    python condconv_collapse.py agree      # fp64 agreement: library vs reference vs timm-style
    python condconv_collapse.py jump       # the first step at the peak lr, taken apart
    python condconv_collapse.py impl       # the same training with the other formulations
    python condconv_collapse.py sweep      # candidate fixes x seeds (+ the SE baseline)
    python condconv_collapse.py report     # tables (CSV / JSON) and figures
    python condconv_collapse.py all        # trace, sweep, agree, jump, impl, report
    python condconv_collapse.py run --block condconv --variant clip1 --seed 1   # one run

Everything goes under ``--out`` (default ``runs/condconv-collapse``): ``runs/*.json`` (one per
training run: per-epoch history and per-step training loss), ``trace/*.json|csv`` (per-step
instrumentation), ``ckpt/`` (per-epoch checkpoints, for resuming and for ``agree``), and the
summary tables and figures at the top level.

Run it single-threaded on a shared machine: ``OMP_NUM_THREADS=1 nice -n 10 python ...``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import irnet_lib.condconv as cc
from irnet_lib import irnet
from irnet_lib.blocks import InvertedResidual, SqueezeExcite
from irnet_lib.condconv import CondConv2d, Routing
from irnet_lib.data import load_dataset, make_loader
from irnet_lib.fast.condconv import condconv2d as fast_condconv2d
from irnet_lib.recipe import Recipe, make_optimizer, make_scheduler

DATA = "fashion-mnist-sample"
BATCH = 32
SEEDS = (0, 1, 2)
COLLAPSE_ACC = 20.0    # final test accuracy (%) below this: collapsed
COLLAPSE_LOSS = 10.0   # or any epoch's test loss above this (chance is ln 10 = 2.30)

# Candidate changes to the 3-epoch sample recipe (3 epochs, 1 warm-up, lr stepped per epoch). Keys:
#   epochs / warmup / lr_step: the schedule; clip: global grad-norm clip; routing_init: "zero" sets
#   every Routing.fc weight and bias to 0 (r = 0.5 for every expert and example at the start);
#   routing_lr: lr multiplier of the Routing.fc parameters.
VARIANTS = {
    "baseline": {},
    "warmup2of4": {"epochs": 4, "warmup": 2},     # lr 0.00025, 0.0126, 0.025, 0.000025: 4/3 of the work
    "clip1": {"clip": 1.0},
    "clip5": {"clip": 5.0},
    "routing-init-zero": {"routing_init": "zero"},
    "routing-lr0.1": {"routing_lr": 0.1},
    "iteration": {"lr_step": "iteration"},        # the same curve, the warm-up ramped over its 38 steps
}
IMPLS = ("library", "reference", "timm")


# ------------------------------------------------------------------------------------ setup

def recipe_for(variant: str, num_classes: int = 10) -> Recipe:
    v = VARIANTS[variant]
    r = Recipe(lr_step=v.get("lr_step", "epoch")).scaled_to_batch(BATCH)
    r = r.compressed(v.get("epochs", 3), v.get("warmup", 1))
    return replace(r, data_num_classes=num_classes)


_DATA_CACHE = {}


def data_and_loaders(seed: int):
    if seed not in _DATA_CACHE:
        data = load_dataset(DATA, seed=seed)
        loaders = [make_loader(data, split, BATCH, seed=seed, channels_last=True) for split in ("train", "test")]
        _DATA_CACHE[seed] = (data, *loaders)
    return _DATA_CACHE[seed]


def build_model(block: str, seed: int, variant: str, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)   # as irnet_lib.train.train: the same initial weights for the same seed
    model = irnet(block, num_classes=num_classes)
    if VARIANTS[variant].get("routing_init") == "zero":
        for m in model.modules():
            if isinstance(m, Routing):
                nn.init.zeros_(m.fc.weight)
                nn.init.zeros_(m.fc.bias)
    return model.to(memory_format=torch.channels_last)


def routing_param_ids(model) -> set[int]:
    return {id(p) for m in model.modules() if isinstance(m, Routing) for p in m.parameters()}


def build_optimizer(model, recipe: Recipe, variant: str):
    """``make_optimizer`` (SGD, Nesterov momentum, weight decay on everything); for ``routing_lr``
    the routing parameters in a second group whose lr is scaled after every scheduler step."""
    opt = make_optimizer(model, recipe)
    mult = VARIANTS[variant].get("routing_lr")
    if mult is not None:
        rid = routing_param_ids(model)
        params = opt.param_groups[0]["params"]
        opt.param_groups[0]["params"] = [p for p in params if id(p) not in rid]
        group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
        opt.add_param_group(dict(group, params=[p for p in params if id(p) in rid], lr_mult=mult))
    return opt


def apply_lr_mult(opt):
    for g in opt.param_groups:
        if "lr_mult" in g:
            g["lr"] *= g["lr_mult"]


# --------------------------------------------------------------------- other formulations

# "library": the formulation the stored results were produced with (the library's default CPU path
# then, ``condconv2d(method="auto")``; now the fast layer's, which ``python -m irnet_lib.train --fast``
# runs). It reproduces the stored agreement.json numbers exactly. The core's ``cc.condconv2d`` (mix,
# fold, one grouped conv) is the same computation as ``condconv2d_timm`` below (identical ``agree`` numbers).
_LIBRARY_CONDCONV2D = fast_condconv2d


def condconv2d_reference(x, weight, routing_weights, stride=1, padding=0, groups=1):
    """The library's own ground truth: one example at a time, in Python."""
    return cc.condconv2d_reference(x, weight, routing_weights.to(x.dtype), stride, padding, groups)


def condconv2d_timm(x, weight, routing_weights, stride=1, padding=0, groups=1):
    """An independent reimplementation in the style of timm's CondConv2d: mix the kernels, fold
    the batch into the channels, one grouped conv over the whole batch (NCHW)."""
    B, C, H, W = x.shape
    M, c_out = weight.shape[:2]
    k = (routing_weights.to(x.dtype) @ weight.reshape(M, -1)).reshape(B * c_out, *weight.shape[2:])
    y = F.conv2d(x.contiguous().reshape(1, B * C, H, W), k, None, stride, padding, groups=B * groups)
    return y.view(B, c_out, *y.shape[-2:])


def set_impl(impl: str):
    """Plug the formulation ``impl`` into every CondConv2d, through the core's plug point
    (``irnet_lib.condconv.use_formulation``): "library", "reference" or "timm"."""
    cc.use_formulation({"library": _LIBRARY_CONDCONV2D, "reference": condconv2d_reference,
                        "timm": condconv2d_timm}[impl])


# ------------------------------------------------------------------------------ the tracer

def _group_of(name: str, model) -> str:
    mod = model.get_submodule(name.rsplit(".", 1)[0])
    if isinstance(mod, CondConv2d):
        return "experts"
    if isinstance(mod, nn.Linear) and ".router." in f".{name}":
        return "routing"
    if isinstance(mod, nn.BatchNorm2d):
        return "bn"
    if ".se." in f".{name}":
        return "se"
    return "plain"    # stem/head convs, the blocks' convs in standard / SE, the classifier


class Tracer:
    """Per-step numbers of one network: routing logits, SE gates, BN running vs batch statistics,
    the mixed per-example kernels, activations, and (``after_backward`` / ``after_step``) the
    gradient, weight and update norms per parameter and per group."""

    def __init__(self, model):
        self.model = model
        self.handles, self.cur = [], {}
        self.names = {}
        for name, m in model.named_modules():
            self.names[m] = name
            if isinstance(m, Routing):
                self.handles.append(m.fc.register_forward_hook(self._routing_hook))
            elif isinstance(m, SqueezeExcite):
                self.handles.append(m.fc2.register_forward_hook(self._se_hook))
            elif isinstance(m, CondConv2d):
                self.handles.append(m.register_forward_hook(self._condconv_hook))
            elif isinstance(m, nn.BatchNorm2d):
                self.handles.append(m.register_forward_hook(self._bn_hook))
            elif isinstance(m, InvertedResidual):
                self.handles.append(m.register_forward_hook(self._block_hook))
        self.params = [(n, p, _group_of(n, model)) for n, p in model.named_parameters()]
        self.rows = []
        self._last_logits = {}

    def remove(self):
        for h in self.handles:
            h.remove()

    def _put(self, kind, name, values: dict):
        self.cur.setdefault(kind, {})[name] = values

    @torch.no_grad()
    def _routing_hook(self, fc, inp, z):
        if not self.model.training:
            return
        z = z.detach().float()
        name = self.names[fc]
        self._last_logits[name.rsplit(".", 1)[0]] = z
        s = torch.sigmoid(z)
        self._put("routing", name, {
            "max_abs_logit": z.abs().max().item(), "mean_abs_logit": z.abs().mean().item(),
            "frac_abs_gt5": (z.abs() > 5).float().mean().item(),
            "frac_r_lt_0.01": (s < 0.01).float().mean().item(), "frac_r_gt_0.99": (s > 0.99).float().mean().item(),
            "mean_r": s.mean().item(), "mean_sum_r": s.sum(1).mean().item(),
            "min_sum_r": s.sum(1).min().item(), "std_r_over_batch": s.std(0).mean().item()})

    @torch.no_grad()
    def _se_hook(self, fc2, inp, z):
        if not self.model.training:
            return
        z = z.detach().float()
        s = torch.sigmoid(z)
        self._put("se", self.names[fc2], {
            "max_abs_logit": z.abs().max().item(), "frac_abs_gt5": (z.abs() > 5).float().mean().item(),
            "frac_gate_lt_0.01": (s < 0.01).float().mean().item()})

    @torch.no_grad()
    def _condconv_hook(self, conv, inp, out):
        if not self.model.training:
            return
        name = self.names[conv]
        z = self._last_logits.get(f"{name}.router")
        if z is None:
            return
        r = torch.sigmoid(z)
        w = conv.weight.detach().float()                      # (M, C_out, rest)
        expert = w.flatten(1).norm(dim=1)                     # (M,)
        k = (r @ w.flatten(1)).norm(dim=1)                    # (B,) the mixed kernels' norms
        ref = expert.mean()
        self._put("kernel", name, {
            "mean_mixed_over_expert": (k.mean() / ref).item(), "max_mixed_over_expert": (k.max() / ref).item(),
            "min_mixed_over_expert": (k.min() / ref).item(),
            "spread_max_over_min": (k.max() / k.min().clamp_min(1e-30)).item(),
            "expert_norm": ref.item(), "out_rms": out.detach().float().pow(2).mean().sqrt().item()})

    @torch.no_grad()
    def _bn_hook(self, bn, inp, out):
        if not self.model.training:
            return
        x = inp[0].detach().float()
        bvar = x.var(dim=(0, 2, 3), unbiased=False)
        bmean = x.mean(dim=(0, 2, 3))
        rvar, rmean = bn.running_var.float(), bn.running_mean.float()
        self._put("bn", self.names[bn], {
            "max_running_var": rvar.max().item(), "max_batch_var": bvar.max().item(),
            "max_var_ratio": (rvar / (bvar + bn.eps)).max().item(),
            "min_var_ratio": (rvar / (bvar + bn.eps)).min().item(),
            "max_mean_shift_sd": ((rmean - bmean).abs() / (bvar + bn.eps).sqrt()).max().item(),
            "frac_dead_channels": (bvar < 1e-10).float().mean().item()})

    @torch.no_grad()
    def _block_hook(self, block, inp, out):
        if not self.model.training:
            return
        self._put("block", self.names[block], {"out_rms": out.detach().float().pow(2).mean().sqrt().item()})

    @torch.no_grad()
    def after_backward(self, logits):
        """Before the optimizer step: gradient and weight norms; keeps the weights for the update norm."""
        self._before = [p.detach().clone() for _, p, _ in self.params]
        per = {}
        for n, p, _ in self.params:
            per[n] = {"grad": p.grad.norm().item() if p.grad is not None else 0.0, "weight": p.norm().item()}
        self.cur["param"] = per
        lg = logits.detach().float()
        self.cur["logits"] = {"max_abs": lg.abs().max().item(), "std": lg.std().item()}

    @torch.no_grad()
    def after_step(self, row: dict):
        for (n, p, _), before in zip(self.params, self._before):
            self.cur["param"][n]["update"] = (p.detach() - before).norm().item()
        del self._before
        row = dict(row, **self.cur)
        self.rows.append(row)
        self.cur = {}
        self._last_logits = {}

    # -- the per-step summary: one flat row per step, group aggregates
    def summary_rows(self):
        out = []
        for r in self.rows:
            s = {k: r[k] for k in ("epoch", "step", "global_step", "lr", "train_loss", "probe_loss", "probe_acc",
                                   "grad_norm_total", "clipped") if k in r}
            for kind, keys in (("routing", ("max_abs_logit", "frac_abs_gt5", "frac_r_lt_0.01", "frac_r_gt_0.99",
                                            "mean_sum_r", "min_sum_r", "std_r_over_batch")),
                               ("se", ("max_abs_logit", "frac_abs_gt5", "frac_gate_lt_0.01")),
                               ("bn", ("max_running_var", "max_batch_var", "max_var_ratio", "min_var_ratio",
                                       "max_mean_shift_sd", "frac_dead_channels")),
                               ("kernel", ("mean_mixed_over_expert", "max_mixed_over_expert", "min_mixed_over_expert",
                                           "spread_max_over_min", "out_rms")),
                               ("block", ("out_rms",))):
                layers = r.get(kind, {})
                if not layers:
                    continue
                for k in keys:
                    vals = [v[k] for v in layers.values()]
                    agg = min if k.startswith("min") else max
                    s[f"{kind}.{k}"] = agg(vals)
                if kind == "routing":
                    s["routing.frac_abs_gt5_all"] = sum(v["frac_abs_gt5"] for v in layers.values()) / len(layers)
                    s["routing.layers_with_abs_gt5"] = sum(v["frac_abs_gt5"] > 0 for v in layers.values())
                if kind == "bn":
                    s["bn.layers_var_ratio_gt10"] = sum(v["max_var_ratio"] > 10 for v in layers.values())
                    s["bn.stem.batch_var"] = layers["stem.1"]["max_batch_var"]
                    s["bn.stem.running_var"] = layers["stem.1"]["max_running_var"]
            s["logits.max_abs"] = r["logits"]["max_abs"]
            s["logits.std"] = r["logits"]["std"]
            groups = {}
            for n, _, g in self.params:
                d = r["param"][n]
                acc = groups.setdefault(g, [0.0, 0.0, 0.0])
                acc[0] += d["grad"] ** 2
                acc[1] += d["weight"] ** 2
                acc[2] += d["update"] ** 2
            st = r["param"]["stem.0.weight"]
            groups["stem_conv"] = [st["grad"] ** 2, st["weight"] ** 2, st["update"] ** 2]
            for g, (gr, w, u) in groups.items():
                s[f"grad.{g}"] = math.sqrt(gr)
                s[f"weight.{g}"] = math.sqrt(w)
                s[f"rel_update.{g}"] = math.sqrt(u) / max(math.sqrt(w), 1e-30)
            out.append(s)
        return out


# ---------------------------------------------------------------------------- the loop

def run_name(block, variant, impl, seed, trace=False):
    return f"{block}-{variant}-{impl}-s{seed}" + ("-trace" if trace else "")


def hardware() -> str:
    model = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch thread(s)"


def train_one(out: Path, block: str, variant: str, seed: int, impl: str = "library", trace: bool = False,
              max_epochs: int | None = None, force: bool = False, quiet: bool = False) -> dict:
    """Train one configuration; returns (and writes to out/runs/<name>.json) its record.
    Checkpoints every epoch under out/ckpt/<name>/ and resumes from there."""
    name = run_name(block, variant, impl, seed, trace)
    path = out / "runs" / f"{name}.json"
    if path.is_file() and not force:
        rec = json.loads(path.read_text())
        if rec.get("complete") or (max_epochs is not None and len(rec["epochs"]) >= max_epochs):
            if not quiet:
                print(f"[skip] {name}: done ({path})")
            return rec
    from irnet_lib.fast.allocator import reuse_freed_memory
    # speed only, as irnet_lib.loop.fit(fast=True) does on a CPU (the formulation is set by set_impl)
    reuse_freed_memory()
    set_impl(impl)
    data, train_loader, test_loader = data_and_loaders(seed)
    recipe = recipe_for(variant, data.num_classes)
    spec = VARIANTS[variant]
    model = build_model(block, seed, variant, data.num_classes)
    opt = build_optimizer(model, recipe, variant)
    steps = len(train_loader)
    sched = make_scheduler(opt, recipe, steps)
    apply_lr_mult(opt)
    per_iter = recipe.lr_step == "iteration"
    clip = spec.get("clip")
    ckdir = out / "ckpt" / name
    epochs, step_log, start, elapsed = [], [], 0, 0.0
    last = ckdir / "last.pt"
    tracer = Tracer(model) if trace else None
    trace_rows = []
    if last.is_file() and not force:
        ck = torch.load(last, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        epochs, step_log, start, elapsed = ck["epochs"], ck["steps"], ck["epoch"] + 1, ck["elapsed"]
        trace_rows = ck.get("trace_rows", [])
        if not quiet:
            print(f"[resume] {name} from epoch {start}")
    probe = None
    if trace:   # a fixed probe: the first 64 test images, evaluated (BN running statistics) after every step
        xs, ys = [], []
        for x, y in test_loader:
            xs.append(x), ys.append(y)
            if sum(len(t) for t in ys) >= 64:
                break
        probe = (torch.cat(xs)[:64].contiguous(memory_format=torch.channels_last), torch.cat(ys)[:64])
    end = recipe.train_num_epochs if max_epochs is None else min(recipe.train_num_epochs, max_epochs)
    threads = torch.get_num_threads()
    for epoch in range(start, end):
        lr_epoch = opt.param_groups[0]["lr"]
        train_loader.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        tot, correct, n, nonfinite = 0.0, 0, 0, False
        for step, (x, y) in enumerate(train_loader):
            x = x.contiguous(memory_format=torch.channels_last)
            lr_now = opt.param_groups[0]["lr"]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tracer:
                tracer.after_backward(logits)
            gn = None
            if clip is not None or tracer:
                if clip is not None:
                    gn = nn.utils.clip_grad_norm_(model.parameters(), clip).item()
                else:
                    gn = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()
                                                               if p.grad is not None])).item()
            opt.step()
            lv = loss.item()
            step_log.append({"epoch": epoch, "step": step, "lr": lr_now, "loss": lv,
                             **({"grad_norm": gn} if gn is not None else {})})
            if tracer:
                row = {"epoch": epoch, "step": step, "global_step": epoch * steps + step, "lr": lr_now,
                       "train_loss": lv, "grad_norm_total": gn, "clipped": bool(clip and gn > clip)}
                model.eval()
                with torch.no_grad():
                    pl = model(probe[0])
                    row["probe_loss"] = F.cross_entropy(pl, probe[1]).item()
                    row["probe_acc"] = 100 * (pl.argmax(1) == probe[1]).float().mean().item()
                model.train()
                tracer.after_step(row)
            if per_iter:
                sched.step()
                apply_lr_mult(opt)
            if not math.isfinite(lv):
                nonfinite = True
                break
            tot += lv * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
        train_s = time.perf_counter() - t0
        model.eval()
        te_loss, te_correct, te_n = 0.0, 0, 0
        with torch.no_grad():
            for x, y in test_loader:
                lg = model(x.contiguous(memory_format=torch.channels_last))
                te_loss += F.cross_entropy(lg, y, reduction="sum").item()
                te_correct += (lg.argmax(1) == y).sum().item()
                te_n += len(y)
        if not per_iter:
            sched.step()
            apply_lr_mult(opt)
        dt = time.perf_counter() - t0
        elapsed += dt
        row = {"epoch": epoch, "lr": lr_epoch, "train_loss": tot / max(n, 1), "train_acc": 100 * correct / max(n, 1),
               "test_loss": te_loss / te_n, "test_acc": 100 * te_correct / te_n, "epoch_seconds": dt,
               "train_seconds": train_s, "nonfinite": nonfinite}
        epochs.append(row)
        if not quiet:
            print(f"{name} epoch {epoch} lr {lr_epoch:.5f} | train loss {row['train_loss']:.4f} acc "
                  f"{row['train_acc']:.2f}% | test loss {row['test_loss']:.4f} acc {row['test_acc']:.2f}% | {dt:.0f} s",
                  flush=True)
        if tracer:
            trace_rows = trace_rows + tracer.rows
            tracer.rows = []
        ckdir.mkdir(parents=True, exist_ok=True)
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                 "epochs": epochs, "steps": step_log, "epoch": epoch, "elapsed": elapsed, "trace_rows": trace_rows}
        torch.save(state, ckdir / ".last.tmp")
        os.replace(ckdir / ".last.tmp", last)
        torch.save(model.state_dict(), ckdir / f"model_epoch{epoch}.pt")
        if epoch == 0:   # the full state at the lr jump, for ``jump``
            torch.save({k: state[k] for k in ("model", "opt", "sched")}, ckdir / "state_epoch0.pt")
        if nonfinite:
            break
    if tracer:
        tracer.remove()
    set_impl("library")
    complete = len(epochs) == recipe.train_num_epochs or any(e["nonfinite"] for e in epochs)
    final = epochs[-1]["test_acc"] if not epochs[-1]["nonfinite"] else 10.0
    rec = {"name": name, "block": block, "variant": variant, "impl": impl, "seed": seed, "trace": trace,
           "spec": spec, "recipe": recipe.to_dict(), "complete": complete, "epochs": epochs, "steps": step_log,
           "best_acc": max(e["test_acc"] for e in epochs), "final_acc": final,
           "max_test_loss": max(e["test_loss"] for e in epochs),
           "collapsed": final < COLLAPSE_ACC or max(e["test_loss"] for e in epochs) > COLLAPSE_LOSS
           or any(e["nonfinite"] for e in epochs),
           "wall_seconds": elapsed, "hardware": hardware(), "torch": torch.__version__, "threads": threads,
           "python": platform.python_version(), "data": f"{DATA} ({len(data.train)} train / {len(data.test)} test)",
           "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=1) + "\n")
    if trace:
        tdir = out / "trace"
        tdir.mkdir(parents=True, exist_ok=True)
        full = {"name": name, "rows": trace_rows}
        (tdir / f"{block}-s{seed}.json").write_text(json.dumps(full) + "\n")
        write_trace_summary(out, block, seed)
    if not quiet:
        print(f"{name}: best {rec['best_acc']:.2f} %, final {rec['final_acc']:.2f} %, max test loss "
              f"{rec['max_test_loss']:.3g}, collapsed={rec['collapsed']}, {elapsed / 60:.1f} min", flush=True)
    return rec


def write_trace_summary(out: Path, block: str, seed: int):
    """trace/<block>-s<seed>-summary.csv: the per-step group aggregates of trace/<block>-s<seed>.json."""
    import pandas as pd
    tdir = out / "trace"
    rows = json.loads((tdir / f"{block}-s{seed}.json").read_text())["rows"]
    model = irnet(block, num_classes=10)
    t = Tracer.__new__(Tracer)
    t.rows, t.params = rows, [(n, None, _group_of(n, model)) for n, _ in model.named_parameters()]
    pd.DataFrame(t.summary_rows()).to_csv(tdir / f"{block}-s{seed}-summary.csv", index=False, float_format="%.6g")


# --------------------------------------------------------------------------- sub-commands

def cmd_trace(args):
    for block in args.blocks:
        train_one(args.out, block, "baseline", args.seed, trace=True, force=args.force)


def cmd_run(args):
    train_one(args.out, args.block, args.variant, args.seed, impl=args.impl, trace=args.trace,
              max_epochs=args.max_epochs, force=args.force)


def cmd_sweep(args):
    todo = [("condconv", v, s) for v in args.variants for s in args.seeds]
    todo += [(b, "baseline", s) for b in args.ref_blocks for s in args.seeds]
    for block, v, s in todo:
        train_one(args.out, block, v, s, force=args.force)


def cmd_impl(args):
    for impl in args.impls:
        for s in args.seeds:
            train_one(args.out, "condconv", "baseline", s, impl=impl, force=args.force,
                      max_epochs=args.reference_epochs if impl == "reference" else None)


def _agreement(model_state, x, y):
    """Loss, logits, every gradient and the BN running statistics after one training-mode forward
    of the CondConv network, with the three formulations in fp64 and fp32, each against the fp64
    reference. Gradients: global relative difference over all parameters, and the largest
    per-parameter relative difference over the parameters whose gradient is not analytically zero
    (the last block's bn3 bias feeds the head's BN only through a per-channel constant, which that
    BN subtracts again: its gradient is rounding noise, ~1e-17 in fp64)."""
    res = {}
    outs = {}
    for impl, dtype in (("reference", torch.float64), ("library", torch.float64), ("timm", torch.float64),
                        ("reference", torch.float32), ("library", torch.float32), ("timm", torch.float32)):
        set_impl(impl)
        torch.manual_seed(0)
        m = irnet("condconv", num_classes=10)
        m.load_state_dict(model_state)
        m = m.to(dtype=dtype, memory_format=torch.channels_last).train()
        xx = x.to(dtype).contiguous(memory_format=torch.channels_last)
        logits = m(xx)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        outs[(impl, str(dtype).split(".")[-1])] = (
            logits.detach().double(), loss.item(), {n: p.grad.detach().double() for n, p in m.named_parameters()},
            {n: b.detach().double() for n, b in m.named_buffers() if "running" in n})
    set_impl("library")
    ref = outs[("reference", "float64")]
    gmax = max(g.norm().item() for g in ref[2].values())
    live = [n for n, g in ref[2].items() if g.norm().item() > 1e-9 * gmax]
    dead = sorted(set(ref[2]) - set(live))
    # head.1's running_mean is analytically 0 as well (its input's batch mean is the head conv of bn3's
    # bias, which stays 0): excluded with the same rule, a norm below 1e-6
    live_b = [n for n in ref[3] if ref[3][n].norm().item() > 1e-6]
    for key, (lg, ls, gr, buf) in outs.items():
        if key == ("reference", "float64"):
            continue
        glob = math.sqrt(sum((gr[n] - ref[2][n]).pow(2).sum().item() for n in gr)) / math.sqrt(
            sum(g.pow(2).sum().item() for g in ref[2].values()))
        worst = sorted(live, key=lambda n: -((gr[n] - ref[2][n]).norm() / ref[2][n].norm()).item())[:3]
        res[f"{key[0]} {key[1]} vs reference float64: worst parameters"] = [
            f"{n} {((gr[n] - ref[2][n]).norm() / ref[2][n].norm()).item():.3g}" for n in worst]
        res[f"{key[0]} {key[1]} vs reference float64"] = {
            "loss_abs_diff": abs(ls - ref[1]),
            "logits_max_abs_diff": (lg - ref[0]).abs().max().item(),
            "logits_max_abs": ref[0].abs().max().item(),
            "grad_global_rel_diff": glob,
            "grad_max_rel_diff_per_param": max(((gr[n] - ref[2][n]).norm() / ref[2][n].norm()).item() for n in live),
            "running_stats_max_rel_diff": max(((buf[n] - ref[3][n]).norm() / ref[3][n].norm()).item() for n in live_b)}
    res["params_with_zero_gradient (excluded from per-param)"] = dead
    res["buffers_analytically_zero (excluded)"] = sorted(set(ref[3]) - set(live_b))
    return res


def _fp32_sensitivity(block, x, y):
    """The same check for a network without CondConv: fp32 against fp64, initial weights (seed 0)."""
    outs = {}
    for dtype in (torch.float64, torch.float32):
        torch.manual_seed(0)
        m = irnet(block, num_classes=10).to(dtype=dtype, memory_format=torch.channels_last).train()
        loss = F.cross_entropy(m(x.to(dtype).contiguous(memory_format=torch.channels_last)), y)
        loss.backward()
        outs[dtype] = (loss.item(), {n: p.grad.detach().double() for n, p in m.named_parameters()})
    ref, got = outs[torch.float64][1], outs[torch.float32][1]
    gmax = max(g.norm().item() for g in ref.values())
    live = [n for n, g in ref.items() if g.norm().item() > 1e-9 * gmax]
    return {"loss_abs_diff": abs(outs[torch.float64][0] - outs[torch.float32][0]),
            "grad_global_rel_diff": math.sqrt(sum((got[n] - ref[n]).pow(2).sum().item() for n in ref))
            / math.sqrt(sum(g.pow(2).sum().item() for g in ref.values())),
            "grad_max_rel_diff_per_param": max(((got[n] - ref[n]).norm() / ref[n].norm()).item() for n in live)}


def cmd_agree(args):
    path = args.out / "agreement.json"
    if path.is_file() and not args.force:
        print(f"[skip] {path} exists")
        print(path.read_text())
        return
    _, train_loader, _ = data_and_loaders(0)
    train_loader.set_epoch(1)
    x, y = next(iter(train_loader))     # the first batch after the lr jump
    states = {"init (seed 0)": None}
    ck = args.out / "ckpt" / run_name("condconv", "baseline", "library", 0, trace=True)
    for e in (0, 1):
        p = ck / f"model_epoch{e}.pt"
        if p.is_file():
            states[f"after epoch {e} (seed 0, library training)"] = p
    res = {}
    for label, p in states.items():
        if p is None:
            torch.manual_seed(0)
            st = irnet("condconv", num_classes=10).state_dict()
        else:
            st = torch.load(p, weights_only=True)
        res[label] = _agreement(st, x, y)
        print(label)
        for k, v in res[label].items():
            print(f"  {k}: " + (", ".join(f"{a} {b:.3g}" for a, b in v.items()) if isinstance(v, dict) else str(v)))
    for block in ("se", "standard"):
        res[f"{block} network, init (seed 0): float32 vs float64"] = r = _fp32_sensitivity(block, x, y)
        print(f"{block} network, init (seed 0), float32 vs float64: " + ", ".join(f"{a} {b:.3g}" for a, b in r.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"batch": "the first training batch of epoch 1 (seed 0), 32 images", "results": res},
                               indent=1) + "\n")


class _EvalZ:
    """Eval-mode check of every BN layer: how far its input, on test images, sits from the running
    statistics it normalises with (RMS over channels of (x - running_mean) / sqrt(running_var + eps);
    1 where they describe the input, >> 1 where the input has outgrown them)."""

    def __init__(self, model):
        self.model, self.z, self.handles = model, {}, []
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                self.handles.append(m.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def f(bn, inp, out):
            x = inp[0].detach().double()
            z2 = (((x - bn.running_mean.double()[:, None, None]) ** 2).mean(dim=(0, 2, 3))
                  / (bn.running_var.double() + bn.eps))
            self.z.setdefault(name, []).append(z2)
        return f

    def measure(self, batches):
        self.z = {}
        self.model.eval()
        loss, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for x, y in batches:
                lg = self.model(x)
                loss += F.cross_entropy(lg.double(), y, reduction="sum").item()
                correct += (lg.argmax(1) == y).sum().item()
                n += len(y)
        z = {k: torch.stack(v).mean(0) for k, v in self.z.items()}
        return {"eval_loss": loss / n, "eval_acc": 100 * correct / n,
                "z_rms": {k: v.mean().sqrt().item() for k, v in z.items()},
                "z_max_channel": {k: v.max().sqrt().item() for k, v in z.items()}}

    def remove(self):
        for h in self.handles:
            h.remove()


def _groups_of(model):
    """_group_of, with the plain layers of the CondConv network split: stem, head, classifier."""
    out = {}
    for n, _ in model.named_parameters():
        g = _group_of(n, model)
        if g == "plain" and n.split(".")[0] in ("stem", "head", "classifier"):
            g = n.split(".")[0]
        out[n] = g
    return out


def _gain(model, test, scales=(1.0, 2.0, 4.0)):
    """Eval mode: the stem's output multiplied by s (a stand-in for stale running statistics), and
    how far the head's BN input then sits from its statistics (z RMS) and the test loss; for a
    CondConv network also with every routing output held at its unperturbed value."""
    ez = _EvalZ(model)
    routers = [m for m in model.modules() if isinstance(m, Routing)]
    rec, state = {}, {"s": 1.0, "mode": None, "store": {}, "i": 0}

    def stem_hook(mod, inp, out):
        return out * state["s"]

    def route_hook(mod, inp, out):
        key = (id(mod), state["i"])
        if state["mode"] == "record":
            state["store"][key] = out.detach().clone()
        elif state["mode"] == "hold":
            return state["store"][key]
    hs = [model.stem.register_forward_hook(stem_hook)] + [m.register_forward_hook(route_hook) for m in routers]
    try:
        for held in ([False, True] if routers else [False]):
            for sc in scales:
                # record the unperturbed routing, batch by batch, then replay it under the perturbation
                if held:
                    state.update(s=1.0, mode="record", store={})
                    with torch.no_grad():
                        model.eval()
                        for i, (x, _) in enumerate(test):
                            state["i"] = i
                            model(x)
                state.update(s=sc, mode="hold" if held else None)
                ez.z = {}
                model.eval()
                loss, n = 0.0, 0
                with torch.no_grad():
                    for i, (x, y) in enumerate(test):
                        state["i"] = i
                        lg = model(x)
                        loss += F.cross_entropy(lg.double(), y, reduction="sum").item()
                        n += len(y)
                z = {k: torch.stack(v).mean(0).mean().sqrt().item() for k, v in ez.z.items()}
                rec[f"s={sc:g}" + (", routing held" if held else "")] = {
                    "eval_loss": loss / n, "head_z_rms": z["head.1"], "stem_z_rms": z["stem.1"],
                    "max_z_rms": max(z.values())}
    finally:
        for h in hs:
            h.remove()
        ez.remove()
    return rec


def cmd_jump(args):
    """The first step at lr 0.025, taken from the saved state after epoch 0 (seed 0), and what it
    does to the network in eval mode: per-BN-layer mismatch, and which parameter group's update
    is responsible (the step applied to one group only, or to all but one)."""
    path = args.out / "jump.json"
    if path.is_file() and not args.force:
        print(f"[skip] {path} exists")
        return
    set_impl("library")   # the formulation the saved state was trained with (not the core's, the import-time one)
    res = {}
    for block in args.blocks:
        st_path = args.out / "ckpt" / run_name(block, "baseline", "library", args.seed) / "state_epoch0.pt"
        if not st_path.is_file():
            print(f"no {st_path}: run  run --block {block} --variant baseline --seed {args.seed}  first")
            continue
        data, train_loader, test_loader = data_and_loaders(args.seed)
        recipe = recipe_for("baseline", data.num_classes)
        model = build_model(block, args.seed, "baseline", data.num_classes)
        st = torch.load(st_path, weights_only=False)
        model.load_state_dict(st["model"])
        opt = build_optimizer(model, recipe, "baseline")
        opt.load_state_dict(st["opt"])
        test = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in test_loader][:args.test_batches]
        ez = _EvalZ(model)
        train_loader.set_epoch(1)
        batches = iter(train_loader)
        groups = _groups_of(model)
        out = {"lr": opt.param_groups[0]["lr"], "steps": []}
        before = ez.measure(test)
        out["before"] = before
        print(f"\n{block}: after epoch 0, eval mode: test loss {before['eval_loss']:.4g}, "
              f"acc {before['eval_acc']:.2f} %")
        out["gain"] = _gain(model, test)
        for k, v in out["gain"].items():
            print(f"  stem output x {k}: eval test loss {v['eval_loss']:.4g}, "
                  f"z RMS at the stem BN {v['stem_z_rms']:.3g}, at the head BN {v['head_z_rms']:.3g}")
        first_batch = next(iter(train_loader))
        # The first step again with SGD's momentum buffers (filled at lr 0.00025) cleared, then undone
        snap_m, snap_o = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
        for lab, clear in (("with the momentum buffers of epoch 0 (as trained)", False),
                           ("momentum buffers cleared", True)):
            if clear:
                for st_ in opt.state.values():
                    if st_.get("momentum_buffer") is not None:
                        st_["momentum_buffer"].zero_()
            w0 = model.stem[0].weight.detach().clone()
            model.train()
            loss = F.cross_entropy(model(first_batch[0].contiguous(memory_format=torch.channels_last)), first_batch[1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            m = ez.measure(test)
            rel = ((model.stem[0].weight.detach() - w0).norm() / w0.norm()).item()
            out.setdefault("first_step_momentum", {})[lab] = {"eval_loss": m["eval_loss"], "stem_rel_update": rel,
                                                             "stem_z_rms": m["z_rms"]["stem.1"]}
            print(f"  first step, {lab}: stem conv |dW|/|W| {rel:.3g}, stem BN z RMS {m['z_rms']['stem.1']:.3g}, "
                  f"eval test loss {m['eval_loss']:.4g}")
            # load_state_dict keeps (does not copy) tensors already of the right device and dtype:
            # hand it copies, or the buffers zeroed above would be the snapshot's own
            model.load_state_dict(copy.deepcopy(snap_m))
            opt.load_state_dict(copy.deepcopy(snap_o))
        for k in range(args.steps):
            p0 = {n: p.detach().clone() for n, p in model.named_parameters()}
            x, y = next(batches)
            model.train()
            loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            p1 = {n: p.detach().clone() for n, p in model.named_parameters()}
            after = ez.measure(test)
            rec = {"step": k, "train_loss": loss.item(), "after": after, "only": {}, "all_but": {}}
            # attribution: the step applied to one group only / to all groups but one (BN buffers as after the step)
            for g in sorted(set(groups.values())):
                for mode in ("only", "all_but"):
                    with torch.no_grad():
                        for n, p in model.named_parameters():
                            take = (groups[n] == g) == (mode == "only")
                            p.copy_(p1[n] if take else p0[n])
                    m = ez.measure(test)
                    rec[mode][g] = {"eval_loss": m["eval_loss"], "eval_acc": m["eval_acc"],
                                    "max_z_rms": max(m["z_rms"].values())}
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(p0[n])
            none = ez.measure(test)
            rec["none"] = {"eval_loss": none["eval_loss"], "eval_acc": none["eval_acc"],
                           "max_z_rms": max(none["z_rms"].values())}
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(p1[n])
            out["steps"].append(rec)
            zr = after["z_rms"]
            order = list(zr)
            first = next((n for n in order if zr[n] > 3 * before["z_rms"][n] and zr[n] > 3), None)
            if first:
                print(f"  step {k} (lr {opt.param_groups[0]['lr']:.4g}): train loss {loss.item():.4f}; eval mode: "
                      f"test loss {after['eval_loss']:.4g}, acc {after['eval_acc']:.2f} %; first BN (forward order) "
                      f"whose input left its running statistics (z RMS > 3 and > 3x before): {first} "
                      f"({zr[first]:.3g} vs {before['z_rms'][first]:.3g} before)")
            else:
                print(f"  step {k}: train loss {loss.item():.4f}; eval test loss {after['eval_loss']:.4g}, "
                      f"acc {after['eval_acc']:.2f} %, no BN left its statistics")
            top = sorted(zr.items(), key=lambda kv: -kv[1])[:5]
            print("    largest BN input mismatch (z RMS):",
                  ", ".join(f"{n} {v:.3g} (before {before['z_rms'][n]:.3g})" for n, v in top))
            print(f"    BN buffers updated, weights not: test loss {rec['none']['eval_loss']:.4g}")
            for g in rec["only"]:
                o, a = rec["only"][g], rec["all_but"][g]
                print(f"    only {g:<8} updated: test loss {o['eval_loss']:.4g} (max z RMS {o['max_z_rms']:.3g});"
                      f"  all but {g:<8}: {a['eval_loss']:.4g} (max z RMS {a['max_z_rms']:.3g})")
        ez.remove()
        res[block] = out
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1) + "\n")


def _mean_sd(xs):
    import statistics
    return (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else float("nan"))


def cmd_report(args):
    import pandas as pd
    out = args.out
    recs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    rows = []
    for r in recs:
        e = r["epochs"]
        rows.append({"block": r["block"], "variant": r["variant"], "impl": r["impl"], "seed": r["seed"],
                     "trace": r["trace"], "epochs_done": len(e), "epochs_planned": r["recipe"]["train_num_epochs"],
                     "best_acc": round(r["best_acc"], 2), "final_acc": round(r["final_acc"], 2),
                     "max_test_loss": round(r["max_test_loss"], 4),
                     "max_epoch_train_loss": round(max(x["train_loss"] for x in e), 4),
                     "test_acc_by_epoch": " / ".join(f"{x['test_acc']:.2f}" for x in e),
                     "test_loss_by_epoch": " / ".join(f"{x['test_loss']:.3g}" for x in e),
                     "peak_epoch_train_loss": round(e[r["recipe"]["train_lr_init_epochs"]]["train_loss"], 4)
                     if len(e) > r["recipe"]["train_lr_init_epochs"] else None,
                     # judged on complete runs only (the reference run stops after epoch 1)
                     "final_lt_20": r["final_acc"] < COLLAPSE_ACC if r["complete"] else None,
                     "test_loss_spike_gt_10": r["max_test_loss"] > COLLAPSE_LOSS,
                     "collapsed": r["collapsed"] if r["complete"] else None,
                     "minutes": round(r["wall_seconds"] / 60, 2)})
    df = pd.DataFrame(rows).sort_values(["block", "variant", "impl", "trace", "seed"])
    df.to_csv(out / "runs.csv", index=False)
    summ = []
    order = {v: i for i, v in enumerate(VARIANTS)}
    for (block, variant, impl), g in df[~df.trace].groupby(["block", "variant", "impl"]):
        g = g[g.epochs_done == g.epochs_planned].astype({"collapsed": bool, "final_lt_20": bool})
        if not len(g):
            continue
        bm, bs = _mean_sd(list(g.best_acc))
        fm, fs = _mean_sd(list(g.final_acc))
        pm, ps = _mean_sd(list(g.peak_epoch_train_loss))
        summ.append({"block": block, "variant": variant, "impl": impl, "seeds": " ".join(map(str, g.seed)),
                     "n": len(g), "collapsed": f"{int(g.collapsed.sum())}/{len(g)}",
                     "final_lt_20": f"{int(g.final_lt_20.sum())}/{len(g)}",
                     "spike_gt_10": f"{int(g.test_loss_spike_gt_10.sum())}/{len(g)}",
                     "best_acc_mean": round(bm, 2), "best_acc_sd": round(bs, 2),
                     "final_acc_mean": round(fm, 2), "final_acc_sd": round(fs, 2),
                     "final_acc_per_seed": " / ".join(f"{a:.2f}" for a in g.final_acc),
                     "best_acc_per_seed": " / ".join(f"{a:.2f}" for a in g.best_acc),
                     "peak_epoch_train_loss_mean": round(pm, 3), "peak_epoch_train_loss_sd": round(ps, 3),
                     "max_test_loss_per_seed": " / ".join(f"{a:.3g}" for a in g.max_test_loss),
                     "minutes_per_run": round(g.minutes.mean(), 2),
                     "_o": (block != "condconv", order.get(variant, 99), impl)})
    sm = pd.DataFrame(summ).sort_values("_o").drop(columns="_o")
    sm.to_csv(out / "summary.csv", index=False)
    total_min = round(sum(r["wall_seconds"] for r in recs) / 60, 1)
    print(f"{len(recs)} training runs, {total_min} min of training wall time in all "
          f"({recs[0]['hardware']}, torch {recs[0]['torch']})")
    (out / "summary.json").write_text(json.dumps({
        "training_runs": len(recs), "training_wall_minutes_total": total_min, "hardware": recs[0]["hardware"],
        "torch": recs[0]["torch"], "data": recs[0]["data"],
        "collapse_definition": f"final test accuracy < {COLLAPSE_ACC} % or any epoch's test loss > {COLLAPSE_LOSS}",
        "variants": VARIANTS, "summary": sm.to_dict("records"), "runs": df.to_dict("records")}, indent=1) + "\n")
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 40):
        print(sm.drop(columns=["max_test_loss_per_seed"]).to_string(index=False))
    for p in sorted((out / "trace").glob("*-s*.json")):
        block, seed = p.stem.rsplit("-s", 1)
        write_trace_summary(out, block, int(seed))
    _events(out)
    _figure_trace(out)
    _figure_impl(out, recs)
    _impl_table(out, recs)


def _impl_table(out: Path, recs):
    """The CondConv baseline trained with the library's layer and with the other formulations,
    same seed and batches: per-epoch test numbers and how far the per-step training losses drift."""
    import pandas as pd
    base = {(r["impl"], r["seed"]): r for r in recs
            if r["block"] == "condconv" and r["variant"] == "baseline" and not r["trace"]}
    rows = []
    for (impl, seed), r in sorted(base.items()):
        lib = base.get(("library", seed))
        if lib is None:
            continue
        a = [x["loss"] for x in lib["steps"]]
        b = [x["loss"] for x in r["steps"]]
        n = min(len(a), len(b))
        first_diff = next((i for i in range(n) if a[i] != b[i]), None)
        first_big = next((i for i in range(n) if abs(a[i] - b[i]) > 0.05), None)
        rows.append({"impl": impl, "seed": seed, "epochs_done": len(r["epochs"]),
                     "test_acc_by_epoch": " / ".join(f"{x['test_acc']:.2f}" for x in r["epochs"]),
                     "test_loss_by_epoch": " / ".join(f"{x['test_loss']:.3g}" for x in r["epochs"]),
                     "train_loss_by_epoch": " / ".join(f"{x['train_loss']:.4f}" for x in r["epochs"]),
                     "steps_compared": n, "first_step_loss_differs_from_library": first_diff,
                     "first_step_loss_differs_by_more_than_0.05": first_big,
                     "max_abs_step_loss_diff_epoch0": max((abs(a[i] - b[i]) for i in range(min(n, 38))), default=None),
                     "mean_step_loss_epoch1": (sum(b[38:76]) / len(b[38:76])) if len(b) >= 76 else None,
                     "minutes": round(r["wall_seconds"] / 60, 2)})
    if rows:
        df = pd.DataFrame(rows)
        df.to_csv(out / "impl_comparison.csv", index=False)
        with pd.option_context("display.width", 250, "display.max_columns", 30):
            print("\n" + df.to_string(index=False))


def _events(out: Path):
    """The first step, from the lr jump on, at which each indicator leaves its range. "epoch-0 max"
    is the largest value over the last 10 steps of epoch 0 (the first steps carry the BN running
    statistics' initial values, running_var = 1)."""
    import pandas as pd
    res = {}
    for block in ("condconv", "se"):
        p = out / "trace" / f"{block}-s0-summary.csv"
        if not p.is_file():
            continue
        d = pd.read_csv(p)
        e0, later = d[d.epoch == 0].tail(10), d[d.epoch >= 1]
        checks = {
            "(a) routing max |logit| > 5": ("routing.max_abs_logit", lambda v, ref: v > 5),
            "(a) routing sigmoid < 0.01 (any)": ("routing.frac_r_lt_0.01", lambda v, ref: v > 0),
            "(a) SE gate max |logit| > 5": ("se.max_abs_logit", lambda v, ref: v > 5),
            "(b) BN running_var / batch_var > 10x epoch-0 max": ("bn.max_var_ratio", lambda v, ref: v > 10 * ref),
            "(b) BN running_var / batch_var < 0.1 (any channel)": ("bn.min_var_ratio", lambda v, ref: v < 0.1),
            "(b) BN max batch_var > 10x epoch-0 max": ("bn.max_batch_var", lambda v, ref: v > 10 * ref),
            "(b) BN max running_var > 10x epoch-0 max": ("bn.max_running_var", lambda v, ref: v > 10 * ref),
            "(c) grad norm experts > 10x epoch-0 max": ("grad.experts", lambda v, ref: v > 10 * ref),
            "(c) grad norm routing > 10x epoch-0 max": ("grad.router", lambda v, ref: v > 10 * ref),
            "(c) grad norm bn > 10x epoch-0 max": ("grad.bn", lambda v, ref: v > 10 * ref),
            "(c) grad norm plain > 10x epoch-0 max": ("grad.plain", lambda v, ref: v > 10 * ref),
            "(c) grad norm se > 10x epoch-0 max": ("grad.se", lambda v, ref: v > 10 * ref),
            "(c) total grad norm > 10x epoch-0 max": ("grad_norm_total", lambda v, ref: v > 10 * ref),
            "(c) relative update routing > 0.1": ("rel_update.router", lambda v, ref: v > 0.1),
            "(c) relative update experts > 0.1": ("rel_update.experts", lambda v, ref: v > 0.1),
            "(c) relative update plain > 0.1": ("rel_update.plain", lambda v, ref: v > 0.1),
            "(c) relative update stem conv > 0.1": ("rel_update.stem_conv", lambda v, ref: v > 0.1),
            "(b) stem BN batch_var > 10x epoch-0 max": ("bn.stem.batch_var", lambda v, ref: v > 10 * ref),
            "(d) mixed kernel max/min over batch > 10": ("kernel.spread_max_over_min", lambda v, ref: v > 10),
            "(d) mixed kernel norm < 0.1x expert norm (any)": ("kernel.min_mixed_over_expert", lambda v, ref: v < 0.1),
            "(e) logits max |z| > 10x epoch-0 max": ("logits.max_abs", lambda v, ref: v > 10 * ref),
            "(e) block output RMS > 10x epoch-0 max": ("block.out_rms", lambda v, ref: v > 10 * ref),
            "(e) probe (eval-mode) loss > 10": ("probe_loss", lambda v, ref: v > 10),
            "train loss > 2.5 (above chance)": ("train_loss", lambda v, ref: v > 2.5),
        }
        ev = []
        for label, (col, test) in checks.items():
            if col not in d:
                continue
            ref = e0[col].abs().max()
            hit = later[[test(v, ref) for v in later[col]]]
            first = hit.iloc[0] if len(hit) else None
            ev.append({"event": label, "column": col, "epoch0_max": float(ref),
                       "first_global_step": None if first is None else int(first.global_step),
                       "epoch": None if first is None else int(first.epoch),
                       "step_in_epoch": None if first is None else int(first.step),
                       "value_then": None if first is None else float(first[col]),
                       "max_after_jump": float(later[col].max()), "min_after_jump": float(later[col].min())})
        ev.sort(key=lambda r: (r["first_global_step"] is None, r["first_global_step"] or 0))
        res[block] = ev
        print(f"\n{block}, seed 0: first step (global; epoch 1 starts at {int(later.global_step.min())}) at which")
        for r in ev:
            s = "never" if r["first_global_step"] is None else f"step {r['first_global_step']} ({r['value_then']:.4g})"
            print(f"  {r['event']:<55} {s:<28} epoch-0 max {r['epoch0_max']:.4g}, after the jump "
                  f"{r['min_after_jump']:.4g} .. {r['max_after_jump']:.4g}")
    (out / "events.json").write_text(json.dumps(res, indent=1) + "\n")
    import pandas as pd
    pd.DataFrame([dict(block=b, **r) for b, ev in res.items() for r in ev]).to_csv(out / "events.csv", index=False)


def _figure_trace(out: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    ds = {b: pd.read_csv(out / "trace" / f"{b}-s0-summary.csv") for b in ("condconv", "se")
          if (out / "trace" / f"{b}-s0-summary.csv").is_file()}
    if "condconv" not in ds:
        return
    c = ds["condconv"]
    se = ds.get("se")
    jump = int(c[c.epoch == 1].global_step.min())
    lo, hi = jump - 6, int(c[c.epoch == 1].global_step.max()) + 1
    panels = [
        ("eval-mode loss after each step (64 test images, BN running statistics)",
         [("probe_loss", "CondConv", "C3", "-")], [("probe_loss", "SE", "C3", ":")], True),
        ("training loss of each step (train mode)", [("train_loss", "CondConv", "C0", "-")],
         [("train_loss", "SE", "C0", ":")], False),
        ("stem conv (plain): |dW|/|W| per step; stem BN batch variance / 1000",
         [("rel_update.stem_conv", "CondConv |dW|/|W|", "C3", "-"),
          ("bn.stem.batch_var/1000", "CondConv stem BN batch var / 1000", "C2", "-")],
         [("rel_update.stem_conv", "SE |dW|/|W|", "C3", ":"),
          ("bn.stem.batch_var/1000", "SE stem BN batch var / 1000", "C2", ":")], True),
        ("(a) routing logits (pre-sigmoid), max |logit| over layers and batch",
         [("routing.max_abs_logit", "CondConv: routing", "C1", "-"),
          ("se.max_abs_logit", "CondConv: SE gates", "C2", "-")],
         [("se.max_abs_logit", "SE net: SE gates", "C2", ":")], True),
        ("(a) routing outputs, worst layer", [("routing.frac_r_lt_0.01", "fraction r < 0.01", "C1", "-"),
                                              ("routing.frac_r_gt_0.99", "fraction r > 0.99", "C5", "-"),
                                              ("routing.frac_abs_gt5", "fraction |logit| > 5", "C4", "-")], [], False),
        ("(b) BN running_var / batch_var, max over channels and layers", [("bn.max_var_ratio", "CondConv", "C0", "-")],
         [("bn.max_var_ratio", "SE", "C0", ":")], True),
        ("(c) gradient norm by group", [("grad.experts", "experts", "C0", "-"), ("grad.router", "routing", "C1", "-"),
                                         ("grad.bn", "BN", "C2", "-"),
                                         ("grad.plain", "plain (stem, head, classifier)", "C3", "-"),
                                         ("grad.se", "SE", "C4", "-")],
         [("grad.plain", "SE net: convs, classifier", "C3", ":"), ("grad.bn", "SE net: BN", "C2", ":")], True),
        ("(c) relative update |dW|/|W| by group", [("rel_update.experts", "experts", "C0", "-"),
                                                   ("rel_update.router", "routing", "C1", "-"),
                                                   ("rel_update.bn", "BN", "C2", "-"),
                                                   ("rel_update.plain", "plain", "C3", "-")],
         [("rel_update.plain", "SE net: convs, classifier", "C3", ":")], True),
        ("(d) mixed per-example kernel norm / mean expert norm",
         [("kernel.max_mixed_over_expert", "max over batch & layers", "C0", "-"),
          ("kernel.min_mixed_over_expert", "min over batch & layers", "C1", "-")],
         [], True),
        ("(e) activations",
         [("logits.max_abs", "CondConv max |logit|", "C0", "-"),
          ("block.out_rms", "CondConv max block-output RMS", "C1", "-")],
         [("logits.max_abs", "SE max |logit|", "C0", ":"), ("block.out_rms", "SE max block-output RMS", "C1", ":")],
         True),
    ]
    for d in ds.values():
        d["bn.stem.batch_var/1000"] = d["bn.stem.batch_var"] / 1000
    fig, axes = plt.subplots(5, 2, figsize=(14, 18), sharex=True)
    def draw(ax, frame, cols, lw, mean_color, name):
        for col, lab, color, ls in cols:
            if col in frame:
                ax.plot(frame.global_step, frame[col], ls, color=color, label=lab, lw=lw)
                if col == "train_loss":
                    ax.plot(frame.global_step, frame[col].rolling(8, min_periods=1).mean(), ls, color=mean_color,
                            lw=2, label=f"{name}, mean of 8 steps")

    for ax, (title, cols, secols, log) in zip(axes.flat, panels):
        draw(ax, c, cols, 1.4, "k", "CondConv")
        if se is not None:
            draw(ax, se, secols, 1.2, "grey", "SE")
        if log:
            ax.set_yscale("log")
        ax.axvline(jump - 0.5, color="k", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    ax0 = axes.flat[1].twinx()
    ax0.step(c.global_step, c.lr, where="post", color="grey", lw=1)
    ax0.set_yscale("log")
    ax0.set_ylabel("lr (grey)")
    for ax in axes[-1]:
        ax.set_xlabel(f"training step (epoch 1 starts at step {jump}: lr 0.00025 -> 0.025)")
    fig.suptitle("IR-NET CondConv (solid) vs SE (dotted), quick recipe stepped per epoch, seed 0: per-step numbers",
                 fontsize=12)
    fig.tight_layout()
    fig.savefig(out / "collapse_sequence.png", dpi=90)
    # A zoom on the steps around the jump
    for ax in axes.flat:
        ax.set_xlim(lo, min(hi, jump + 20))
    fig.suptitle("The same, steps around the lr jump", fontsize=12)
    fig.savefig(out / "collapse_sequence_zoom.png", dpi=90)
    plt.close(fig)


def _figure_impl(out: Path, recs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    base = [r for r in recs if r["block"] == "condconv" and r["variant"] == "baseline" and not r["trace"]]
    if not any(r["impl"] != "library" for r in base):
        return
    seeds = sorted({r["seed"] for r in base if r["impl"] != "library"})
    fig, axes = plt.subplots(1, len(seeds), figsize=(6 * len(seeds), 4.2), squeeze=False)
    for ax, s in zip(axes[0], seeds):
        for r in base:
            if r["seed"] != s:
                continue
            y = [x["loss"] for x in r["steps"]]
            ax.plot(range(len(y)), y, label=f"CondConv, {r['impl']} layer (test acc after {len(r['epochs'])} epochs: "
                    f"{r['epochs'][-1]['test_acc']:.1f} %)", lw=1.2)
        for r in recs:
            if r["block"] == "se" and r["variant"] == "baseline" and r["seed"] == s and not r["trace"]:
                y = [x["loss"] for x in r["steps"]]
                ax.plot(range(len(y)), y, ":", color="grey", label=f"SE network ({r['final_acc']:.1f} %)", lw=1.2)
        ax.axvline(37.5, color="k", lw=0.8)
        ax.set_title(f"CondConv training loss per step, seed {s}")
        ax.set_xlabel("step (epoch 1 starts at 38)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "impl_loss_curves.png", dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/condconv-collapse"))
    p.add_argument("--force", action="store_true", help="redo what the output folder already holds")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("trace", help="per-step instrumentation of CondConv and SE, baseline recipe")
    s.add_argument("--blocks", nargs="+", default=["condconv", "se"])
    s.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("run", help="one training run")
    s.add_argument("--block", default="condconv", choices=["standard", "se", "condconv"])
    s.add_argument("--variant", default="baseline", choices=list(VARIANTS))
    s.add_argument("--impl", default="library", choices=IMPLS)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--trace", action="store_true")
    s.add_argument("--max-epochs", type=int, default=None)
    s = sub.add_parser("sweep", help="candidate fixes x seeds, plus standard / SE baselines")
    s.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if v != "clip5"], choices=list(VARIANTS),
                   help="default: all but clip5 (defined, not run for lack of time)")
    s.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    s.add_argument("--ref-blocks", nargs="*", default=["se"], help="baseline runs of other blocks (default: se)")
    s = sub.add_parser("impl", help="CondConv baseline with other formulations of the layer")
    s.add_argument("--impls", nargs="+", default=["timm", "reference"], choices=IMPLS)
    s.add_argument("--seeds", nargs="+", type=int, default=[0])
    s.add_argument("--reference-epochs", type=int, default=2,
                   help="epochs of the (slow) per-example reference run; the lr jump is at the start of epoch 1, "
                        "epoch 2 runs at lr 0.000025 (default 2; 3 for the whole schedule)")
    sub.add_parser("agree", help="fp64 agreement of the formulations on one batch")
    s = sub.add_parser("jump", help="the first steps at the peak lr from the saved epoch-0 state, in eval mode")
    s.add_argument("--blocks", nargs="+", default=["condconv", "se"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--steps", type=int, default=1)
    s.add_argument("--test-batches", type=int, default=4,
                   help="test batches of 32 to evaluate on (default 4: 128 images)")
    sub.add_parser("report", help="tables and figures from what the output folder holds")
    sub.add_parser("all", help="trace, sweep, agree, jump, impl, report")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {hardware()}, out {args.out}", flush=True)
    if args.cmd == "all":
        base = [f"--out={args.out}"] + (["--force"] if args.force else [])
        for c in ("trace", "sweep", "agree", "jump", "impl", "report"):
            main(base + [c])
        return
    {"trace": cmd_trace, "run": cmd_run, "sweep": cmd_sweep, "impl": cmd_impl, "agree": cmd_agree,
     "report": cmd_report, "jump": cmd_jump}[args.cmd](args)


if __name__ == "__main__":
    main()
