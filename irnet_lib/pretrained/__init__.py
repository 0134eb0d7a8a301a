"""IR-NET trained on Fashion-MNIST, one network per block, to look inside (notebooks 02, 03, 06).

    model = irnet_lib.load_pretrained("condconv")     # eval mode, 10 classes, verified first

The weights are stored in fp16 beside this file; ``manifest.json`` says for each file what it is:
the data it was trained on, the recipe, the hardware, its test accuracy and its sha256, which
:func:`load_pretrained` checks before it reads the file. ``tools/package_pretrained.py`` writes
them from a run folder's ``best.pt``. These are Fashion-MNIST networks (10 classes, 28 px images
enlarged to 64 px): not the paper's ImageNet-100 result.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

__all__ = ["load_pretrained", "manifest", "FOLDER"]

FOLDER = Path(__file__).resolve().parent


def manifest() -> dict:
    """What each stored network is: ``{block: {"file", "sha256", "data", "recipe", "test_acc", ...}}``."""
    path = FOLDER / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the trained networks come with the repository; restore it "
                                "with git checkout irnet_lib/pretrained/")
    return json.loads(path.read_text())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_pretrained(block: str, device="cpu") -> nn.Module:
    """The IR-NET with ``block`` ("standard", "se" or "condconv") trained on Fashion-MNIST, in eval
    mode, in fp32 on ``device``, after checking its file against the manifest's sha256."""
    from .. import irnet
    entries = manifest()
    if block not in entries:
        raise ValueError(f"no trained network for block {block!r}; there are {sorted(entries)}")
    entry = entries[block]
    path = FOLDER / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; restore it with git checkout irnet_lib/pretrained/"
                                f"{entry['file']} (or retrain: tools/package_pretrained.py)")
    digest = _sha256(path)
    if digest != entry["sha256"]:
        raise ValueError(f"{path} does not match its manifest (sha256 {digest[:12]}..., expected "
                         f"{entry['sha256'][:12]}...): the file is damaged or was replaced; restore it with "
                         f"git checkout irnet_lib/pretrained/{entry['file']}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = irnet(block, num_classes=entry["num_classes"], **entry.get("model_kwargs", {}))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval()
