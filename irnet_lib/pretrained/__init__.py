"""IR-NET trained on Fashion-MNIST, one network per block, to look inside (notebooks 02, 03, 06).

    model = irnet_lib.load_pretrained("condconv")     # eval mode, 10 classes, verified first

The weights are stored in fp16 beside this file; ``manifest.json`` says for each file what it is:
the data it was trained on, the recipe, the hardware, its test accuracy and its sha256.
:func:`load_pretrained` checks the manifest's entry against its file before it reads it (the
entry's fields, the file's hash) and the tensors against the network the entry describes before
it builds that network, so that every mismatch is one line that names the entry, the file and the
fix. ``tools/package_pretrained.py`` writes them from a run folder's ``best.pt``. These are
Fashion-MNIST networks (10 classes, 28 px images enlarged to 64 px): not the paper's ImageNet-100
result.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from torch import nn

__all__ = ["load_pretrained", "manifest", "FOLDER"]

FOLDER = Path(__file__).resolve().parent

_RESTORE = "git checkout irnet_lib/pretrained/"
_REPACKAGE = "python tools/package_pretrained.py RUN_FOLDER"
_BLOCK_NAMES = {"standard": "a standard", "se": "an SE", "condconv": "a CondConv"}


def manifest() -> dict:
    """What each stored network is: ``{block: {"file", "sha256", "data", "recipe", "test_acc", ...}}``."""
    path = FOLDER / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the trained networks come with the repository; restore it "
                                f"with {_RESTORE}")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg}: line {e.lineno}, column {e.colno}): the file is "
                         f"damaged; restore it with {_RESTORE}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text: the file is damaged; restore it with {_RESTORE}") from None
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        raise ValueError(f"{path} is not a manifest ({{block: {{\"file\", \"sha256\", ...}}}}): restore it with "
                         f"{_RESTORE}")
    return entries


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_fields(block: str, entry: dict) -> None:
    """The fields :func:`load_pretrained` reads, each there and of its kind."""
    rules = {
        "file": (lambda v: isinstance(v, str) and v != "" and Path(v).name == v, "a file name beside manifest.json"),
        "sha256": (lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
                   "64 lowercase hex digits"),
        "num_classes": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an int >= 1"),
        "model_kwargs": (lambda v: isinstance(v, dict), "a dict of irnet() arguments"),
    }
    where = f"manifest entry {block!r} in {FOLDER / 'manifest.json'}"
    for field, (ok, allowed) in rules.items():
        if field not in entry:
            if field == "model_kwargs":   # optional: irnet()'s defaults
                continue
            raise ValueError(f"{where} has no {field!r} field: restore the manifest with {_RESTORE} "
                             f"(or rewrite it: {_REPACKAGE})")
        if not ok(entry[field]):
            raise ValueError(f"{where}: {field!r} must be {allowed}, got {entry[field]!r}; restore the manifest "
                             f"with {_RESTORE} (or rewrite it: {_REPACKAGE})")


def _block_of(state: dict) -> str:
    """Which block's weights a state dict holds, from its modules' names."""
    parts = {part for key in state for part in key.split(".")}
    return "condconv" if "router" in parts else "se" if "se" in parts else "standard"


def _shape(t) -> tuple:
    return tuple(t.shape)


def _check_tensors(block: str, entry: dict, state, reference: dict) -> None:
    """``state`` (the file's) against ``reference`` (the state dict of the network the entry describes)."""
    name = entry["file"]
    kwargs = entry.get("model_kwargs", {})
    fix = f"the manifest and {name} disagree; restore both with {_RESTORE} (or rewrite them: {_REPACKAGE})"
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"{name} (manifest entry {block!r}) holds a {type(state).__name__}, not a state dict of "
                         f"tensors: {fix}")
    held = _block_of(state)
    if held != block:
        raise ValueError(f"manifest entry {block!r} describes {_BLOCK_NAMES[block]} network, but {name} holds "
                         f"{_BLOCK_NAMES[held]} network's weights: {fix}")
    if "classifier.weight" in state and "classifier.weight" in reference:
        outputs = state["classifier.weight"].shape[0]
        if outputs != entry["num_classes"]:
            raise ValueError(f"manifest entry {block!r} says num_classes {entry['num_classes']}, but {name}'s "
                             f"classifier has {outputs} outputs: {fix}")
    described = f"manifest entry {block!r} says num_classes {entry['num_classes']}, model_kwargs {kwargs}"
    missing, extra = sorted(set(reference) - set(state)), sorted(set(state) - set(reference))
    if missing or extra:
        counts = [f"{len(keys)} {what} ({', '.join(keys[:2])}{', ...' if len(keys) > 2 else ''})"
                  for keys, what in ((missing, f"tensors of that network not in {name}"),
                                     (extra, f"tensors of {name} not in that network")) if keys]
        raise ValueError(f"{described}: {'; '.join(counts)}: {fix}")
    wrong = [k for k in reference if _shape(reference[k]) != _shape(state[k])]
    if wrong:
        k = wrong[0]
        more = f" (and {len(wrong) - 1} more tensors)" if len(wrong) > 1 else ""
        raise ValueError(f"{described}: {k} is {_shape(state[k])} in {name}, {_shape(reference[k])} in that "
                         f"network{more}: {fix}")


def load_pretrained(block: str, device="cpu") -> nn.Module:
    """The IR-NET with ``block`` ("standard", "se" or "condconv") trained on Fashion-MNIST, in eval
    mode, in fp32 on ``device``, after checking its file against the manifest (sha256) and its
    tensors against the network the manifest describes (names and shapes)."""
    from .. import irnet
    from ..checks import check_device
    device = check_device(device)   # before reading 20 MB for nothing
    entries = manifest()
    if block not in entries:
        raise ValueError(f"no trained network for block {block!r}; there are {sorted(entries)}")
    if block not in _BLOCK_NAMES:
        raise ValueError(f"manifest entry {block!r} in {FOLDER / 'manifest.json'} names no block of irnet() (one of "
                         f"{sorted(_BLOCK_NAMES)}): restore the manifest with {_RESTORE}")
    entry = entries[block]
    _check_fields(block, entry)
    path = FOLDER / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{path} (manifest entry {block!r}) is missing; restore it with {_RESTORE}"
                                f"{entry['file']} (or rewrite it: {_REPACKAGE})")
    digest = _sha256(path)
    if digest != entry["sha256"]:
        raise ValueError(f"{path} does not match its manifest entry {block!r} (sha256 {digest[:12]}..., expected "
                         f"{entry['sha256'][:12]}...; {path.stat().st_size} bytes): the file is damaged or was "
                         f"replaced; restore it with {_RESTORE}{entry['file']}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:   # torch's own message (a zip reader's, an unpickler's) names neither the entry nor the fix
        raise ValueError(f"{path} matches the sha256 of manifest entry {block!r} but is not a readable PyTorch file "
                         f"(truncated or damaged before the manifest was written): restore both with {_RESTORE} "
                         f"(or rewrite them: {_REPACKAGE})") from None
    kwargs = entry.get("model_kwargs", {})
    try:
        with torch.device("meta"):   # names and shapes only: no memory, no initialisation
            reference = irnet(block, num_classes=entry["num_classes"], **kwargs).state_dict()
    except (TypeError, ValueError) as e:
        raise ValueError(f"manifest entry {block!r}: model_kwargs {kwargs} do not build a network ({e}); restore "
                         f"the manifest with {_RESTORE} (or rewrite it: {_REPACKAGE})") from None
    _check_tensors(block, entry, state, reference)
    model = irnet(block, num_classes=entry["num_classes"], **kwargs)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval()
