"""The paper's data: the course's ImageNet-100 zips, and the "Downsampled ImageNet 64x64" batches.

``imagenet64-100``: the six zips of the course repository (``IMAGENET64_FILES``), unpacked into
``root/imagenet64/train`` (Train1-5) and ``root/imagenet64/val`` (Val1) and read with ImageFolder,
as the course did. Images keep their aspect ratio (short side 64).

``imagenet64-npz``: Chrabaszcz, Loshchilov & Hutter (2017)'s files ``train_data_batch_1..10`` and
``val_data`` (Python-2 pickles, or ``.npz``), each holding ``data`` (uint8 N x 12288: the red
plane, then green, then blue, each 64x64 row-major) and ``labels`` (1..1000, ILSVRC devkit order).
A 100-class subset is taken by a documented rule and relabelled 0..99 in the order of the chosen
original labels:

- ``class_rule="every10"`` (default): original labels 1, 11, 21, ..., 991 (every 10th class);
- ``class_rule="first100"``: original labels 1..100;
- ``classes=[...]``: an explicit list of original (1-based) labels, any length, in the order given.
"""
from __future__ import annotations

import pickle
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch

from . import download as _download
from .images import FolderImages, ImageData, TensorImages
from .transforms import RESIZE

IGNORED_ARCHIVE_ENTRIES = ("__MACOSX",)  # resource forks macOS adds to zips: never images


# ----------------------------------------------------------------------------------------------
# imagenet64-100: the course's zips
# ----------------------------------------------------------------------------------------------
def _has_class_dirs(d: Path) -> bool:
    return d.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in d.iterdir())


def _imagenet_help(base: Path) -> str:
    train = ", ".join(_download.IMAGENET64_FILES["train"])
    return (f"Put the course's six archives ({train} and Val1.zip, each from "
            f"{_download.IMAGENET64_URL.format('<name>')}) in {base}/, or unpack them yourself: the Train zips "
            f"into {base / 'train'}/ and Val1.zip into {base / 'val'}/ (one folder per class, named by WordNet id). "
            f"Or pass download=True where there is internet (about 1.5 GB).")


def _entries(d: Path):
    return [p for p in d.iterdir() if not p.name.startswith(".") and p.name not in IGNORED_ARCHIVE_ENTRIES]


def _class_level(d: Path) -> Path:
    """The folder inside an unpacked archive whose sub-folders are the classes: descend through a
    single wrapping folder (``train/``, ``Train1/``...) when the archive has one."""
    while True:
        entries = _entries(d)
        if len(entries) == 1 and entries[0].is_dir() and any(p.is_dir() for p in _entries(entries[0])):
            d = entries[0]
        else:
            return d


def unpack_archive(zip_path: Path, dest: Path) -> int:
    """Unpack one course zip into ``dest`` (class folders merged across zips); returns the image count."""
    tmp = dest.parent / f".unpack-{zip_path.stem}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(tmp)  # zipfile drops absolute paths and '..' from member names
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"cannot unpack {zip_path} ({e}): delete it and download it again") from e
    top = _class_level(tmp)
    loose = [p for p in _entries(top) if p.is_file()]
    if loose:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"{zip_path} holds files outside class folders (e.g. {loose[0].name}); the course's "
                         f"archives hold one folder per class")
    count = 0
    for class_dir in _entries(top):
        target = dest / class_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for f in class_dir.rglob("*"):
            if f.is_file():
                out = target / f.name
                if out.exists():
                    raise ValueError(f"{zip_path}: {class_dir.name}/{f.name} is also in another archive")
                shutil.move(str(f), out)
                count += 1
    shutil.rmtree(tmp, ignore_errors=True)
    return count


def prepare_imagenet64(root, download: bool = False, progress: bool = True) -> Path:
    """Make ``root/imagenet64/{train,val}`` exist: unpack the six zips found in ``root/imagenet64``
    or ``root`` (downloading the missing ones when ``download``), checking each archive first.
    A split is unpacked into a temporary folder and renamed into place only when complete."""
    root = Path(root)
    base = root / "imagenet64"
    for split, names in _download.IMAGENET64_FILES.items():
        final = base / split
        if _has_class_dirs(final):
            continue
        zips, missing = [], []
        for name in names:
            found = next((d / name for d in (base, root) if (d / name).is_file()), None)
            if found is None and download:
                try:
                    found = _download.download_file(_download.IMAGENET64_URL.format(name), base / name,
                                                    progress=progress)
                except OSError as e:  # URLError, timeouts: offline
                    raise RuntimeError(f"downloading {name} failed ({e}). " + _imagenet_help(base)) from e
            (zips if found else missing).append(found or name)
        if missing:
            raise FileNotFoundError(f"imagenet64-100: {split} images missing, and so are {', '.join(missing)}. "
                                    + _imagenet_help(base))
        for z in zips:
            _download.check_zip(z)
        work = base / f".{split}-unpacking"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for z in zips:
            unpack_archive(z, work)
        if final.exists():
            final.rmdir()  # empty (else it would have class folders): safe to replace
        work.rename(final)
    return base


def load_imagenet64_100(root, download: bool = False, cache: bool = True, progress: bool = True) -> ImageData:
    root = Path(root)
    base = root / "imagenet64"
    if not (_has_class_dirs(base / "train") and _has_class_dirs(base / "val")):
        prepare_imagenet64(root, download=download, progress=progress)
    train, test = FolderImages(base / "train"), FolderImages(base / "val")
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_val = sorted(set(test.classes) - set(train.classes))
        raise ValueError(f"{base}: train has {len(train.classes)} classes and val {len(test.classes)}; "
                         f"only in train: {only_train[:5]}, only in val: {only_val[:5]}. Unpack the same archives "
                         f"again (delete train/ and val/ first).")
    return ImageData("imagenet64-100", list(train.classes), train, test, RESIZE, source=str(base),
                     cache_dir=(root / "cache") if cache else None)


# ----------------------------------------------------------------------------------------------
# imagenet64-npz: Downsampled ImageNet 64x64
# ----------------------------------------------------------------------------------------------
CLASS_RULES = {"every10": lambda n: list(range(1, n + 1, 10)), "first100": lambda _n: list(range(1, 101))}
PIXELS = 64 * 64 * 3


def read_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """``data`` (uint8 N x 12288) and ``labels`` (int64, as stored) of one batch file (npz or pickle)."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                content = {k: z[k] for k in z.files}
        else:
            with open(path, "rb") as f:
                content = pickle.load(f, encoding="latin1")  # the original files are Python-2 pickles
    except (OSError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read {path}: {e}. The file is corrupt or truncated: download it again") from e
    if not isinstance(content, dict) or not {"data", "labels"} <= set(content):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise ValueError(f"{path} must hold the arrays 'data' and 'labels' (Downsampled ImageNet format); "
                         f"found {found}")
    data, labels = np.asarray(content["data"]), np.asarray(content["labels"]).reshape(-1).astype(np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise ValueError(f"{path}: 'data' must be uint8 of shape (N, {PIXELS}) (64x64 RGB planes), got "
                         f"{data.dtype} {data.shape}; the 32x32 and 16x16 variants are not supported")
    if len(data) != len(labels):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def _batch_files(d: Path, prefix: str) -> list[Path]:
    """Files named ``prefix`` or ``prefix<n>``, with or without .npz / .pkl / .pickle; npz wins a tie."""
    pat = re.compile(rf"^{prefix}(\d*)(\.npz|\.pkl|\.pickle)?$")
    by_stem = {}
    for p in sorted(d.rglob(f"{prefix}*")):
        m = pat.match(p.name)
        if m and p.is_file():
            stem = m.group(1)
            if stem not in by_stem or p.suffix == ".npz":
                by_stem[stem] = p
    return [by_stem[k] for k in sorted(by_stem, key=lambda s: int(s) if s else 0)]


def _class_names(d: Path, chosen: list[int]) -> list[str]:
    """Names from the devkit's ``map_clsloc.txt`` (``wnid label name`` per line) when it is beside the
    files, otherwise ``label_<original label>``."""
    mapping = next(iter(sorted(d.rglob("map_clsloc.txt"))), None)
    names = {}
    if mapping is not None:
        for line in mapping.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1].isdigit():
                names[int(parts[1])] = f"{parts[0]} {parts[2]}"
    return [names.get(c, f"label_{c:04d}") for c in chosen]


def load_imagenet64_npz(root, download: bool = False, path=None, classes=None, class_rule: str = "every10",
                        num_source_classes: int = 1000) -> ImageData:
    d = Path(path) if path is not None else Path(root) / "imagenet64-npz"
    help_ = (f"Put train_data_batch_1..10 and val_data (pickles or .npz, from https://image-net.org/download-images "
             f"'Downsampled ImageNet 64x64', which needs a login) in {d}/, or pass path=<folder>.")
    if download:
        raise ValueError("imagenet64-npz cannot be downloaded automatically (image-net.org needs a login). " + help_)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} does not exist. " + help_)
    train_files, val_files = _batch_files(d, "train_data_batch_"), _batch_files(d, "val_data")
    if not train_files or not val_files:
        raise FileNotFoundError(f"{d}: found {len(train_files)} train batch file(s) and {len(val_files)} val_data "
                                f"file(s); both are needed. " + help_)
    if classes is not None:
        chosen = [int(c) for c in classes]
        bad = [c for c in chosen if not 1 <= c <= num_source_classes]
        if bad or len(set(chosen)) != len(chosen) or not chosen:
            raise ValueError(f"classes must be distinct original labels in 1..{num_source_classes} (1-based), "
                             f"got {list(classes)}")
    elif class_rule in CLASS_RULES:
        chosen = CLASS_RULES[class_rule](num_source_classes)
    else:
        raise ValueError(f"class_rule must be one of {list(CLASS_RULES)} (or pass classes=[...]), got {class_rule!r}")
    lut = np.full(num_source_classes + 1, -1, dtype=np.int64)
    lut[chosen] = np.arange(len(chosen))

    def split(files):
        xs, ys = [], []
        for f in files:
            data, labels = read_batch(f)
            if len(labels) and (labels.min() < 1 or labels.max() > num_source_classes):
                hint = " (they look 0-based: add 1)" if labels.min() == 0 else ""
                raise ValueError(f"{f}: labels must lie in 1..{num_source_classes}, found {labels.min()}.."
                                 f"{labels.max()}{hint}")
            new = lut[labels]
            keep = new >= 0
            xs.append(data[keep].reshape(-1, 3, 64, 64))
            ys.append(new[keep])
        x, y = np.concatenate(xs), np.concatenate(ys)
        empty = [chosen[k] for k in np.flatnonzero(np.bincount(y, minlength=len(chosen)) == 0)]
        if empty:
            raise ValueError(f"{d}: no images of the original label(s) {empty[:10]} in {[f.name for f in files]}; "
                             f"choose other classes or add the missing batch files")
        return TensorImages(torch.from_numpy(x), torch.from_numpy(y))

    train, test = split(train_files), split(val_files)
    return ImageData("imagenet64-npz", _class_names(d, chosen), train, test, RESIZE, source=str(d))
