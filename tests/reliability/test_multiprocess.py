"""The one training loop runs unchanged on JAX's multi-process runtime (two CPU processes).

Two processes on localhost form one ``jax.distributed`` job (coordinator on a free port, gloo CPU
collectives), each with 2 host CPU devices: 4 global devices in one data mesh. Each process feeds
only its half of every global batch (``shard_batch`` builds the global array with
``jax.make_array_from_process_local_data``), XLA all-reduces the gradients across processes, and
orbax writes the checkpoints from both processes into one shared workdir.

The job must reproduce a single-process run on 4 devices with the same seed: the same per-epoch
losses (within 1e-5) and parameters; its checkpoint must be complete, i.e. a single process can
resume from it and finish the run with the same result; ``metrics.jsonl`` is written once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import reliability_harness as harness  # tests/reliability/conftest.py



WORKER = "_train_worker.py"
TIMEOUT = 300


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return harness.session_dir(tmp_path_factory) / "xla-cache"


def _read(path):
  with np.load(path) as f:
    return dict(f)


def test_two_processes_match_one_process_and_leave_a_complete_checkpoint(
    tmp_path, tmp_path_factory, cache_dir):
  expected, _ = harness.uninterrupted_run(tmp_path_factory, epochs=3, timeout=TIMEOUT)
  single_env = harness.worker_env(cache_dir, devices=4)

  shared = tmp_path / "shared"
  port = harness.free_port()
  job_env = harness.worker_env(cache_dir, devices=2)
  workers = [
      harness.Worker(WORKER, ["--workdir", str(shared), "--epochs", "2",
                              "--out", str(tmp_path / f"process{i}.npz"),
                              "--coordinator", f"localhost:{port}", "--num-processes", "2",
                              "--process-id", str(i)], env=job_env)
      for i in range(2)]
  codes = [w.wait(TIMEOUT) for w in workers]
  for i, (w, code) in enumerate(zip(workers, codes)):
    assert code == 0, f"process {i} exited with {code}:\n{w.output[-4000:]}"
    assert f"started process {i}/2 with 2 local of 4 devices" in w.output

  results = [_read(tmp_path / f"process{i}.npz") for i in range(2)]
  for name in results[0]:  # both processes hold the same (replicated) state
    np.testing.assert_array_equal(results[0][name], results[1][name], err_msg=name)
  np.testing.assert_allclose(results[0]["train_loss"], expected["train_loss"][:2], rtol=0,
                             atol=1e-5)
  assert results[0]["train_loss"][0] != results[0]["train_loss"][1]  # it did train

  with open(shared / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f if line.strip()]
  assert [(r["epoch"], r["step"]) for r in records] == [(0, 4), (1, 8)]
  assert harness.finalized_steps(shared / "checkpoints" / "latest") == [1]

  # One process with 4 devices resumes from the two processes' checkpoint and finishes the run.
  resumed = harness.run_worker(WORKER, ["--workdir", str(shared), "--epochs", "3", "--resume",
                                        "--out", str(tmp_path / "resumed.npz")],
                               env=single_env, timeout=TIMEOUT)
  assert "resumed after epoch 2 " in resumed.output
  final = _read(tmp_path / "resumed.npz")
  assert sorted(final) == sorted(expected)
  for name in expected:
    np.testing.assert_allclose(final[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
