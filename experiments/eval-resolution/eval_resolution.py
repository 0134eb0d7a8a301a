"""Test at the whole 64 px image instead of the course's 56 px centre crop (beyond the paper).

Training sees random crops of 8-100 % of each image resized to 56 px, so objects look *larger*
in training than in a 56 px centre crop of the test image (Touvron et al. 2019, "Fixing the
train-test resolution discrepancy"). IR-NET ends in a global average pool, so it runs on 64 px
inputs unchanged; evaluating on the whole image is one option, ``test_crop=64``.

    python experiments/eval-resolution/eval_resolution.py                   # Fashion-MNIST 3,000 / 1,000, 5 epochs, CPU

Trains each block with the CPU recipe of results/fashion-mnist-cpu-3000 (resuming what is in the
output folder), then evaluates the final weights at both test crops on the same test images.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from irnet_lib.data import load_dataset, make_loader
from irnet_lib.loop import evaluate
from irnet_lib.recipe import Recipe
from irnet_lib.train import train


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", nargs="+", default=["standard", "se"])
    p.add_argument("--train-subset", type=int, default=3000)
    p.add_argument("--test-subset", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default="experiments/eval-resolution")
    args = p.parse_args(argv)
    out = Path(args.out)
    data = load_dataset("fashion-mnist", train_subset=args.train_subset, test_subset=args.test_subset, seed=0)
    recipe = Recipe().scaled_to_batch(args.batch_size).compressed(args.epochs, 1)
    rows = []
    for block in args.blocks:
        run = train(block, data, recipe=recipe, out_dir=out / block, quiet=True)
        row = {"block": block, "epochs": len(run.history), "hardware": run.meta["hardware"],
               "train_minutes": round(run.history["epoch_seconds"].sum() / 60, 1)}
        for crop in (56, 64):
            res = evaluate(run.model, make_loader(data, "test", 256, channels_last=True, test_crop=crop))
            row[f"test acc % ({crop} px)"] = round(res["acc"], 2)
            row[f"test loss ({crop} px)"] = round(res["loss"], 4)
        row["gain (points)"] = round(row["test acc % (64 px)"] - row["test acc % (56 px)"], 2)
        rows.append(row)
        print(row)
    df = pd.DataFrame(rows)
    df.to_csv(out / "results.csv", index=False)
    (out / "results.json").write_text(json.dumps({"data": f"fashion-mnist {args.train_subset}/{args.test_subset}",
                                                   "recipe": recipe.to_dict(), "rows": rows}, indent=1))
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
