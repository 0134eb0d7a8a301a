"""Datasets through the public API: the committed sample, Fashion-MNIST's IDX files, subsets, checks."""
import gzip

import numpy as np
import pytest
import torch
from PIL import Image

import irnet_lib.data.datasets as ds_mod
from irnet_lib.data import DATASETS, ImageData, load_dataset, stratified_indices
from irnet_lib.data.datasets import read_idx, to_rgb

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_idx(path, array, gz=True):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def tiny_fashion(folder, n_train=30, n_test=20, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz)
    return folder


def test_names():
    assert DATASETS == ("fashion-mnist-sample", "fashion-mnist", "imagenet64-100", "imagenet64-npz")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar10")


def test_embedded_sample_needs_nothing_from_outside(tmp_path):
    # an empty root: the committed sample is found in the repository's data/ folder
    data = load_dataset("fashion-mnist-sample", root=tmp_path)
    assert isinstance(data, ImageData)
    assert data.name == "fashion-mnist-sample" and data.num_classes == 10 and data.image_size == 64
    assert data.classes[0] == "T-shirt/top" and data.classes[-1] == "Ankle boot"
    table = data.describe()
    assert table.loc[:, "train"].tolist() == [120] * 10 and table.loc[:, "test"].tolist() == [40] * 10
    image, label = data.train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 64) and isinstance(label, int)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # grey -> three equal channels
    assert data.tensor_cache("train")[0].shape == (1200, 1, 64, 64)


def test_num_classes_checked():
    load_dataset("fashion-mnist-sample", num_classes=10)
    with pytest.raises(ValueError, match="has 10 classes but num_classes=100"):
        load_dataset("fashion-mnist-sample", num_classes=100)


def test_stratified_seeded_subsets():
    a = load_dataset("fashion-mnist-sample", train_subset=200, test_subset=50, seed=3)
    b = load_dataset("fashion-mnist-sample", train_subset=200, test_subset=50, seed=3)
    c = load_dataset("fashion-mnist-sample", train_subset=200, test_subset=50, seed=4)
    assert len(a.train) == 200 and len(a.test) == 50
    assert a.describe()["train"].tolist() == [20] * 10
    assert sorted(a.describe()["test"].tolist()) == [5] * 10
    assert a.train.indices == b.train.indices and a.train.indices != c.train.indices
    # the tensor cache of a subset holds exactly the subset's images
    images, labels = a.tensor_cache("train")
    full = load_dataset("fashion-mnist-sample")
    assert torch.equal(images[7], full.tensor_cache("train")[0][a.train.indices[7]])
    assert torch.equal(labels, full.targets("train")[a.train.indices])
    with pytest.raises(ValueError, match="only 1200"):
        load_dataset("fashion-mnist-sample", train_subset=5000)
    with pytest.raises(ValueError, match="a subset size must be an int >= 1"):
        load_dataset("fashion-mnist-sample", train_subset=0)


def test_stratified_indices_proportional():
    targets = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    idx = stratified_indices(targets, 10, seed=0)
    assert torch.bincount(targets[idx]).tolist() == [5, 3, 2]
    assert torch.equal(idx, torch.sort(idx).values) and len(set(idx.tolist())) == 10


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_a_path(tmp_path, gz):
    folder = tiny_fashion(tmp_path / "fm", gz=gz)
    data = load_dataset("fashion-mnist", root=tmp_path, path=folder, num_classes=10)
    assert len(data.train) == 30 and len(data.test) == 20
    assert data.classes[9] == "Ankle boot" and data.source == str(folder)
    x, y = data.test[13]
    assert x.shape == (3, 64, 64) and y == 3


def test_fashion_mnist_from_torchvision_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(ds_mod, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    tiny_fashion(tmp_path / "FashionMNIST" / "raw")
    data = load_dataset("fashion-mnist", root=tmp_path)
    assert len(data.train) == 30 and data.source.endswith("raw")


def test_fashion_mnist_missing_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(ds_mod, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("fashion-mnist", root=tmp_path)
    msg = str(e.value)
    for where in ("FashionMNIST/raw", "nowhere", "train-images-idx3-ubyte", "download=True"):
        assert where in msg


def test_fashion_mnist_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets
    monkeypatch.setattr(ds_mod, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")

    class Offline:
        def __init__(self, *a, **k):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)
    with pytest.raises(RuntimeError, match="downloading Fashion-MNIST .* failed"):
        load_dataset("fashion-mnist", root=tmp_path, download=True)


@pytest.mark.skipif(not ds_mod.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package(tmp_path):
    data = load_dataset("fashion-mnist", root=tmp_path, num_classes=10)
    assert (len(data.train), len(data.test)) == (60000, 10000)
    assert data.describe()["test"].tolist() == [1000] * 10


def test_idx_truncated_or_not_idx(tmp_path):
    folder = tiny_fashion(tmp_path / "fm", gz=False)
    f = folder / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_dataset("fashion-mnist", path=folder)
    f.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(f)
    g = tmp_path / "broken.gz"
    g.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (100).to_bytes(4, "big") + bytes(100))[:-20])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_idx(g)


def test_fashion_mnist_labels_out_of_range(tmp_path):
    folder = tiny_fashion(tmp_path / "fm")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(30, 12))
    with pytest.raises(ValueError, match=r"labels must lie in 0..9"):
        load_dataset("fashion-mnist", path=folder)


def test_sample_file_missing_keys(tmp_path):
    np.savez(tmp_path / "fashion-mnist-sample.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"lacks the arrays \['y_train'"):
        load_dataset("fashion-mnist-sample", root=tmp_path)


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "LA", "P", "I;16", "1"])
def test_any_image_mode_becomes_rgb(mode):
    image = Image.new(mode, (5, 4))
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (5, 4)


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode, value, expected", [("I;16", 1000, 4), ("I;16", 65535, 255), ("I", 1000, 4),
                                                   ("I", 32768, 128)])
def test_sixteen_bit_images_are_scaled_by_the_format_s_range_not_their_own_maximum(mode, value, expected):
    """A constant, dark 16-bit image (1.5 % grey) stays dark: 1000 / 65535 x 255 = 3.9, not white."""
    image = Image.new(mode, (3, 2), value)
    assert to_rgb(image).getpixel((0, 0)) == (expected,) * 3
