"""The top-level scripts (train.py, test.py, ...) as modules, for tests that call
their `main` in-process."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name):
    """Imports `ROOT/name.py` by path (`test` would clash with the stdlib)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script",
                                                  os.path.join(ROOT, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
