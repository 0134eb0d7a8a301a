"""Regenerate data/fashion-mnist-sample.npz, the small real dataset committed with the repository.

    python data/make_sample.py [FOLDER_WITH_FASHION_MNIST_IDX_FILES]

Default source: Debian's package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/).
Takes, per class, 120 images of Fashion-MNIST's train split and 40 of its test split, drawn at
random with a fixed seed (so the same files always give the same sample), kept in their original
order, stored as uint8 28x28 (compressed npz).
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from irnet_lib.data.datasets import DEBIAN_FASHION_MNIST, FASHION_FILES, FASHION_MNIST_CLASSES, _find_idx, read_idx

PER_CLASS = {"train": 120, "test": 40}
SEED = 0


OUT = Path(__file__).resolve().parent / "fashion-mnist-sample.npz"


def main(source: Path = DEBIAN_FASHION_MNIST, out: Path = OUT):
    rng = np.random.default_rng(SEED)
    arrays = {}
    for split, (img, lab) in FASHION_FILES.items():
        images, labels = read_idx(_find_idx(source, img)), read_idx(_find_idx(source, lab))
        keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), PER_CLASS[split], replace=False)
                                       for c in range(10)]))
        arrays[f"x_{split}"], arrays[f"y_{split}"] = images[keep], labels[keep]
    np.savez_compressed(out, **arrays, classes=np.array(FASHION_MNIST_CLASSES))
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB):",
          {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEBIAN_FASHION_MNIST)
