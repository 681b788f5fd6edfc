"""Makes the reliability harness importable as ``reliability_harness`` (one loader, not one per
test module): the suite runs with ``--import-mode=importlib``, which puts no test folder on
``sys.path``, and pytest imports this conftest before the test modules next to it."""

import importlib.util
import os
import sys

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_harness.py")
_spec = importlib.util.spec_from_file_location("reliability_harness", _PATH)
_module = importlib.util.module_from_spec(_spec)
sys.modules["reliability_harness"] = _module
_spec.loader.exec_module(_module)
