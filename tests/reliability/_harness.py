"""Subprocess harness of the reliability tests: environment, line-watching workers, results.

Worker scripts of this folder run in fresh Python processes (so that a test can SIGKILL them, give
them their own number of host devices, or start several of them as one ``jax.distributed`` job).
They all get the environment of :func:`worker_env`:

* ``JAX_PLATFORMS=cpu`` and ``--xla_force_host_platform_device_count`` set per worker;
* the fast-compile settings of the test suite (tests/conftest.py: ``XLA_FLAGS`` with
  ``--xla_backend_optimization_level=0``), inherited from the environment, so workers and the
  test process compile with the same flags;
* a persistent compilation cache shared by the workers of one test session (:func:`session_dir`),
  that keeps every program (not only those that take 0.5 s, as the suite's cache does), so that
  only the first worker of a kind pays for compilation.

:func:`uninterrupted_run` is the reference training run of the SIGKILL and multi-process tests,
computed once per test session (under a file lock, so pytest-xdist workers share it).

Load this module by path (``importlib``), as the test files do; it does not import jax.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
PYTHON = sys.executable


def session_dir(tmp_path_factory) -> pathlib.Path:
  """A directory shared by all tests of this pytest session (also across xdist workers)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # .../pytest-N/popen-gwK -> .../pytest-N, this session's directory
  path = base / "jaxseg-reliability"
  path.mkdir(exist_ok=True)
  return path


@contextlib.contextmanager
def locked(path: str | os.PathLike):
  """An exclusive lock on ``path`` (created) across processes."""
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def worker_env(cache_dir: str | os.PathLike | None, *, devices: int) -> dict[str, str]:
  """Environment of a worker with ``devices`` host CPU devices (see the module docstring)."""
  env = dict(os.environ)  # with the suite's XLA_FLAGS (tests/conftest.py)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  flags.append(f"--xla_force_host_platform_device_count={devices}")
  env["XLA_FLAGS"] = " ".join(flags)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["TFDS_DISABLE_GCS"] = "1"
  if cache_dir is not None:
    env["JAX_COMPILATION_CACHE_DIR"] = os.fspath(cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  return env


def free_port() -> int:
  """A TCP port of localhost that was free a moment ago (for a jax.distributed coordinator)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


class Worker:
  """A worker script in a subprocess whose stdout lines are collected as they arrive."""

  def __init__(self, script: str, args: Sequence[str], *, env: dict[str, str]):
    self.lines: list[str] = []
    self._new: queue.Queue[str | None] = queue.Queue()
    self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [PYTHON, "-u", os.path.join(HERE, script), *args], cwd=REPO_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self) -> None:
    assert self.proc.stdout is not None
    for line in self.proc.stdout:
      line = line.rstrip("\n")
      self.lines.append(line)
      self._new.put(line)
    self._new.put(None)

  @property
  def output(self) -> str:
    return "\n".join(self.lines)

  def wait_for(self, pattern: str, timeout: float) -> str:
    """Blocks until a stdout line matches ``pattern`` (regex); returns it.

    Raises:
      AssertionError: the worker ended, or ``timeout`` seconds passed, first (with its output).
    """
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    for line in list(self.lines):
      if regex.search(line):
        return line
    while True:
      left = deadline - time.monotonic()
      if left <= 0:
        self.kill()
        raise AssertionError(f"no line matching {pattern!r} within {timeout:.0f}s; output:\n"
                             f"{self.output[-4000:]}")
      try:
        line = self._new.get(timeout=left)
      except queue.Empty:
        continue
      if line is None:
        self.proc.wait()
        raise AssertionError(f"worker exited ({self.proc.returncode}) before printing a line "
                             f"matching {pattern!r}; output:\n{self.output[-4000:]}")
      if regex.search(line):
        return line

  def wait(self, timeout: float) -> int:
    """Waits for the worker to exit; returns its exit code (killing it after ``timeout``)."""
    try:
      self.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      raise AssertionError(f"worker still running after {timeout:.0f}s; output:\n"
                           f"{self.output[-4000:]}") from None
    self._reader.join(timeout=10)
    return self.proc.returncode

  def sigkill(self) -> int:
    """Sends SIGKILL (no cleanup of any kind is possible) and reaps the process."""
    os.kill(self.proc.pid, signal.SIGKILL)
    self.proc.wait(timeout=30)
    self._reader.join(timeout=10)
    return self.proc.returncode

  def kill(self) -> None:
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait(timeout=30)


def run_worker(script: str, args: Sequence[str], *, env: dict[str, str],
               timeout: float = 300) -> Worker:
  """Runs a worker to completion; asserts that it exited with status 0."""
  worker = Worker(script, args, env=env)
  code = worker.wait(timeout)
  assert code == 0, f"{script} {' '.join(args)} exited with {code}:\n{worker.output[-4000:]}"
  return worker


def finalized_steps(directory: str | os.PathLike) -> list[int]:
  """Steps with a finalized orbax checkpoint in ``directory`` (temporary directories excluded)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def uninterrupted_run(tmp_path_factory, *, epochs: int = 3,
                      timeout: float = 300) -> tuple[dict, pathlib.Path]:
  """``(result arrays, workdir)`` of ``_train_worker.py`` trained ``epochs`` epochs on 4 devices
  without interruption; run once per session, then read from disk."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  shared = session_dir(tmp_path_factory)
  workdir = shared / f"uninterrupted-{epochs}"
  out = workdir / "result.npz"
  with locked(shared / f"uninterrupted-{epochs}.lock"):
    if not out.exists():
      shutil.rmtree(workdir, ignore_errors=True)
      run_worker("_train_worker.py", ["--workdir", str(workdir), "--epochs", str(epochs),
                                      "--out", str(out)],
                 env=worker_env(shared / "xla-cache", devices=4), timeout=timeout)
  with np.load(out) as f:
    return dict(f), workdir
