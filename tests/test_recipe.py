"""The Table 2 recipe and the course's per-epoch learning-rate schedule."""
import math

import pytest
import torch

from irnet_lib.recipe import TABLE_2, TABLE_3, Recipe, lr_at, make_optimizer, make_scheduler, schedule_table


def course_lr(e):
    """The reference formulas (shared/reference/README.md), written out independently."""
    lr_init, lr_final = 0.2 * 0.01, 0.2 * 0.001
    if e < 5:
        return lr_init + (0.2 - lr_init) * e / 5
    return lr_final + 0.5 * (0.2 - lr_final) * (1 + math.cos(math.pi * (e - 5) / (50 - 1)))


def test_table_2_fields_and_values():
    r = Recipe()
    assert [(row.parameter, row.value) for row in TABLE_2] == [
        ("TRAIN LR MAX", 0.2), ("TRAIN LR INIT SCALE", 0.01), ("TRAIN LR FINAL SCALE", 0.001),
        ("TRAIN LR INIT EPOCHS", 5), ("TRAIN LR FINAL EPOCHS", 50), ("TRAIN NUM EPOCHS", 55),
        ("DATA BATCH SIZE", 256), ("DATA NUM CLASSES", 100)]
    assert (r.momentum, r.nesterov, r.weight_decay, r.label_smoothing) == (0.9, True, 5e-5, 0.0)
    assert r.faithful and math.isclose(r.lr_init, 0.002) and math.isclose(r.lr_final, 0.0002)


def test_table_3_is_the_papers():
    assert [(p.block, p.training_hours, p.accuracy) for p in TABLE_3] == [
        ("standard", 5.5, 72.54), ("se", 6.0, 73.72), ("condconv", None, None)]


def test_schedule_at_every_epoch_of_55():
    table = schedule_table()   # read back from a stepped LambdaLR
    assert list(table.epoch) == list(range(55))
    for e, lr in zip(table.epoch, table.lr):
        assert lr == pytest.approx(course_lr(e), rel=1e-12, abs=1e-15), e
        assert lr == pytest.approx(lr_at(Recipe(), e), rel=1e-12)
    # The values the reference quotes.
    assert [round(v, 6) for v in table.lr[:6]] == [0.002, 0.0416, 0.0812, 0.1208, 0.1604, 0.2]
    assert round(table.lr[53], 6) == 0.000405
    assert table.lr[54] == pytest.approx(0.0002, abs=1e-15)
    assert (table.phase == "warm-up").sum() == 5
    assert all(a > b for a, b in zip(table.lr[5:], table.lr[6:]))   # strictly decreasing after warm-up


def test_torch_sequential_schedulers_give_the_same_curve():
    """The course's curve is also LinearLR followed by CosineAnnealingLR in torch's terms."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    seq = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, end_factor=1.0, total_iters=5),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=49, eta_min=0.0002)], milestones=[5])
    got = []
    for _ in range(55):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        seq.step()
    assert got == pytest.approx([course_lr(e) for e in range(55)], rel=1e-9, abs=1e-12)


def test_per_iteration_variant_is_smooth_and_meets_the_epochs():
    recipe = Recipe(lr_step="iteration")
    opt = make_optimizer(torch.nn.Linear(2, 2), recipe)
    sched = make_scheduler(opt, recipe, steps_per_epoch=4)
    lrs = []
    for _ in range(55 * 4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[::4][:54] == pytest.approx([course_lr(e) for e in range(54)], rel=1e-12)
    assert lrs[2] == pytest.approx((course_lr(0) + course_lr(1)) / 2)      # half-way, not a step
    assert min(lrs) == pytest.approx(0.0002)


def test_compressed_keeps_the_shape():
    r = Recipe().compressed(6, 1)
    lrs = [lr_at(r, e) for e in range(6)]
    assert lrs[0] == pytest.approx(0.002) and lrs[1] == pytest.approx(0.2) and lrs[5] == pytest.approx(0.0002)
    s = Recipe().scaled_to_batch(64)
    assert s.train_lr_max == pytest.approx(0.05) and s.lr_init == pytest.approx(0.0005)
    assert Recipe.from_dict(r.to_dict()) == r


@pytest.mark.parametrize("kwargs, match", [
    (dict(train_num_epochs=10), "must equal train_num_epochs"),
    (dict(train_lr_max=0), "train_lr_max"),
    (dict(lr_step="batch"), "lr_step"),
    (dict(label_smoothing=1.5), "label_smoothing"),
    (dict(data_batch_size=0), "data_batch_size"),
])
def test_bad_recipes_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Recipe(**kwargs)


def test_scheduler_refuses_an_optimizer_with_another_lr():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="make_optimizer"):
        make_scheduler(opt, Recipe())


def test_weight_decay_on_every_parameter():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = make_optimizer(model, Recipe())
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 5e-5
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == sum(p.numel() for p in model.parameters())


def test_test_crop_is_beyond_the_paper_and_old_checkpoints_still_match():
    r = Recipe(test_crop=64)
    assert not r.faithful and Recipe.from_dict(r.to_dict()) == r
    # written only when set: a recipe dict saved before the field existed equals today's default
    assert "test_crop" not in Recipe().to_dict() and Recipe.from_dict(Recipe().to_dict()) == Recipe()
    for bad in (0, 65, 60.5, True):
        with pytest.raises(ValueError, match="test_crop"):
            Recipe(test_crop=bad)


def test_ema_decay_is_beyond_the_paper_and_checked():
    assert not Recipe(ema_decay=0.999).faithful and "ema_decay" not in Recipe().to_dict()
    assert Recipe.from_dict(Recipe(ema_decay=0.999).to_dict()).ema_decay == 0.999
    for bad in (1.0, -0.1, True, "0.9"):
        with pytest.raises(ValueError, match="ema_decay"):
            Recipe(ema_decay=bad)
