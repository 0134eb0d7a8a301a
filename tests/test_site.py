"""The static site (``python tools/notebooks.py site OUTDIR``, Jupyter Book 1): every notebook has its page,
with its figures and its Colab link, and the build leaves the committed notebooks as they were."""
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("jupyter_book", reason='the site extra: pip install -e ".[site]"')

from irnet_lib.notebook import colab_url

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "notebooks.py"), "site", str(out)],
                          check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def has_figure(nb_path: Path) -> bool:
    nb = nbformat.read(nb_path, as_version=4)
    return any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_index_redirects_to_the_readme(site):
    assert "README.html" in (site / "index.html").read_text()
    readme = (site / "README.html").read_text()
    for nb in NOTEBOOKS:
        assert f'href="notebooks/{nb.stem}.html"' in readme, nb.name
    # Links to files outside the book point at the repository instead of nowhere.
    assert not re.search(r'href="(irnet_lib|results)/', readme)
    assert 'href="https://github.com/' in readme


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_has_its_page(site, nb):
    page = (site / "notebooks" / f"{nb.stem}.html").read_text()
    assert colab_url(f"notebooks/{nb.name}") in page
    if has_figure(nb):
        assert "<img" in page
    assert "NBVAL_" not in page, "nbval markers are for the test suite, not for readers"
    assert "# Colab only" not in page, "the Colab install cell is hidden on the site"
