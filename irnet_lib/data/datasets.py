"""Datasets: what :func:`load_dataset` returns (:class:`ImageData`) and the formats it reads.

Every dataset is served as RGB images whose short side is 64 px (``image_size``): Fashion-MNIST's
28x28 grey images are enlarged to 64x64 and given three equal channels, so that the course's
transforms (RandomResizedCrop(56) / Resize(64)+CenterCrop(56), flip, normalisation) run unchanged.
Items are ``(image, label)`` with the image a uint8 CHW tensor (in-memory formats) or a PIL RGB
image (image folders), which is what torchvision's transforms take.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from .transforms import RESIZE

DATASETS = ("fashion-mnist-sample", "fashion-mnist", "imagenet64-100", "imagenet64-npz")

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
SAMPLE_FILE = "fashion-mnist-sample.npz"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
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

    def uint8_images(self, indices=None, progress: bool = False) -> torch.Tensor:
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
        # 16/32-bit grey: scale to 8 bits instead of letting convert() clip everything above 255
        arr = np.asarray(image, dtype=np.float64)
        top = arr.max() if arr.size and arr.max() > 0 else 1.0
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
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"a subset size must be a positive int, got {n!r}")
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


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX files) and the committed sample
# ----------------------------------------------------------------------------------------------
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (MNIST's format; gzipped or not) of unsigned bytes into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read {path}: {e}. The file is corrupt or truncated: download it again") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad header {raw[:4]!r})")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).tolist() if len(raw) >= 4 + 4 * ndim else None
    if dims is None:
        raise ValueError(f"{path}: truncated IDX header")
    start, need = 4 + 4 * ndim, int(np.prod(dims))
    if len(raw) - start != need:
        raise ValueError(f"{path}: header says {dims} = {need} bytes of data but the file has {len(raw) - start}; "
                         f"the file is truncated or corrupt: download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims).copy()  # writable, for torch


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def fashion_mnist_dirs(root: Path, path=None) -> list[Path]:
    """Where Fashion-MNIST is looked for, in order."""
    dirs = [Path(path)] if path is not None else []
    return dirs + [root / "FashionMNIST" / "raw", root / "fashion-mnist", DEBIAN_FASHION_MNIST]


def _read_fashion_dir(d: Path) -> dict:
    out = {}
    for split, (img_stem, lab_stem) in FASHION_FILES.items():
        images, labels = read_idx(_find_idx(d, img_stem)), read_idx(_find_idx(d, lab_stem))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{d}: {split} images {images.shape} and labels {labels.shape} do not match")
        out[split] = (images, labels)
    return out


def _tensor_split(images: np.ndarray, labels: np.ndarray, num_classes: int, where: str) -> TensorImages:
    labels = np.asarray(labels).astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{where}: labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return TensorImages(x, torch.from_numpy(labels))


def _load_fashion_mnist(root: Path, download: bool = False, path=None) -> ImageData:
    dirs = fashion_mnist_dirs(root, path)
    found = next((d for d in dirs if all(_find_idx(d, s) for pair in FASHION_FILES.values() for s in pair)), None)
    if found is None and download:
        from torchvision.datasets import FashionMNIST
        try:
            for train in (True, False):
                FashionMNIST(str(root), train=train, download=True)
        except Exception as e:  # no network: say where the files can go instead
            raise RuntimeError(f"downloading Fashion-MNIST into {root / 'FashionMNIST' / 'raw'} failed ({e}). "
                               + _fashion_help(dirs)) from e
        found = root / "FashionMNIST" / "raw"
    if found is None:
        raise FileNotFoundError("Fashion-MNIST not found. " + _fashion_help(dirs))
    arrays = _read_fashion_dir(found)
    train = _tensor_split(*arrays["train"], 10, str(found))
    test = _tensor_split(*arrays["test"], 10, str(found))
    return ImageData("fashion-mnist", list(FASHION_MNIST_CLASSES), train, test, RESIZE, source=str(found))


def _fashion_help(dirs) -> str:
    names = ", ".join(s + "[.gz]" for pair in FASHION_FILES.values() for s in pair)
    return (f"Looked in: {', '.join(str(d) for d in dirs)}. Put the four IDX files ({names}) in one of these "
            f"folders, pass path=<folder>, install Debian's package dataset-fashion-mnist, or pass download=True "
            f"where there is internet (torchvision downloads them).")


def _sample_path(root: Path) -> Path:
    for d in (root, REPO_DATA):
        if (d / SAMPLE_FILE).is_file():
            return d / SAMPLE_FILE
    raise FileNotFoundError(f"{SAMPLE_FILE} is neither in {root} nor in {REPO_DATA}. It is committed in the "
                            f"repository's data/ folder: clone the repository, or regenerate it with "
                            f"`python data/make_sample.py` (needs Fashion-MNIST's files)")


def read_sample(path) -> dict:
    """The committed sample's arrays: x_train, y_train, x_test, y_test (uint8 N x 28 x 28), classes."""
    keys = ("x_train", "y_train", "x_test", "y_test", "classes")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ValueError(f"{path} lacks the arrays {missing} (has {z.files}); regenerate it with "
                                 f"`python data/make_sample.py`")
            return {k: z[k] for k in keys}
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read {path}: {e}; regenerate it with `python data/make_sample.py`") from e


def _load_sample(root: Path, download: bool = False) -> ImageData:
    path = _sample_path(root)
    a = read_sample(path)
    classes = [str(c) for c in a["classes"]]
    train = _tensor_split(a["x_train"], a["y_train"], len(classes), str(path))
    test = _tensor_split(a["x_test"], a["y_test"], len(classes), str(path))
    return ImageData("fashion-mnist-sample", classes, train, test, RESIZE, source=str(path))


# ----------------------------------------------------------------------------------------------
# load_dataset
# ----------------------------------------------------------------------------------------------
def resolve_root(root) -> Path:
    """``"data"`` (the default) means ./data when it exists, else the repository's data/ folder,
    so notebooks (run from notebooks/) and scripts (run from the top) share one data folder."""
    p = Path(root)
    if str(root) == "data" and not p.is_dir() and REPO_DATA.is_dir():
        return REPO_DATA
    return p


def _builders() -> dict[str, Callable[..., ImageData]]:
    from .imagenet import load_imagenet64_100, load_imagenet64_npz
    return {"fashion-mnist-sample": _load_sample, "fashion-mnist": _load_fashion_mnist,
            "imagenet64-100": load_imagenet64_100, "imagenet64-npz": load_imagenet64_npz}


def load_dataset(name: str, root="data", *, download: bool = False, train_subset: int | None = None,
                 test_subset: int | None = None, num_classes: int | None = None, seed: int = 0,
                 **dataset_specific) -> ImageData:
    """Load one of :data:`DATASETS` by name.

    - ``root``: the data folder (downloads, unpacked files and caches go there).
    - ``download``: fetch missing files where there is internet (Fashion-MNIST, the course zips).
    - ``train_subset`` / ``test_subset``: keep that many images, drawn per class (stratified) with ``seed``.
    - ``num_classes``: the number of classes the model is built for; a dataset with another number
      is a ValueError.
    - ``dataset_specific``: ``path=`` (fashion-mnist, imagenet64-npz: the folder holding the files),
      ``classes=`` / ``class_rule=`` (imagenet64-npz: which 100 classes), ``cache=`` (imagenet64-100:
      keep the tensor pipeline's decoded copy on disk, default True).
    """
    builders = _builders()
    if name not in builders:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
    data = builders[name](resolve_root(root), download=download, **dataset_specific)
    if num_classes is not None and num_classes != data.num_classes:
        raise ValueError(f"{name} has {data.num_classes} classes but num_classes={num_classes} was asked for; "
                         f"build the model with num_classes={data.num_classes} (or pick the dataset that has "
                         f"{num_classes} classes)")
    if train_subset is not None:
        data.train = Subset(data.train, stratified_indices(targets_of(data.train), train_subset, seed).tolist())
    if test_subset is not None:
        data.test = Subset(data.test, stratified_indices(targets_of(data.test), test_subset, seed).tolist())
    return data
