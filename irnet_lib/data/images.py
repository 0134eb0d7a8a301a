"""The two kinds of dataset (images in memory, an image folder on disk) and :class:`ImageData`,
what :func:`irnet_lib.data.load_dataset` returns; the formats themselves are read in
:mod:`.datasets` (Fashion-MNIST, the embedded sample) and :mod:`.imagenet` (the paper's data).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from ..checks import check_int
from .transforms import RESIZE

# The repository's own data/ folder: the committed sample lives there, whatever the working directory
REPO_DATA = Path(__file__).resolve().parents[2] / "data"


# ----------------------------------------------------------------------------------------------
# The two kinds of dataset: images in memory (a uint8 tensor) and an image folder (files on disk)
# ----------------------------------------------------------------------------------------------
class TensorImages(Dataset):
    """Images held in memory as uint8 ``(N, C, h, w)`` (C = 1 or 3), served as 3 x size x size.

    Storing them at their own size (28x28 grey for Fashion-MNIST: 784 bytes instead of 12,288)
    keeps all of Fashion-MNIST in 55 MB; they are enlarged (bilinear) when read.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, size: int = RESIZE):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be uint8 (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.images, self.targets, self.size = images, torch.as_tensor(targets, dtype=torch.int64), size

    def __len__(self):
        return len(self.images)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size):
            x = v2.functional.resize(x, [self.size, self.size], antialias=True)
        return x

    def __getitem__(self, i):
        x = self._resize(self.images[i])
        return x.expand(3, -1, -1).contiguous(), int(self.targets[i])

    def uint8_images(self, indices=None, progress: bool = False) -> torch.Tensor:  # noqa: ARG002 - in memory, no bar
        """All (or the indexed) images at size x size, uint8 ``(n, C, size, size)``, in batches."""
        idx = torch.arange(len(self)) if indices is None else torch.as_tensor(indices, dtype=torch.int64)
        out = torch.empty(len(idx), self.images.shape[1], self.size, self.size, dtype=torch.uint8)
        for s in range(0, len(idx), 4096):
            out[s:s + 4096] = self._resize(self.images[idx[s:s + 4096]])
        return out


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as RGB: grey, CMYK, palette and 16-bit images converted; transparency
    (RGBA, LA, palette with a transparent colour) composited on white rather than dropped, since
    the colour under a transparent pixel is arbitrary."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scaled by the format's range (not by the image's own maximum, which would
        # turn a dark image white), instead of letting convert() clip everything above 255. Mode "I"
        # holds 16-bit files too (PNG); it counts as 32-bit only where a value needs it.
        arr = np.asarray(image, dtype=np.float64).clip(min=0)
        top = 65535.0 if image.mode != "I" or not arr.size or arr.max() <= 65535 else 2.0**31 - 1
        return Image.fromarray((arr * (255.0 / top)).round().astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str) -> Image.Image:
    """Read one image file as RGB; a corrupt or truncated file is an error that names the file."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later inside a transform
            return to_rgb(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {e}. The file is corrupt or truncated: replace it "
                         f"(unpack or download its archive again) or delete it.") from e


def _decode_64(path: str, size: int = RESIZE) -> torch.Tensor:
    """The tensor cache's view of a file: Resize(size) then CenterCrop(size), uint8 3 x size x size."""
    im = v2.functional.resize(load_rgb(path), [size], antialias=True)
    return v2.functional.pil_to_tensor(v2.functional.center_crop(im, [size, size]))


class FolderImages(ImageFolder):
    """``torchvision.datasets.ImageFolder`` (one folder per class, labels = sorted folder names)
    whose images are always RGB and whose bad files are errors that name them.

    Files that ImageFolder would skip without a word (names without an image extension, files
    beside the class folders) are counted and reported with a warning.
    """

    def __init__(self, root, size: int = RESIZE):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise FileNotFoundError(f"image folder {root} is empty: it must hold one sub-folder per class "
                                    f"with that class's images (root/<class>/<image>.JPEG)")
        try:
            super().__init__(str(root), loader=load_rgb)
        except FileNotFoundError as e:
            empty = [p.name for p in class_dirs if not any(p.iterdir())]
            raise FileNotFoundError(f"{root}: class folder(s) with no images: {', '.join(empty) or '?'} ({e}). "
                                    f"Every class needs images: restore them (unpack the archives again) or "
                                    f"remove the empty folder(s).") from e
        self.size = size
        self.targets_tensor = torch.as_tensor(self.targets, dtype=torch.int64)
        skipped = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and str(p) not in self._sample_set()]
        if skipped:
            warnings.warn(f"{root}: {len(skipped)} file(s) are not images ImageFolder reads and are left out, "
                          f"e.g. {skipped[0]}", stacklevel=3)

    def _sample_set(self):
        if not hasattr(self, "_samples_cache"):
            self._samples_cache = {p for p, _ in self.samples}
        return self._samples_cache

    def fingerprint(self, indices=None) -> str:
        """A digest of the files (path, size, time) so a cached decoding is reused only if unchanged."""
        h = hashlib.sha1(str(self.size).encode())
        samples = self.samples if indices is None else [self.samples[i] for i in indices]
        for path, label in samples:
            st = os.stat(path)
            h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
        return h.hexdigest()[:16]

    def uint8_images(self, indices=None, progress: bool = False) -> torch.Tensor:
        """Decode the (indexed) files into uint8 ``(n, 3, size, size)``, with worker processes."""
        from tqdm.auto import tqdm
        paths = [p for p, _ in self.samples] if indices is None else [self.samples[i][0] for i in indices]
        decode = _Decode(paths, self.size)
        workers = min(8, os.cpu_count() or 1) if len(paths) > 2000 else 0
        loader = torch.utils.data.DataLoader(decode, batch_size=256, num_workers=workers)
        out = torch.empty(len(paths), 3, self.size, self.size, dtype=torch.uint8)
        s = 0
        for batch in tqdm(loader, desc="decoding images", unit="batch", disable=not progress):
            out[s:s + len(batch)] = batch
            s += len(batch)
        return out


class _Decode(Dataset):
    def __init__(self, paths, size):
        self.paths, self.size = paths, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return _decode_64(self.paths[i], self.size)


def _base_and_indices(ds):
    """Undo (nested) ``Subset``s: the underlying dataset and the indices into it."""
    indices = None
    while isinstance(ds, Subset):
        idx = torch.as_tensor(ds.indices, dtype=torch.int64)
        indices = idx if indices is None else idx[indices]
        ds = ds.dataset
    return ds, indices


def targets_of(ds) -> torch.Tensor:
    """The labels of a dataset (or Subset) without reading a single image."""
    base, idx = _base_and_indices(ds)
    t = getattr(base, "targets_tensor", None)
    if t is None:
        t = torch.as_tensor(base.targets, dtype=torch.int64)
    return t if idx is None else t[idx]


def uint8_images_of(ds, progress: bool = False) -> torch.Tensor:
    base, idx = _base_and_indices(ds)
    if not hasattr(base, "uint8_images"):
        raise TypeError(f"{type(base).__name__} has no uint8_images(); the tensor pipeline needs a TensorImages "
                        f"or FolderImages dataset")
    return base.uint8_images(None if idx is None else idx.tolist(), progress=progress)


def stratified_indices(targets, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` indices drawn per class in proportion to the class sizes (so class-balanced data stays
    balanced), seeded, returned sorted. Rounding leftovers go to the classes with the largest
    fractional share."""
    targets = torch.as_tensor(targets, dtype=torch.int64)
    total = len(targets)
    check_int("a subset size", n)
    if n > total:
        raise ValueError(f"asked for a subset of {n} images but the split has only {total}; "
                         f"pass a smaller number or None for all of it")
    classes, counts = torch.unique(targets, return_counts=True)
    share = counts.double() * n / total
    quota = share.floor().long()
    rest = n - int(quota.sum())
    if rest:
        quota[torch.argsort(share - quota, descending=True, stable=True)[:rest]] += 1
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c, q in zip(classes.tolist(), quota.tolist()):
        members = torch.nonzero(targets == c).flatten()
        picked.append(members[torch.randperm(len(members), generator=g)[:q]])
    return torch.sort(torch.cat(picked)).values


# ----------------------------------------------------------------------------------------------
# ImageData: what load_dataset returns
# ----------------------------------------------------------------------------------------------
@dataclass
class ImageData:
    """A dataset's two splits, its class names and where it came from.

    ``train`` / ``test`` are torch Datasets of ``(image, label)``; ``image_size`` is the short side
    the images are served at (64). ``cache_dir`` is where the tensor pipeline keeps its decoded
    uint8 copy of image folders (None: decoded in memory each time, as for in-memory formats).
    """

    name: str
    classes: list[str]
    train: Dataset
    test: Dataset
    image_size: int = RESIZE
    source: str = ""
    cache_dir: Path | None = None
    _tensor_cache: dict = field(default_factory=dict, repr=False, init=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, split: str) -> Dataset:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self.train if split == "train" else self.test

    def targets(self, split: str) -> torch.Tensor:
        return targets_of(self.split(split))

    def describe(self) -> pd.DataFrame:
        """Images per class and split (rows: classes, columns: train, test)."""
        rows = {}
        for s in ("train", "test"):
            counts = torch.bincount(self.targets(s), minlength=self.num_classes)
            rows[s] = counts.tolist()
        df = pd.DataFrame(rows, index=pd.Index(self.classes, name="class"))
        return df

    def __str__(self):
        source = self.source
        try:  # inside the repository: a short path that reads the same on every machine
            source = Path(source).resolve().relative_to(REPO_DATA.parent).as_posix()
        except ValueError:
            pass
        return (f"{self.name}: {self.num_classes} classes, {len(self.train)} train + {len(self.test)} test "
                f"images, {self.image_size} px, from {source}")

    def tensor_cache(self, split: str, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The split decoded once into uint8 ``(N, C, 64, 64)`` (C = 1 for grey data) and its int64
        labels, on the CPU. Image folders are decoded once and the result kept on disk in
        ``cache_dir`` (reused while the files are unchanged); in-memory formats are resized in
        memory (seconds)."""
        if split in self._tensor_cache:
            return self._tensor_cache[split]
        ds = self.split(split)
        labels = targets_of(ds)
        base, idx = _base_and_indices(ds)
        path = None
        if self.cache_dir is not None and isinstance(base, FolderImages):
            key = base.fingerprint(None if idx is None else idx.tolist())
            path = Path(self.cache_dir) / f"{self.name}-{split}-{len(labels)}-{key}.pt"
        if path is not None and path.exists():
            images = torch.load(path, weights_only=True)["images"]
        else:
            images = uint8_images_of(ds, progress=progress)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".pt.part")
                torch.save({"images": images}, tmp)
                os.replace(tmp, path)  # a crash never leaves a half-written cache behind
        self._tensor_cache[split] = (images, labels)
        return images, labels
