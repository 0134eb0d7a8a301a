"""The paper's data formats, built tiny in tmp folders: the course's zips / ImageFolder tree and the
Downsampled-ImageNet npz / pickle batches. No network: downloads are served by fakes."""
import io
import pickle
import urllib.error
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import irnet_lib.data.download as dl
from irnet_lib.data import IMAGENET64_FILES, download_file, load_dataset, make_loader
from irnet_lib.data.datasets import FolderImages
from irnet_lib.data.download import check_zip

WNIDS = ["n01440764", "n01443537", "n01484850"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def jpeg_bytes(seed, size=(80, 64), mode="RGB", fmt="JPEG"):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def course_zips(folder, wrap=""):
    """The six archives in the course's layout: class folders (WordNet ids) of JPEGs, train images
    spread over Train1..5, validation in Val1. ``wrap`` nests everything in one more folder."""
    folder.mkdir(parents=True, exist_ok=True)
    k = 0
    for split, names in IMAGENET64_FILES.items():
        for z, name in enumerate(names):
            with zipfile.ZipFile(folder / name, "w") as f:
                for wnid in WNIDS:
                    for j in range(2):
                        f.writestr(f"{wrap}{wnid}/{wnid}_{z}_{j}.JPEG", jpeg_bytes(k, size=(64 + 8 * j, 64)))
                        k += 1
    return folder


def image_tree(folder, counts=(3, 2, 2)):
    for wnid, n in zip(WNIDS, counts):
        (folder / wnid).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            (folder / wnid / f"{j}.JPEG").write_bytes(jpeg_bytes(j))
    return folder


# ---------------------------------------------------------------------------- imagenet64-100
@pytest.mark.parametrize("wrap", ["", "train/"])
def test_course_zips_unpack_and_load(tmp_path, wrap):
    course_zips(tmp_path / "imagenet64", wrap)
    data = load_dataset("imagenet64-100", root=tmp_path, num_classes=3)
    assert data.classes == WNIDS and data.name == "imagenet64-100"
    assert data.describe()["train"].tolist() == [10] * 3 and data.describe()["test"].tolist() == [2] * 3
    assert sorted(p.name for p in (tmp_path / "imagenet64").iterdir() if p.is_dir()) == ["train", "val"]
    image, label = data.train[0]
    assert image.mode == "RGB" and min(image.size) == 64 and label == 0
    # the tensor pipeline decodes once and keeps the result on disk, reused while the files are unchanged
    loader = make_loader(data, "test", batch_size=4)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 56, 56) and y.tolist() == [0, 0, 1, 1]
    cached = list((tmp_path / "cache").glob("imagenet64-100-test-6-*.pt"))
    assert len(cached) == 1
    again = load_dataset("imagenet64-100", root=tmp_path)
    assert torch.equal(again.tensor_cache("test")[0], data.tensor_cache("test")[0])


def test_zips_found_in_root_too(tmp_path):
    course_zips(tmp_path)  # the course script downloaded them next to data/, not inside it
    assert load_dataset("imagenet64-100", root=tmp_path).num_classes == 3


def test_missing_zips_say_which_files_go_where(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("imagenet64-100", root=tmp_path)
    msg = str(e.value)
    for name in ("Train1.zip", "Train5.zip", "Val1.zip", str(tmp_path / "imagenet64"),
                 "raw/master/Data/", "download=True"):
        assert name in msg


def test_empty_directories_are_missing_data(tmp_path):
    (tmp_path / "imagenet64" / "train").mkdir(parents=True)
    (tmp_path / "imagenet64" / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="Train1.zip"):
        load_dataset("imagenet64-100", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="is empty"):
        FolderImages(tmp_path / "imagenet64" / "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FolderImages(tmp_path / "nothing")


def test_download_is_used_when_asked(tmp_path, monkeypatch):
    source = course_zips(tmp_path / "server")
    fetched = []

    def fake_download(url, dest, progress=True):
        fetched.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((source / url.rsplit("/", 1)[1]).read_bytes())
        return dest

    monkeypatch.setattr(dl, "download_file", fake_download)
    data = load_dataset("imagenet64-100", root=tmp_path / "data", download=True)
    assert len(fetched) == 6 and fetched[0] == dl.IMAGENET64_URL.format("Train1.zip")
    assert len(data.train) == 30


def test_download_offline_says_what_to_do(tmp_path, monkeypatch):
    def offline(url, dest, progress=True):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(dl, "download_file", offline)
    with pytest.raises(RuntimeError, match=r"downloading Train1.zip failed .*Put the course's six archives"):
        load_dataset("imagenet64-100", root=tmp_path, download=True)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "crc"])
def test_corrupt_zip_is_an_error(tmp_path, damage):
    folder = course_zips(tmp_path / "imagenet64")
    z = folder / "Val1.zip"
    raw = z.read_bytes()
    if damage == "garbage":
        z.write_bytes(b"this is an HTML error page, not a zip")
    elif damage == "truncated":
        z.write_bytes(raw[: len(raw) // 2])
    else:  # flip bytes inside the first member's compressed data
        i = raw.index(b"JPEG") + 200
        z.write_bytes(raw[:i] + bytes(b ^ 0xFF for b in raw[i:i + 50]) + raw[i + 50:])
    with pytest.raises(ValueError, match=r"Val1.zip .*(not a complete zip|damaged)"):
        load_dataset("imagenet64-100", root=tmp_path)
    assert not (folder / "val").exists()  # nothing half-unpacked left behind


def test_empty_class_folder(tmp_path):
    base = tmp_path / "imagenet64"
    image_tree(base / "train"), image_tree(base / "val")
    for f in (base / "val" / WNIDS[1]).iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match=f"class folder.* with no images: {WNIDS[1]}"):
        load_dataset("imagenet64-100", root=tmp_path)


def test_class_mismatch_between_train_and_val(tmp_path):
    base = tmp_path / "imagenet64"
    image_tree(base / "train")
    image_tree(base / "val", counts=(2, 2, 2))
    (base / "val" / "n09999999").mkdir()
    (base / "val" / "n09999999" / "0.JPEG").write_bytes(jpeg_bytes(0))
    with pytest.raises(ValueError, match="only in val: \\['n09999999'\\]"):
        load_dataset("imagenet64-100", root=tmp_path)


def test_class_count_checked(tmp_path):
    base = tmp_path / "imagenet64"
    image_tree(base / "train"), image_tree(base / "val")
    with pytest.raises(ValueError, match="has 3 classes but num_classes=100"):
        load_dataset("imagenet64-100", root=tmp_path, num_classes=100)


def test_truncated_image_names_the_file(tmp_path):
    base = tmp_path / "imagenet64"
    image_tree(base / "train"), image_tree(base / "val")
    bad = base / "val" / WNIDS[0] / "1.JPEG"
    bad.write_bytes(bad.read_bytes()[:300])
    data = load_dataset("imagenet64-100", root=tmp_path, cache=False)
    with pytest.raises(ValueError, match="cannot read image .*1.JPEG.*corrupt or truncated"):
        data.test[1]
    with pytest.raises(ValueError, match="1.JPEG"):
        make_loader(data, "test")  # decoding the tensor cache reads every file


def test_grey_cmyk_rgba_palette_files_are_converted(tmp_path):
    base = tmp_path / "imagenet64"
    image_tree(base / "train"), image_tree(base / "val")
    folder = base / "train" / WNIDS[2]
    (folder / "grey.JPEG").write_bytes(jpeg_bytes(1, mode="L"))
    (folder / "cmyk.JPEG").write_bytes(jpeg_bytes(2, mode="CMYK"))
    (folder / "rgba.png").write_bytes(jpeg_bytes(3, mode="RGBA", fmt="PNG"))
    (folder / "pal.png").write_bytes(jpeg_bytes(4, mode="P", fmt="PNG"))
    data = load_dataset("imagenet64-100", root=tmp_path, cache=False)
    assert len(data.train) == 11
    for i in range(len(data.train)):
        assert data.train[i][0].mode == "RGB"
    images, _ = data.tensor_cache("train")
    assert images.shape == (11, 3, 64, 64)


def test_files_imagefolder_skips_are_reported(tmp_path):
    base = tmp_path / "imagenet64"
    image_tree(base / "train"), image_tree(base / "val")
    (base / "train" / WNIDS[0] / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="1 file.* left out.*notes.txt"):
        load_dataset("imagenet64-100", root=tmp_path)


# ---------------------------------------------------------------------------- download_file
class FakeResponse(io.BytesIO):
    def __init__(self, body, status):
        super().__init__(body)
        self.status = status
        self.headers = {"Content-Length": str(len(body))}

    def getcode(self):
        return self.status


def fake_server(payload, honour_range=True, log=None):
    def urlopen(request, timeout):
        rng = request.get_header("Range")
        if log is not None:
            log.append(rng)
        if rng and honour_range:
            start = int(rng.split("=")[1].rstrip("-"))
            return FakeResponse(payload[start:], 206)
        return FakeResponse(payload, 200)
    return urlopen


def test_download_resumes_a_partial_file(tmp_path, monkeypatch):
    payload = (course_zips(tmp_path / "src") / "Val1.zip").read_bytes()
    dest = tmp_path / "out" / "Val1.zip"
    dest.parent.mkdir()
    (tmp_path / "out" / "Val1.zip.part").write_bytes(payload[:1000])
    log = []
    monkeypatch.setattr(dl, "_urlopen", fake_server(payload, log=log))
    download_file("https://example.invalid/Val1.zip", dest, progress=False)
    assert log == ["bytes=1000-"] and dest.read_bytes() == payload
    assert not (tmp_path / "out" / "Val1.zip.part").exists()


def test_download_restarts_when_range_is_ignored(tmp_path, monkeypatch):
    payload = (course_zips(tmp_path / "src") / "Val1.zip").read_bytes()
    dest = tmp_path / "Val1.zip"
    (tmp_path / "Val1.zip.part").write_bytes(b"old junk")
    monkeypatch.setattr(dl, "_urlopen", fake_server(payload, honour_range=False))
    download_file("https://example.invalid/Val1.zip", dest, progress=False)
    check_zip(dest)
    assert dest.read_bytes() == payload


def test_damaged_download_is_not_kept(tmp_path, monkeypatch):
    payload = (course_zips(tmp_path / "src") / "Val1.zip").read_bytes()
    monkeypatch.setattr(dl, "_urlopen", fake_server(payload[:-200]))
    with pytest.raises(ValueError, match="not a complete zip"):
        download_file("https://example.invalid/Val1.zip", tmp_path / "Val1.zip", progress=False)
    assert not (tmp_path / "Val1.zip").exists() and not (tmp_path / "Val1.zip.part").exists()


# ---------------------------------------------------------------------------- imagenet64-npz
def batch(labels, seed=0):
    labels = np.asarray(labels)
    data = np.random.default_rng(seed).integers(0, 256, (len(labels), 12288), dtype=np.uint8)
    return {"data": data, "labels": labels.tolist(), "mean": np.zeros(12288)}


def write_batch(path, content, fmt):
    if fmt == "npz":
        np.savez(path.with_name(path.name + ".npz"), **{k: np.asarray(v) for k, v in content.items()})
    else:  # the original files: Python-2 pickles of a dict with str keys and latin-1 bytes
        path.write_bytes(pickle.dumps(content, protocol=2))


@pytest.mark.parametrize("fmt", ["npz", "pickle"])
def test_npz_every_10th_class_relabelled(tmp_path, fmt):
    d = tmp_path / "imagenet64-npz"
    d.mkdir()
    labels = np.arange(1, 1001)  # one image of every class per batch file
    write_batch(d / "train_data_batch_1", batch(labels, 1), fmt)
    write_batch(d / "train_data_batch_2", batch(labels, 2), fmt)
    val = batch(labels, 3)
    val.pop("mean")
    write_batch(d / "val_data", val, fmt)
    data = load_dataset("imagenet64-npz", root=tmp_path, num_classes=100)
    assert len(data.train) == 200 and len(data.test) == 100
    assert data.describe()["train"].tolist() == [2] * 100
    assert data.classes[:2] == ["label_0001", "label_0011"]
    # relabelled 0..99: image 0 of the val set is original label 1, image 1 is label 11
    x, y = data.test[1]
    raw = val["data"][10].reshape(3, 64, 64)  # label 11 sits at row 10
    assert y == 1 and torch.equal(x, torch.from_numpy(raw))


def test_npz_explicit_classes_and_names(tmp_path):
    d = tmp_path / "npz"
    d.mkdir()
    write_batch(d / "train_data_batch_1", batch([5, 7, 7, 9, 5]), "npz")
    write_batch(d / "val_data", batch([9, 7, 5]), "npz")
    (d / "map_clsloc.txt").write_text("n0005 5 five\nn0007 7 seven\nn0009 9 nine\n")
    data = load_dataset("imagenet64-npz", path=d, classes=[9, 5])
    assert data.classes == ["n0009 nine", "n0005 five"]
    assert data.targets("train").tolist() == [1, 0, 1] and data.targets("test").tolist() == [0, 1]
    with pytest.raises(ValueError, match="class_rule must be one of"):
        load_dataset("imagenet64-npz", path=d, class_rule="random")
    with pytest.raises(ValueError, match="no images of the original label"):
        load_dataset("imagenet64-npz", path=d, classes=[5, 6])


def test_npz_missing_keys(tmp_path):
    d = tmp_path / "npz"
    d.mkdir()
    np.savez(d / "train_data_batch_1.npz", data=np.zeros((2, 12288), np.uint8))
    write_batch(d / "val_data", batch([1, 2]), "npz")
    with pytest.raises(ValueError, match=r"must hold the arrays 'data' and 'labels'.*found \['data'\]"):
        load_dataset("imagenet64-npz", path=d, classes=[1, 2])


@pytest.mark.parametrize("labels, hint", [([0, 1], "look 0-based"), ([1, 1001], "found 1..1001")])
def test_npz_labels_out_of_range(tmp_path, labels, hint):
    d = tmp_path / "npz"
    d.mkdir()
    write_batch(d / "train_data_batch_1", batch(labels), "npz")
    write_batch(d / "val_data", batch([1, 2]), "npz")
    with pytest.raises(ValueError, match=hint):
        load_dataset("imagenet64-npz", path=d, classes=[1, 2])


def test_npz_wrong_shape_corrupt_and_missing(tmp_path):
    d = tmp_path / "npz"
    d.mkdir()
    np.savez(d / "train_data_batch_1.npz", data=np.zeros((2, 3072), np.uint8), labels=np.array([1, 2]))
    write_batch(d / "val_data", batch([1, 2]), "npz")
    with pytest.raises(ValueError, match="32x32"):
        load_dataset("imagenet64-npz", path=d, classes=[1, 2])
    (d / "train_data_batch_1.npz").write_bytes(b"PK\x03\x04broken")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_dataset("imagenet64-npz", path=d, classes=[1, 2])
    (d / "val_data.npz").unlink()
    with pytest.raises(FileNotFoundError, match="0 val_data"):
        load_dataset("imagenet64-npz", path=d)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("imagenet64-npz", root=tmp_path / "nothing")
    with pytest.raises(ValueError, match="cannot be downloaded"):
        load_dataset("imagenet64-npz", path=d, download=True)
