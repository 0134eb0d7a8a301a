"""The trained networks that come with the repository: verified before they are read, small, and as
good on real Fashion-MNIST test images as their manifest says."""
import shutil

import pytest
import torch

import irnet_lib
from irnet_lib import pretrained
from irnet_lib.data import load_dataset, make_loader
from irnet_lib.train import evaluate

MANIFEST = pretrained.manifest()


def test_the_three_blocks_are_there_small_and_described():
    assert set(MANIFEST) == {"standard", "se", "condconv"}
    sizes = [(pretrained.FOLDER / e["file"]).stat().st_size for e in MANIFEST.values()]
    assert sum(sizes) <= 30e6
    for block, e in MANIFEST.items():
        assert e["num_classes"] == 10 and e["test_acc"] >= 80 and "fashion-mnist" in e["data"]
        assert {"recipe", "hardware", "sha256", "epochs"} <= set(e)


@pytest.mark.parametrize("block", sorted(MANIFEST))
def test_each_loads_in_eval_mode_and_scores_on_real_test_images(block):
    model = irnet_lib.load_pretrained(block)
    assert not model.training and next(model.parameters()).dtype == torch.float32
    sample = load_dataset("fashion-mnist-sample")   # its 400 test images come from Fashion-MNIST's test split
    acc = evaluate(model, make_loader(sample, "test", 200))["acc"]
    assert acc >= 80, f"{block}: {acc:.1f} % on the sample's test images"


@pytest.fixture
def copy_of_the_folder(tmp_path, monkeypatch):
    folder = tmp_path / "pretrained"
    folder.mkdir()
    shutil.copy(pretrained.FOLDER / "manifest.json", folder)
    shutil.copy(pretrained.FOLDER / MANIFEST["standard"]["file"], folder)
    monkeypatch.setattr(pretrained, "FOLDER", folder)
    return folder


def test_a_damaged_file_is_refused_by_its_hash(copy_of_the_folder):
    path = copy_of_the_folder / MANIFEST["standard"]["file"]
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its manifest .*git checkout irnet_lib/pretrained/"):
        irnet_lib.load_pretrained("standard")


def test_a_missing_file_or_block_says_what_to_do(copy_of_the_folder):
    with pytest.raises(FileNotFoundError, match="is missing; restore it"):
        irnet_lib.load_pretrained("se")
    with pytest.raises(ValueError, match="no trained network for block 'resnet'"):
        irnet_lib.load_pretrained("resnet")
    (copy_of_the_folder / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        irnet_lib.load_pretrained("standard")
