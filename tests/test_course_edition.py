"""The student edition (``python tools/notebooks.py student-edition OUTDIR``): the notebooks without
their solutions and outputs, still valid, and runnable top to bottom from a folder outside the clone."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("notebooks_tool", ROOT / "tools" / "notebooks.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

SENTINEL = "<details><summary>Solution"
NOTEBOOKS = tool.numbered()


def _synthetic(tag_all: bool):
    v4 = nbformat.v4
    cells = [
        v4.new_markdown_cell("# 99 · Synthetic\n\n## Exercise 1\n\nHow many?"),
        v4.new_code_cell("answer = None  # TODO\ncheck(\"01.1\", answer)", execution_count=1,
                         outputs=[v4.new_output("stream", name="stdout", text="answer: not answered yet\n")]),
        v4.new_markdown_cell(f"{SENTINEL}</summary>\n\n**3**\n</details>", metadata={"tags": ["solution"]}),
        v4.new_code_cell("answer = 3", execution_count=2, metadata={"tags": ["solution"]}),
        v4.new_markdown_cell("## Exercise 2\n\nHint: look at Table 1."),
        v4.new_markdown_cell(f"{SENTINEL}</summary>\n\n**4**\n</details>",
                             metadata={"tags": ["solution"] if tag_all else ["hide-input"]}),
    ]
    nb = v4.new_notebook(cells=cells)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_solutions_and_outputs_are_removed(tmp_path):
    nbformat.write(_synthetic(tag_all=True), tmp_path / "99_synthetic.ipynb")
    [out] = tool.student_edition(tmp_path / "student", [tmp_path / "99_synthetic.ipynb"])
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    assert [c.source.splitlines()[0] for c in nb.cells] == [
        "# 99 · Synthetic", "answer = None  # TODO", "## Exercise 2"]
    assert nb.cells[1].outputs == [] and nb.cells[1].execution_count is None
    assert "widgets" not in nb.metadata
    assert SENTINEL not in out.read_text()


def test_an_untagged_solution_is_refused(tmp_path):
    nbformat.write(_synthetic(tag_all=False), tmp_path / "99_synthetic.ipynb")
    with pytest.raises(ValueError, match=r"^99_synthetic.ipynb: cell 5 holds .* not tagged 'solution'"):
        tool.student_edition(tmp_path / "student", [tmp_path / "99_synthetic.ipynb"])
    assert not (tmp_path / "student").exists(), "a refusal must leave no partial edition"


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    """The student edition of the series, built by the command line, in a folder outside the clone."""
    out = tmp_path_factory.mktemp("student")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "notebooks.py"), "student-edition", str(out)],
                          check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    return out


def test_the_series_edition_holds_no_solution_and_no_output(edition):
    assert sorted(p.name for p in edition.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    for master in NOTEBOOKS:
        path = edition / master.name
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert SENTINEL not in path.read_text(), path.name
        for c in nb.cells:
            assert "solution" not in c.metadata.get("tags", []), path.name
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None, path.name
        # Everything else is kept, in order: the skeletons, checks and hints.
        kept = [c.source for c in nbformat.read(master, as_version=4).cells
                if "solution" not in c.metadata.get("tags", [])]
        assert [c.source for c in nb.cells] == kept, path.name


def test_notebook_01_runs_top_to_bottom_outside_the_clone(edition, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("IRNET_SMALL", "1")
    monkeypatch.setenv("IRNET_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("IRNET_RUNS", str(tmp_path / "runs"))
    path = edition / "01_inverted_residual_block.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(edition)}}).execute()   # raises on an error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert [o for o in outputs if o.output_type == "error"] == []
    assert any("not answered yet" in o.get("text", "") for o in outputs)   # the checks ran on the empty answers
