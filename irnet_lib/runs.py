"""A training run's folder: checkpoints, history, and what survives a kill.

What a run leaves in its folder: ``best.pt`` (the epoch with the best test accuracy), ``last.pt``
(the latest epoch) and ``history.csv`` / ``history.json`` (per-epoch numbers and the run's
metadata: which data, which hardware, how long). Every file is written atomically (a temporary
file, then a rename), in the order best, last, history, so that a kill at any instant leaves a
folder from which resuming ends exactly where an uninterrupted run ends:

- killed before ``last.pt`` of an epoch is renamed into place: that epoch runs again, from the
  same state and random numbers, and writes the same files;
- killed after it: the history is rewritten from the copy inside ``last.pt`` when the run resumes,
  and a ``best.pt`` that is missing for the checkpoint's own epoch is rewritten from it;
- temporary files of a killed save are removed when the folder is next opened.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Run", "RunFolder", "CheckpointError", "CheckpointMismatchError", "atomic_save", "load_checkpoint",
           "read_history", "run_meta", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, or not one of this training loop."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint in the run folder belongs to another run (variant, data or recipe)."""


@dataclass
class Run:
    """What ``fit``/``train`` return: the per-epoch history, the run's metadata and the model."""
    history: pd.DataFrame
    meta: dict
    model: nn.Module | None
    out_dir: Path | None = None

    @property
    def best_accuracy(self) -> float:
        return float(self.history["test_acc"].max())

    @property
    def final_accuracy(self) -> float:
        return float(self.history["test_acc"].iloc[-1])

    @property
    def recipe(self) -> dict:
        """The run's recipe as stored in its metadata (``Recipe.to_dict``; empty if none was)."""
        return self.meta.get("config", {}).get("recipe", {})

    @property
    def planned_epochs(self) -> int:
        """The epochs its recipe spans (more than ``len(history)`` while a run is unfinished)."""
        return self.recipe.get("train_num_epochs", len(self.history))


def atomic_save(obj, path) -> Path:
    """``torch.save`` (or text) to a temporary file beside ``path``, flushed to disk, then renamed
    over it: a kill at any moment leaves either the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if isinstance(obj, (str, bytes)):
                f.write(obj.encode() if isinstance(obj, str) else obj)
            else:
                torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint of this training loop, or one line that names the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (python -m irnet_lib.train ...)")
    fix = f"move {path} away, or start the run over (resume=False, --restart)"
    try:
        # Only tensors and plain Python types are stored, so the safe loader suffices.
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120] if str(e) else 'empty or truncated'}); {fix}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a checkpoint of this training loop (found {found!r}, expected "
                              f"format {CHECKPOINT_FORMAT}); {fix}")
    return ckpt


def _history_text(rows: list[dict], meta: dict) -> tuple[str, str]:
    import pandas as pd
    csv = pd.DataFrame(rows).to_csv(index=False, float_format="%.6g")
    return csv, json.dumps({"meta": meta, "epochs": rows}, indent=1, default=str) + "\n"


def read_history(path) -> Run:
    """A stored run (``history.json``, or the folder holding it) as a ``Run`` without a model."""
    import pandas as pd
    path = Path(path)
    if path.is_dir():
        path = path / "history.json"
    if not path.is_file():
        raise FileNotFoundError(f"no history at {path}; run python -m irnet_lib.train ... first")
    d = json.loads(path.read_text())
    return Run(pd.DataFrame(d["epochs"]), d["meta"], None, path.parent)


_SHOWN = 4   # differences named in a refusal to resume; the rest are counted
_ABSENT = object()


def _differences(stored: dict, asked: dict, prefix: str = "") -> list[str]:
    """The fields of two run configs that differ, nested dicts field by field under dotted names
    ("recipe.train_lr_max"), each with both values."""
    out = []
    for key in sorted(set(stored) | set(asked), key=str):
        was, now = stored.get(key, _ABSENT), asked.get(key, _ABSENT)
        if isinstance(was, dict) and isinstance(now, dict):
            out += _differences(was, now, f"{prefix}{key}.")
        elif was != now:
            meaning = " (a hash of the network's tensor names and shapes)" if f"{prefix}{key}" == "model" else ""
            out.append(f"{prefix}{key}{meaning}: checkpoint has {_brief(was)}, this run has {_brief(now)}")
    return out


def _brief(value) -> str:
    """A config value in a one-line message: a whole dict only by its size."""
    if value is _ABSENT:
        return "none"
    if isinstance(value, dict):
        return f"{len(value)} fields"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class RunFolder:
    """The folder of one run. Opening it checks that it can be written (before any training) and
    removes the temporary files a killed save left behind. ``write=False`` (the other processes of
    a multi-GPU run) only reads."""

    def __init__(self, path, *, write: bool = True):
        self.path, self.write = Path(path), write
        self.last, self.best = self.path / "last.pt", self.path / "best.pt"
        if not write:
            return
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"the run folder {self.path} is a file; pass another out_dir / --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test.{os.getpid()}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise PermissionError(f"the run folder {self.path} cannot be written ({e.strerror}); "
                                  "pass another out_dir / --out") from None
        for stale in self.path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def __repr__(self):
        return f"RunFolder({str(self.path)!r})"

    def resume(self, config: dict, map_location) -> dict | None:
        """``last.pt`` if there is one, after checking that it belongs to this run."""
        if not self.last.exists():
            return None
        ckpt = load_checkpoint(self.last, map_location=map_location)
        problems = _differences(ckpt.get("config", {}), config)
        if problems:
            shown = "; ".join(problems[:_SHOWN]) + (f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN
                                                    else "")
            raise CheckpointMismatchError(
                f"refusing to resume from {self.last}: it belongs to another run ({shown}). Start a new run in "
                "another folder (out_dir=..., --out), or start this one over (resume=False, --restart).")
        return ckpt

    def repair(self, ckpt: dict, meta: dict) -> None:
        """After a kill: the history as of ``ckpt``, and ``best.pt`` where it is older than ``ckpt``'s
        epoch and that epoch was the best (saved before ``last.pt``, it can only be missing or
        older if removed by hand)."""
        if not self.write:
            return
        best_epoch = self._epoch_of(self.best)
        if ckpt.get("best_epoch") == ckpt["epoch"] and (best_epoch is None or best_epoch < ckpt["epoch"]):
            atomic_save(ckpt, self.best)
        self._write_history(ckpt["history"], meta)

    def save(self, ckpt: dict, improved: bool, meta: dict) -> None:
        """One epoch's files: ``best.pt`` first (if it improved), then ``last.pt``, then the history."""
        if not self.write:
            return
        if improved:
            atomic_save(ckpt, self.best)
        atomic_save(ckpt, self.last)
        self._write_history(ckpt["history"], meta)

    def _write_history(self, rows: list[dict], meta: dict) -> None:
        csv, js = _history_text(rows, dict(meta, epochs_done=len(rows)))
        atomic_save(csv, self.path / "history.csv")
        atomic_save(js, self.path / "history.json")

    @staticmethod
    def _epoch_of(path: Path):
        try:
            return load_checkpoint(path)["epoch"]
        except (FileNotFoundError, CheckpointError):
            return None


def run_meta(meta: dict | None, model: nn.Module, recipe, runtime, device, precision: str, train_loader) -> dict:
    """What a run is and where it ran, for its history: ``meta`` (what the caller says: data, seed...)
    completed with the recipe, a signature of the model, the hardware and the versions. Its
    ``"config"`` entry is what a checkpoint must match to be resumed."""
    from .runtime import hardware_name, world
    meta = dict(meta or {})
    processes = world()[1]
    meta["config"] = dict(meta.get("config", {}), recipe=recipe.to_dict(), model=_model_signature(model))
    meta.update(precision=precision, channels_last=runtime.channels_last, compile=runtime.compile, device=str(device),
                hardware=hardware_name(device), world_size=processes, torch=torch.__version__,
                python=platform.python_version(), faithful_recipe=recipe.faithful,
                train_images_per_epoch=getattr(train_loader, "num_samples", 0) * processes or None)
    return meta


def _model_signature(model: nn.Module) -> str:
    """A short hash of the parameter and buffer names and shapes: it differs between the three blocks."""
    text = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha1(text.encode()).hexdigest()[:16]
