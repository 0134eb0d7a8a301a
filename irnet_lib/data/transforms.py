"""The course's transforms, twice: torchvision's (one image at a time) and a batched tensor version.

The course trains with ``RandomResizedCrop(56)`` (scale 0.08-1, ratio 3/4-4/3), a horizontal flip
and ImageNet normalisation, and tests with ``Resize(64)``, ``CenterCrop(56)`` and the same
normalisation. :func:`train_transform` and :func:`test_transform` are exactly that, with
``torchvision.transforms.v2``.

:class:`TensorTransform` does the same to a whole batch of 64x64 uint8 images already in memory
(on the GPU when there is one): :func:`sample_crop_boxes` draws the crop boxes with
RandomResizedCrop's own rule (ten tries of a random area and aspect ratio, then a centre-crop
fallback), vectorised over the batch, and ``torchvision.ops.roi_align`` crops and resizes all of
them in one call. roi_align's adaptive sampling (``sampling_ratio=0``) is plain bilinear
interpolation where a crop is enlarged (as torchvision's) and averages ceil(crop/56)^2 bilinear
samples per output pixel where it is shrunk, close to (not equal to) torchvision's antialiased resize:
on natural images the two
differ by about 1-2 grey levels out of 255 on average (``tests/test_data_transforms.py`` measures
it). The test transform is a plain slice of the 64x64 image, identical to torchvision's output up
to float rounding.
"""
from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align
from torchvision.transforms import v2

from ..checks import check_int

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE = 64  # the size every dataset is served at (short side); the test transform's Resize
CROP_SIZE = 56  # the network's input size
SCALE = (0.08, 1.0)  # RandomResizedCrop's defaults, which the course keeps
RATIO = (3 / 4, 4 / 3)


def check_test_crop(test_crop) -> int:
    """The test images' centre crop: an int from 1 to ``RESIZE`` (56 is the course's, 64 the whole image)."""
    return check_int("test_crop", test_crop, 1, RESIZE, why=f" (the test images are resized to {RESIZE} px)")


def train_transform(size: int = CROP_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """The course's train transform for one image (PIL or uint8 CHW tensor) -> float CHW tensor."""
    return v2.Compose([v2.ToImage(), v2.RandomResizedCrop(size, scale=SCALE, ratio=RATIO, antialias=True),
                       v2.RandomHorizontalFlip(p=0.5), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(mean, std)])


def test_transform(resize: int = RESIZE, size: int = CROP_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """The course's test transform for one image (PIL or uint8 CHW tensor) -> float CHW tensor."""
    return v2.Compose([v2.ToImage(), v2.Resize(resize, antialias=True), v2.CenterCrop(size),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


test_transform.__test__ = False  # not a pytest test, even when a test module imports it


def sample_crop_boxes(n: int, height: int, width: int, *, scale=SCALE, ratio=RATIO, attempts: int = 10,
                      generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Crop boxes ``(n, 4)`` as ``(top, left, h, w)`` integers, drawn like ``RandomResizedCrop``.

    Per image: up to ``attempts`` draws of an area fraction uniform in ``scale`` and a log-uniform
    aspect ratio in ``ratio``; the first draw that fits the image wins, and its position is uniform.
    When none fits, the fallback is torchvision's: the whole image, or its centre cropped to the
    nearest allowed ratio. All images are drawn at once (``n x attempts`` candidates).
    """
    area = height * width
    kw = dict(generator=generator, device=device)
    # flat 1-D draws: some CPU builds run unary ops on small 2-D tensors ~1000x slower (threading)
    m = n * attempts
    target_area = area * torch.empty(m, device=device).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(m, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    # torchvision rounds with Python's round(); torch.round is the same half-to-even rule
    w = torch.round(torch.sqrt(target_area * aspect)).view(n, attempts)
    h = torch.round(torch.sqrt(target_area / aspect)).view(n, attempts)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.int(), dim=1)  # index of the first draw that fits (0 when none does)
    found = ok.any(dim=1)
    rows = torch.arange(n, device=device)
    w, h = w[rows, first], h[rows, first]

    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    # uniform integer offsets in [0, H - h] and [0, W - w], as torch.randint(0, H - h + 1) draws them
    u = torch.rand(n, 2, **kw)
    top = torch.floor(u[:, 0] * (height - h + 1)).clamp(max=height - h)
    left = torch.floor(u[:, 1] * (width - w + 1)).clamp(max=width - w)
    top = torch.where(found, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(found, left, torch.full_like(left, (width - fw) // 2))
    return torch.stack([top, left, h, w], dim=1).long()


class TensorTransform:
    """The course's transforms on a batch of uint8 images ``(B, C, H, W)`` (C = 1 or 3) at once.

    ``train=True``: RandomResizedCrop(56) + horizontal flip + normalisation;
    ``train=False``: Resize(64) + CenterCrop(56) + normalisation (for 64x64 images the resize
    is the identity, so it is a slice). Single-channel images are expanded to 3 channels after the
    crop (three times less work than before). Output: float32 ``(B, 3, size, size)`` on the
    input's device.
    """

    def __init__(self, train: bool, size: int = CROP_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 resize: int = RESIZE):
        self.train, self.size, self.resize = train, size, resize
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"TensorTransform expects uint8 images (B, 1 or 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        b, _, hgt, wid = images.shape
        if self.train:
            x = self.random_resized_crop(images, generator)
            flip = torch.rand(b, generator=generator, device=images.device) < 0.5
            x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
        else:
            if (hgt, wid) != (self.resize, self.resize):
                x = v2.functional.resize(images, [self.resize], antialias=True)
            else:
                x = images
            x = v2.functional.center_crop(x, [self.size, self.size]).float()
        if self.mean.device != x.device:
            # Once, not per batch: a copy from pageable CPU memory waits for the GPU to finish
            # all queued work, which would stall every training step behind its data.
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        # one fused step: /255, then (x - mean) / std
        x = (x * (1.0 / 255.0) - self.mean) / self.std  # broadcasting expands 1 channel to 3
        return x.contiguous()

    def random_resized_crop(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        """Float crops ``(B, C, size, size)`` in the 0-255 range, boxes drawn by sample_crop_boxes."""
        b, _, hgt, wid = images.shape
        box = sample_crop_boxes(b, hgt, wid, generator=generator, device=images.device).float()
        top, left, h, w = box.unbind(1)
        rois = torch.stack([torch.arange(b, device=images.device, dtype=torch.float32),
                            left, top, left + w, top + h], dim=1)
        # aligned=True: pixel k covers [k, k+1), the convention of torchvision's resize
        return roi_align(images.float(), rois, output_size=self.size, spatial_scale=1.0, sampling_ratio=0,
                         aligned=True)
