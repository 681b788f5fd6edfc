"""Installing jaxseg installs only ``jaxseg``: ``datasets`` and ``experiments`` stay repo folders.

A top-level ``datasets`` package would shadow Hugging Face ``datasets`` in any environment that
has both, so the tfds builders are imported from the repository root only (``python -m pytest``
and ``python -m experiments.<study>`` put it on ``sys.path``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, cwd: str) -> subprocess.CompletedProcess[str]:
  """Runs ``python -c code`` in ``cwd`` with no PYTHONPATH (only what is installed)."""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=120, check=False)


def test_datasets_not_installed(tmp_path):
  proc = _python(
      "import os\n"
      "try:\n"
      "  import datasets\n"
      "except ModuleNotFoundError as e:\n"
      "  print('missing', e.name)\n"
      "else:\n"
      "  print('found', os.path.realpath(datasets.__file__ or next(iter(datasets.__path__))))\n",
      str(tmp_path))
  assert proc.returncode == 0, proc.stderr
  kind, where = proc.stdout.split(None, 1)
  if kind == "missing":
    assert where.strip() == "datasets"
  else:  # Hugging Face datasets is installed: it must be that one, not the repository's.
    assert not where.strip().startswith(os.path.realpath(_REPO) + os.sep), where


def test_jaxseg_installed_experiments_not(tmp_path):
  proc = _python(
      "import importlib.util, os, jaxseg\n"
      "print(os.path.realpath(jaxseg.__file__))\n"
      "print(importlib.util.find_spec('experiments'))\n",
      str(tmp_path))
  assert proc.returncode == 0, proc.stderr
  jaxseg_file, experiments_spec = proc.stdout.splitlines()
  assert jaxseg_file == os.path.realpath(os.path.join(_REPO, "jaxseg", "__init__.py"))
  # None, or another project's experiments package: never the repository's.
  assert os.path.realpath(_REPO) not in experiments_spec


def test_repo_root_imports_datasets():
  proc = _python("import datasets.promise12, experiments; print(datasets.promise12.__file__)",
                 _REPO)
  assert proc.returncode == 0, proc.stderr
  assert os.path.realpath(proc.stdout.strip()).startswith(os.path.realpath(_REPO) + os.sep)


def test_find_packages_config():
  """The pyproject's package list (what a wheel would hold): jaxseg and its subpackages."""
  setuptools = pytest.importorskip("setuptools")
  with open(os.path.join(_REPO, "pyproject.toml"), "rb") as f:
    find = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]
  packages = setuptools.find_packages(_REPO, include=find.get("include", ["*"]),
                                      exclude=find.get("exclude", ()))
  assert "jaxseg" in packages and "jaxseg.losses" in packages
  assert all(p == "jaxseg" or p.startswith("jaxseg.") for p in packages), packages
