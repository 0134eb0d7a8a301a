"""The training recipe: the paper's Table 2 written down as data, plus what the course left implicit.

Table 2 gives eight hyper-parameters; the course script that the paper was written on fixes the
rest (optimizer, weight decay, loss, transforms). ``Recipe`` holds both, with Table 2's fields named
as Table 2 names them, so that ``Recipe()`` *is* the faithful reproduction. Anything beyond the
paper (label smoothing, ...) is an option that is off by default.

The learning rate is set once per epoch ``e`` (0-based), exactly as the course did::

    e <  init_epochs:  lr = lr_init + (lr_max - lr_init) * e / init_epochs              (linear warm-up)
    e >= init_epochs:  lr = lr_final + (lr_max - lr_final) * (1 + cos(pi * (e - init_epochs)
                                                                       / (final_epochs - 1))) / 2

with ``lr_init = lr_max * init_scale`` and ``lr_final = lr_max * final_scale``: 0.002, 0.0416, ...,
0.2 at epoch 5, ..., 0.000405 at epoch 53 and exactly 0.0002 at epoch 54. The schedule is driven by
torch's own ``LambdaLR`` so that it checkpoints and resumes like any torch scheduler.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import NamedTuple

import torch

from .checks import check_choice, check_int, check_number
from .data.transforms import check_test_crop

__all__ = ["Recipe", "TABLE_2", "TABLE_3", "PaperResult", "lr_at", "make_optimizer", "make_scheduler",
           "schedule_table", "default_warmup", "add_recipe_arguments", "recipe_from_args", "FLAGS"]


@dataclass(frozen=True)
class Recipe:
    """Table 2 of the paper (first eight fields) and the course's implicit settings (the rest)."""
    # --- Table 2, names as printed ("TRAIN LR MAX" -> train_lr_max, ...)
    train_lr_max: float = 0.2
    train_lr_init_scale: float = 0.01
    train_lr_final_scale: float = 0.001
    train_lr_init_epochs: int = 5
    train_lr_final_epochs: int = 50
    train_num_epochs: int = 55
    data_batch_size: int = 256       # global batch: split over the processes under DDP
    data_num_classes: int = 100
    # --- the course's settings that the paper leaves implicit
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-5       # on every parameter, BN affine and biases included
    train_crop: int = 56             # RandomResizedCrop(56) + flip; test: Resize(64), CenterCrop(56)
    # --- beyond the paper: off by default, reported separately when used
    test_crop: int = 56              # 64: evaluate on the whole 64 px image (train/test resolution gap)
    ema_decay: float = 0.0           # > 0: also test an exponential moving average of the weights
    label_smoothing: float = 0.0
    lr_step: str = "epoch"           # "epoch" (the course, exact) or "iteration" (smooth variant)

    def __post_init__(self):
        for name in ("train_lr_init_epochs", "train_lr_final_epochs", "train_num_epochs",
                     "data_batch_size", "data_num_classes"):
            check_int(name, getattr(self, name), minimum=0 if name == "train_lr_init_epochs" else 1)
        if self.train_lr_init_epochs + self.train_lr_final_epochs != self.train_num_epochs:
            raise ValueError(
                f"train_lr_init_epochs + train_lr_final_epochs must equal train_num_epochs "
                f"({self.train_lr_init_epochs} + {self.train_lr_final_epochs} != {self.train_num_epochs}); "
                f"use Recipe.compressed(epochs, warmup_epochs) to shorten the schedule")
        check_number("train_lr_max", self.train_lr_max)
        for name in ("train_lr_init_scale", "train_lr_final_scale"):
            check_number(name, getattr(self, name), 0, 1)
        check_choice("lr_step", self.lr_step, ("epoch", "iteration"))
        if self.optimizer != "sgd":
            raise ValueError(f"only optimizer='sgd' (the course's) is implemented, got {self.optimizer!r}")
        check_test_crop(self.test_crop)
        check_number("ema_decay", self.ema_decay, 0, 1, low_open=False, high_open=True,
                     why=" (0: off; 0.999 is typical)")
        check_number("label_smoothing", self.label_smoothing, 0, 1, low_open=False, high_open=True)

    @property
    def lr_init(self) -> float:
        return self.train_lr_max * self.train_lr_init_scale

    @property
    def lr_final(self) -> float:
        return self.train_lr_max * self.train_lr_final_scale

    @property
    def faithful(self) -> bool:
        """True when nothing beyond the paper/course is switched on."""
        return (self.label_smoothing == 0 and self.lr_step == "epoch" and self.test_crop == 56
                and self.ema_decay == 0)

    def compressed(self, epochs: int, warmup_epochs: int | None = None, **changes) -> Recipe:
        """The same shape of schedule (warm-up then half cosine) squeezed into ``epochs`` epochs,
        for budgets that cannot afford 55 (a CPU, a quick check). ``warmup_epochs`` defaults to
        :func:`default_warmup`; at least one cosine epoch must remain, and it starts at the peak."""
        check_int("epochs", epochs)
        warmup_epochs = default_warmup(epochs) if warmup_epochs is None else warmup_epochs
        check_int("warmup_epochs", warmup_epochs, 0, epochs - 1, why=" (the schedule needs a cosine epoch to reach "
                  "its peak)")
        return replace(self, train_num_epochs=epochs, train_lr_init_epochs=warmup_epochs,
                       train_lr_final_epochs=epochs - warmup_epochs, **changes)

    def scaled_to_batch(self, batch_size: int) -> Recipe:
        """Smaller batch, proportionally smaller peak learning rate (the linear scaling rule of
        Goyal et al. 2017); the scales, and so the shape, are kept."""
        return replace(self, data_batch_size=batch_size,
                       train_lr_max=self.train_lr_max * batch_size / self.data_batch_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        # Fields added after checkpoints existed are written only when set, so that a run saved
        # before them still resumes (the checkpoint's recipe must equal this dict).
        for name, default in (("test_crop", 56), ("ema_decay", 0.0)):
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown Recipe fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


class TableRow(NamedTuple):
    parameter: str      # as printed in the paper
    field: str          # the Recipe field holding it
    value: float


#: Table 2 of the paper, row by row.
TABLE_2 = tuple(TableRow(p, f, getattr(Recipe(), f)) for p, f in [
    ("TRAIN LR MAX", "train_lr_max"),
    ("TRAIN LR INIT SCALE", "train_lr_init_scale"),
    ("TRAIN LR FINAL SCALE", "train_lr_final_scale"),
    ("TRAIN LR INIT EPOCHS", "train_lr_init_epochs"),
    ("TRAIN LR FINAL EPOCHS", "train_lr_final_epochs"),
    ("TRAIN NUM EPOCHS", "train_num_epochs"),
    ("DATA BATCH SIZE", "data_batch_size"),
    ("DATA NUM CLASSES", "data_num_classes"),
])


class PaperResult(NamedTuple):
    block: str                    # irnet(block=...) name
    label: str                    # as printed in Table 3
    training_hours: float | None  # None: the paper left the cell empty
    accuracy: float | None        # top-1 %, ImageNet (100 classes, downsampled by 4 to 56x56), 55 epochs


#: Table 3 of the paper (ImageNet reduced to 100 classes; the paper names no hardware). The CondConv row
#: is empty in the paper.
TABLE_3 = (
    PaperResult("standard", "Standard", 5.5, 72.54),
    PaperResult("se", "SE enhanced", 6.0, 73.72),
    PaperResult("condconv", "SE and cond conv enhanced", None, None),
)


def lr_at(recipe: Recipe, epoch: float) -> float:
    """The learning rate at (possibly fractional) ``epoch``, the closed form of the course.

    Integer epochs give the course's per-epoch values; fractional ones the smooth per-iteration
    variant of the same curve, held at ``lr_final`` after the last epoch's start."""
    w, f = recipe.train_lr_init_epochs, recipe.train_lr_final_epochs
    lr_max, lr_init, lr_final = recipe.train_lr_max, recipe.lr_init, recipe.lr_final
    if epoch < w:
        return lr_init + (lr_max - lr_init) * epoch / w
    # The first cosine epoch is the peak, the last one lr_final; a single cosine epoch starts at the
    # peak and (per iteration) descends over its own steps.
    progress = min((epoch - w) / max(f - 1, 1), 1.0)
    return lr_final + 0.5 * (lr_max - lr_final) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """SGD with Nesterov momentum; weight decay on every parameter, as the course did."""
    return torch.optim.SGD(model.parameters(), lr=recipe.train_lr_max, momentum=recipe.momentum,
                           nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe,
                   steps_per_epoch: int = 1) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that follows ``lr_at``. With ``recipe.lr_step == "epoch"`` call ``.step()``
    once per epoch; with ``"iteration"`` once per optimizer step (``steps_per_epoch`` per epoch).

    The optimizer's base lr must be ``train_lr_max`` (``make_optimizer`` sets it)."""
    per = 1 if recipe.lr_step == "epoch" else steps_per_epoch
    if per < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch!r}")
    for g in optimizer.param_groups:
        g.setdefault("initial_lr", g["lr"])
        if not math.isclose(g["initial_lr"], recipe.train_lr_max):
            raise ValueError(f"the optimizer's lr ({g['initial_lr']}) is not the recipe's train_lr_max "
                             f"({recipe.train_lr_max}); build it with make_optimizer(model, recipe)")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_at(recipe, step / per) / recipe.train_lr_max)


def schedule_table(recipe: Recipe | None = None):
    """The per-epoch learning rate of ``recipe`` as a DataFrame (epoch, lr, phase), read back
    from a real ``LambdaLR`` stepped once per epoch (not from the formula)."""
    import pandas as pd
    recipe = recipe or Recipe()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.train_lr_max)
    sched = make_scheduler(opt, replace(recipe, lr_step="epoch"))
    rows = []
    for e in range(recipe.train_num_epochs):
        rows.append({"epoch": e, "lr": opt.param_groups[0]["lr"],
                     "phase": "warm-up" if e < recipe.train_lr_init_epochs else "cosine"})
        opt.step()
        sched.step()
    return pd.DataFrame(rows)


def default_warmup(epochs: int) -> int:
    """Warm-up epochs of a schedule compressed to ``epochs``: Table 2's 5 of 55 scaled, at least one
    where there is room, and always leaving one cosine epoch (1 epoch: no warm-up)."""
    return min(max(1, round(5 * epochs / 55)), epochs - 1)


#: The recipe's command-line flags: flag -> (Recipe field, help). Their types and defaults are the
#: fields'; ``train`` and ``reproduce`` both add them with :func:`add_recipe_arguments`.
FLAGS = {
    "--epochs": ("train_num_epochs", "compress the schedule's shape into this many epochs (default: Table 2's 55)"),
    "--warmup-epochs": ("train_lr_init_epochs", "warm-up epochs of a compressed schedule "
                        "(default: 5 x epochs / 55, at least 1, leaving one cosine epoch)"),
    "--batch-size": ("data_batch_size", "global batch; the peak lr scales with it (linear rule) unless --lr-max"),
    "--lr-max": ("train_lr_max", "peak learning rate (Table 2: 0.2 at batch 256)"),
    "--lr-step": ("lr_step", "set the lr once per epoch as the course did, or every iteration (smooth)"),
    "--label-smoothing": ("label_smoothing", "beyond the paper (default 0)"),
    "--ema-decay": ("ema_decay", "also test an exponential moving average of the weights, e.g. 0.99 "
                    "(beyond the paper)"),
    "--test-crop": ("test_crop", "test images' centre crop; 64 tests the whole image (beyond the paper)"),
}
_CHOICES = {"lr_step": ("epoch", "iteration")}


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The recipe's flags (:data:`FLAGS`), typed and defaulted from ``Recipe``'s fields."""
    g = p.add_argument_group("recipe (Table 2; unset flags keep the paper's values)")
    by_name = {f.name: f for f in fields(Recipe)}
    for flag, (name, help) in FLAGS.items():
        default = by_name[name].default
        g.add_argument(flag, type=type(default), default=None, choices=_CHOICES.get(name),
                       help=f"{help} [{default}]")


def recipe_from_args(args, base: Recipe | None = None) -> Recipe:
    """The recipe the flags ask for: ``base`` (default ``Recipe()``), the batch scaled first (the peak
    lr with it), then the schedule compressed, then the other fields. Bad values: a ``ValueError``
    naming the flag."""
    recipe = base or Recipe()
    given = {name: getattr(args, flag[2:].replace("-", "_")) for flag, (name, _) in FLAGS.items()}
    given = {k: v for k, v in given.items() if v is not None}
    for flag, (name, _) in FLAGS.items():
        if name in given and name in ("train_num_epochs", "data_batch_size") and given[name] < 1:
            raise ValueError(f"{flag} must be >= 1, got {given[name]}")
    if "data_batch_size" in given:
        recipe = recipe.scaled_to_batch(given.pop("data_batch_size"))
    epochs, warmup = given.pop("train_num_epochs", None), given.pop("train_lr_init_epochs", None)
    if epochs is not None or warmup is not None:
        epochs = recipe.train_num_epochs if epochs is None else epochs
        if warmup is not None and not 0 <= warmup < epochs:
            raise ValueError(f"--warmup-epochs must be from 0 to {epochs - 1} (--epochs {epochs} needs at least "
                             f"one cosine epoch), got {warmup}")
        recipe = recipe.compressed(epochs, warmup)
    try:
        return replace(recipe, **given)
    except ValueError as e:
        flag = next((f for f, (name, _) in FLAGS.items() if str(e).startswith(name)), None)
        raise ValueError(f"{flag}: {e}" if flag else str(e)) from None
