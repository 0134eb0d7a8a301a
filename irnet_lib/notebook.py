"""What every notebook of the series shares: the repository's address, the set-up cell, answer checks.

``REPO`` is the one place that names the public repository: the "Open in Colab" badges and the
Colab install cells are generated from it (``python tools/notebooks.py sync``), and a test checks
that every notebook agrees with it. A fork changes this line and runs the sync once.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

REPO = "irnet-tutorial/irnet"
BRANCH = "main"


def fast_mode() -> bool:
    """True when ``IRNET_FAST`` is set (the test suite sets it): notebooks shrink their work."""
    return os.environ.get("IRNET_FAST", "0").lower() not in ("", "0", "false", "no")


def colab_url(notebook_path: str) -> str:
    return f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/{notebook_path}"


def colab_badge(notebook_path: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook_path)})")


def colab_install_source() -> str:
    """Source of the install cell: clones the repository (code, embedded data, stored results)
    and installs it, in Colab only; elsewhere it does nothing."""
    return f'''# Colab only: fetch the repository and install irnet_lib. Does nothing anywhere else.
import os, subprocess, sys
if "google.colab" in sys.modules and not os.path.isdir("/content/irnet"):
    subprocess.run(["git", "clone", "--depth", "1", "--branch", "{BRANCH}",
                    "https://github.com/{REPO}", "/content/irnet"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/irnet[notebooks]"], check=True)
if "google.colab" in sys.modules:
    os.chdir("/content/irnet/notebooks")'''


@dataclass(frozen=True)
class Setup:
    device: torch.device
    seed: int
    fast: bool

    def __str__(self):
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        return (f"device: {self.device} ({name}) | fast mode: {'on' if self.fast else 'off'} | "
                f"seed: {self.seed} | torch {torch.__version__}")


def setup(seed: int = 0, device: str | None = None) -> Setup:
    """Seed Python, NumPy and torch, pick the device (GPU when there is one) and report fast mode."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    env = Setup(dev, seed, fast_mode())
    print(env)
    return env


def check_answer(answer, expected, *, rtol: float = 0.0, name: str = "answer") -> bool:
    """Compare a student's answer with the expected value and say so in one line."""
    if answer is None:
        print(f"{name}: not answered yet (replace None with your answer and run this cell again)")
        return False
    try:
        ok = bool(np.allclose(np.asarray(answer, dtype=float), np.asarray(expected, dtype=float),
                              rtol=rtol, atol=0))
    except (TypeError, ValueError):
        ok = answer == expected
    print(f"{name}: {'correct' if ok else f'not yet: {answer!r} is not right, try again'}")
    return ok
