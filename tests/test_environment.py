"""environment.yml (conda) and pyproject.toml (pip) ask for the same packages: what pyproject.toml's
dependencies and its notebooks and test extras name, environment.yml lists (in its conda or its pip
section) with the same version range, and nothing else but conda's own tools."""
import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("notebooks", "test")   # what a conda user runs: the notebooks and this suite
CONDA_TO_PYPI = {"pytorch": "torch"}
CONDA_ONLY = {"python", "pip", "cxx-compiler"}   # the interpreter and the tools that build, not Python packages


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _required() -> dict[str, Requirement]:
    project = _pyproject()["project"]
    lines = project["dependencies"] + [r for extra in EXTRAS for r in project["optional-dependencies"][extra]]
    out = {}
    for req in map(Requirement, lines):
        # One name in two lists (ipykernel in both extras) must ask for one range.
        assert out.get(canonicalize_name(req.name), req).specifier == req.specifier, req
        out[canonicalize_name(req.name)] = req
    return out


def _environment() -> tuple[dict[str, SpecifierSet], list[str]]:
    """environment.yml's packages as PyPI names with their version ranges, and its conda-only entries."""
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip = next((d["pip"] for d in deps if isinstance(d, dict)), [])
    conda = [d for d in deps if isinstance(d, str)]
    listed, conda_only = {}, []
    for line, section in [(c, "conda") for c in conda] + [(p, "pip") for p in pip if not p.startswith("-")]:
        req = Requirement(line)   # conda's "name>=x.y" reads like pip's
        if section == "conda" and req.name in CONDA_ONLY:
            conda_only.append(req.name)
            continue
        name = canonicalize_name(CONDA_TO_PYPI.get(req.name, req.name) if section == "conda" else req.name)
        assert name not in listed, f"environment.yml lists {name} twice"
        listed[name] = req.specifier
    return listed, conda_only


def test_environment_yml_lists_what_pyproject_requires_with_the_same_ranges():
    required, (listed, _) = _required(), _environment()
    missing = sorted(set(required) - set(listed))
    assert not missing, f"add to environment.yml (conda names: {CONDA_TO_PYPI}): {missing}"
    ranges = {n: (str(listed[n]), str(required[n].specifier)) for n in required if listed[n] != required[n].specifier}
    assert not ranges, f"environment.yml's range vs pyproject.toml's: {ranges}"


def test_environment_yml_lists_nothing_pyproject_dropped():
    required, (listed, conda_only) = _required(), _environment()
    extra = sorted(set(listed) - set(required))
    assert not extra, f"in environment.yml but not in pyproject.toml (add there, or remove here): {extra}"
    assert "python" in conda_only


def test_environment_yml_asks_for_the_python_pyproject_requires():
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    python = next(Requirement(d) for d in deps if isinstance(d, str) and re.match(r"python\b", d))
    assert python.specifier == SpecifierSet(_pyproject()["project"]["requires-python"])


def test_environment_yml_installs_the_project_itself():
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "-e ." in pip


def _resolves(dotted: str) -> bool:
    """Is ``dotted`` a module of the project, or a name in one (irnet_lib.load_pretrained)?"""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        if importlib.util.find_spec(".".join(parts[:i])) is not None:
            obj = importlib.import_module(".".join(parts[:i]))
            try:
                for part in parts[i:]:
                    obj = getattr(obj, part)
            except AttributeError:
                return False
            return True
    return False


@pytest.mark.parametrize("name", ["environment.yml", "pyproject.toml"])
def test_the_modules_named_in_comments_exist(name):
    names = set(re.findall(r"\birnet_lib(?:\.\w+)+", (ROOT / name).read_text()))
    assert [n for n in sorted(names) if not _resolves(n)] == [], f"{name} names what the project no longer has"
