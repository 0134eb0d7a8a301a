"""Store a trained run's best weights as the repository's pretrained network for its block.

    python tools/package_pretrained.py runs/pretrained/standard [runs/pretrained/se ...]

Reads ``best.pt`` and ``history.json`` of each run folder, writes the weights in fp16 to
``irnet_lib/pretrained/<block>.pt`` and describes them in ``irnet_lib/pretrained/manifest.json``
(data, recipe, hardware, test accuracy, sha256), which ``irnet_lib.load_pretrained`` checks.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from irnet_lib.pretrained import FOLDER  # noqa: E402
from irnet_lib.runs import load_checkpoint, read_history  # noqa: E402


def package(run_folder: Path) -> dict:
    run_folder = Path(run_folder)
    run = read_history(run_folder)
    best = load_checkpoint(run_folder / "best.pt")
    meta, block = run.meta, run.meta["variant"]
    state = {k: v.half() if v.is_floating_point() else v for k, v in best["model"].items()}
    path = FOLDER / f"{block}.pt"
    torch.save(state, path)
    row = next(r for r in best["history"] if r["epoch"] == best["epoch"])
    return block, {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "num_classes": meta["num_classes"],
        "model_kwargs": meta["config"].get("model_kwargs", {}),
        "data": f"{meta['dataset']}: {meta['train_size']} train images (stratified subset, seed {meta['seed']}), "
                f"tested on {meta['test_size']} test images; 64 px pipeline, 56 px crops",
        "classes": "Fashion-MNIST: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, "
                   "Ankle boot",
        "recipe": meta["config"]["recipe"],
        "epoch": best["epoch"],
        "epochs": len(run.history),
        "test_acc": round(row["test_acc"], 2),
        "final_test_acc": round(run.final_accuracy, 2),
        "hardware": meta["hardware"],
        "torch": meta["torch"],
        "wall_minutes": round(float(run.history["epoch_seconds"].sum()) / 60, 1),
        "history": f"results/pretrained-cpu/{block}/history.json",
        "stored_as": "fp16 state_dict (loaded back into fp32)",
    }


def main(folders):
    path = FOLDER / "manifest.json"
    entries = json.loads(path.read_text()) if path.is_file() else {}
    for folder in folders:
        block, entry = package(Path(folder))
        entries[block] = entry
        size = (FOLDER / entry["file"]).stat().st_size / 1e6
        print(f"{block}: {entry['test_acc']} % at epoch {entry['epoch']}, {size:.1f} MB")
    order = {"standard": 0, "se": 1, "condconv": 2}
    path.write_text(json.dumps(dict(sorted(entries.items(), key=lambda kv: order.get(kv[0], 9))), indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or sys.exit(__doc__))
