"""CUDA-graph training steps: the refusals everywhere, the numbers where there is a GPU.

On a CPU only the decisions are tested (when fit captures, what it refuses and how it says so);
the GPU tests hold a replayed step against the same step run eagerly, for IR-NET's three blocks.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from test_train import RECIPE, loaders, tiny_model

from benchmarks import bench
from irnet_lib import irnet
from irnet_lib.fast.graphs import GraphedStep, GraphedTrainingStep, graphs_available
from irnet_lib.loop import EagerStep, fit
from irnet_lib.runtime import Runtime

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
    run = fit(tiny_model(), *loaders(), RECIPE.compressed(2, 1), quiet=True, fast=True)
    assert run.meta["speedups"]["cuda_graph"] is False


@pytest.mark.parametrize("fast, cuda_graph, compile, world, precision, expected", [
    (True, None, False, 1, "bf16", "graph"), (True, None, False, 1, "fp32", "graph"),
    (False, None, False, 1, "bf16", "eager"),          # the fast layer off: plain steps
    (True, None, True, 1, "bf16", "eager"), (True, None, False, 2, "bf16", "eager"),
    (True, None, False, 1, "fp16", "eager"),           # the gradient scaler reads on the host
    (True, False, False, 1, "bf16", "eager"), (False, True, False, 1, "bf16", "graph"),
    (True, True, True, 1, "bf16", "torch.compile"), (True, True, False, 2, "bf16", "one process"),
    (True, True, False, 1, "fp16", "bf16 or fp32")])
def test_when_fit_captures(fast, cuda_graph, compile, world, precision, expected):
    rt = Runtime(fast=fast, cuda_graph=cuda_graph, compile=compile)
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cuda = torch.device("cuda")
    eager = EagerStep(model, opt, F.cross_entropy, torch.device("cpu"), "fp32")   # stands in for the loop's step

    def make():
        return rt.speedups(cuda, precision, world).make_step(eager, model, opt, F.cross_entropy)
    if expected in ("graph", "eager"):
        with pytest.warns(UserWarning, match="fp16") if precision == "fp16" and fast else _no_warning():
            step = make()
        assert isinstance(step, GraphedTrainingStep) is (expected == "graph")
    else:
        with pytest.raises(ValueError, match=expected):
            make()


def _no_warning():
    import contextlib
    return contextlib.nullcontext()


def test_bench_graph_mode_is_for_gpus():
    assert "graph_bf16" not in bench.Settings().resolve().modes   # the CPU default leaves it out
    with pytest.raises(ValueError, match="need a GPU"):
        bench.Settings(modes=("fast", "graph_bf16")).resolve()
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
                            fast=True, cuda_graph=graphed)
    assert runs[True].meta["speedups"]["cuda_graph"] and not runs[False].meta["speedups"]["cuda_graph"]
    a, b = runs[True].history, runs[False].history
    assert all(math.isclose(u, v, rel_tol=1e-3) for u, v in zip(a.train_loss, b.train_loss))
