"""The conventions of notebooks/README.md, checked on every notebook of the series."""
import json
import re
from pathlib import Path

import pytest

from irnet_lib.notebook import colab_badge, colab_install_source

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ANY_MARKER = re.compile(r"^\s*#\s*NBVAL_\w*")
EXACT_MARKER = re.compile(r"^# NBVAL_(IGNORE_OUTPUT|CHECK_OUTPUT|SKIP|RAISES_EXCEPTION)$")


#: What a stored output must not show: the test suite's smaller run, or a path of the machine that ran it.
NOT_THE_STUDENTS_RUN = re.compile(r"small mode|fast mode: on|smoke run|(^|[\s'\"(=:])/(work|root|home|tmp|Users|content)/")
SOLUTION = "<details><summary>Solution"
CHECK_CALL = re.compile(r"\bcheck\(\s*[\"'](\d\d)\.\d+[\"']")


def _text(output: dict) -> str:
    t = output.get("text") or output.get("data", {}).get("text/plain", "")
    return "".join(t) if isinstance(t, list) else str(t)


def _cell_problems(i: int, c: dict, number: str) -> list[str]:
    src, out = "".join(c.get("source", "")), []
    if c["cell_type"] == "markdown":
        if SOLUTION in src and "solution" not in c.get("metadata", {}).get("tags", []):
            out.append(f"cell {i} holds a solution but lacks the cell tag 'solution' (the student edition drops by tag)")
        return out
    if src.strip() and c.get("execution_count") is None:
        out.append(f"cell {i} was never executed")
    for o in c.get("outputs", []):
        if o.get("output_type") == "error":
            out.append(f"cell {i} has a stored error ({o.get('ename')})")
        if NOT_THE_STUDENTS_RUN.search(_text(o)):
            out.append(f"cell {i}: its stored output is not a student's default run (small mode, or a machine path)")
    for line in src.splitlines():
        if ANY_MARKER.match(line) and not EXACT_MARKER.match(line):
            out.append(f"cell {i}: {line.strip()!r} is not a marker nbval recognises")
    if src.rstrip().endswith(";") and "plt." in src.splitlines()[-1]:
        out.append(f"cell {i} ends a figure with ';' instead of plt.show()")
    if "check_answer(" in src:
        out.append(f"cell {i} checks an answer in plain sight (check_answer); use check(\"{number}.k\", answer)")
    out += [f"cell {i} checks exercise {n}.x of another notebook" for n in CHECK_CALL.findall(src) if n != number]
    return out


def problems(nb_path: Path) -> list[str]:
    """Everything wrong with one notebook, as readable lines (empty when it is fine)."""
    cells = json.loads(nb_path.read_text())["cells"]
    rel, number = f"notebooks/{nb_path.name}", nb_path.name[:2]   # the path its Colab badge names
    out = [p for i, c in enumerate(cells) for p in _cell_problems(i, c, number)]
    first = "".join(cells[0]["source"]) if cells else ""
    if not first.startswith("# "):
        out.append("the first cell is not a title")
    if colab_badge(rel) not in first:
        out.append("the first cell lacks the Colab badge for this path (run tools/notebooks.py sync)")
    if len(cells) < 3 or "".join(cells[1]["source"]) != colab_install_source():
        out.append("cell 1 is not the Colab install cell (run tools/notebooks.py sync)")
    if len(cells) < 3 or "setup(" not in "".join(cells[2]["source"]):
        out.append("cell 2 is not the set-up cell")
    exercises = [c for c in cells if c["cell_type"] == "markdown" and "Exercise" in "".join(c["source"])]
    solutions = [c for c in cells if c["cell_type"] == "markdown" and SOLUTION in "".join(c["source"])]
    if not 2 <= len(exercises) <= 6 or len(solutions) < 2:
        out.append("the notebook should end with 2-4 exercises, each with a folded <details> solution")
    return out


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_conventions(nb_path):
    assert problems(nb_path) == []


#: A lesson stays readable in one sitting; the appendix (engineering, for readers who want it) may be longer.
MAX_CELLS, MAX_MARKDOWN_WORDS = 46, 2800
LONG_ALLOWED = ("08_appendix_engineering.ipynb",)


def length(nb_path: Path) -> tuple[int, int]:
    """(number of cells, words of markdown) of a notebook."""
    cells = json.loads(nb_path.read_text())["cells"]
    words = sum(len("".join(c.get("source", "")).split()) for c in cells if c["cell_type"] == "markdown")
    return len(cells), words


@pytest.mark.parametrize("nb_path", [p for p in NOTEBOOKS if p.name not in LONG_ALLOWED], ids=lambda p: p.name)
def test_lesson_is_not_too_long(nb_path):
    cells, words = length(nb_path)
    assert cells <= MAX_CELLS and words <= MAX_MARKDOWN_WORDS, (
        f"{nb_path.name}: {cells} cells, {words} words of markdown (at most {MAX_CELLS} and {MAX_MARKDOWN_WORDS}); "
        "split it, or move engineering detail to the appendix")


def test_hygiene_check_catches_bad_notebooks(tmp_path):
    bad = {"cells": [
        {"cell_type": "markdown", "source": "no title", "metadata": {}},
        {"cell_type": "code", "source": "x = 1", "execution_count": None, "outputs": [], "metadata": {}},
        {"cell_type": "code", "source": "#NBVAL_IGNORE_OUTPUTS\n1/0", "execution_count": 2,
         "outputs": [{"output_type": "error", "ename": "ZeroDivisionError"}], "metadata": {}},
        {"cell_type": "code", "source": "env = setup()", "execution_count": 3, "metadata": {},
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "device: cpu | small mode (IRNET_SMALL)"}]},
        {"cell_type": "code", "source": "print(run.out_dir)", "execution_count": 4, "metadata": {},
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "/home/me/irnet/runs/x"}]},
        {"cell_type": "code", "source": "check_answer(answer, 42)\ncheck(\"03.1\", answer)", "execution_count": 5,
         "outputs": [], "metadata": {}},
        {"cell_type": "markdown", "source": "<details><summary>Solution</summary> 42 </details>", "metadata": {}},
    ]}
    p = tmp_path / "_hygiene_probe.ipynb"
    p.write_text(json.dumps(bad))
    found = "\n".join(problems(p))
    for expected in ("never executed", "stored error", "not a marker", "not a title", "Colab badge", "exercises",
                     "not a student's default run", "in plain sight", "of another notebook", "cell tag 'solution'"):
        assert expected in found
    assert found.count("not a student's default run") == 2


def test_series_is_numbered_without_gaps():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == sorted(set(numbers))


def test_readme_notebook_table_is_in_sync():
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    from notebooks import notebook_table

    assert notebook_table() in (ROOT / "README.md").read_text(), "run: python tools/notebooks.py sync"


#: The course's lessons; the appendix (08) is optional reading and says so at its top.
COURSE = [p for p in NOTEBOOKS if p.name < "08"]
PAPERS = {"MobileNetV2": "1801.04381", "SENet": "1709.01507", "CondConv": "1904.04971", "Fashion-MNIST": "1708.07747"}


def _markdown(nb_path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("nb_path", COURSE, ids=lambda p: p.name)
def test_lesson_has_a_frame(nb_path):
    """Objectives, prerequisites and time at the top (the title cell); a Summary and References at the end."""
    md = _markdown(nb_path)
    top = md[0]
    assert "What you will learn" in top and 3 <= len(re.findall(r"^\s*[-*] ", top, re.M)) <= 8, \
        "the title cell lists 3-5 objectives under 'What you will learn'"
    assert "Prerequisites" in top and "Time" in top
    headings = [ln for cell in md for ln in cell.splitlines() if ln.startswith("## ")]
    assert "## Summary" in headings and "## References" in headings
    references = next(cell for cell in md if cell.lstrip().startswith("## References"))
    assert re.search(r"\]\(https?://", references), "References link their sources"


def test_the_series_links_the_papers_it_builds_on():
    text = "\n".join(cell for p in COURSE for cell in _markdown(p))
    missing = [name for name, arxiv in PAPERS.items() if f"arxiv.org/abs/{arxiv}" not in text]
    assert not missing


def test_the_appendix_says_it_is_optional():
    appendix = [p for p in NOTEBOOKS if p.name.startswith("08")]
    assert appendix and "optional" in _markdown(appendix[0])[0].lower()


@pytest.mark.parametrize("number", ["01", "02", "03", "06"])
def test_coding_exercise_with_a_checker(number):
    """Students write code in these lessons: an exercise whose checker runs their code (CodeExercise)."""
    from irnet_lib.exercises import EXERCISES, CodeExercise
    coded = [k for k, e in EXERCISES.items() if k.startswith(number + ".") and isinstance(e, CodeExercise)]
    assert coded, f"notebook {number} has no coding exercise in irnet_lib.exercises"
    nb = next(p for p in NOTEBOOKS if p.name.startswith(number))
    sources = ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    assert all(any(f'check("{k}"' in s for s in sources) for k in coded)
    assert any("TODO" in s for s in sources), "the skeleton marks what the student writes with TODO"


def test_every_exercise_is_checked_in_its_notebook():
    from irnet_lib.exercises import EXERCISES
    sources = {p.name[:2]: p.read_text() for p in NOTEBOOKS}
    unused = [k for k in EXERCISES if f'check(\\"{k}\\"' not in sources.get(k[:2], "")]
    assert not unused, f"exercises defined but checked in no notebook: {unused}"
