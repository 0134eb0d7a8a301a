"""Each notebook's first two code cells as Colab runs them, in a fresh Python process: a stand-in
``google.colab`` module, the clone replaced by a copy of this checkout, and ``irnet_lib`` not
importable before. After the install cell, the set-up cell must import ``irnet_lib`` in the same
process, without a restart, from the copy."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from irnet_lib.notebook import COLAB_ROOT

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

DRIVER = textwrap.dedent('''
    import importlib.util, json, os, shutil, subprocess, sys, types

    checkout, clone, cells = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    # Nothing of the project is importable: no editable install's finder, no path to the checkout.
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    def inside(path, folder):   # a path, not a string prefix: /x/irnet-venv is not inside /x/irnet
        path, folder = os.path.realpath(path), os.path.realpath(folder)
        return os.path.commonpath([path, folder]) == folder

    sys.path[:] = [p for p in sys.path if p and not inside(p, checkout)]
    sys.modules.pop("irnet_lib", None)
    assert importlib.util.find_spec("irnet_lib") is None, "irnet_lib importable before the install cell"

    sys.modules["google"] = types.ModuleType("google")
    sys.modules["google.colab"] = types.ModuleType("google.colab")   # what "in Colab" means to the cell
    real_run, calls = subprocess.run, []

    def run(cmd, *args, **kwargs):
        calls.append(list(map(str, cmd)))
        if cmd[0] == "git":   # the clone: a copy of this checkout instead of GitHub
            shutil.copytree(checkout, cmd[-1], ignore=shutil.ignore_patterns(".git", "runs", "__pycache__"))
            return subprocess.CompletedProcess(cmd, 0)
        return real_run(cmd, *args, **kwargs)   # tools/colab_setup.py itself, for real

    subprocess.run = run
    namespace = {}
    for source in cells:
        exec(compile(source, "<cell>", "exec"), namespace)
    import irnet_lib
    assert inside(irnet_lib.__file__, clone), irnet_lib.__file__
    assert os.path.realpath(os.getcwd()) == os.path.realpath(os.path.join(clone, "notebooks"))
    print(json.dumps({"calls": calls, "setup": str(namespace.get("env"))}))
''')


def _first_code_cells(path, n=2):
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    return ["".join(c["source"]) for c in cells[:n]]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_first_two_cells_work_in_colab_without_a_restart(notebook, tmp_path):
    install, setup = _first_code_cells(notebook)
    assert install.startswith("# Colab only") and "setup(" in setup
    clone = tmp_path / "content" / "irnet"
    cells = [c.replace(COLAB_ROOT, str(clone)) for c in (install, setup)]
    done = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT), str(clone), json.dumps(cells)],
                          check=False, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["calls"][0][:2] == ["git", "clone"]
    # Colab has every dependency already: nothing is pip-installed, least of all the front end.
    assert not any("pip" in c for call in report["calls"] for c in call), report["calls"]
    assert "device:" in report["setup"]


@pytest.fixture
def colab_setup():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import colab_setup
    finally:
        sys.path.pop(0)
    return colab_setup


def _with_dependencies(tmp_path, *extra) -> Path:
    """A copy of pyproject.toml with ``extra`` requirements added to ``[project] dependencies``."""
    pyproject = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    lines = "".join(f"\n    {json.dumps(req)}," for req in extra)
    pyproject.write_text(text.replace('"torch>=2.1",', '"torch>=2.1",' + lines, 1))
    return pyproject


def test_colab_setup_installs_only_what_is_missing(tmp_path, colab_setup):
    assert colab_setup.missing_requirements(_with_dependencies(tmp_path)) == []
    pyproject = _with_dependencies(tmp_path, "surely-not-installed-pkg>=1")
    assert colab_setup.missing_requirements(pyproject) == ["surely-not-installed-pkg>=1"]
    assert "jupyterlab" not in pyproject.read_text().split("[project.optional-dependencies]")[0]


def test_colab_setup_counts_a_version_out_of_range_as_missing(tmp_path, colab_setup):
    pyproject = _with_dependencies(tmp_path, "numpy>=999", "numpy<999", "torch>=2.1,<1000", "pillow!=0.1")
    assert colab_setup.missing_requirements(pyproject) == ["numpy>=999"]


def test_colab_setup_skips_what_this_python_does_not_need(tmp_path, colab_setup):
    pyproject = _with_dependencies(tmp_path, 'surely-not-installed-pkg>=1; python_version < "3"',
                                   'numpy>=999; sys_platform == "no-such-platform"',
                                   'another-not-installed-pkg; python_version >= "3"')
    assert colab_setup.missing_requirements(pyproject) == ['another-not-installed-pkg; python_version >= "3"']
