"""The training loop: history, checkpoints, exact resume, refusals, precision, the GPU code path on
a CPU, and IR-NET on the embedded sample. Tiny models and stand-in data keep it fast. What survives
a kill, non-finite values and bad input: test_reliability.py."""
import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from irnet_lib.loop import EagerStep, evaluate, fit
from irnet_lib.recipe import Recipe
from irnet_lib.runs import CheckpointMismatchError, atomic_save, load_checkpoint, read_history
from irnet_lib.runtime import Runtime, auto_precision
from irnet_lib.train import main

TIMING = ("epoch_seconds", "train_seconds", "train_images_per_s", "elapsed_seconds")


class StandInLoader:
    """A loader of the data contract over random tensors: order is a function of (seed, epoch),
    sharded by (rank, world_size) like the real loaders; the last partial batch is kept."""

    def __init__(self, n=48, batch_size=8, *, train=True, seed=0, rank=0, world_size=1, classes=3,
                 size=8, poison=None, on_batch=None):
        g = torch.Generator().manual_seed(1234 if train else 4321)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.randint(0, classes, (n,), generator=g)
        self.num_classes = classes
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.poison = poison      # (epoch, step): that batch becomes NaN
        self.on_batch = on_batch  # called with (epoch, step) before each batch is handed out

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _indices(self):
        if not self.train:
            idx = torch.arange(len(self.y))
        else:
            idx = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        return idx[self.rank::self.world_size]

    @property
    def num_samples(self):
        return len(self._indices())

    def __len__(self):
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self):
        idx = self._indices()
        for step, i in enumerate(range(0, len(idx), self.batch_size)):
            b = idx[i:i + self.batch_size]
            x = self.x[b].clone()
            if self.poison == (self.epoch, step):
                x[:] = float("nan")
            if self.on_batch is not None:
                self.on_batch(self.epoch, step)
            yield x, self.y[b]


def tiny_model(seed=0, bn=True, width=4, classes=3):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, width, 3, padding=1)] + ([nn.BatchNorm2d(width)] if bn else []) + [
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes)]
    return nn.Sequential(*layers)


RECIPE = Recipe(data_num_classes=3, data_batch_size=8).compressed(4, 1)


def loaders(**kw):
    return StandInLoader(**kw), StandInLoader(n=16, train=False)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_fit_writes_history_and_checkpoints(tmp_path):
    run = fit(tiny_model(), *loaders(), RECIPE, out_dir=tmp_path, meta={"variant": "tiny"}, quiet=True)
    h = run.history
    assert list(h.epoch) == [0, 1, 2, 3]
    assert h.lr.tolist() == pytest.approx([0.002 * 0.2 / 0.2 * 1, 0.2, 0.2 * 0.5 * (1 + math.cos(math.pi / 2))
                                           + 0.0002 * 0.5 * (1 - math.cos(math.pi / 2)), 0.0002])
    assert set(["train_loss", "train_acc", "test_loss", "test_acc", "lr", *TIMING]) <= set(h.columns)
    assert (h.train_images == 48).all() and (h.test_images == 16).all()
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "best.pt").is_file()
    stored = json.loads((tmp_path / "history.json").read_text())
    for key in ("variant", "hardware", "torch", "precision", "config", "world_size"):
        assert key in stored["meta"], key
    assert stored["meta"]["precision"] == "fp32"   # fp32 on a CPU by default
    assert read_history(tmp_path).history.test_acc.tolist() == pytest.approx(h.test_acc.tolist())
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["history"][-1]["test_acc"] == h.test_acc.max()
    assert (tmp_path / "history.csv").read_text().startswith("epoch,lr,train_loss")


def test_resume_equals_an_unbroken_run(tmp_path):
    unbroken = fit(tiny_model(), *loaders(), RECIPE, out_dir=tmp_path / "a", quiet=True)
    first = fit(tiny_model(), *loaders(), RECIPE, out_dir=tmp_path / "b", quiet=True, max_epochs=2)
    assert len(first.history) == 2
    # A new session: fresh model (other initial weights), fresh loaders, same folder.
    resumed = fit(tiny_model(seed=99), *loaders(), RECIPE, out_dir=tmp_path / "b", quiet=True)
    assert resumed.meta["resumed_at_epochs"] == [2]
    for k, v in weights(unbroken.model).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    cols = [c for c in unbroken.history.columns if c not in TIMING]
    assert unbroken.history[cols].equals(resumed.history[cols])
    # Finished runs stay finished.
    again = fit(tiny_model(), *loaders(), RECIPE, out_dir=tmp_path / "b", quiet=True)
    assert len(again.history) == 4


def test_atomic_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"format": 1, "value": torch.ones(3)}, path)

    def dies_half_way(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"format": 1, "value": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["value"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]   # no half-written leftovers


def test_checkpoint_of_another_variant_or_recipe_is_refused(tmp_path):
    fit(tiny_model(), *loaders(), RECIPE, out_dir=tmp_path, meta={"config": {"block": "standard"}},
        quiet=True, max_epochs=1)
    with pytest.raises(CheckpointMismatchError, match="block: checkpoint has 'standard', this run has 'se'"):
        fit(tiny_model(), *loaders(), RECIPE, out_dir=tmp_path, meta={"config": {"block": "se"}}, quiet=True)
    with pytest.raises(CheckpointMismatchError, match="model"):        # another layout of weights
        fit(tiny_model(width=6), *loaders(), RECIPE, out_dir=tmp_path,
            meta={"config": {"block": "standard"}}, quiet=True)
    with pytest.raises(CheckpointMismatchError, match="recipe"):
        fit(tiny_model(), *loaders(), RECIPE.compressed(6, 1), out_dir=tmp_path,
            meta={"config": {"block": "standard"}}, quiet=True)
    # Starting over is allowed when asked for.
    run = fit(tiny_model(), *loaders(), RECIPE.compressed(2, 1), out_dir=tmp_path,
              meta={"config": {"block": "se"}}, quiet=True, resume=False)
    assert len(run.history) == 2


def test_gpu_speed_path_runs_on_cpu(tmp_path, monkeypatch):
    """channels_last + bf16 autocast + torch.compile (eager backend: no compiler needed) + sparse
    host reads: the code path a GPU takes, exercised on the CPU."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend="eager", **kw))
    run = fit(tiny_model(), *loaders(), RECIPE.compressed(2, 1), out_dir=tmp_path, quiet=True,
              precision="bf16", channels_last=True, compile=True, sync_every=4)
    assert run.meta["precision"] == "bf16" and run.meta["channels_last"] and run.meta["compile"]
    assert all(math.isfinite(v) for v in run.history.train_loss)
    keys = load_checkpoint(tmp_path / "last.pt")["model"].keys()
    assert not any("_orig_mod" in k or k.startswith("module.") for k in keys)   # plain weights saved


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision"):
        fit(tiny_model(), *loaders(), RECIPE, precision="fp8", quiet=True)
    with pytest.raises(ValueError, match="fp16.*CUDA GPUs"):
        fit(tiny_model(), *loaders(), RECIPE, precision="fp16", quiet=True)


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"),
                                                  ((8, 9), "bf16"), ((9, 0), "bf16")],
                         ids=["T4", "V100", "A100", "L4", "H100"])
def test_auto_precision_follows_the_gpu(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert auto_precision("cuda") == expected
    assert auto_precision("cpu") == "fp32"


def test_forcing_bf16_on_a_gpu_without_it_warns_of_the_cost(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.warns(UserWarning, match="Tesla T4.*no bf16 tensor cores.*fp16"):
        assert Runtime(device="cuda", precision="bf16").resolve(tiny_model())[1] == "bf16"
    assert Runtime(device="cuda").resolve(tiny_model())[1] == "fp16"


def test_fp16_steps_use_a_gradient_scaler_and_count_skipped_steps():
    """The fp16 step on the CPU (the scaler's logic does not need a GPU): scaled backward, an
    overflowing step skipped and counted, the scale lowered."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = EagerStep(model, opt, torch.nn.functional.cross_entropy, torch.device("cpu"), "fp32")
    assert not step.scaler.is_enabled()
    step.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    before = [p.clone() for p in model.parameters()]
    step(x, y)
    assert step.skipped == 0 and any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    before = [p.clone() for p in model.parameters()]
    step(x * float("inf"), y)                      # non-finite gradients: the step is skipped
    assert step.skipped == 1 and step.scaler.get_scale() < 2.0**16
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_command_line_on_the_embedded_sample(tmp_path, capsys):
    """IR-NET itself, through the real data package and the CLI; tiny subset, one epoch per call."""
    argv = ["--block", "standard", "--data", "fashion-mnist-sample", "--train-subset", "10",
            "--test-subset", "10", "--epochs", "2", "--batch-size", "10", "--out", str(tmp_path),
            "--quiet", "--max-epochs", "1"]
    run = main(argv)
    assert len(run.history) == 1 and run.meta["variant"] == "standard" and run.meta["num_classes"] == 10
    # the tensor pipeline's departures from the course's transforms are in the metadata
    assert run.meta["pipeline"]["name"] == "tensor" and not run.meta["pipeline"]["exact"]
    assert "roi_align" in run.meta["pipeline"]["approximations"]
    assert run.meta["config"]["recipe"]["train_lr_max"] == pytest.approx(0.2 * 10 / 256)
    run = main(argv)   # the same command again resumes
    assert list(run.history.epoch) == [0, 1]
    assert "best" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="another run.*block"):
        main([a if a != "standard" else "se" for a in argv])


def test_evaluate_measures_what_fit_recorded():
    model = tiny_model()
    test = StandInLoader(train=False, n=20)
    run = fit(model, StandInLoader(), test, Recipe().compressed(2, 1).scaled_to_batch(8), quiet=True)
    again = evaluate(run.model, test)
    assert again["images"] == 20
    assert again["acc"] == pytest.approx(run.history["test_acc"].iloc[-1])
    assert again["loss"] == pytest.approx(run.history["test_loss"].iloc[-1], rel=1e-6)


def test_ema_of_the_weights_resumes_exactly_and_is_tested_each_epoch(tmp_path):
    from dataclasses import replace
    recipe = replace(RECIPE, ema_decay=0.9)
    unbroken = fit(tiny_model(), *loaders(), recipe, out_dir=tmp_path / "a", quiet=True)
    assert {"test_acc_ema", "test_loss_ema"} <= set(unbroken.history.columns)
    assert unbroken.history["test_loss_ema"].map(math.isfinite).all()
    assert not unbroken.meta["faithful_recipe"]
    fit(tiny_model(), *loaders(), recipe, out_dir=tmp_path / "b", quiet=True, max_epochs=2)
    resumed = fit(tiny_model(seed=99), *loaders(), recipe, out_dir=tmp_path / "b", quiet=True)
    cols = [c for c in unbroken.history.columns if c not in TIMING]
    assert unbroken.history[cols].equals(resumed.history[cols])
    ema_a = load_checkpoint(tmp_path / "a" / "last.pt")["ema"]
    ema_b = load_checkpoint(tmp_path / "b" / "last.pt")["ema"]
    for k, v in ema_a.items():
        assert torch.equal(v, ema_b[k]), k
    # The average is not the last weights: it lags them.
    last = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    assert any(not torch.equal(ema_a[f"module.{k}"], v) for k, v in last.items() if v.is_floating_point())


def test_ema_with_no_memory_has_the_model_weights_and_its_own_bn_statistics(tmp_path):
    from dataclasses import replace
    run = fit(tiny_model(), *loaders(), replace(RECIPE, ema_decay=1e-9), out_dir=tmp_path, quiet=True)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    for k, v in ckpt["model"].items():
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(ckpt["ema"][f"module.{k}"], v)
    # BN statistics re-estimated for the averaged weights (here: the weights themselves) on
    # training batches, in train-mode passes: close to the model's own running averages.
    assert run.history["test_acc_ema"].map(math.isfinite).all()


def test_one_epoch_runs_and_reaches_the_peak_lr(tmp_path):
    recipe = Recipe(data_num_classes=3, data_batch_size=8).compressed(1)
    assert (recipe.train_lr_init_epochs, recipe.train_lr_final_epochs) == (0, 1)
    run = fit(tiny_model(), *loaders(), recipe, out_dir=tmp_path, quiet=True)
    assert list(run.history.epoch) == [0] and run.history.lr[0] == pytest.approx(0.2)


class InDouble:
    """A loader's batches in double precision."""

    def __init__(self, loader):
        self.loader, self.num_classes = loader, loader.num_classes

    def __len__(self):
        return len(self.loader)

    def set_epoch(self, epoch):
        self.loader.set_epoch(epoch)

    def __iter__(self):
        return ((x.double(), y) for x, y in self.loader)


def test_the_fast_layer_trains_the_same_network(tmp_path):
    """fast=True changes how, not what: IR-NET [C] on a few sample images, a step or two, the same
    losses to rounding (fp64 keeps rounding out of the comparison)."""
    import irnet_lib
    from irnet_lib.data import load_dataset, make_loader
    data = load_dataset("fashion-mnist-sample", train_subset=6, test_subset=10)
    losses = {}
    for on in (False, True):
        torch.manual_seed(0)
        model = irnet_lib.irnet("condconv", num_classes=10, width_mult=0.25).double()
        train, test = (InDouble(make_loader(data, s, 6, channels_last=True)) for s in ("train", "test"))
        run = fit(model, train, test, Recipe(data_num_classes=10, data_batch_size=6).compressed(2), fast=on,
                  quiet=True)
        losses[on] = run.history.train_loss.tolist() + run.history.test_loss.tolist()
        assert run.meta["speedups"]["condconv"] == ("fast" if on else "core")
    assert losses[True] == pytest.approx(losses[False], rel=1e-6)   # test losses are summed in fp32


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_without_the_fast_layer_a_run_leaves_the_process_alone(tmp_path):
    """train() with fast off: no mallopt call, no compiled library of the project mapped into the process.
    In a fresh process, so that nothing another test did counts."""
    import inspect

    from irnet_lib.fast import depthwise
    # The project's compiled library is known by its file name: cpp_extension.load(name=NAME) builds
    # NAME.so. A substring such as "irnet" would also match every library of an environment that
    # lives in a folder named irnet-something.
    names = ["irnet_per_example_depthwise", "irnet_per_example_depthwise_serial"]
    assert 'name="irnet_per_example_depthwise" + ("" if openmp else "_serial")' in inspect.getsource(depthwise._load), \
        "the fast layer names its library otherwise now: update the names here"
    code = textwrap.dedent("""
        import os, sys
        import irnet_lib.fast.allocator as allocator
        from irnet_lib import train
        calls = []
        allocator._libc = lambda: calls.append("mallopt") or None        # every mallopt goes through _libc
        run = train.main(["--block", "condconv", "--data", "fashion-mnist-sample", "--train-subset", "20",
                          "--test-subset", "10", "--epochs", "1", "--batch-size", "10", "--out", sys.argv[1],
                          "--quiet", "--no-fast", "--channels-last"])
        own = {name + ".so" for name in sys.argv[2:]}
        # A maps line is "address perms offset device inode path", and the path may hold spaces.
        paths = {fields[5].rstrip("\\n") for fields in (line.split(maxsplit=5) for line in open("/proc/self/maps"))
                 if len(fields) == 6}
        print(len(run.history), calls, sorted(p for p in paths if os.path.basename(p) in own))
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run"), *names], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "1 [] []"


def test_fast_false_runs_nothing_of_the_fast_layer_even_after_enable(tmp_path):
    """After irnet_lib.fast.enable(), a run with fast=False calls no function of irnet_lib/fast/ (and
    records the core's CondConv); fast=True does. In a fresh process: enable() is process-wide."""
    code = textwrap.dedent("""
        import os, sys
        import irnet_lib.fast
        from irnet_lib.train import train
        fast_dir = os.path.dirname(irnet_lib.fast.__file__) + os.sep
        irnet_lib.fast.enable()
        for on in (False, True):
            called = set()
            def profile(frame, event, arg):
                if event == "call" and frame.f_code.co_filename.startswith(fast_dir):
                    called.add(frame.f_code.co_name)
            sys.setprofile(profile)
            run = train("condconv", "fashion-mnist-sample", train_subset=20, test_subset=10, fast=on, quiet=True,
                        recipe=__import__("irnet_lib.recipe").recipe.Recipe(data_batch_size=10).compressed(1),
                        model_kwargs={"width_mult": 0.25})
            sys.setprofile(None)
            print(on, len(called), run.meta["speedups"]["condconv"], irnet_lib.fast.is_enabled())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    plain, fast = (line.split() for line in out[:2])
    assert plain == ["False", "0", "core", "True"]          # nothing called; enable() still holds after the run
    assert fast[0] == "True" and int(fast[1]) > 0 and fast[2:] == ["fast", "True"]


def test_enabled_false_turns_the_fast_layer_off_inside_its_block():
    import irnet_lib.fast as fast
    from irnet_lib import condconv
    before = condconv.formulation()
    try:
        with fast.enabled():
            assert fast.is_enabled()
            with fast.enabled(False):
                assert not fast.is_enabled() and condconv.formulation() is condconv.condconv2d
            assert fast.is_enabled()
    finally:
        condconv.use_formulation(None if before is condconv.condconv2d else before)
    assert condconv.formulation() is before
