"""Maintenance of the notebook series (for authors, not students).

    python tools/notebooks.py new 01_inverted_residual_block "Title"   # skeleton with the standard head
    python tools/notebooks.py sync                                      # badges + Colab cells from REPO
    python tools/notebooks.py execute notebooks/01_*.ipynb              # re-execute in fast mode, outputs stored

Notebooks are committed executed in fast mode (``IRNET_SMALL=1``), the mode the test suite
compares them in, so that nbval sees the same exact outputs.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from irnet_lib.notebook import colab_badge, colab_install_source  # noqa: E402

BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
SETUP_SOURCE = "# NBVAL_IGNORE_OUTPUT\nfrom irnet_lib.notebook import setup\n\nenv = setup(seed=0)"


def head_cells(name: str, title: str):
    path = f"notebooks/{name}.ipynb"
    return [
        nbformat.v4.new_markdown_cell(f"# {title}\n\n{colab_badge(path)}"),
        nbformat.v4.new_code_cell(colab_install_source()),
        nbformat.v4.new_code_cell(SETUP_SOURCE),
    ]


def sync(paths):
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        rel = Path(p).resolve().relative_to(ROOT).as_posix()
        nb.cells[0].source = BADGE.sub(colab_badge(rel), nb.cells[0].source)
        if nb.cells[1].source.startswith("# Colab only"):
            nb.cells[1].source = colab_install_source()
        nbformat.write(nb, p)


TABLE = re.compile(r"(<!-- notebooks -->\n).*?(<!-- /notebooks -->)", re.S)


def notebook_table() -> str:
    """The README's table of notebooks, one row each: title (from its first cell) and badge."""
    rows = ["| notebook | what it covers | |", "|---|---|---|"]
    for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(p, as_version=4)
        first = nb.cells[0].source.splitlines()
        title = first[0].lstrip("# ").strip()
        summary = next((ln.strip() for ln in first[1:] if ln.strip() and not ln.startswith("[![")), "")
        rel = p.relative_to(ROOT).as_posix()
        rows.append(f"| [{p.stem}]({rel}) | {title}{': ' + summary if summary else ''} | {colab_badge(rel)} |")
    return "\n".join(rows) + "\n"


def sync_readme():
    """The README's notebook table: regenerated from the notebooks, badges pointing at ``REPO``."""
    readme = ROOT / "README.md"
    readme.write_text(TABLE.sub(lambda m: m.group(1) + notebook_table() + m.group(2), readme.read_text()))


def execute(paths):
    env = dict(os.environ, IRNET_SMALL="1")
    for p in paths:
        print("executing", p, flush=True)
        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                        "--inplace", "--ExecutePreprocessor.timeout=1200",
                        "--ExecutePreprocessor.kernel_name=python3", str(Path(p).resolve())], check=True, env=env,
                       cwd=Path(p).resolve().parent)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "new":
        name, title = args
        nb = nbformat.v4.new_notebook(cells=head_cells(name, title))
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, ROOT / "notebooks" / f"{name}.ipynb")
    elif cmd == "sync":
        sync(args or sorted(str(p) for p in (ROOT / "notebooks").glob("[0-9]*.ipynb")))
        sync_readme()
    elif cmd == "execute":
        execute(args)
    else:
        sys.exit(__doc__)
