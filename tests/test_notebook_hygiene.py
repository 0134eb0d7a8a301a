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


def problems(nb_path: Path) -> list[str]:
    """Everything wrong with one notebook, as readable lines (empty when it is fine)."""
    out = []
    cells = json.loads(nb_path.read_text())["cells"]
    rel = nb_path.relative_to(ROOT).as_posix()
    for i, c in enumerate(cells):
        src = "".join(c.get("source", ""))
        if c["cell_type"] != "code":
            continue
        if src.strip() and c.get("execution_count") is None:
            out.append(f"cell {i} was never executed")
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                out.append(f"cell {i} has a stored error ({o.get('ename')})")
        for line in src.splitlines():
            if ANY_MARKER.match(line) and not EXACT_MARKER.match(line):
                out.append(f"cell {i}: {line.strip()!r} is not a marker nbval recognises")
        if src.rstrip().endswith(";") and "plt." in src.splitlines()[-1]:
            out.append(f"cell {i} ends a figure with ';' instead of plt.show()")
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
    solutions = [c for c in cells if c["cell_type"] == "markdown" and "<details>" in "".join(c["source"])]
    if not 2 <= len(exercises) <= 6 or len(solutions) < 2:
        out.append("the notebook should end with 2-4 exercises, each with a folded <details> solution")
    return out


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_conventions(nb_path):
    assert problems(nb_path) == []


#: A lesson stays readable in one sitting; the appendix (engineering, for readers who want it) may be longer.
MAX_CELLS, MAX_MARKDOWN_WORDS = 40, 2500
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
    ]}
    p = ROOT / "notebooks" / "_hygiene_probe.ipynb"
    try:
        p.write_text(json.dumps(bad))
        found = "\n".join(problems(p))
    finally:
        p.unlink()
    for expected in ("never executed", "stored error", "not a marker", "not a title", "Colab badge", "exercises"):
        assert expected in found


def test_series_is_numbered_without_gaps():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == sorted(set(numbers))


def test_readme_notebook_table_is_in_sync():
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    from notebooks import notebook_table

    assert notebook_table() in (ROOT / "README.md").read_text(), "run: python tools/notebooks.py sync"
