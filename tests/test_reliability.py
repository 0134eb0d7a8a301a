"""What survives a kill, what never gets saved, and bad input refused before any work.

- A run killed at every point where it writes a file (before the write, or after the temporary file
  and before its rename), then resumed, ends with the same last.pt, best.pt and history as a run
  that was never stopped; killed mid-epoch, it loses that epoch only.
- An epoch whose losses or weights are not finite is never written, and the error says which epoch
  was the last finite one and at which lr it broke.
- One table of bad inputs: each gives one line naming the problem and the fix, and leaves every
  existing file as it was.
"""
import dataclasses
import hashlib
import math
from pathlib import Path

import pytest
import torch
from test_train import RECIPE, TIMING, StandInLoader, loaders, tiny_model

import irnet_lib
from irnet_lib import runs as runs_mod
from irnet_lib.loop import NonFiniteError, fit
from irnet_lib.recipe import Recipe
from irnet_lib.runs import CheckpointError, load_checkpoint
from irnet_lib.train import main


class Killed(BaseException):
    """A simulated SIGKILL: no except clause of the library catches it, no finally cleans up after it."""


def _saves_of_an_unbroken_run(tmp_path, monkeypatch):
    calls = []
    real = runs_mod.atomic_save
    monkeypatch.setattr(runs_mod, "atomic_save", lambda obj, path: calls.append(Path(path).name) or real(obj, path))
    fit(tiny_model(), *loaders(), RECIPE, out_dir=tmp_path / "unbroken", quiet=True)
    monkeypatch.undo()
    return calls


def _kill_at(monkeypatch, n, mid_save):
    """Make the n-th file write of the run die: before it starts, or with its temporary file on
    disk and not yet renamed (what a kill inside torch.save or fsync leaves)."""
    real, count = runs_mod.atomic_save, [0]

    def save(obj, path):
        count[0] += 1
        if count[0] == n:
            if mid_save:
                path = Path(path)
                path.with_name(f".{path.name}.{12345}.tmp").write_bytes(b"PK\x03\x04 half a file")
            raise Killed(f"killed at write {n} ({Path(path).name})")
        return real(obj, path)

    monkeypatch.setattr(runs_mod, "atomic_save", save)


def _same_files(a: Path, b: Path):
    for name in ("last.pt", "best.pt"):
        x, y = load_checkpoint(a / name), load_checkpoint(b / name)
        assert x["epoch"] == y["epoch"] and x["best_epoch"] == y["best_epoch"], name
        for k, v in x["model"].items():
            assert torch.equal(v, y["model"][k]), (name, k)
        assert str(x["optimizer"]) == str(y["optimizer"]), name
        assert _rows(x["history"]) == _rows(y["history"]), name
    ha, hb = runs_mod.read_history(a), runs_mod.read_history(b)
    assert _rows(ha.history.to_dict("records")) == _rows(hb.history.to_dict("records"))
    assert ha.meta["epochs_done"] == hb.meta["epochs_done"] == RECIPE.train_num_epochs
    assert not list(b.glob(".*.tmp")), "a killed save's temporary file was left behind"


def _rows(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_a_kill_at_every_save_point_resumes_to_the_same_three_files(tmp_path, monkeypatch):
    saves = _saves_of_an_unbroken_run(tmp_path, monkeypatch)
    # best.pt (when the epoch improved), last.pt, history.csv, history.json, epoch after epoch
    assert saves[:4] == ["best.pt", "last.pt", "history.csv", "history.json"] and len(saves) >= 12
    for n in range(1, len(saves) + 1):
        for mid_save in (False, True):
            out = tmp_path / f"kill-{n}-{'mid' if mid_save else 'before'}"
            _kill_at(monkeypatch, n, mid_save)
            with pytest.raises(Killed):
                fit(tiny_model(), *loaders(), RECIPE, out_dir=out, quiet=True)
            monkeypatch.undo()
            fit(tiny_model(), *loaders(), RECIPE, out_dir=out, quiet=True)   # a new session resumes
            _same_files(tmp_path / "unbroken", out)


def test_a_kill_mid_epoch_loses_that_epoch_only(tmp_path):
    fit(tiny_model(), *loaders(), RECIPE, out_dir=tmp_path / "unbroken", quiet=True)

    def power_cut(epoch, step):
        if (epoch, step) == (2, 3):
            raise Killed("mid-epoch")

    train, test = loaders(on_batch=power_cut)
    with pytest.raises(Killed):
        fit(tiny_model(), train, test, RECIPE, out_dir=tmp_path / "cut", quiet=True)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    fit(tiny_model(), *loaders(), RECIPE, out_dir=tmp_path / "cut", quiet=True)
    _same_files(tmp_path / "unbroken", tmp_path / "cut")


def test_a_missing_best_checkpoint_is_rewritten_from_the_last_when_that_was_the_best(tmp_path):
    fit(tiny_model(), *loaders(), RECIPE, out_dir=tmp_path, quiet=True, max_epochs=2)
    folder = runs_mod.RunFolder(tmp_path)
    last = load_checkpoint(tmp_path / "last.pt")
    (tmp_path / "best.pt").unlink()
    folder.repair(dict(last, best_epoch=0), {})            # the best was another epoch: nothing to rewrite
    assert not (tmp_path / "best.pt").exists()
    folder.repair(dict(last, best_epoch=last["epoch"]), {})
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == last["epoch"]


# ----------------------------------------------------------------------------------- non-finite

def test_a_nan_batch_stops_the_epoch_and_nothing_of_it_is_saved(tmp_path):
    train, test = loaders(poison=(1, 3))
    with pytest.raises(NonFiniteError, match=r"epoch 1 .*lr 0\.2.*step 3 .*last finite epoch is 0") as err:
        fit(tiny_model(), train, test, RECIPE, out_dir=tmp_path, quiet=True)
    assert (err.value.epoch, err.value.step) == (1, 3)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 0 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert len(runs_mod.read_history(tmp_path).history) == 1


def test_weights_that_blow_up_are_never_the_good_checkpoint(tmp_path):
    """lr 1e30: the weights overflow. That epoch is not saved as last.pt, let alone best.pt."""
    recipe = Recipe(data_num_classes=3, data_batch_size=8, train_lr_max=1e30).compressed(2, 0)
    with pytest.raises(NonFiniteError, match=r"epoch 0 \(0-based, lr 1e\+30\).*no epoch had finished.*Lower the peak lr"):
        fit(tiny_model(), *loaders(), recipe, out_dir=tmp_path, quiet=True)
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()


def test_the_end_of_epoch_check_covers_the_test_loss_and_every_weight():
    from irnet_lib.loop import _check_finite
    model = tiny_model()
    _check_finite(1.0, model)
    with pytest.raises(NonFiniteError, match="test loss is nan"):
        _check_finite(math.nan, model)
    with torch.no_grad():
        model[1].running_var[0] = math.inf
    with pytest.raises(NonFiniteError, match="running_var"):
        _check_finite(1.0, model)


# ----------------------------------------------------------------------------------- bad input

def _snapshot(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    """A finished run on the embedded sample (whose files no bad input may touch)."""
    folder = tmp_path_factory.mktemp("existing") / "run"
    main(["--data", "fashion-mnist-sample", "--train-subset", "10", "--test-subset", "10", "--epochs", "1",
          "--batch-size", "10", "--out", str(folder), "--quiet", "--no-fast"])
    return folder


BASE = ["--data", "fashion-mnist-sample", "--train-subset", "10", "--test-subset", "10", "--epochs", "2",
        "--batch-size", "10", "--quiet", "--no-fast"]


def _broken(kind):
    def write(folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        if kind == "garbage":
            (folder / "last.pt").write_bytes(b"not a checkpoint at all")
        elif kind == "empty":
            (folder / "last.pt").write_bytes(b"")
        else:
            torch.save(torch.zeros(3), folder / "last.pt")
    return write


CLI_CASES = [
    # (id, extra argv, how to prepare the --out folder or None, message)
    ("out-is-a-file", [], "file", r"run folder .* is a file; pass another out_dir / --out"),
    ("out-not-writable", [], "under-a-file", r"run folder .* cannot be written .*pass another out_dir / --out"),
    ("garbage-checkpoint", [], _broken("garbage"), r"last\.pt is not a readable checkpoint .*move .* away, or "
                                                   r"start the run over .*--restart"),
    ("empty-checkpoint", [], _broken("empty"), r"last\.pt is not a readable checkpoint .*--restart"),
    ("bare-tensor-checkpoint", [], _broken("tensor"), r"last\.pt is not a checkpoint of this training loop .*--restart"),
    ("workers-negative", ["--workers", "-1"], None, r"--workers must be an int >= 0"),
    ("epochs-zero", ["--epochs", "0"], None, r"--epochs must be >= 1, got 0"),
    ("epochs-negative", ["--epochs", "-3"], None, r"--epochs must be >= 1, got -3"),
    ("warmup-too-long", ["--epochs", "3", "--warmup-epochs", "5"], None,
     r"--warmup-epochs must be from 0 to 2 \(--epochs 3 needs at least one cosine epoch\)"),
    ("max-epochs-zero", ["--max-epochs", "0"], None, r"max_epochs must be an int >= 1"),
    ("max-epochs-negative", ["--max-epochs", "-1"], None, r"max_epochs must be an int >= 1"),
    ("lr-not-finite", ["--lr-max", "inf"], None, r"--lr-max: train_lr_max must be a finite number > 0"),
    ("subset-zero", ["--train-subset", "0"], None, r"--train-subset must be an int >= 1"),
    ("unknown-data", ["--data", "imagenet"], None, r"--data must be one of"),
] + ([] if torch.cuda.is_available() else [
    ("cuda-without-gpu", ["--device", "cuda"], None, r"PyTorch sees no CUDA GPU here.*leave the device unset"),
])


@pytest.mark.parametrize("extra, prepare, message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_bad_command_lines_fail_in_one_line_before_any_work(existing_run, tmp_path, capsys, extra, prepare, message):
    out = tmp_path / "out"
    if prepare == "file":
        out.write_text("a file where the run folder should be")
    elif prepare == "under-a-file":
        (tmp_path / "blocker").write_text("x")
        out = tmp_path / "blocker" / "run"
    elif prepare is not None:
        prepare(out)
    before, before_out = _snapshot(existing_run), _snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(BASE + ["--out", str(out)] + extra)
    text = str(exit_.value.code) + capsys.readouterr().err
    assert exit_.value.code not in (0, None)
    line = next(ln for ln in text.splitlines() if "error:" in ln)
    assert len([ln for ln in text.splitlines() if ln.strip()]) == 1, text
    import re
    assert re.search(message, line), line
    assert _snapshot(existing_run) == before and _snapshot(tmp_path) == before_out
    assert not any(p.name.endswith(".pt") for p in tmp_path.rglob("*") if p not in before_out), "it trained"


def test_a_model_for_another_class_count_is_refused_with_both_numbers():
    with pytest.raises(ValueError, match="the model has 5 outputs but the data has 3 classes; build it with "
                                         "num_classes=3"):
        fit(tiny_model(classes=5), *loaders(), RECIPE, quiet=True)


def test_a_model_that_cannot_take_the_images_is_refused_before_training():
    train, test = StandInLoader(), StandInLoader(n=16, train=False)
    for loader in (train, test):
        loader.x = loader.x[:, :1]   # grey images for a 3-channel model
    with pytest.raises(ValueError, match="cannot take the data's images"):
        fit(tiny_model(), train, test, RECIPE, quiet=True)


def test_grey_images_into_irnet_say_how_to_make_them_rgb():
    with pytest.raises(ValueError, match=r"takes \(batch, 3, H, W\) images.*x\.expand\(-1, 3, -1, -1\)"):
        irnet_lib.irnet(num_classes=10)(torch.randn(1, 1, 56, 56))


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 0])
def test_width_and_depth_must_be_finite_and_positive(value):
    for knob in ("width_mult", "depth_mult"):
        with pytest.raises(ValueError, match=f"{knob} must be a finite number > 0"):
            irnet_lib.irnet(**{knob: value})


def test_an_explicit_data_path_that_does_not_exist_is_not_replaced_by_another_copy():
    from irnet_lib.data import load_dataset
    with pytest.raises(FileNotFoundError, match="path='/nope': no such folder"):
        load_dataset("fashion-mnist", path="/nope")


def test_an_unreadable_checkpoint_names_the_file_and_the_fix(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=r"last\.pt is not a readable checkpoint.*resume=False, --restart"):
        fit(tiny_model(), *loaders(), RECIPE, out_dir=tmp_path, quiet=True)
    run = fit(tiny_model(), *loaders(), RECIPE, out_dir=tmp_path, quiet=True, resume=False, max_epochs=1)
    assert len(run.history) == 1


def test_a_refused_resume_names_only_the_fields_that_differ_with_both_values(tmp_path):
    fit(tiny_model(), *loaders(), RECIPE, out_dir=tmp_path, quiet=True, max_epochs=1)
    other = dataclasses.replace(RECIPE, train_lr_max=RECIPE.train_lr_max * 2)
    with pytest.raises(runs_mod.CheckpointMismatchError) as refused:
        fit(tiny_model(), *loaders(), other, out_dir=tmp_path, quiet=True)
    assert str(refused.value) == (
        f"refusing to resume from {tmp_path / 'last.pt'}: it belongs to another run (recipe.train_lr_max: checkpoint "
        f"has {RECIPE.train_lr_max!r}, this run has {other.train_lr_max!r}). Start a new run in another folder "
        "(out_dir=..., --out), or start this one over (resume=False, --restart).")


def test_a_refusal_to_resume_diffs_nested_configs_field_by_field(tmp_path):
    folder = runs_mod.RunFolder(tmp_path)
    stored = {"block": "se", "recipe": {"train_lr_max": 0.05, "momentum": 0.9, "extra": {"a": 1}}, "old": 1}
    torch.save({"format": runs_mod.CHECKPOINT_FORMAT, "config": stored, "epoch": 1, "model": {}}, folder.last)
    asked = {"block": "se", "recipe": {"train_lr_max": 0.02, "momentum": 0.9, "extra": {"a": 2}, "new": "x" * 100},
             "new_part": {"k": 1, "j": 2}}
    with pytest.raises(runs_mod.CheckpointMismatchError) as refused:
        folder.resume(asked, "cpu")
    message = str(refused.value)
    assert "\n" not in message and "momentum" not in message and "block" not in message
    assert ("(new_part: checkpoint has none, this run has 2 fields; old: checkpoint has 1, this run has none; "
            "recipe.extra.a: checkpoint has 1, this run has 2; recipe.new: checkpoint has none, this run has "
            f"'{'x' * 56}...; and 1 more)") in message
    assert folder.resume(stored, "cpu")["epoch"] == 1   # the same config resumes
