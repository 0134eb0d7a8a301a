"""Two processes with DistributedDataParallel (gloo, CPU) give the run of one process with the
same global batch: the results' meaning does not depend on the number of GPUs."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_train import RECIPE, StandInLoader, tiny_model

from irnet_lib.loop import fit
from irnet_lib.runs import load_checkpoint

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

GLOBAL_BATCH = 8


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        # No BN in the model: BN statistics are per process under DDP (as in the course's
        # single-GPU runs per process), which is the one thing that is not global.
        kw = dict(batch_size=GLOBAL_BATCH // world, rank=rank, world_size=world)
        fit(tiny_model(bn=False), StandInLoader(**kw), StandInLoader(n=16, train=False, rank=rank,
                                                                     world_size=world, batch_size=4),
            RECIPE, out_dir=out_dir, quiet=True, meta={"config": {"processes": "any"}})
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_equals_one_process(tmp_path, monkeypatch):
    # Four OpenMP threads on two cores: let waiting threads sleep instead of spinning (read by the
    # children's OpenMP runtime at start-up).
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp")), nprocs=2, join=True)
    single = fit(tiny_model(bn=False), StandInLoader(batch_size=GLOBAL_BATCH),
                 StandInLoader(n=16, train=False, batch_size=4), RECIPE, out_dir=tmp_path / "one",
                 quiet=True, meta={"config": {"processes": "any"}})
    ddp = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ddp["epoch"] == RECIPE.train_num_epochs - 1
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(ddp["model"][k], v, rtol=1e-4, atol=1e-5)
    hd = ddp["history"]
    assert [r["train_images"] for r in hd] == [48] * 4 and [r["test_images"] for r in hd] == [16] * 4
    for r, (_, s) in zip(hd, single.history.iterrows()):
        assert r["train_loss"] == pytest.approx(s.train_loss, rel=1e-4)
        assert r["test_acc"] == pytest.approx(s.test_acc)
    import json
    assert json.loads((tmp_path / "ddp" / "history.json").read_text())["meta"]["world_size"] == 2
