"""Notebook 06 · Training: its exercises.

06.1 and 06.2 are code: the learning-rate schedule of Table 2, checked against the course's logged
learning rates, and one epoch of SGD, checked step by step against the library's loop. Where an
attempt is wrong, the checker names the first epoch (or step) that differs, both values, and, where
the attempt matches one of the usual slips exactly, that slip.
"""
from __future__ import annotations

import copy
import csv
import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .core import CodeExercise, Exercise, try_student_code

# ----------------------------------------------------------------------------------- 06.1 the schedule


def course_lrs() -> list[float]:
    """The learning rate of each of the course's 55 epochs, as its log recorded them (6 decimals)."""
    from ..notebook import ROOT
    with open(ROOT / "results" / "course_standard_log.csv", newline="") as f:
        return [float(row["lr"]) for row in csv.DictReader(f)]


def _lr_slips() -> dict[str, Callable[[int], float]]:
    """The usual wrong schedules, each with what it gets wrong."""
    from ..recipe import Recipe, lr_at
    r = Recipe()
    w, f, hi = r.train_lr_init_epochs, r.train_lr_final_epochs, r.train_lr_max

    def schedule(lr_init=r.lr_init, lr_final=r.lr_final, warm=lambda e: e / w, span=f - 1):
        def lr(e):
            if e < w:
                return lr_init + (hi - lr_init) * warm(e)
            return lr_final + 0.5 * (hi - lr_final) * (1 + math.cos(math.pi * (e - w) / span))
        return lr

    return {
        "the warm-up counts from 1: epoch 0 runs at lr_init itself, and each warm-up epoch adds (lr_max - lr_init) / "
        "init_epochs": schedule(warm=lambda e: (e + 1) / w),
        "the warm-up divides by init_epochs - 1 and reaches the peak one epoch early: the peak belongs to epoch "
        "init_epochs, the first cosine epoch": schedule(warm=lambda e: e / (w - 1)),
        "the half cosine is spread over final_epochs steps; it spans final_epochs - 1, so that the last epoch sits "
        "exactly at its end": schedule(span=f),
        "the cosine ends at 0; it ends at lr_final = lr_max x final_scale": schedule(lr_final=0.0),
        "lr_init and lr_final are the scales themselves; Table 2's scales multiply lr_max":
            schedule(lr_init=r.train_lr_init_scale, lr_final=r.train_lr_final_scale),
        "the epochs are counted from 1; epoch 0 is the first epoch": lambda e: lr_at(r, e + 1),
    }


def _close_lr(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-6)   # the log keeps 6 decimals


def check_lr(fn) -> tuple[bool, str]:
    """Notebook 06: the student's ``lr(epoch)`` must give the course's 55 logged learning rates."""
    expected = course_lrs()
    got = []
    for e in range(len(expected)):
        value, error = try_student_code(f"lr({e})", fn, e)
        if error:
            return False, error
        try:
            got.append(float(value))
        except (TypeError, ValueError):
            return False, f"lr({e}) returns {type(value).__name__} {value!r}; it should return a number"
        if not math.isfinite(got[-1]):
            return False, f"lr({e}) returns {got[-1]}: a learning rate is a finite number"
    wrong = [e for e in range(len(expected)) if not _close_lr(got[e], expected[e])]
    if not wrong:
        return True, (f"your schedule gives the course's {len(expected)} logged learning rates "
                      "(results/course_standard_log.csv): warm-up from 0.002, the peak 0.2 at epoch 5, "
                      "down to 0.0002 at the last epoch.")
    e = wrong[0]
    message = (f"lr({e}) = {got[e]:.6g}, but the course's epoch {e} ran at {expected[e]:.6g} "
               f"({len(wrong)} of {len(expected)} epochs differ).")
    slip = next((why for why, slip_lr in _lr_slips().items()
                 if all(_close_lr(got[i], slip_lr(i)) for i in range(len(expected)))), None)
    if slip:
        return False, f"{message} Your curve is the one you get when {slip}."
    phase = "warm-up" if e < 5 else "cosine"
    return False, (f"{message} The first wrong epoch is in the {phase}. Hint: the usual slips are an off-by-one in "
                   "the warm-up (epoch 0 runs at lr_init), a cosine over 50 steps instead of 49 (epoch 54 sits at "
                   "its end), and a final lr of 0 instead of 0.0002; print lr(e) for e in range(55) beside the "
                   "log's lr column.")


# ----------------------------------------------------------------------------------- 06.2 one epoch of SGD

STEPS, BATCH, LR = 4, 16, 0.1   # a few batches of the embedded sample; a learning rate that moves the weights


@functools.lru_cache(maxsize=1)
def _batches() -> tuple:
    from ..data import load_dataset, make_loader
    from ..notebook import ROOT
    sample = load_dataset("fashion-mnist-sample", ROOT / "data", train_subset=STEPS * BATCH)
    return tuple(make_loader(sample, "train", BATCH, seed=0))


def loop_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The checker's data: STEPS training batches of BATCH sample images (random crops, seed 0), fresh copies."""
    return [(x.clone(), y.clone()) for x, y in _batches()]


@functools.lru_cache(maxsize=1)
def _initial_model() -> torch.nn.Module:
    from ..network import irnet
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return irnet("standard", num_classes=10, width_mult=0.25)


def loop_model() -> torch.nn.Module:
    """A small IR-NET (standard block, width 0.25), always the same initial weights, in eval mode (as an
    evaluation leaves it: one epoch of training must switch it to training mode)."""
    return copy.deepcopy(_initial_model()).eval()


def loop_optimizer(model: torch.nn.Module) -> torch.optim.SGD:
    from ..recipe import Recipe, make_optimizer
    return make_optimizer(model, Recipe(train_lr_max=LR))   # Nesterov momentum 0.9, weight decay 5e-5


def library_losses(model: torch.nn.Module, batches) -> list[float]:
    """The loss of every step of ``irnet_lib.loop.train_one_epoch`` with an ``EagerStep`` (fp32, CPU), as
    ``fit`` runs it; ``model`` is trained in place."""
    from ..loop import EagerStep, train_one_epoch
    step = EagerStep(model, loop_optimizer(model), F.cross_entropy, torch.device("cpu"), "fp32")
    losses = []

    def recorded(x, y):
        logits, loss = step(x, y)
        losses.append(loss.item())
        return logits, loss

    model.train()   # fit does this before every epoch
    train_one_epoch(recorded, batches, channels_last=False, show=False)
    return losses


def _slip_losses(slip: str, batches) -> list[float]:
    """The per-step losses of one epoch written with ``slip`` (one of :data:`SLIPS`)."""
    model = loop_model()
    optimizer = loop_optimizer(model)
    model.train(slip != "model.eval() is left on")
    losses = []
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        if slip != "zero_grad is missing":
            optimizer.zero_grad()
        loss.backward()
        if slip != "the weights never change":
            optimizer.step()
        losses.append(loss.item())
    return losses


SLIPS = {
    "model.eval() is left on":
        "the model stays in eval mode, so BatchNorm normalises with its running statistics instead of the batch's: "
        "call model.train() at the start of the epoch",
    "zero_grad is missing":
        "the gradients are never cleared, so every step adds the new gradient to all the old ones: call "
        "optimizer.zero_grad() before loss.backward()",
    "the weights never change":
        "optimizer.step() is missing, or it runs between zero_grad() and backward(), when the gradients have just "
        "been cleared: zero_grad, backward, then step",
}


def _close_losses(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)


def _as_losses(result) -> tuple[list[float] | None, str | None]:
    if (isinstance(result, torch.Tensor) and result.dim() == 0) or isinstance(result, (int, float)):
        return None, (f"train_one_epoch returns one number ({float(result):.4f}); return the list of the loss of "
                      "every step (loss.item() of each batch, in order)")
    try:
        return [float(v) for v in result], None
    except (TypeError, ValueError) as e:
        return None, (f"train_one_epoch returns {type(result).__name__}, which is not a list of numbers ({e}); "
                      "return the list of the loss of every step")


def _first_step_cause(got: float, want: float, batches) -> str:
    """Why the loss of the first batch, before any update, differs."""
    for factor, words in ((BATCH, "summed over the batch"), (1 / BATCH, "divided once more by the batch size")):
        if _close_losses(got, want * factor):
            return (f"Your loss is {words}: F.cross_entropy already returns the mean over the batch, and the "
                    "library returns that mean for each step.")
    if _close_losses(got, _slip_losses("model.eval() is left on", batches[:1])[0]):
        return f"It is the eval-mode loss: {SLIPS['model.eval() is left on']}."
    return ("Before any update the loss depends only on the forward pass and the loss function: training mode "
            "(model.train()), F.cross_entropy(model(x), y) with its default mean, and the batch as given.")


def check_train_one_epoch(fn) -> tuple[bool, str]:
    """Notebook 06: the student's ``train_one_epoch(model, loader, optimizer)`` must give, step by step,
    the losses of the library's loop from the same weights and batches, and leave the same weights."""
    model = loop_model()
    result, error = try_student_code("train_one_epoch(model, loader, optimizer)", fn, model, loop_batches(),
                                     loop_optimizer(model))
    if error and "modified by an inplace operation" in error:
        return False, (f"{error[:120]}... optimizer.step() changed the weights in place before loss.backward() "
                       "used them: backward first, then step.")
    if error:
        return False, error
    got, problem = _as_losses(result)
    if problem:
        return False, problem
    reference = loop_model()
    expected = library_losses(reference, loop_batches())
    if len(got) != len(expected):
        return False, (f"train_one_epoch returns {len(got)} losses for {len(expected)} batches; return one loss per "
                       "batch, in order")
    wrong = [i for i in range(len(expected)) if not _close_losses(got[i], expected[i])]
    if wrong:
        i = wrong[0]
        message = f"step {i}: your loss is {got[i]:.6f}, the library's {expected[i]:.6f}."
        if i == 0:
            return False, f"{message} {_first_step_cause(got[0], expected[0], loop_batches())}"
        slip = next((s for s in SLIPS if all(map(_close_losses, got, _slip_losses(s, loop_batches())))), None)
        if slip:
            return False, f"{message} Your losses are those of a loop where {slip}: {SLIPS[slip]}."
        return False, (f"{message} The first step agrees, so the forward pass and the loss are right and the update "
                       "is not. Hint: the usual slips are zero_grad missing, optimizer.step() missing or before "
                       "loss.backward(), and a second optimizer or a changed learning rate.")
    mine, theirs = model.state_dict(), reference.state_dict()
    moved = max((mine[k].double() - theirs[k].double()).abs().max().item() for k in theirs
                if theirs[k].is_floating_point())
    if moved > 1e-5:
        return False, (f"the losses agree, but the weights after the epoch do not (largest difference {moved:.2e}): "
                       "is the last batch's optimizer.step() missing?")
    return True, (f"your epoch gives the library's loss at every step ({len(expected)} batches) and leaves the same "
                  "weights: it is the loop of irnet_lib.loop.fit.")


# ----------------------------------------------------------------------------------- the numeric exercises


def _jump_factor() -> float:
    from ..recipe import Recipe, lr_at
    r10 = Recipe().compressed(10, 1)
    return lr_at(r10, 1) / lr_at(r10, 0)


def _se_gain_iter() -> float:
    from ..notebook import ROOT
    from ..reproduce import load_runs
    runs = load_runs(ROOT / "results" / "fashion-mnist-gpu-10ep-iter", ("standard", "se"))
    return runs["se"].best_accuracy - runs["standard"].best_accuracy


def _shirts_called_tshirts() -> float:
    """% of the sample's test shirts that the trained standard network calls T-shirt/top."""
    from ..data import load_dataset, make_loader
    from ..notebook import ROOT
    from ..pretrained import load_pretrained
    sample = load_dataset("fashion-mnist-sample", ROOT / "data")
    model = load_pretrained("standard").to(memory_format=torch.channels_last).eval()
    with torch.inference_mode():
        pred = torch.cat([model(x).argmax(1) for x, _ in make_loader(sample, "test", 100, channels_last=True)])
    labels = sample.tensor_cache("test")[1]
    shirt, tshirt = sample.classes.index("Shirt"), sample.classes.index("T-shirt/top")
    return 100 * ((labels == shirt) & (pred == tshirt)).sum().item() / (labels == shirt).sum().item()


EXERCISES = {
    "06.1": CodeExercise(check_lr),
    "06.2": CodeExercise(check_train_one_epoch),
    "06.3": Exercise(_jump_factor, rtol=1e-6,
                     hint="epoch 0 runs at lr_max x init_scale; with one warm-up epoch, epoch 1 is the first cosine "
                          "epoch: at what point of the half cosine does it sit? The answer is a ratio, no unit."),
    "06.4": Exercise(_se_gain_iter, rtol=0.03,
                     hint="each run's best is the largest test_acc of its history (run.best_accuracy); answer SE "
                          "minus standard in percentage points, with its sign."),
    "06.5": Exercise(_shirts_called_tshirts, rtol=0.01,
                     hint="the row of 'Shirt' in confusion holds where the true shirts went: divide its 'T-shirt/top' "
                          "entry by the row's sum, in %."),
}
