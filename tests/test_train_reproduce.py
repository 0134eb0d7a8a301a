"""The reproduce pipeline: Table 3 and Figure 5 from stored histories, and the command end to end."""
import json

import pandas as pd
import pytest

from irnet_lib import reproduce
from irnet_lib.reproduce import load_runs, main, to_markdown


def fake_run(folder, block, accs, seconds, hardware="Test CPU, 2 cores"):
    meta = {"variant": block, "dataset": "fashion-mnist", "train_size": 30, "test_size": 10, "num_classes": 10,
            "hardware": hardware, "precision": "fp32",
            "config": {"recipe": {"train_num_epochs": len(accs), "train_lr_max": 0.05, "data_batch_size": 64}}}
    epochs = [{"epoch": i, "lr": 0.1, "train_loss": 2 - i / 10, "train_acc": a - 1, "test_loss": 2 - i / 9,
               "test_acc": a, "epoch_seconds": seconds, "train_seconds": seconds - 1,
               "train_images_per_s": 30 / (seconds - 1), "elapsed_seconds": seconds * (i + 1)}
              for i, a in enumerate(accs)]
    (folder / block).mkdir(parents=True)
    (folder / block / "history.json").write_text(json.dumps({"meta": meta, "epochs": epochs}))


def test_table3_and_figure5_from_stored_histories(tmp_path):
    fake_run(tmp_path, "standard", [50, 70, 65], 10)
    fake_run(tmp_path, "se", [55, 72, 71], 12)
    fake_run(tmp_path, "condconv", [40, 60, 74], 20)
    df = main(["--from-results", str(tmp_path), "--figure", str(tmp_path / "fig5.png"), "--quiet"])
    assert list(df["Block"]) == ["Standard", "SE enhanced", "SE and cond conv enhanced"]
    assert list(df["Best acc % (ours)"]) == [70, 72, 74] and list(df["Final acc % (ours)"]) == [65, 71, 74]
    assert list(df["Best epoch"]) == [1, 1, 2] and list(df["Time (ours, min)"]) == [0.5, 0.6, 1.0]
    assert df["Paper acc % (ImageNet-100)"].tolist()[:2] == [72.54, 73.72]
    assert pd.isna(df["Paper acc % (ImageNet-100)"].iloc[2])       # the paper's empty CondConv row
    md = (tmp_path / "table3.md").read_text()
    assert "fashion-mnist (30 train / 10 test images" in md and "Test CPU" in md and "ImageNet" in md
    assert pd.read_csv(tmp_path / "table3.csv").shape == (3, 12)
    assert (tmp_path / "fig5.png").stat().st_size > 10_000


def test_runs_of_several_machines_say_which_block_ran_where(tmp_path):
    fake_run(tmp_path, "standard", [50, 70], 10, hardware="GPU one")
    fake_run(tmp_path, "se", [55, 72], 12, hardware="GPU one")
    fake_run(tmp_path, "condconv", [40, 60], 20, hardware="GPU two")
    runs = load_runs(tmp_path)
    assert reproduce.runs_label(runs).endswith("Standard and SE enhanced on GPU one; SE and cond conv enhanced on GPU two")
    main(["--from-results", str(tmp_path), "--figure", str(tmp_path / "fig5.png"), "--quiet"])
    assert "on GPU one; SE and cond conv enhanced on GPU two" in (tmp_path / "table3.md").read_text()


def test_missing_results_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no histories under"):
        load_runs(tmp_path)


def test_markdown_without_tabulate():
    assert to_markdown(pd.DataFrame({"a": [1, None], "b": ["x", "y"]})) == "| a | b |\n|---|---|\n| 1.0 | x |\n|  | y |\n"


def test_quick_recipe_is_what_the_quick_flag_builds():
    """Notebook 06 trains with ``quick_recipe()``; the command line with ``--quick``: one recipe."""
    from irnet_lib.recipe import recipe_from_args
    from irnet_lib.reproduce import QUICK, _parser, _quick_defaults, quick_recipe

    parser = _parser()
    args = parser.parse_args(["--quick"])
    _quick_defaults(args, parser)
    assert recipe_from_args(args) == quick_recipe()
    assert quick_recipe().lr_step == "iteration" and quick_recipe().train_num_epochs == QUICK["epochs"]


def test_quick_command_end_to_end(tmp_path):
    """The README's main job, shrunk further: three blocks, two epochs of ten images each."""
    df = main(["--quick", "--train-subset", "10", "--test-subset", "10", "--epochs", "2", "--batch-size", "10",
               "--out", str(tmp_path / "quick"), "--figure", str(tmp_path / "fig5.png"), "--quiet"])
    assert len(df) == 3 and (tmp_path / "fig5.png").is_file() and (tmp_path / "quick" / "table3.md").is_file()
    for block in ("standard", "se", "condconv"):
        assert (tmp_path / "quick" / block / "history.csv").is_file()
    # the quick mode steps the lr per iteration: CondConv does not survive the per-epoch 100x jump
    assert json.loads((tmp_path / "quick" / "condconv" / "history.json").read_text())["meta"]["config"]["recipe"][
        "lr_step"] == "iteration"
