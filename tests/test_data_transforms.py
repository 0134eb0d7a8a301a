"""The batched tensor pipeline against torchvision's: same crop distribution, same flips, same test
images; and the loader contract (lengths, epochs, DDP shards, devices, layouts)."""

import pytest
import torch
from torchvision import transforms as v1
from torchvision.transforms import v2

from irnet_lib.data import (
    CROP_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TensorLoader,
    TensorTransform,
    TorchvisionLoader,
    load_dataset,
    make_loader,
    sample_crop_boxes,
    test_transform,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sample():
    return load_dataset("fashion-mnist-sample")


def torchvision_boxes(n, h, w, seed):
    torch.manual_seed(seed)
    image = torch.empty(1, h, w)
    return torch.tensor([v1.RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(n)])


@pytest.mark.parametrize("h, w", [(64, 64), (64, 96), (64, 20)])
def test_crop_boxes_distributed_like_torchvision(h, w):
    n = 6000
    ours = sample_crop_boxes(n, h, w, generator=torch.Generator().manual_seed(0)).double()
    ref = torchvision_boxes(n, h, w, seed=0).double()
    for boxes in (ours, ref):
        top, left, bh, bw = boxes.unbind(1)
        assert (top >= 0).all() and (left >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()
    qs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)

    def stats(b):
        top, left, bh, bw = b.unbind(1)
        scale = bh * bw / (h * w)
        return (torch.quantile(scale, qs), torch.quantile(torch.log(bw / bh), qs),
                (top + bh / 2).mean() / h, (left + bw / 2).mean() / w)

    s_ours, s_ref = stats(ours), stats(ref)
    # quantiles of 6000 draws: standard error about 0.01 for the scale, 0.005 for the centre
    assert torch.allclose(s_ours[0], s_ref[0], atol=0.03), (s_ours[0], s_ref[0])
    assert torch.allclose(s_ours[1], s_ref[1], atol=0.04), (s_ours[1], s_ref[1])
    assert abs(s_ours[2] - s_ref[2]) < 0.02 and abs(s_ours[3] - s_ref[3]) < 0.02
    # the fallback (no draw fits in ten tries): the same box, as often
    fallback_ours = (ours == ref.mode(0).values).all(1).double().mean()
    fallback_ref = (ref == ref.mode(0).values).all(1).double().mean()
    assert abs(fallback_ours - fallback_ref) < 0.03


def test_fallback_box_matches_torchvision():
    # a 64x2 strip: no crop with ratio in [3/4, 4/3] and >= 8 % of the area fits, so every box is the
    # fallback: full width, height 2 / (3/4) rounded, centred
    ours = sample_crop_boxes(50, 64, 2, generator=torch.Generator().manual_seed(0))
    ref = torchvision_boxes(50, 64, 2, seed=0)
    assert torch.equal(ours, ref)
    assert ours[0].tolist() == [30, 0, 3, 2]


def test_crops_resized_like_torchvision(sample):
    """roi_align vs torchvision's antialiased resized_crop on the same boxes: close, not equal."""
    images = sample.tensor_cache("train")[0][:200].expand(-1, 3, -1, -1)
    boxes = sample_crop_boxes(200, 64, 64, generator=torch.Generator().manual_seed(1))
    t = TensorTransform(train=True)
    g = torch.Generator().manual_seed(1)
    ours = t.random_resized_crop(images, g)  # draws the same boxes from the same seed
    ref = torch.stack([v2.functional.resized_crop(images[i], *boxes[i].tolist(), [CROP_SIZE, CROP_SIZE],
                                                  antialias=True) for i in range(200)]).float()
    diff = (ours - ref).abs()
    # grey levels out of 255: mean ~0.3, 99th percentile ~3 (edges of shrunk crops)
    assert diff.mean() < 1.0 and torch.quantile(diff.flatten()[::7], 0.99) < 8, (diff.mean(), diff.max())


def test_flips_half_the_time():
    ramp = (torch.arange(64) * 4).to(torch.uint8).expand(2000, 1, 64, 64).contiguous()
    x = TensorTransform(train=True)(ramp, torch.Generator().manual_seed(0))
    rising = (x[:, 0, :, -1] > x[:, 0, :, 0]).all(1)
    falling = (x[:, 0, :, -1] < x[:, 0, :, 0]).all(1)
    assert bool((rising | falling).all())
    assert abs(falling.double().mean() - 0.5) < 0.04  # 4 standard errors of 2000 fair coins


def test_test_transform_equals_torchvision(sample):
    images = sample.tensor_cache("test")[0][:64]
    ours = TensorTransform(train=False)(images)
    ref = torch.stack([test_transform()(sample.test[i][0]) for i in range(64)])
    assert ours.shape == (64, 3, 56, 56)
    assert torch.allclose(ours, ref, atol=1e-5)
    # and resizing bigger images first, as Resize(64) does
    big = torch.randint(0, 256, (4, 3, 80, 96), dtype=torch.uint8)
    ref = torch.stack([test_transform()(im) for im in big])
    assert torch.allclose(TensorTransform(train=False)(big), ref, atol=1e-5)


def test_whole_image_test_crop_beyond_the_paper(sample):
    # test_crop=64: the whole 64 px test image (the network pools globally, so any size runs).
    tensor = next(iter(make_loader(sample, "test", batch_size=8, test_crop=64)))[0]
    tv = next(iter(make_loader(sample, "test", batch_size=8, pipeline="torchvision", num_workers=0,
                               test_crop=64)))[0]
    assert tensor.shape == tv.shape == (8, 3, 64, 64)
    assert torch.allclose(tensor, tv, atol=1e-5)
    # training crops stay 56 px whatever the test crop
    assert next(iter(make_loader(sample, "train", batch_size=8, test_crop=64)))[0].shape == (8, 3, 56, 56)
    for bad in (0, 65, 56.0, True):
        with pytest.raises(ValueError, match="test_crop"):
            make_loader(sample, "test", test_crop=bad)


def test_normalisation():
    white = torch.full((1, 3, 64, 64), 255, dtype=torch.uint8)
    x = TensorTransform(train=False)(white)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[0, :, 0, 0], expected)


def test_bad_input_to_tensor_transform():
    with pytest.raises(ValueError, match="uint8"):
        TensorTransform(train=True)(torch.zeros(2, 3, 64, 64))


# ------------------------------------------------------------------------------------ loaders
@pytest.mark.parametrize("pipeline", ["tensor", "torchvision"])
def test_loader_contract(sample, pipeline):
    loader = make_loader(sample, "train", batch_size=500, pipeline=pipeline, num_workers=0)
    assert len(loader) == 3 and loader.num_samples == 1200  # 500 + 500 + 200: the last batch is kept
    batches = list(loader)
    assert [len(x) for x, _ in batches] == [500, 500, 200]
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (500, 3, 56, 56) and y.dtype == torch.int64
    assert x.device.type == "cpu" and y.device.type == "cpu"
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted(sample.targets("train").tolist())
    test = make_loader(sample, "test", batch_size=256, pipeline=pipeline, num_workers=0)
    ys = torch.cat([y for _, y in test])
    assert torch.equal(ys, sample.targets("test"))  # the test split is not shuffled


def test_auto_is_tensor_and_bad_arguments(sample):
    assert isinstance(make_loader(sample, "test"), TensorLoader)
    assert isinstance(make_loader(sample, "test", pipeline="torchvision"), TorchvisionLoader)
    with pytest.raises(ValueError, match="pipeline must be"):
        make_loader(sample, "test", pipeline="dali")
    with pytest.raises(ValueError, match="split must be"):
        make_loader(sample, "val")
    with pytest.raises(ValueError, match="rank"):
        make_loader(sample, "train", rank=2, world_size=2)
    with pytest.raises(TypeError, match="ImageData"):
        make_loader(sample.train, "train")


@pytest.mark.parametrize("pipeline", ["tensor", "torchvision"])
def test_epochs_are_deterministic(sample, pipeline):
    def first(loader, epoch):
        loader.set_epoch(epoch)
        return next(iter(loader))

    small = load_dataset("fashion-mnist-sample", train_subset=100)
    a = make_loader(small, "train", batch_size=32, pipeline=pipeline, seed=1, num_workers=0)
    b = make_loader(small, "train", batch_size=32, pipeline=pipeline, seed=1, num_workers=0)
    xa, ya = first(a, 3)
    xb, yb = first(b, 3)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    _, yc = first(a, 4)
    assert not torch.equal(ya, yc)
    xd, _ = first(make_loader(small, "train", batch_size=32, pipeline=pipeline, seed=2, num_workers=0), 3)
    assert not torch.equal(xa, xd)


def test_torchvision_crops_do_not_depend_on_workers():
    small = load_dataset("fashion-mnist-sample", train_subset=40)
    out = []
    for workers in (0, 2):
        loader = make_loader(small, "train", batch_size=40, pipeline="torchvision", num_workers=workers)
        loader.set_epoch(5)
        out.append(next(iter(loader)))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


@pytest.mark.parametrize("pipeline", ["tensor", "torchvision"])
def test_ddp_shards(sample, pipeline):
    small = load_dataset("fashion-mnist-sample", train_subset=100, test_subset=50)
    world = 3
    train = [make_loader(small, "train", 16, pipeline=pipeline, rank=r, world_size=world, num_workers=0)
             for r in range(world)]
    for loader in train:
        loader.set_epoch(2)
    assert [l.num_samples for l in train] == [34, 34, 34] and [len(l) for l in train] == [3, 3, 3]
    orders = [l.indices() for l in train]
    assert set(torch.cat(orders).tolist()) == set(range(100))  # 2 images padded, as DistributedSampler
    test = [make_loader(small, "test", 16, pipeline=pipeline, rank=r, world_size=world, num_workers=0)
            for r in range(world)]
    assert sum(l.num_samples for l in test) == 50
    assert sorted(torch.cat([l.indices() for l in test]).tolist()) == list(range(50))  # each image once
    ys = torch.cat([y for l in test for _, y in l])
    assert sorted(ys.tolist()) == sorted(small.targets("test").tolist())


def test_channels_last(sample):
    x, _ = next(iter(make_loader(sample, "test", 8, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_pipelines_agree_on_average(sample):
    """Same transforms, two implementations: per-channel means and stds of an epoch agree."""
    stats = []
    for pipeline in ("tensor", "torchvision"):
        xs = torch.cat([x for x, _ in make_loader(sample, "train", 400, pipeline=pipeline, num_workers=0)])
        stats.append(torch.stack([xs.mean((0, 2, 3)), xs.std((0, 2, 3))]))
    assert torch.allclose(stats[0], stats[1], atol=0.03), stats


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_loader(sample):
    loader = make_loader(sample, "train", 256, device="cuda")
    x, y = next(iter(loader))
    assert x.is_cuda and y.is_cuda and x.shape == (256, 3, 56, 56)
