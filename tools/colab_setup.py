"""Colab's half of the install cell: pip-install only the dependencies of ``pyproject.toml`` that
this Python lacks. Colab ships torch, torchvision, numpy, pandas, matplotlib and the rest, so it
usually installs nothing; and it never installs the project itself, whose folder the install cell
puts on ``sys.path`` instead (importable at once, without restarting the kernel).

    python tools/colab_setup.py            # what the install cell runs
    python tools/colab_setup.py --dry-run  # print what it would install
"""
from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def missing_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The requirements (as written in pyproject.toml) that this Python needs and lacks: not
    installed, or installed in a version outside the requirement's range. One whose environment
    marker excludes this Python (``; python_version < "3.11"``) is not needed."""
    deps = tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]
    missing = []
    for line in deps:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(line)
            continue
        # Colab's and conda's builds carry local versions and pre-releases (torch 2.5.1+cu121, 2.6.0.dev...);
        # those count as installed whenever their release is in range.
        if not req.specifier.contains(installed, prereleases=True):
            missing.append(line)
    return missing


def main(argv: list[str]) -> None:
    missing = missing_requirements()
    if "--dry-run" in argv or not missing:
        print("to install:", " ".join(missing) if missing else "nothing (every dependency is already installed)")
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
