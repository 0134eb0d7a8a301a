"""CUDA-graph training steps: the refusals everywhere, the numbers where there is a GPU.

On a CPU only the decisions are tested (when fit captures, what it refuses and how it says so);
the GPU tests hold a replayed step against the same step run eagerly, for IR-NET's three blocks.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from irnet_lib import bench, irnet
from irnet_lib import train as train_mod
from irnet_lib.graphs import GraphedStep, graphs_available
from irnet_lib.train import fit

from test_train import RECIPE, loaders, tiny_model

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_a_cpu_batch_is_refused_with_the_fix():
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="CUDA device.*cuda_graph=False"):
        GraphedStep(tiny_model(), F.cross_entropy, x, y)
    assert not graphs_available("cpu")


def test_fit_insisting_on_graphs_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        fit(tiny_model(), *loaders(), RECIPE, quiet=True, cuda_graph=True)


def test_fit_on_a_cpu_records_that_it_did_not_capture():
    run = fit(tiny_model(), *loaders(), RECIPE.compressed(2, 1), quiet=True)
    assert run.meta["cuda_graph"] is False


@pytest.mark.parametrize("cuda_graph, compile, world, expected", [
    (None, False, 1, True), (None, True, 1, False), (None, False, 2, False), (False, False, 1, False),
    (True, False, 1, True), (True, True, 1, "compile"), (True, False, 2, "processes")])
def test_when_fit_captures(monkeypatch, cuda_graph, compile, world, expected):
    monkeypatch.setattr(train_mod, "graphs_available", lambda device: True)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            train_mod._use_cuda_graph(cuda_graph, torch.device("cuda"), compile, world)
    else:
        assert train_mod._use_cuda_graph(cuda_graph, torch.device("cuda"), compile, world) is expected


def test_bench_graph_mode_is_for_gpus():
    assert "graph_bf16" not in bench.Settings().resolve().modes   # the CPU default leaves it out
    with pytest.raises(ValueError, match="need a GPU"):
        bench.Settings(modes=("channels_last", "graph_bf16")).resolve()
    assert bench.DEFAULT_MODE["cuda"] == "graph_bf16" and bench.MODES["graph_bf16"].graphed


# ----------------------------------------------------------------------------------- on a GPU

def _eager_grads(model, x, y, dtype):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@gpu
@pytest.mark.parametrize("block", ["standard", "se", "condconv"])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_a_replayed_step_equals_the_eager_step(block, dtype):
    torch.manual_seed(0)
    model = irnet(block, num_classes=10).cuda().to(memory_format=torch.channels_last).train()
    g = torch.Generator(device="cuda").manual_seed(1)
    batches = [(torch.randn(n, 3, 56, 56, device="cuda", generator=g).contiguous(memory_format=torch.channels_last),
                torch.randint(0, 10, (n,), device="cuda", generator=g)) for n in (16, 16, 5)]
    buffers = [b.clone() for b in model.buffers()]
    step = GraphedStep(model, F.cross_entropy, *batches[0], autocast_dtype=dtype)
    for b, saved in zip(model.buffers(), buffers):
        assert torch.equal(b, saved)   # the warm-up passes left no trace in BN's statistics
    twin = irnet(block, num_classes=10).cuda().to(memory_format=torch.channels_last).train()
    tol = dict(rtol=2e-2, atol=2e-3) if dtype else dict(rtol=1e-4, atol=1e-5)
    for x, y in batches:   # two replays, then the eager path for a batch of another size
        twin.load_state_dict(model.state_dict())
        want_loss, want = _eager_grads(twin, x, y, dtype)
        _, loss = step(x, y)
        torch.testing.assert_close(loss, want_loss, **tol)
        for p, w in zip(model.parameters(), want):
            torch.testing.assert_close(p.grad, w, **tol)
        for b, w in zip(model.buffers(), twin.buffers()):
            torch.testing.assert_close(b, w, **tol)


@gpu
def test_disconnected_gradients_are_caught():
    model = tiny_model().cuda()
    x, y = torch.randn(8, 3, 8, 8, device="cuda"), torch.randint(0, 3, (8,), device="cuda")
    step = GraphedStep(model, F.cross_entropy, x, y)
    step(x, y)
    model.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="set_to_none"):
        step(x, y)


@gpu
def test_fit_with_graphs_trains_like_fit_without(tmp_path):
    runs = {}
    for graphed in (True, False):
        train, test = loaders()
        for loader in (train, test):
            loader.x, loader.y = loader.x.cuda(), loader.y.cuda()
        runs[graphed] = fit(tiny_model(), train, test, RECIPE, device="cuda", precision="fp32", quiet=True,
                            cuda_graph=graphed)
    assert runs[True].meta["cuda_graph"] and not runs[False].meta["cuda_graph"]
    a, b = runs[True].history, runs[False].history
    assert all(math.isclose(u, v, rel_tol=1e-3) for u, v in zip(a.train_loss, b.train_loss))
