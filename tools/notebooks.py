"""Maintenance of the notebook series (for authors, not students).

    python tools/notebooks.py new 01_inverted_residual_block "Title"   # skeleton with the standard head
    python tools/notebooks.py sync                                      # badges + Colab cells from REPO
    python tools/notebooks.py execute [notebooks/01_*.ipynb ...]        # re-execute (default: all), outputs stored
    python tools/notebooks.py student-edition OUTDIR                    # the notebooks without solutions or outputs
    python tools/notebooks.py site OUTDIR                               # static HTML (Jupyter Book 1, not executed)

Notebooks are committed executed in the default mode, a student's "Run all" (no ``IRNET_SMALL``): the stored
outputs are what a student sees. Their figures go to figures/ (no ``IRNET_FIGURES`` either).

The student edition drops every cell tagged ``solution`` (the folded ``<details><summary>Solution``
cells and any solution code) and clears all outputs; it refuses a notebook in which a solution is not
tagged, so that none slips through. The site is built from the committed notebooks as they are, outputs
included (``pip install -e ".[site]"``).
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from irnet_lib.notebook import BRANCH, REPO, colab_badge, colab_install_source  # noqa: E402

BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
SETUP_SOURCE = "# NBVAL_IGNORE_OUTPUT\nfrom irnet_lib.notebook import setup\n\nenv = setup(seed=0)"


def numbered(folder: Path = ROOT / "notebooks") -> list[Path]:
    """The notebooks of the series, in order."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


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
    """The README's table of notebooks, one row each: the title (the first line of its first cell) and badge."""
    rows = ["| notebook | what it covers | |", "|---|---|---|"]
    for p in numbered():
        nb = nbformat.read(p, as_version=4)
        title = nb.cells[0].source.splitlines()[0].lstrip("# ").strip()
        rel = p.relative_to(ROOT).as_posix()
        rows.append(f"| [{p.stem}]({rel}) | {title} | {colab_badge(rel)} |")
    return "\n".join(rows) + "\n"


def sync_readme():
    """The README's notebook table: regenerated from the notebooks, badges pointing at ``REPO``."""
    readme = ROOT / "README.md"
    readme.write_text(TABLE.sub(lambda m: m.group(1) + notebook_table() + m.group(2), readme.read_text()))


def execute(paths):
    """Execute notebooks in place (all of the series when ``paths`` is empty), in the default mode:
    the environment's ``IRNET_SMALL``, ``IRNET_FIGURES`` and ``IRNET_RUNS`` are left out, so the stored
    outputs are a student's and the figures land in figures/."""
    env = {k: v for k, v in os.environ.items() if k not in ("IRNET_SMALL", "IRNET_FIGURES", "IRNET_RUNS")}
    for p in [Path(p).resolve() for p in paths] or numbered():
        print("executing", p.name, flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                        "--inplace", "--ExecutePreprocessor.timeout=1200",
                        "--ExecutePreprocessor.kernel_name=python3", str(p)], check=True, env=env, cwd=p.parent)
        print(f"{p.name}: {time.perf_counter() - start:.0f} s", flush=True)
        drop_progress_bars(p)


#: The text a tqdm progress-bar widget leaves behind: "epoch 1/2:   0%|          | 0/63 [00:00<?, ?it/s]".
PROGRESS_BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")


def drop_progress_bars(path: Path) -> None:
    """Remove the progress bars that a run closed (``leave=False``): in JupyterLab they vanish when
    the epoch ends, but a stored notebook keeps their first frame ("0%|  | 0/63"), which GitHub and
    the site would show as if the run had stalled. Other widgets (notebook 04's explorer) stay."""
    nb = nbformat.read(path, as_version=4)
    widget = "application/vnd.jupyter.widget-view+json"
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (widget in o.get("data", {}) and PROGRESS_BAR.search(
                "".join(o["data"].get("text/plain", ""))))]
    if not any(widget in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs):
        nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)


# The student edition ------------------------------------------------------------------------------

SOLUTION_TAG = "solution"
SOLUTION_TEXT = re.compile(r"<details>\s*<summary>\s*Solution", re.I)


def student_notebook(nb, name: str = "notebook"):
    """``nb`` without its solution cells (tag ``solution``), outputs and execution counts; raises
    ``ValueError`` naming the cell when a cell holds a folded solution without the tag."""
    for i, cell in enumerate(nb.cells):
        if SOLUTION_TEXT.search(cell.source) and SOLUTION_TAG not in cell.metadata.get("tags", []):
            raise ValueError(f"{name}: cell {i} holds a <details><summary>Solution block but is not tagged "
                             f"'{SOLUTION_TAG}'; tag it so the student edition leaves it out")
    nb.cells = [c for c in nb.cells if SOLUTION_TAG not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        for key in ("collapsed", "scrolled", "execution"):
            cell.metadata.pop(key, None)
    nb.metadata.pop("widgets", None)   # saved widget state belongs to the outputs
    nbformat.validate(nb)
    return nb


def student_edition(outdir, sources=None) -> list[Path]:
    """Write the student edition of ``sources`` (default: the series) into ``outdir``. Every notebook
    is checked before anything is written, so a refusal leaves no partial edition."""
    sources = [Path(p) for p in sources] if sources is not None else numbered()
    editions = {p.name: student_notebook(nbformat.read(p, as_version=4), p.name) for p in sources}
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for name, nb in editions.items():
        nbformat.write(nb, outdir / name)
    return [outdir / name for name in editions]


# The site (Jupyter Book 1) ------------------------------------------------------------------------

GITHUB = f"https://github.com/{REPO}"
LINK = re.compile(r"(\]\()([^)\s#]+)([^)]*\))")   # a Markdown link's target, its #anchor kept apart
NBVAL_LINE = re.compile(r"^# NBVAL_\w+\n?", re.M)
IMAGES = (".png", ".jpg", ".jpeg", ".gif", ".svg")


def book_links(text: str, folder: str, pages: set[str]) -> str:
    """Relative links of a page in ``folder`` to files that are neither pages of the book nor images
    (which the build copies) point at the repository on GitHub instead: a dead link otherwise."""
    def fix(m):
        target = m.group(2)
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("/"):
            return m.group(0)
        path = posixpath.normpath(posixpath.join(folder, target))
        if path in pages or path.startswith("..") or Path(path).suffix.lower() in IMAGES:
            return m.group(0)
        kind = "tree" if (ROOT / path).is_dir() else "blob"
        return f"{m.group(1)}{GITHUB}/{kind}/{BRANCH}/{path}{m.group(3)}"
    return LINK.sub(fix, text)


def site_notebook(nb, folder: str, pages: set[str]):
    """The page's copy of a notebook: the Colab-only cell hidden, nbval markers and dead links gone."""
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith("# Colab only"):
            cell.metadata.setdefault("tags", []).append("remove-cell")
        elif cell.cell_type == "code":
            cell.source = NBVAL_LINE.sub("", cell.source)
        elif cell.cell_type == "markdown":
            cell.source = book_links(cell.source, folder, pages)
    return nb


def site(outdir):
    """Build the static site of README.md, the notebooks and docs/ into ``outdir``, without executing."""
    src = Path(tempfile.mkdtemp(prefix="irnet-site-"))
    try:
        notebooks = [p.relative_to(ROOT).as_posix() for p in numbered()]
        docs = [p.relative_to(ROOT).as_posix() for p in [ROOT / "notebooks" / "README.md",
                                                           *sorted((ROOT / "docs").glob("*.md"))]]
        pages = {"README.md", *notebooks, *docs}
        for rel in sorted(pages):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            folder = posixpath.dirname(rel)
            if rel.endswith(".ipynb"):
                nbformat.write(site_notebook(nbformat.read(ROOT / rel, as_version=4), folder, pages), src / rel)
            else:
                (src / rel).write_text(book_links((ROOT / rel).read_text(), folder, pages))
        for image in (p for p in ROOT.glob("figures/*") if p.suffix.lower() in IMAGES):   # for ![](../figures/x)
            (src / "figures").mkdir(exist_ok=True)
            shutil.copy2(image, src / "figures")
        title = (ROOT / "README.md").read_text().splitlines()[0].lstrip("# ").strip()
        stem = lambda rel: rel.rsplit(".", 1)[0]
        toc = {"format": "jb-book", "root": "README", "parts": [
            {"caption": "Notebooks", "chapters": [{"file": stem(r)} for r in notebooks]},
            {"caption": "Documentation", "chapters": [{"file": stem(r)} for r in docs]}]}
        config = {
            "title": title, "author": REPO.split("/")[0], "copyright": time.strftime("%Y"),
            "only_build_toc_files": True,
            "execute": {"execute_notebooks": "off"},
            "repository": {"url": GITHUB, "branch": BRANCH, "path_to_book": ""},
            "launch_buttons": {"colab_url": "https://colab.research.google.com"},
            "html": {"use_repository_button": True, "home_page_in_navbar": False},
            # Headings as link targets (README -> notebooks/README.md#...); plain text blocks stay plain text.
            "sphinx": {"config": {"myst_heading_anchors": 3, "nb_merge_streams": True, "highlight_language": "none"}},
        }
        # JSON is YAML: no templates to keep beside the tool.
        (src / "_toc.yml").write_text(json.dumps(toc, indent=1))
        (src / "_config.yml").write_text(json.dumps(config, indent=1))
        done = subprocess.run([sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build",
                               str(src), "--path-output", str(src), "--builder", "html", "-q"],
                              check=False, stdout=subprocess.PIPE, text=True)   # its banner: the temp folder
        if done.returncode:
            raise RuntimeError(f"{done.stdout}\njupyter-book build failed (exit status {done.returncode})")
        shutil.copytree(src / "_build" / "html", outdir, dirs_exist_ok=True)
    finally:
        shutil.rmtree(src, ignore_errors=True)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:] or [""]
    if cmd == "new":
        name, title = args
        nb = nbformat.v4.new_notebook(cells=head_cells(name, title))
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, ROOT / "notebooks" / f"{name}.ipynb")
    elif cmd == "sync":
        sync(args or numbered())
        sync_readme()
    elif cmd == "execute":
        execute(args)
    elif cmd in ("student-edition", "site") and len(args) == 1:
        try:
            if cmd == "site":
                site(args[0])
                print(f"site built: {Path(args[0]) / 'index.html'}")
            else:
                print(f"{len(student_edition(args[0]))} notebooks without solutions or outputs in {args[0]}")
        except (ValueError, RuntimeError) as e:
            sys.exit(f"{cmd}: {e}")
    else:
        sys.exit(__doc__)
