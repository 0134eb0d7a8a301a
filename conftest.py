"""pytest configuration shared by tests/ and the notebooks run under nbval.

- Small mode for every notebook kernel (kernels inherit this process's environment): notebooks
  shrink their work, they never skip it. Their stored outputs are the default mode's, a student's run.
- Figures and runs that notebooks write go to a temporary folder, and the suite checks at the end
  that it left the clone as it found it (``git status``).
"""
import os
import subprocess
import tempfile
from pathlib import Path

os.environ.setdefault("IRNET_SMALL", "1")
# The test process and a notebook kernel take turns on the CPU; OpenMP threads that spin while
# waiting make the other one several times slower on a small machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_SCRATCH = tempfile.TemporaryDirectory(prefix="irnet-tests-")
os.environ.setdefault("IRNET_FIGURES", os.path.join(_SCRATCH.name, "figures"))
os.environ.setdefault("IRNET_RUNS", os.path.join(_SCRATCH.name, "runs"))

ROOT = Path(__file__).resolve().parent


def _git_status():
    try:
        done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def pytest_sessionstart(session):
    session.config._irnet_git_status = _git_status()


def pytest_sessionfinish(session):
    """The suite must leave the clone clean: whatever it wrote into the repository is an error."""
    before = getattr(session.config, "_irnet_git_status", None)
    after = _git_status()
    if before is None or after is None or after == before:
        return
    new = sorted(set(after.splitlines()) - set(before.splitlines()))
    if new:
        print("\nThe test suite changed the clone (tests must write to temporary folders):\n  " + "\n  ".join(new))
        session.exitstatus = 1
