"""A training step's forward and backward pass replayed as one CUDA graph (part of the fast layer).

Eager PyTorch launches every kernel of a training step from Python, at some microseconds of
Python, dispatcher and driver time each: 848 kernels for the standard IR-NET's step, 1,354 for SE's,
2,569 for CondConv's (``benchmarks/gpu_profile.py``). Where the kernels are short, the GPU waits
for the launches. A CUDA graph records them once and replays them with one call
(``torch.cuda.graph``, "whole-network capture" in PyTorch's CUDA-graph notes). On an H200 at
batch 256 (``results/bench/cuda-h200.json``) that made the bf16 step 1.05x faster for the standard
network (its kernels already kept the GPU busy), 1.17x for SE, 1.55x for CondConv and 3.9x for
torchvision's MobileNetV2; the results were the same to the last printed digit.

What is captured: forward, loss and backward, writing the gradients into the parameters'
``.grad`` tensors, which the graph owns from then on. The optimiser step stays outside, eager:
its learning rate is a Python number that the scheduler changes, and a graph would freeze it.
That costs a few multi-tensor launches per step, not a thousand.

A graph replays fixed shapes from fixed addresses, so every batch is copied into the graph's own
input tensors; a batch of another size (an epoch's last, partial batch) runs eagerly into the same
gradient tensors.
"""
from __future__ import annotations

import warnings
from functools import partial

import torch
from torch import nn

from ..runtime import autocast_dtype

__all__ = ["GraphedStep", "GraphedTrainingStep", "graphs_available", "step_builder"]


def graphs_available(device) -> bool:
    """CUDA graphs need a CUDA device (not a CPU, not Apple's MPS)."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


class GraphedStep:
    """``logits, loss = step(x, y)``: forward, loss and backward of ``model`` on one batch, with
    fresh gradients in each parameter's ``.grad`` (not added to the previous ones); then step
    the optimiser as usual, but never with ``zero_grad(set_to_none=True)``, which would
    disconnect ``.grad`` from the graph (that is checked, and raises).

    ``x, y`` given here are an example batch: every batch of that shape replays the graph.
    ``autocast_dtype``: ``torch.bfloat16`` for the mixed-precision forward, or ``None`` (fp32).
    The returned ``logits`` and ``loss`` are the graph's output tensors: read them (or queue work
    on them) before the next call overwrites them.

    Capturing runs ``warmup`` eager passes first (on a side stream, as CUDA requires); they would
    move BatchNorm's running statistics, so every buffer is put back afterwards: the capture
    leaves the model exactly as it found it.
    """

    def __init__(self, model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, *,
                 autocast_dtype: torch.dtype | None = None, warmup: int = 3):
        if not graphs_available(x.device):
            raise ValueError(f"CUDA graphs need a CUDA device; the batch is on {x.device}. "
                             "Train without them (cuda_graph=False) on this device.")
        self.model, self.loss_fn, self.autocast_dtype = model, loss_fn, autocast_dtype
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.static_x, self.static_y = x.clone(), y.clone()   # clone keeps channels_last
        saved = [b.detach().clone() for b in model.buffers()]
        try:
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self._set_grads_to_none()
                    self._forward_backward(self.static_x, self.static_y)
            torch.cuda.current_stream(x.device).wait_stream(side)
            # Gradients that do not exist yet are allocated inside the graph, from its memory
            # pool: each replay then *writes* them instead of adding to them.
            self._set_grads_to_none()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits, self.loss = self._forward_backward(self.static_x, self.static_y)
        except BaseException:
            self._set_grads_to_none()
            raise
        finally:
            with torch.no_grad():
                for b, s in zip(model.buffers(), saved):
                    b.copy_(s)
        self.grads = [p.grad for p in self.params]

    def _set_grads_to_none(self):
        for p in self.params:
            p.grad = None

    def _autocast(self):
        # The autocast cache would keep casts made during capture: off, as the CUDA-graph notes ask.
        return torch.autocast("cuda", dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None, cache_enabled=False)

    def _forward_backward(self, x, y):
        with self._autocast():
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
        loss.backward()
        return logits.detach(), loss.detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        if any(p.grad is not g for p, g in zip(self.params, self.grads)):
            raise RuntimeError("a parameter's .grad is no longer the CUDA graph's gradient tensor: something "
                               "called zero_grad(set_to_none=True) or assigned .grad. With a GraphedStep, "
                               "leave the gradients alone (each call overwrites them).")
        if x.shape == self.static_x.shape and y.shape == self.static_y.shape:
            self.static_x.copy_(x)
            self.static_y.copy_(y)
            self.graph.replay()
            return self.logits, self.loss
        # Another batch size: eager, accumulating into the graph's gradient tensors, zeroed first.
        for g in self.grads:
            if g is not None:   # None: a parameter the loss does not depend on
                g.zero_()
        return self._forward_backward(x, y)


class GraphedTrainingStep:
    """The training loop's step on one GPU with the fast layer: forward and backward replayed as a
    CUDA graph captured from the first batch (:class:`GraphedStep`), then the optimizer step, eagerly.

    ``eager`` is the loop's own step (``irnet_lib.loop.EagerStep``): where capture fails and
    graphs were not insisted on (``strict``), a warning says why and every step runs eagerly.
    """

    def __init__(self, model, optimizer, loss_fn, precision: str, eager, strict: bool = False):
        self.model, self.optimizer, self.loss_fn, self.eager, self.strict = model, optimizer, loss_fn, eager, strict
        self.autocast_dtype = autocast_dtype(precision)
        self.graph, self.failed = None, False

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, x, y):
        if self.graph is None and not self.failed:
            try:
                self.optimizer.zero_grad(set_to_none=True)
                self.graph = GraphedStep(self.model, self.loss_fn, x, y, autocast_dtype=self.autocast_dtype)
            except Exception as e:
                if self.strict:
                    raise
                self.failed = True
                warnings.warn(f"CUDA graph capture failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                              "training eagerly. Pass cuda_graph=False to skip the attempt.", stacklevel=2)
        if self.graph is None:
            return self.eager(x, y)
        logits, loss = self.graph(x, y)
        self.optimizer.step()
        return logits, loss


def step_builder(runtime, device: torch.device, precision: str, processes: int):
    """How a run with ``runtime`` builds its step: a builder of :class:`GraphedTrainingStep`
    ``(eager, model, optimizer, loss_fn) -> step``, or None for eager steps. ``runtime.cuda_graph``
    decides where it is set; by default the fast layer uses graphs wherever they work."""
    why_not = ("a CUDA device" if device.type != "cuda" else "one process" if processes > 1 else
               "no torch.compile (it brings its own graphs)" if runtime.compile else
               "bf16 or fp32 (fp16's gradient scaler reads its overflow flag on the host)" if precision == "fp16"
               else None)
    if runtime.cuda_graph is True and why_not:
        raise ValueError(f"cuda_graph=True needs {why_not}; leave it unset (automatic) or pass cuda_graph=False")
    if runtime.cuda_graph is False or why_not or not (runtime.fast or runtime.cuda_graph):
        if runtime.fast and precision == "fp16" and device.type == "cuda" and runtime.cuda_graph is None:
            warnings.warn("fp16: training eagerly, without CUDA graphs (the gradient scaler reads its overflow "
                          "flag on the host every step)", stacklevel=4)
        return None
    return partial(_graphed, precision=precision, strict=runtime.cuda_graph is True)


def _graphed(eager, model, optimizer, loss_fn, *, precision, strict):
    return GraphedTrainingStep(model, optimizer, loss_fn, precision, eager, strict=strict)
