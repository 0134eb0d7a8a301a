"""The GPU candidate kernels of experiments/triton-depthwise/triton_depthwise.py, checked without a GPU: Triton's
interpreter runs them on the CPU, against the fold, forward and every gradient."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (it comes with CUDA builds of torch)")
def test_triton_depthwise_kernels_agree_with_the_fold_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "experiments/triton-depthwise/triton_depthwise.py", "--check", "--device", "cpu"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "agrees with the fold" in done.stdout
