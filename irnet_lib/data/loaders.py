"""Loaders: batches of normalised 56x56 crops, two ways, with one interface.

``make_loader(data, "train" | "test", ...)`` returns

- a :class:`TensorLoader` (``pipeline="tensor"``, the default): the split is decoded once into a
  uint8 tensor (``ImageData.tensor_cache``), moved to ``device`` and cropped, flipped and normalised
  there a whole batch at a time (:class:`~irnet_lib.data.transforms.TensorTransform`). On a GPU
  this never waits for the CPU; on a CPU it is still faster than per-image transforms.
- a :class:`TorchvisionLoader` (``pipeline="torchvision"``): the classic ``DataLoader`` with the
  course's torchvision transforms applied image by image in worker processes.

The tensor copy holds 64x64 images: the course's ImageNet images (short side 64, long side >= 64)
are kept as their central 64x64 square (``Resize(64)`` + ``CenterCrop(64)``). The test batches
are unchanged by this (the test transform keeps only the central 56x56 anyway); the train crops of
a non-square image are then drawn from its central square instead of the whole image, a small
departure from the torchvision pipeline for that dataset only (Fashion-MNIST and the npz format
are square, and there the two pipelines draw from the same distribution).

Both have ``len()`` (batches per epoch, last partial batch kept), ``num_samples`` (images this rank
sees per epoch) and ``set_epoch(epoch)``: the order and the random crops are a deterministic
function of ``(seed, epoch)`` (and of ``rank`` for the crops), whatever the number of workers.
For DDP the data are sharded like ``DistributedSampler``: the train split's shuffled order is
padded (by repeating its start) to a multiple of ``world_size`` so every rank gets the same
number of batches; the test split is split without padding so each image is evaluated once.
"""
from __future__ import annotations

import hashlib
import math
import os

import torch
from torch.utils.data import DataLoader, Dataset

from ..checks import check_int
from .images import ImageData
from .transforms import CROP_SIZE, TensorTransform, check_test_crop, test_transform, train_transform

PIPELINES = ("auto", "tensor", "torchvision")


def _seed(*parts) -> int:
    """A 63-bit seed from (seed, epoch, ...): independent streams without arithmetic collisions."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


class _Loader:
    def __init__(self, data: ImageData, split: str, batch_size: int, device, seed: int, rank: int,
                 world_size: int, channels_last: bool):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.data, self.split, self.batch_size = data, split, batch_size
        self.num_classes = data.num_classes
        self.device = torch.device(device)
        self.seed, self.rank, self.world_size, self.channels_last = seed, rank, world_size, channels_last
        self.train = split == "train"
        self.dataset = data.split(split)
        self.size = len(self.dataset)
        if self.size == 0:
            raise ValueError(f"{data.name}: the {split} split is empty")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def num_samples(self) -> int:
        if self.train:
            return math.ceil(self.size / self.world_size)
        return len(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def indices(self) -> torch.Tensor:
        """This rank's indices into the split for the current epoch, in order."""
        if self.train:
            g = torch.Generator().manual_seed(_seed(self.seed, self.epoch, "order"))
            order = torch.randperm(self.size, generator=g)
            pad = self.num_samples * self.world_size - self.size
            if pad:
                order = torch.cat([order, order[:pad]])
        else:
            order = torch.arange(self.size)
        return order[self.rank::self.world_size]

    def describe(self) -> dict:
        """The pipeline, for a run's metadata: its name, and where it departs from the course's transforms."""
        return {"name": self.pipeline, "exact": not self.approximations, "approximations": self.approximations}

    def _finish(self, x, y):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def __repr__(self):
        return (f"{type(self).__name__}({self.data.name}, {self.split}, {self.num_samples} images in {len(self)} "
                f"batches of {self.batch_size}, device={self.device})")


class TensorLoader(_Loader):
    """Batches cropped from a uint8 tensor copy of the split kept on ``device``."""

    pipeline = "tensor"
    #: Where its training batches depart from the course's torchvision transforms (the test batches
    #: are exact). Measured in notebook 00 / tests/test_data_transforms.py.
    approximations = ("train crops resized by roi_align (bilinear, adaptive sampling), close to but not equal to "
                      "torchvision's antialiased resize: 0.3 grey levels of 255 apart on average, up to 20 at "
                      "edges; non-square images (ImageNet-100) cropped from their central 64x64 square")

    def __init__(self, data, split, batch_size=256, *, device="cpu", seed=0, rank=0, world_size=1,
                 channels_last=False, progress=None, test_crop=CROP_SIZE):
        super().__init__(data, split, batch_size, device, seed, rank, world_size, channels_last)
        if progress is None:  # a bar only where decoding takes a while (image folders of real size)
            progress = self.size > 20000
        images, labels = data.tensor_cache(split, progress=progress)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.transform = TensorTransform(train=True) if self.train else TensorTransform(train=False, size=test_crop)

    def __iter__(self):
        order = self.indices().to(self.device)
        g = torch.Generator(device=self.device).manual_seed(_seed(self.seed, self.epoch, self.rank, "crops"))
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            x = self.transform(self.images[idx], generator=g if self.train else None)
            yield self._finish(x, self.labels[idx])


class _Transformed(Dataset):
    """(image, label) -> (transformed image, label); each train image's random crop is seeded by
    (seed, epoch, index), so it does not depend on the worker that happens to load it."""

    def __init__(self, dataset, transform, seed, train):
        self.dataset, self.transform, self.seed, self.train, self.epoch = dataset, transform, seed, train, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, label = self.dataset[i]
        if not self.train:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed(self.seed, self.epoch, int(i), "crop"))
            return self.transform(image), label


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


class TorchvisionLoader(_Loader):
    """``torch.utils.data.DataLoader`` with the course's torchvision transforms, image by image."""

    pipeline = "torchvision"
    approximations = ""

    def __init__(self, data, split, batch_size=256, *, device="cpu", seed=0, rank=0, world_size=1,
                 channels_last=False, num_workers=None, test_crop=CROP_SIZE):
        super().__init__(data, split, batch_size, device, seed, rank, world_size, channels_last)
        if num_workers is not None:
            check_int("num_workers", num_workers, minimum=0, why=" (0: load in the main process)")
        self.num_workers = default_workers() if num_workers is None else num_workers
        transform = train_transform() if self.train else test_transform(size=test_crop)
        self.transformed = _Transformed(self.dataset, transform, seed, self.train)

    def __iter__(self):
        self.transformed.epoch = self.epoch  # workers start at iter() and copy the dataset with this epoch
        loader = DataLoader(self.transformed, batch_size=self.batch_size, sampler=self.indices().tolist(),
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda", drop_last=False)
        for images, labels in loader:
            yield self._finish(images.to(self.device, non_blocking=True),
                               labels.to(self.device, dtype=torch.int64, non_blocking=True))


def make_loader(data: ImageData, split: str, batch_size: int = 256, *, device="cpu", pipeline: str = "auto",
                seed: int = 0, rank: int = 0, world_size: int = 1, channels_last: bool = False,
                num_workers: int | None = None, test_crop: int = CROP_SIZE):
    """A loader of ``(x, y)`` batches: x float32 (B, 3, 56, 56) normalised, y int64, both on ``device``.

    ``split="train"``: RandomResizedCrop(56) + flip, shuffled; ``"test"``: Resize(64) + CenterCrop(56),
    in order. ``pipeline``: "tensor" (= "auto") or "torchvision" (``num_workers`` applies to it only;
    default min(8, CPU count)). ``test_crop``: the test split's centre crop, 56 as the course, or up
    to 64, the whole image (beyond the paper). See the module's docstring for epochs and sharding.
    """
    if not isinstance(data, ImageData):
        raise TypeError(f"make_loader needs the ImageData that load_dataset returns, got {type(data).__name__}")
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    kw = dict(device=device, seed=seed, rank=rank, world_size=world_size, channels_last=channels_last,
              test_crop=check_test_crop(test_crop))
    if pipeline == "torchvision":
        return TorchvisionLoader(data, split, batch_size, num_workers=num_workers, **kw)
    return TensorLoader(data, split, batch_size, **kw)
