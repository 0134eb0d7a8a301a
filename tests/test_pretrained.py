"""The trained networks that come with the repository: verified before they are read, small, and as
good on real Fashion-MNIST test images as their manifest says."""
import hashlib
import json
import shutil

import pytest
import torch

import irnet_lib
from irnet_lib import pretrained
from irnet_lib.data import load_dataset, make_loader

MANIFEST = pretrained.manifest()
SHIPPED = pretrained.FOLDER   # the fixture below points FOLDER at a copy


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
    with torch.inference_mode():   # channels_last: the layout the library trains and tests in, faster on a CPU
        hits = [model(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y
                for x, y in make_loader(sample, "test", 200)]
    acc = 100 * torch.cat(hits).float().mean().item()
    assert acc >= 80, f"{block}: {acc:.1f} % on the sample's test images"


@pytest.fixture
def copy_of_the_folder(tmp_path, monkeypatch):
    folder = tmp_path / "pretrained"
    folder.mkdir()
    shutil.copy(SHIPPED / "manifest.json", folder)
    shutil.copy(SHIPPED / MANIFEST["standard"]["file"], folder)
    monkeypatch.setattr(pretrained, "FOLDER", folder)
    return folder


def edit_manifest(folder, change):
    """Rewrite the copy's manifest.json with ``change(entries)`` applied."""
    path = folder / "manifest.json"
    entries = json.loads(path.read_text())
    change(entries)
    path.write_text(json.dumps(entries, indent=1))


def refusal(exc_type, block="standard", **kwargs) -> str:
    """The message ``load_pretrained`` raises: one line, the library's own (no chained traceback)."""
    with pytest.raises(exc_type) as info:
        irnet_lib.load_pretrained(block, **kwargs)
    message = str(info.value)
    assert "\n" not in message and info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__, "a chained traceback shows another message"
    return message


def test_a_damaged_file_is_refused_by_its_hash(copy_of_the_folder):
    path = copy_of_the_folder / MANIFEST["standard"]["file"]
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its manifest .*git checkout irnet_lib/pretrained/"):
        irnet_lib.load_pretrained("standard")


@pytest.mark.parametrize("size", [0, 1000])
def test_an_empty_or_truncated_file_is_refused_by_its_hash(copy_of_the_folder, size):
    path = copy_of_the_folder / "standard.pt"
    path.write_bytes(path.read_bytes()[:size])
    message = refusal(ValueError)
    assert message.endswith("git checkout irnet_lib/pretrained/standard.pt") and f"; {size} bytes)" in message


def test_a_changed_hash_in_the_manifest_is_refused(copy_of_the_folder):
    edit_manifest(copy_of_the_folder, lambda e: e["standard"].update(sha256="0" * 64))
    assert "does not match its manifest entry 'standard' (sha256 f3949d817c48..., expected 000000000000...;" in refusal(ValueError)


def test_a_missing_file_or_block_says_what_to_do(copy_of_the_folder):
    with pytest.raises(FileNotFoundError, match="is missing; restore it"):
        irnet_lib.load_pretrained("se")
    with pytest.raises(ValueError, match="no trained network for block 'resnet'"):
        irnet_lib.load_pretrained("resnet")
    (copy_of_the_folder / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        irnet_lib.load_pretrained("standard")


def test_an_entry_for_another_block_is_refused_before_torch_builds_it(copy_of_the_folder):
    # The SE entry pointed at the standard network's file, with that file's correct sha256.
    edit_manifest(copy_of_the_folder, lambda e: e["se"].update(file="standard.pt", sha256=e["standard"]["sha256"]))
    message = refusal(ValueError, "se")
    assert message.startswith("manifest entry 'se' describes an SE network, but standard.pt holds a standard "
                              "network's weights: the manifest and standard.pt disagree; restore both with "
                              "git checkout irnet_lib/pretrained/"), message


def test_num_classes_that_the_file_does_not_have_is_refused(copy_of_the_folder):
    edit_manifest(copy_of_the_folder, lambda e: e["standard"].update(num_classes=100))
    assert refusal(ValueError).startswith("manifest entry 'standard' says num_classes 100, but standard.pt's "
                                          "classifier has 10 outputs: ")


def test_model_kwargs_that_the_file_does_not_fit_are_refused_by_name_and_shape(copy_of_the_folder):
    edit_manifest(copy_of_the_folder, lambda e: e["standard"].update(model_kwargs={"width_mult": 0.5}))
    message = refusal(ValueError)
    assert message.startswith("manifest entry 'standard' says num_classes 10, model_kwargs {'width_mult': 0.5}: "
                              "stem.0.weight is (16, 3, 3, 3) in standard.pt, (8, 3, 3, 3) in that network"), message
    edit_manifest(copy_of_the_folder, lambda e: e["standard"].update(model_kwargs={"depth_mult": 2.0}))
    assert "tensors of that network not in standard.pt (rows." in refusal(ValueError)
    edit_manifest(copy_of_the_folder, lambda e: e["standard"].update(model_kwargs={"num_experts": 8}))
    assert refusal(ValueError).startswith("manifest entry 'standard': model_kwargs {'num_experts': 8} do not build "
                                          "a network (num_experts=8 has no effect on the 'standard' block")


def test_a_truncated_file_whose_hash_was_written_to_the_manifest_is_named(copy_of_the_folder):
    path = copy_of_the_folder / "condconv.pt"
    path.write_bytes((SHIPPED / "condconv.pt").read_bytes()[:1_000_000])
    edit_manifest(copy_of_the_folder, lambda e: e["condconv"].update(sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    message = refusal(ValueError, "condconv")
    assert str(path) in message and "manifest entry 'condconv'" in message and "git checkout irnet_lib/pretrained/" in message
    assert "PytorchStreamReader" not in message and "zip" not in message


@pytest.mark.parametrize("field", ["file", "sha256", "num_classes"])
def test_an_entry_without_a_field_names_the_entry_and_the_field(copy_of_the_folder, field):
    edit_manifest(copy_of_the_folder, lambda e: e["standard"].pop(field))
    message = refusal(ValueError)
    assert message.startswith("manifest entry 'standard' in ") and f"manifest.json has no '{field}' field: restore " \
        "the manifest with git checkout irnet_lib/pretrained/" in message, message


def test_a_field_of_the_wrong_kind_is_named(copy_of_the_folder):
    edit_manifest(copy_of_the_folder, lambda e: e["standard"].update(num_classes="10"))
    assert "manifest.json: 'num_classes' must be an int >= 1, got '10'; restore" in refusal(ValueError)
    edit_manifest(copy_of_the_folder, lambda e: e["standard"].update(num_classes=10, file="../standard.pt"))
    assert "'file' must be a file name beside manifest.json, got '../standard.pt'" in refusal(ValueError)


def test_an_entry_for_no_block_of_the_library_is_named(copy_of_the_folder):
    edit_manifest(copy_of_the_folder, lambda e: e.update(resnet=e["standard"]))
    assert "manifest entry 'resnet' in " in refusal(ValueError, "resnet")


def test_a_truncated_manifest_names_itself_and_the_fix(copy_of_the_folder):
    path = copy_of_the_folder / "manifest.json"
    path.write_text(path.read_text()[:500])
    message = refusal(ValueError)
    assert message.startswith(f"{path} is not valid JSON (") and message.endswith(
        "the file is damaged; restore it with git checkout irnet_lib/pretrained/"), message
    with pytest.raises(ValueError, match="manifest.json is not valid JSON"):
        pretrained.manifest()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_that_is_not_there_is_refused_before_any_file_is_read(copy_of_the_folder):
    (copy_of_the_folder / "manifest.json").unlink()   # were a file read first, this would be the error
    assert "PyTorch sees no CUDA GPU here" in refusal(ValueError, device="cuda")
