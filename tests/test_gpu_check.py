"""benchmarks/gpu_check.sh's faithful stage, dry-run on the CPU: GPU time is scarce, so the script's
own logic (the time limit per call, a stopped run's checkpoint sent back in pieces, the resume on
another machine from those pieces, the packed weights of a finished run) is checked here, on the
embedded sample instead of Fashion-MNIST (the later --data wins over the script's)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from irnet_lib.runs import read_history

ROOT = Path(__file__).resolve().parents[1]
DRY = "--data fashion-mnist-sample --device cpu --train-subset 32 --test-subset 16 --epochs 2 --warmup-epochs 1"


def _gpu_check(out: Path, work: Path, **env) -> str:
    env = {**os.environ, "STAGES": "faithful", "BLOCKS": "standard", "WORK": str(work), "FAITHFUL_S": "300",
           "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, **env}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out), "data"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("split") is None, reason="needs coreutils' split")
def test_a_stopped_faithful_run_comes_back_in_pieces_and_resumes_elsewhere(tmp_path):
    first, second = tmp_path / "out1", tmp_path / "out2"
    log = _gpu_check(first, tmp_path / "machine1", FAITHFUL_ARGS=DRY + " --max-epochs 1")
    pieces = sorted(first.glob("resume-standard-last.pt.part*"))
    assert pieces and all(p.stat().st_size <= 15_000_000 for p in pieces), log
    assert not list(first.glob("*-fp16.pt")), "an unfinished run must not be packed as trained weights"

    # Another machine: nothing in its work folder, the pieces placed in RESUME_DIR.
    log = _gpu_check(second, tmp_path / "machine2", RESUME_DIR=str(first), FAITHFUL_ARGS=DRY)
    assert "resuming from the pieces" in log
    run = read_history(tmp_path / "machine2" / "fashion-mnist-gpu-55ep" / "standard")
    assert len(run.history) == 2 and run.meta.get("resumed_at_epochs") == [1]
    assert not list(second.glob("resume-*")), "a finished run sends no pieces back"
    assert list(second.glob("standard-55ep-*-fp16.pt")) and (second / "results.tgz").is_file()
