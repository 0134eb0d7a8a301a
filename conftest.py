"""pytest configuration shared by tests/ and the notebooks run under nbval.

Sets the fast mode before any notebook kernel starts: kernels inherit this process's environment,
so every notebook shrinks its work (it never skips it) when run by the test suite.
"""
import os

os.environ.setdefault("IRNET_FAST", "1")
