"""The exercises of the notebooks, checked by name: each solution's number is "correct", a wrong answer gets
the exercise's hint (not the answer), an unanswered one says so. Each lesson's tests below its own heading."""
import pytest

from irnet_lib.exercises import EXERCISES, check

# ------------------------------------------------------------------ notebooks 04, 05, 07, 08: numeric answers

#: The numbers the folded solutions of the notebooks give (as a student would type them).
SOLUTIONS_04_05_07_08 = {
    "04.1": 3_211_264, "04.2": 28, "04.3": 243_060_096,
    "05.1": 2_634_117_120, "05.2": 5_494_272, "05.3": 13_663_468, "05.4": 200_704,
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
