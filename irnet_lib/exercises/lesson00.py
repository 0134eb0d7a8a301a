"""Notebook 00 · Data: its exercises."""
from __future__ import annotations

import torch

from .core import Exercise


def _batches_per_epoch() -> int:
    from ..data import load_dataset, make_loader
    from ..notebook import ROOT
    return len(make_loader(load_dataset("fashion-mnist-sample", ROOT / "data"), "train", batch_size=256))


def _white_pixel_red() -> float:
    """A white 64 px image through the course's test transform: the red channel of its first pixel."""
    from ..data import test_transform
    white = torch.full((3, 64, 64), 255, dtype=torch.uint8)
    return test_transform()(white)[0, 0, 0].item()


def _test_area_kept() -> float:
    """The share of a 64 px image's pixels that the course's test transform keeps."""
    from ..data import RESIZE, test_transform
    image = torch.zeros(3, RESIZE, RESIZE, dtype=torch.uint8)
    return test_transform()(image)[0].numel() / image[0].numel()


EXERCISES = {
    "00.1": Exercise(_batches_per_epoch,
                     hint="a loader's length is its number of batches: train images / batch size, rounded up "
                          "(the last, partial batch is kept); section 1 prints how many train images the sample has."),
    "00.2": Exercise(_white_pixel_red, rtol=5e-3,
                     hint="the pixel is 1.0 after ToDtype; Normalize computes (value - mean) / std with the red "
                          "channel's constants, the first of IMAGENET_MEAN and IMAGENET_STD."),
    "00.3": Exercise(_test_area_kept, rtol=1e-3,
                     hint="Resize(64) leaves a 64 px image as it is; CenterCrop(56) keeps a 56 x 56 square of its "
                          "64 x 64 pixels. A share, between 0 and 1, not a percentage."),
}
