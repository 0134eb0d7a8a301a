"""Data for IR-NET: the paper's dataset (ImageNet, 100 classes, 64 px) and real offline data.

One call gives a dataset, one more gives a fast loader::

    from irnet_lib.data import load_dataset, make_loader
    data = load_dataset("fashion-mnist-sample")          # committed in data/, no network
    train = make_loader(data, "train", batch_size=256, device="cuda")
    for epoch in range(epochs):
        train.set_epoch(epoch)
        for x, y in train: ...                            # x: (B, 3, 56, 56) float32, normalised

Datasets (``DATASETS``):

- ``"fashion-mnist-sample"``: 1,600 real Fashion-MNIST images (120 train + 40 test per class) committed in ``data/``.
- ``"fashion-mnist"``: all of Fashion-MNIST, from a path, torchvision's folder or Debian's package.
- ``"imagenet64-100"``: the course's six zips (the paper's data), unpacked and read with ImageFolder.
- ``"imagenet64-npz"``: "Downsampled ImageNet 64x64" batches, a 100-class subset.

Every dataset is served as 64 px RGB images so that the course's transforms (crop to 56, flip,
normalise) run unchanged on all of them.
"""
from .datasets import DATASETS, ImageData, load_dataset, stratified_indices
from .download import IMAGENET64_FILES, IMAGENET64_URL, download_file
from .loaders import TensorLoader, TorchvisionLoader, make_loader
from .transforms import (
                         CROP_SIZE,
                         IMAGENET_MEAN,
                         IMAGENET_STD,
                         RESIZE,
                         TensorTransform,
                         sample_crop_boxes,
                         test_transform,
                         train_transform,
)

__all__ = ["DATASETS", "ImageData", "load_dataset", "make_loader", "TensorLoader", "TorchvisionLoader",
           "train_transform", "test_transform", "TensorTransform", "sample_crop_boxes", "stratified_indices",
           "download_file", "IMAGENET64_FILES", "IMAGENET64_URL", "IMAGENET_MEAN", "IMAGENET_STD", "RESIZE",
           "CROP_SIZE"]
