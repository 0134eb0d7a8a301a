"""What every notebook of the series shares: the repository's address, the set-up cell, and where
figures and runs are written. (The exercises are checked by :mod:`irnet_lib.exercises`.)

``REPO`` is the one place that names the public repository: the "Open in Colab" badges and the
Colab install cells are generated from it (``python tools/notebooks.py sync``), and a test checks
that every notebook agrees with it. A fork changes this line and runs the sync once.
"""
from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = "irnet-tutorial/irnet"
BRANCH = "main"


ROOT = Path(__file__).resolve().parents[1]   # the clone: notebooks/, figures/, results/, data/


def small_mode() -> bool:
    """True when ``IRNET_SMALL`` is set: the test suite's smaller work (fewer images, epochs, smaller
    batches; nothing skipped). A student's "Run all" leaves it unset."""
    return os.environ.get("IRNET_SMALL", "0").lower() not in ("", "0", "false", "no")


def figure_path(name: str) -> Path:
    """Where a notebook saves the figure ``name``: the repository's ``figures/``, or the folder in
    ``IRNET_FIGURES`` (the test suite points it at a temporary folder, so tests leave the clone as it was)."""
    folder = Path(os.environ.get("IRNET_FIGURES") or ROOT / "figures")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def runs_folder(name: str, drive_folder: str | None = None) -> Path:
    """Where a notebook's training runs go: ``runs/<name>`` in the clone (git-ignored), the folder in
    ``IRNET_RUNS`` (the test suite: a temporary one), or, in Colab, ``drive_folder`` on a mounted
    Google Drive, which outlives a disconnected runtime (a run started again resumes from there)."""
    if drive_folder:
        if not drive_folder.startswith("/content/drive/"):
            raise ValueError(f"drive_folder must lie in the mounted Drive, /content/drive/MyDrive/..., "
                             f"got {drive_folder!r}")
        if "google.colab" not in sys.modules:
            raise RuntimeError("drive_folder is for Colab: set it to None here, runs go to runs/ in the clone")
        if not Path("/content/drive/MyDrive").is_dir():
            from google.colab import drive
            try:
                drive.mount("/content/drive")
            except Exception as e:
                raise RuntimeError(f"Google Drive could not be mounted ({e}); allow access when Colab asks, or "
                                   "set drive_folder = None to keep the runs in the runtime (lost if it "
                                   "disconnects)") from e
        folder = Path(drive_folder) / name
    else:
        folder = Path(os.environ.get("IRNET_RUNS") or ROOT / "runs") / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def colab_url(notebook_path: str) -> str:
    return f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/{notebook_path}"


def colab_badge(notebook_path: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook_path)})")


COLAB_ROOT = "/content/irnet"


def colab_install_source() -> str:
    """Source of every notebook's install cell. In Colab it clones the repository (code, embedded
    data, stored results), pip-installs only the packages Colab lacks (``tools/colab_setup.py``) and
    puts the clone on ``sys.path``: importable in this very kernel, where an installed package would
    need a restart. Anywhere else it does nothing."""
    return f'''# Colab only: clone the repository, install what Colab lacks, import irnet_lib without a restart.
import importlib, os, subprocess, sys
if "google.colab" in sys.modules:
    if not os.path.isdir("{COLAB_ROOT}"):
        subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "{BRANCH}",
                        "https://github.com/{REPO}", "{COLAB_ROOT}"], check=True)
    subprocess.run([sys.executable, "{COLAB_ROOT}/tools/colab_setup.py"], check=True)
    sys.path.insert(0, "{COLAB_ROOT}")
    os.environ["PYTHONPATH"] = "{COLAB_ROOT}" + os.pathsep + os.environ.get("PYTHONPATH", "")
    importlib.invalidate_caches()
    os.chdir("{COLAB_ROOT}/notebooks")'''


@dataclass(frozen=True)
class Setup:
    device: torch.device
    seed: int
    small: bool

    def __str__(self):
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        small = " | small mode (IRNET_SMALL): the test suite's smaller work" if self.small else ""
        return f"device: {self.device} ({name}) | seed: {self.seed} | torch {torch.__version__}{small}"


def setup(seed: int = 0, device: str | None = None) -> Setup:
    """Seed Python, NumPy and torch, pick the device (GPU when there is one) and say so."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    env = Setup(dev, seed, small_mode())
    print(env)
    return env

