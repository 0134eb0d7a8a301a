"""Datasets: what :func:`load_dataset` returns (:class:`ImageData`) and the formats it reads.

Every dataset is served as RGB images whose short side is 64 px (``image_size``): Fashion-MNIST's
28x28 grey images are enlarged to 64x64 and given three equal channels, so that the course's
transforms (RandomResizedCrop(56) / Resize(64)+CenterCrop(56), flip, normalisation) run unchanged.
Items are ``(image, label)`` with the image a uint8 CHW tensor (in-memory formats) or a PIL RGB
image (image folders), which is what torchvision's transforms take.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from .imagenet import load_imagenet64_100, load_imagenet64_npz
from .images import REPO_DATA, FolderImages, ImageData, TensorImages, load_rgb, stratified_indices, targets_of, to_rgb  # noqa: F401
from .transforms import RESIZE

DATASETS = ("fashion-mnist-sample", "fashion-mnist", "imagenet64-100", "imagenet64-npz")

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
SAMPLE_FILE = "fashion-mnist-sample.npz"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


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
    if path is not None:   # asked for by name: that folder or an error, never another copy
        dirs = dirs[:1]
        if not Path(path).is_dir():
            raise FileNotFoundError(f"path={str(path)!r}: no such folder. Pass the folder that holds the four "
                                    "Fashion-MNIST IDX files, or leave path out to search the usual places.")
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


def _load_sample(root: Path, download: bool = False) -> ImageData:  # noqa: ARG001 - committed: nothing to download
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


def _builders() -> dict:
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
