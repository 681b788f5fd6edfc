"""A training run killed with SIGKILL resumes to exactly the parameters of an uninterrupted run.

Each run is a fresh Python process (``_train_worker.py``: the one training loop of jaxseg on a
tiny UNet2D, checkpoints in a workdir). The interrupted run is killed twice, at two different kinds
of places, and resumed with ``resume=True`` each time:

1. by the test, with SIGKILL, in the middle of epoch 2 (after the checkpoint of epoch 1 is
   final); a half-written checkpoint of the epoch being trained -- the temporary directory orbax
   leaves when a process dies while saving -- is placed next to it and must never be loaded;
2. by itself (fault injection, a real SIGKILL), between two checkpoint writes of epoch 3: after
   ``metrics.jsonl`` and the ``best`` checkpoint, before the ``latest`` one. The resumed run must
   redo that epoch, overwrite the stale ``best`` checkpoint, and keep one metrics record per
   epoch.

The final and best parameters, the best epoch and the per-epoch losses must equal those of one
uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import reliability_harness as harness  # tests/reliability/conftest.py



WORKER = "_train_worker.py"
EPOCHS = 3
STEPS_PER_EPOCH = 4  # _train_worker.STEPS_PER_EPOCH
TIMEOUT = 300  # seconds per worker; they take ~5-30 s (compilation dominates)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  return harness.worker_env(harness.session_dir(tmp_path_factory) / "xla-cache", devices=4)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run: its result and its workdir."""
  return harness.uninterrupted_run(tmp_path_factory, epochs=EPOCHS, timeout=TIMEOUT)


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def _assert_same_run(result, expected):
  assert sorted(result) == sorted(expected)
  for name in expected:
    np.testing.assert_allclose(result[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_sigkill_twice_then_resume_matches_uninterrupted_run(tmp_path, env, reference):
  expected, reference_dir = reference
  assert int(expected["best_epoch"]) == EPOCHS - 1  # so every epoch writes a best checkpoint
  latest = tmp_path / "checkpoints" / "latest"
  best = tmp_path / "checkpoints" / "best"
  args = ["--workdir", str(tmp_path), "--epochs", str(EPOCHS)]

  # 1. SIGKILL from outside, mid-epoch: step 3 of 4 of the second epoch is being fed.
  killed = harness.Worker(WORKER, args + ["--out", str(tmp_path / "first.npz"),
                                          "--step-delay", "0.3"], env=env)
  killed.wait_for(r"^batch 1 2$", timeout=TIMEOUT)
  assert harness.finalized_steps(latest) == [0]
  assert killed.sigkill() == -9
  assert not (tmp_path / "first.npz").exists()
  assert [r["epoch"] for r in _records(tmp_path)] == [0]
  # What a SIGKILL during orbax's save of epoch 1 leaves behind: a temporary directory (renamed to
  # "1" only once complete) with partial content. It must be ignored, never restored.
  partial = latest / "1.orbax-checkpoint-tmp-1700000000000"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "manifest.ocdbt").write_bytes(b"\x00truncated")
  (partial / "metadata").mkdir()
  (partial / "metadata" / "metadata").write_text('{"epoch": 1, "best_metr')

  # 2. Resume; this run SIGKILLs itself after metrics.jsonl and best/2 are written, before latest/2.
  second = harness.Worker(WORKER, args + ["--resume", "--out", str(tmp_path / "second.npz"),
                                          "--kill-after-save", f"best:{EPOCHS - 1}"], env=env)
  assert second.wait(TIMEOUT) == -9, second.output[-4000:]
  assert "resumed after epoch 1 " in second.output
  assert f"SIGKILL after saving best {EPOCHS - 1}" in second.output
  assert harness.finalized_steps(latest) == [1]
  assert not partial.exists()  # removed when the checkpointer opened the directory
  assert harness.finalized_steps(best) == [EPOCHS - 1]
  assert [r["epoch"] for r in _records(tmp_path)] == [0, 1, 2]  # the record of epoch 3 is early

  # 3. Resume again: redoes epoch 3 from latest/1 and overwrites best/2.
  third = harness.run_worker(WORKER, args + ["--resume", "--out", str(tmp_path / "final.npz")],
                             env=env, timeout=TIMEOUT)
  assert f"resumed after epoch {EPOCHS - 1} " in third.output
  with np.load(tmp_path / "final.npz") as f:
    _assert_same_run(dict(f), expected)
  assert harness.finalized_steps(latest) == [EPOCHS - 1]
  assert harness.finalized_steps(best) == [EPOCHS - 1]
  records, expected_records = _records(tmp_path), _records(reference_dir)
  assert [r["epoch"] for r in records] == list(range(EPOCHS))
  for record, expected_record in zip(records, expected_records):
    for key in ("step", "train_loss", "val_dice"):
      assert record[key] == pytest.approx(expected_record[key], rel=1e-6), key
  # The input pipeline's (Grain) iterator position is saved with the train state, and the last
  # checkpoint's is the end of the last epoch.
  data = json.loads((latest / str(EPOCHS - 1) / "metadata" / "metadata").read_text())["data"]
  assert data["start"] + data["taken"] == EPOCHS * STEPS_PER_EPOCH
  assert data["grain"] is not None
