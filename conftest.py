"""pytest configuration shared by tests/ and the notebooks run under nbval.

Sets the fast mode before any notebook kernel starts: kernels inherit this process's environment,
so every notebook shrinks its work (it never skips it) when run by the test suite.
"""
import os

os.environ.setdefault("IRNET_FAST", "1")
# The test process and a notebook kernel take turns on the CPU; OpenMP threads that spin while
# waiting make the other one several times slower on a small machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
