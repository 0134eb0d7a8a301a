"""The benchmark's short mode on tiny settings: it runs, prints its table and ratios, saves JSON.

No timing is asserted (the CI machine is shared and slow); only that every figure is there.
"""
import json

import pytest

from benchmarks import bench

TINY = ["--short", "--batch", "2", "--infer-batch", "3", "--image-size", "32", "--reps", "2", "--warmup", "1",
        "--variants", "se", "condconv", "--modes", "eager", "fast"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = bench.main(TINY + ["--out", str(out)])
    return result, out / "cpu-short.json"


def test_short_mode_saves_json_with_hardware_rows_and_ratios(tiny_run):
    _result, path = tiny_run
    saved = json.loads(path.read_text())
    assert saved["hardware"]["device"] == "cpu" and saved["hardware"]["torch"]
    # which code computed CondConv is part of what was measured
    assert saved["hardware"]["cpu_matmul"] and saved["hardware"]["cpu_depthwise"]
    assert {(r["variant"], r["mode"]) for r in saved["rows"]} == {
        (v, m) for v in ("se", "condconv") for m in ("eager", "fast")}
    for row in saved["rows"]:
        assert row["train_img_s"] > 0 and row["infer_img_s"] > 0 and row["latency_ms"]["median"] > 0
        assert len(row["raw_s"]["train"]) == 2   # one time per repetition
        lo, hi = row["train_img_s_iqr"]
        assert lo <= row["train_img_s"] <= hi
        assert row["batch"] == 2 and row["infer_batch"] == 3
    ratios = saved["ratios"]
    assert ratios["default_mode"] == "fast"
    assert set(ratios["condconv_over_se_train"]["by_mode"]) == {"eager", "fast"}
    assert set(ratios["default_over_eager_train_speedup"]["by_variant"]) == {"se", "condconv"}


def test_projection_goes_through_the_data_pipeline(tiny_run):
    result, _ = tiny_run
    proj = result["projection"]
    assert proj["recipe"]["epochs"] == 55 and proj["recipe"]["train_images"] == 130_000
    for v in ("se", "condconv"):
        entry = proj["variants"][v]
        assert entry["total_s"] > 0 and entry["measured_steps"] >= 1
        assert entry["data_pipeline"] is True


def test_summary_prints_the_three_ratios_and_no_goals(tiny_run):
    text = tiny_run[0]["summary"]
    for needle in ("Hardware:", "(1) condconv / se", "(2) fast over contiguous fp32 eager", "(3)", "noisy"):
        assert needle in text
    assert "target" not in json.dumps(tiny_run[0]).lower()


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="variant"):
        bench.build("resnet50")
    with pytest.raises(ValueError, match="batch"):
        bench.Settings(batch=0).resolve()
    with pytest.raises(ValueError, match="mode"):
        bench.Settings(modes=("turbo",)).resolve()
    with pytest.raises(ValueError, match="device"):
        bench.Settings(device="tpu").resolve()


def test_cuda_request_without_gpu_says_so():
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="cuda"):
        bench.Settings(device="cuda").resolve()


def test_a_run_saves_as_it_goes():
    # The table as soon as it is measured, then once per projected variant: a run stopped by a
    # time limit during the (long) projection keeps what it measured.
    saved = []
    s = bench.Settings(short=True, batch=2, infer_batch=2, image_size=32, reps=1, warmup=1,
                       variants=("se", "condconv"), modes=("fast",))
    bench.run(s, log=lambda *a: None, save=lambda r: saved.append(json.loads(json.dumps(r, default=str))))
    assert len(saved) == 3
    assert saved[0]["rows"] and "projection" not in saved[0]
    assert list(saved[1]["projection"]["variants"]) == ["se"]
    assert list(saved[2]["projection"]["variants"]) == ["se", "condconv"]
