"""The exercises of the notebooks, checked by name: each solution's number is "correct", a wrong answer gets
the exercise's hint (not the answer), an unanswered one says so. Each lesson's tests below its own heading."""
import pytest

from irnet_lib.exercises import EXERCISES, check

# ------------------------------------------------------------------ notebooks 04, 05, 07, 08: numeric answers

#: The numbers the folded solutions of the notebooks give (as a student would type them).
SOLUTIONS_04_05_07_08 = {
    "04.1": 3_211_264, "04.2": 28, "04.3": 243_060_096,
    "05.1": 2_634_117_120, "05.2": 5_494_272, "05.3": 13_663_468, "05.4": 802_816,
    "07.1": 1500, "07.2": 0.48, "07.3": 2.39,
    "08.1": 172, "08.2": 15, "08.3": 363,
}


@pytest.mark.parametrize("name, solution", SOLUTIONS_04_05_07_08.items())
def test_the_solutions_number_is_correct(name, solution, capsys):
    assert check(name, solution)
    assert capsys.readouterr().out == f"Exercise {name}: correct.\n"


@pytest.mark.parametrize("name, solution", SOLUTIONS_04_05_07_08.items())
def test_a_wrong_answer_gets_the_hint_not_the_answer(name, solution, capsys):
    wrong = solution * 1.25
    assert not check(name, wrong)
    out = capsys.readouterr().out
    assert "not yet" in out and EXERCISES[name].hint in out
    expected = EXERCISES[name].expected()
    assert f"{expected:,}" not in out and str(expected) not in out.replace(str(wrong), "")


@pytest.mark.parametrize("name", SOLUTIONS_04_05_07_08)
def test_an_unanswered_exercise_says_so(name, capsys):
    assert not check(name, None)
    assert "not answered yet" in capsys.readouterr().out


def test_a_unit_slip_is_named():
    """07.1 asks for megabytes: an answer in bytes or gigabytes is told to check the unit."""
    from irnet_lib.exercises.core import Exercise
    ok, message = EXERCISES["07.1"].verdict(EXERCISES["07.1"].expected() / 1000)
    assert not ok and "10^-3" in message and "unit" in message
    assert isinstance(EXERCISES["07.1"], Exercise)


def test_the_stored_runs_the_gpu_exercises_read():
    """07.2, 07.3 and 08.2 read the committed H100 runs: the numbers the notebooks print from the same files."""
    assert EXERCISES["07.2"].expected() == pytest.approx(10.1 / 21.0, abs=0.005)
    assert EXERCISES["07.3"].expected() == pytest.approx(20.78 * 0.1151, rel=0.002)
    assert EXERCISES["08.2"].expected() == pytest.approx(1e3 * (48.01 - 28.22) / 1353, rel=0.002)


# ------------------------------------------------------------------ notebooks 00, 01, 02, 03: numeric answers

SOLUTIONS_00_01_02_03 = {
    "00.1": 5, "00.2": 2.25, "00.3": 0.765625,
    "01.1": 8_228_864, "01.2": 81_280, "01.4": 11,
    "02.1": 205_600, "02.2": 320_128, "02.3": 1_280_512 + 4 * 1_420_608,
    "03.1": 410_244, "03.2": 8 * 1_464_480, "03.3": 84_736,
}


@pytest.mark.parametrize("name, solution", SOLUTIONS_00_01_02_03.items())
def test_lessons_00_to_03_solutions_are_correct_and_wrong_answers_get_the_hint(name, solution, capsys):
    assert check(name, solution)
    assert capsys.readouterr().out == f"Exercise {name}: correct.\n"
    assert not check(name, solution * 1.25)
    out = capsys.readouterr().out
    assert "not yet" in out and EXERCISES[name].hint in out
    assert str(EXERCISES[name].expected()) not in out.replace(str(solution * 1.25), "")
    assert not check(name, None)
    assert "not answered yet" in capsys.readouterr().out


# ------------------------------------------------------------------ notebooks 01, 02, 03: code the student writes

def _block_a():
    from torch import nn

    class MyBlock(nn.Module):
        def __init__(self, in_channels, out_channels, expansion=4, kernel_size=3, stride=1):
            super().__init__()
            mid = expansion * in_channels
            self.has_skip = in_channels == out_channels and stride == 1
            self.conv_pw = nn.Conv2d(in_channels, mid, 1, bias=False)
            self.bn1, self.act1 = nn.BatchNorm2d(mid), nn.ReLU(inplace=True)
            self.conv_dw = nn.Conv2d(mid, mid, kernel_size, stride, kernel_size // 2, groups=mid, bias=False)
            self.bn2, self.act2 = nn.BatchNorm2d(mid), nn.ReLU(inplace=True)
            self.conv_pwl = nn.Conv2d(mid, out_channels, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out_channels)
            self.relu_at_the_end = False

        def forward(self, x):
            y = self.act1(self.bn1(self.conv_pw(x)))
            y = self.act2(self.bn2(self.conv_dw(y)))
            y = self.bn3(self.conv_pwl(y))
            y = y.relu() if self.relu_at_the_end else y
            return x + y if self.has_skip else y

    return MyBlock


def test_block_a_checker():
    MyBlock = _block_a()
    ok, message = EXERCISES["01.3"].verdict(MyBlock)
    assert ok, message

    class WithReLU(MyBlock):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.relu_at_the_end = True

    ok, message = EXERCISES["01.3"].verdict(WithReLU)
    assert not ok and "computes something else" in message

    class Unwritten(MyBlock):
        def forward(self, x):
            raise NotImplementedError("MyBlock.forward is not written yet")

    ok, message = EXERCISES["01.3"].verdict(Unwritten)
    assert not ok and "not written yet" in message


def _squeeze_excite(gate="sigmoid", bias=True, pool=(2, 3), scale=True):
    import torch
    from torch import nn

    class MySqueezeExcite(nn.Module):
        def __init__(self, channels, reduction=4):
            super().__init__()
            self.fc1 = nn.Linear(channels, channels // reduction, bias=bias)
            self.act = nn.ReLU(inplace=True)
            self.fc2 = nn.Linear(channels // reduction, channels)
            self.gate = nn.Sigmoid()

        def forward(self, x):
            e = self.fc2(self.act(self.fc1(x.mean(pool))))
            s = {"sigmoid": self.gate, "softmax": lambda t: torch.softmax(t, 1), "none": lambda t: t}[gate](e)
            return x * s[:, :, None, None] if scale else s

    return MySqueezeExcite


@pytest.mark.parametrize("slip, words", [
    (dict(), "Figure 3's squeeze-and-excite"),
    (dict(gate="softmax"), "softmax over the channels instead of a sigmoid"),
    (dict(gate="none"), "the sigmoid is missing"),
    (dict(bias=False), "the weights do not load"),
    (dict(pool=1), "pools over H and W"),
    (dict(scale=False), "returns shape (3, 64); expected (3, 64, 7, 5)"),
])
def test_squeeze_excite_checker_names_the_slip(slip, words):
    ok, message = EXERCISES["02.4"].verdict(_squeeze_excite(**slip))
    assert ok == (not slip) and words in message, message


def test_squeeze_excite_checker_unwritten():
    from torch import nn

    class MySqueezeExcite(nn.Module):
        def __init__(self, channels, reduction=4):
            super().__init__()
            raise NotImplementedError("MySqueezeExcite.__init__ is not written yet")

    ok, message = EXERCISES["02.4"].verdict(MySqueezeExcite)
    assert not ok and message.startswith("not written yet")


def _condconv(groups_times_batch=True, fold="reshape", loop=False, unfold=True):
    import torch.nn.functional as F

    from irnet_lib.condconv import condconv2d_reference

    def my_condconv2d(x, weight, routing_weights, stride=1, padding=0, groups=1):
        if loop:
            return condconv2d_reference(x, weight, routing_weights, stride, padding, groups)
        B, C, H, W = x.shape
        M, c_out = weight.shape[:2]
        kernels = (routing_weights @ weight.reshape(M, -1)).reshape(B * c_out, *weight.shape[2:])
        folded = x.reshape(1, B * C, H, W) if fold == "reshape" else x.transpose(0, 1).reshape(1, B * C, H, W)
        y = F.conv2d(folded, kernels, stride=stride, padding=padding, groups=B * groups if groups_times_batch else groups)
        return y.reshape(B, c_out, *y.shape[-2:]) if unfold else y

    return my_condconv2d


@pytest.mark.parametrize("slip, words", [
    (dict(), "one grouped convolution gives the per-example definition's outputs"),
    (dict(groups_times_batch=False), "groups = B * groups"),
    (dict(fold="transpose"), "right for one example, wrong for a batch"),
    (dict(loop=True), "3 calls of conv2d"),
    (dict(unfold=False), "returns shape (1, 24, 9, 9); expected (3, 8, 9, 9)"),
])
def test_condconv_checker_names_the_slip(slip, words):
    ok, message = EXERCISES["03.4"].verdict(_condconv(**slip))
    assert ok == (not slip) and words in message, message


def test_condconv_checker_unwritten():
    def my_condconv2d(x, weight, routing_weights, stride=1, padding=0, groups=1):
        raise NotImplementedError("my_condconv2d is not written yet")

    ok, message = EXERCISES["03.4"].verdict(my_condconv2d)
    assert not ok and message.startswith("not written yet")


# ------------------------------------------------------------------ notebook 06: the schedule and the loop, written by the student

def _notebook_solution(number: str, k: int) -> str:
    """The Python code of the folded solution of exercise k in notebook ``number``."""
    import json
    import re
    from pathlib import Path

    path = next((Path(__file__).resolve().parents[1] / "notebooks").glob(f"{number}_*.ipynb"))
    exercise = None
    for cell in json.loads(path.read_text())["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and (m := re.search(r"^### Exercise (\d+)", src, re.M)):
            exercise = int(m.group(1))
        elif exercise == k and "solution" in cell.get("metadata", {}).get("tags", []):
            return re.search(r"```python\n(.*?)```", src, re.S).group(1)
    raise AssertionError(f"no solution code for exercise {k} in notebook {number}")


def _define(code: str, name: str):
    import math

    import torch.nn.functional as F

    from irnet_lib.recipe import Recipe
    namespace = {"math": math, "F": F, "r": Recipe()}
    exec(code, namespace)
    return namespace[name]


def test_course_log_lr_is_the_closed_form():
    from irnet_lib.exercises.lesson06 import course_lrs
    from irnet_lib.recipe import Recipe, lr_at
    lrs = course_lrs()
    assert len(lrs) == 55 and all(abs(v - lr_at(Recipe(), e)) < 1e-6 for e, v in enumerate(lrs))


def test_lr_checker_right_wrong_unwritten():
    import math

    from irnet_lib.recipe import Recipe, lr_at
    for right in (_define(_notebook_solution("06", 1), "lr"), lambda e: lr_at(Recipe(), e)):
        ok, message = EXERCISES["06.1"].verdict(right)
        assert ok, message
    assert _define(_notebook_solution("06", 1), "lr")(30) == pytest.approx(0.0968980, abs=5e-8)   # the solution's text

    ok, message = EXERCISES["06.1"].verdict(lambda e: 0.1)
    assert not ok and "lr(0) = 0.1, but the course's epoch 0 ran at 0.002" in message and "off-by-one" in message

    def unwritten(epoch):
        raise NotImplementedError("lr(epoch) is not written yet")
    ok, message = EXERCISES["06.1"].verdict(unwritten)
    assert not ok and message.startswith("not written yet")

    ok, message = EXERCISES["06.1"].verdict(lambda e: [0.1])
    assert not ok and "should return a number" in message

    def over_50(e):   # the solution's 0.000397: a cosine over 50 steps stops one short
        return lr_at(Recipe(), e) if e < 5 else 0.0002 + 0.0999 * (1 + math.cos(math.pi * (e - 5) / 50))
    assert over_50(54) == pytest.approx(0.000397, abs=5e-7)
    ok, message = EXERCISES["06.1"].verdict(over_50)
    assert not ok and "lr(6) = 0.199803" in message and "spans final_epochs - 1" in message


def test_lr_checker_names_each_usual_slip():
    from irnet_lib.exercises.lesson06 import _lr_slips
    for why, slip in _lr_slips().items():
        ok, message = EXERCISES["06.1"].verdict(slip)
        assert not ok and why in message and "but the course's epoch" in message, message


def _epoch(slip=None):
    import torch.nn.functional as F

    def train_one_epoch(model, loader, optimizer):
        if slip != "eval":
            model.train()
        losses = []
        for i, (x, y) in enumerate(loader):
            loss = F.cross_entropy(model(x), y, reduction="sum" if slip == "sum" else "mean")
            if slip != "no zero_grad":
                optimizer.zero_grad()
            if slip == "step first":
                optimizer.step()
            loss.backward()
            if slip not in ("step first", "no step") and not (slip == "no last step" and i == len(loader) - 1):
                optimizer.step()
            losses.append(loss.item())
        return sum(losses) / len(losses) if slip == "mean" else losses
    return train_one_epoch


@pytest.mark.parametrize("slip, words", [
    ("eval", "step 0: your loss is"),
    ("eval", "model.train()"),
    ("sum", "summed over the batch"),
    ("no zero_grad", "step 2: your loss is"),
    ("no zero_grad", "zero_grad is missing"),
    ("step first", "the weights never change"),
    ("no step", "the weights never change"),
    ("mean", "returns one number"),
    ("no last step", "the weights after the epoch do not"),
])
def test_loop_checker_names_the_slip(slip, words):
    ok, message = EXERCISES["06.2"].verdict(_epoch(slip))
    assert not ok and words in message, message


def test_loop_checker_right_late_step_and_unwritten():
    ok, message = EXERCISES["06.2"].verdict(_define(_notebook_solution("06", 2), "train_one_epoch"))
    assert ok, message
    ok, message = EXERCISES["06.2"].verdict(_epoch())
    assert ok, message

    import torch.nn.functional as F

    def late(model, loader, optimizer):   # step, zero_grad, backward: the step changes weights backward still needs
        model.train()
        losses = []
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.step()
            optimizer.zero_grad()
            loss.backward()
            losses.append(loss.item())
        return losses
    ok, message = EXERCISES["06.2"].verdict(late)
    assert not ok and "RuntimeError" in message and "backward first, then step" in message

    def unwritten(model, loader, optimizer):
        raise NotImplementedError("train_one_epoch is not written yet")
    ok, message = EXERCISES["06.2"].verdict(unwritten)
    assert not ok and message.startswith("not written yet")


#: The numbers of notebook 06's folded solutions, as a student would type them.
SOLUTIONS_06 = {"06.3": 100, "06.4": -0.22, "06.5": 17.5}


@pytest.mark.parametrize("name, solution", SOLUTIONS_06.items())
def test_lesson_06_solutions_are_correct_and_wrong_answers_get_the_hint(name, solution, capsys):
    assert check(name, solution)
    assert capsys.readouterr().out == f"Exercise {name}: correct.\n"
    assert not check(name, solution * 1.25)
    out = capsys.readouterr().out
    assert "not yet" in out and EXERCISES[name].hint in out
    assert not check(name, None)
    assert "not answered yet" in capsys.readouterr().out
