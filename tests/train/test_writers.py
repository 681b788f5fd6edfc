"""Tests of the TensorBoard metric writers and of the event files that Trainer.fit writes.

Event files are read back here without TensorBoard: TFRecord framing (little-endian uint64
length, masked CRC-32C of the length, the data, masked CRC-32C of the data), each record an
``Event`` protocol buffer. The CRC is computed from its definition (bitwise, Castagnoli
polynomial), independently of tensorboardX.
"""

from __future__ import annotations

import glob
import json
import os
import struct

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorboardX.proto import event_pb2

from jaxseg.train import writers
from jaxseg.train.loop import TrainConfig, Trainer
from jaxseg.train.writers import MetricWriter, epoch_scalars, run_logdirs


def _crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = _crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_events(path: str) -> list[event_pb2.Event]:
  events = []
  with open(path, "rb") as f:
    raw = f.read()
  pos = 0
  while pos < len(raw):
    header = raw[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    (length_crc,) = struct.unpack("<I", raw[pos + 8:pos + 12])
    assert length_crc == _masked_crc(header)
    data = raw[pos + 12:pos + 12 + length]
    (data_crc,) = struct.unpack("<I", raw[pos + 12 + length:pos + 16 + length])
    assert len(data) == length and data_crc == _masked_crc(data)
    events.append(event_pb2.Event.FromString(data))
    pos += 16 + length
  return events


def _event_files(logdir) -> list[str]:
  return sorted(glob.glob(os.path.join(os.fspath(logdir), "events.out.tfevents.*")))


def _scalars(events) -> list[tuple[int, dict[str, float]]]:
  """``(step, {tag: value})`` of the events that carry a summary."""
  return [(e.step, {v.tag: v.simple_value for v in e.summary.value})
          for e in events if e.HasField("summary")]


def _tensorboard_view(logdir) -> dict[int, dict[str, float]]:
  """What TensorBoard shows: files in name order, a SessionLog.START purges steps >= its step."""
  shown: dict[int, dict[str, float]] = {}
  for path in _event_files(logdir):
    for e in _read_events(path):
      if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START:
        shown = {s: v for s, v in shown.items() if s < e.step}
      if e.HasField("summary"):
        shown[e.step] = {v.tag: v.simple_value for v in e.summary.value}
  return shown


def test_crc_reference():
  assert _crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


# --------------------------------------------------------------------------------------------
# MetricWriter
# --------------------------------------------------------------------------------------------


def test_write_scalars_round_trip(tmp_path):
  logdir = tmp_path / "tb"
  with MetricWriter(logdir) as writer:
    assert writer.path is None and not logdir.exists()  # nothing before the first write
    writer.write_scalars(0, {"train/loss": 0.75, "val/dice": 0.125})
    writer.write_scalars(1, {"train/loss": np.float32(0.5), "val/dice": jnp.asarray(0.25)})
    writer.write_scalars(7, {"x": 3})
    path = writer.path
  assert _event_files(logdir) == [path]
  events = _read_events(path)
  assert events[0].file_version == "brain.Event:2"
  assert _scalars(events) == [(0, {"train/loss": 0.75, "val/dice": 0.125}),
                              (1, {"train/loss": 0.5, "val/dice": 0.25}),
                              (7, {"x": 3.0})]
  assert all(e.wall_time > 0 for e in events)


def test_values_are_float32(tmp_path):
  with MetricWriter(tmp_path) as writer:
    writer.write_scalars(0, {"a": 0.1, "nan": float("nan")})
    path = writer.path
  (_, values), = _scalars(_read_events(path))
  assert values["a"] == np.float32(0.1) and np.isnan(values["nan"])


def test_each_write_is_flushed(tmp_path):
  writer = MetricWriter(tmp_path)
  writer.write_scalars(3, {"a": 1.0})
  assert _scalars(_read_events(writer.path)) == [(3, {"a": 1.0})]  # readable before close
  writer.close()
  writer.close()  # idempotent
  with pytest.raises(ValueError, match="closed"):
    writer.write_scalars(4, {"a": 1.0})


def test_bad_values(tmp_path):
  with MetricWriter(tmp_path) as writer:
    for bad in ("0.5", True, np.zeros(2), None):
      with pytest.raises(ValueError, match="'a' must be a real number"):
        writer.write_scalars(0, {"a": bad})


def test_disabled_writes_nothing(tmp_path):
  with MetricWriter(tmp_path / "tb", enabled=False) as writer:
    writer.write_scalars(0, {"a": 1.0})
  assert not (tmp_path / "tb").exists()


def test_purge_step_and_file_order(tmp_path):
  with MetricWriter(tmp_path) as first:
    for step in range(3):
      first.write_scalars(step, {"a": float(step)})
  with MetricWriter(tmp_path, purge_step=1) as second:  # same second: names still in order
    second.write_scalars(1, {"a": 10.0})
  files = _event_files(tmp_path)
  assert files == [first.path, second.path]
  starts = [e for e in _read_events(second.path) if e.HasField("session_log")]
  assert [(e.step, e.session_log.status) for e in starts] == [(1, event_pb2.SessionLog.START)]
  assert _tensorboard_view(tmp_path) == {0: {"a": 0.0}, 1: {"a": 10.0}}


def test_epoch_scalars_and_logdirs(tmp_path):
  record = {"epoch": 2, "step": 30, "train_loss": 0.5, "val_dice": 0.75, "val_hd95_mm": 3.0,
            "seconds": 1.5, "config": 1, "note": "x"}
  assert epoch_scalars(record) == {"train/loss": 0.5, "val/dice": 0.75, "val/hd95_mm": 3.0,
                                   "time/epoch_seconds": 1.5}
  assert run_logdirs(tmp_path) == [str(tmp_path / "tensorboard")]
  assert run_logdirs(tmp_path, 2) == [str(tmp_path / "tensorboard" / "config0"),
                                      str(tmp_path / "tensorboard" / "config1")]


# --------------------------------------------------------------------------------------------
# Trainer.fit
# --------------------------------------------------------------------------------------------


class _PixelClassifier(nn.Module):
  """A per-pixel linear classifier: the smallest model Trainer can fit (compiles in ~1 s)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    return nn.Dense(2)(x)


def _loss(logits, batch, params):
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  return jnp.mean(ce, axis=(1, 2)) * params["scale"]


_RNG = np.random.default_rng(0)
_IMAGES = _RNG.normal(size=(8, 6, 6, 1)).astype(np.float32)
_LABELS = (_IMAGES[..., 0] > 0).astype(np.int32)


def _batches(epoch):
  order = np.random.default_rng(epoch).permutation(8)
  return [{"image": _IMAGES[order[i:i + 4]], "label": _LABELS[order[i:i + 4]]} for i in (0, 4)]


def _fit(trainer, workdir, epochs, *, resume=False, loss_params=None):
  dice = iter(np.linspace(0.1, 0.9, 10)[-epochs:] if resume else np.linspace(0.1, 0.9, 10))
  state = trainer.init(jax.random.key(0), _batches(0)[0])
  return trainer.fit(state, batches=_batches, evaluate=lambda s: {"dice": next(dice)},
                     loss_params=loss_params or {"scale": 1.0},
                     config=TrainConfig(num_epochs=epochs, progress=False), workdir=workdir,
                     resume=resume, log=lambda _: None)


@pytest.fixture(scope="module")
def trainer():
  return Trainer(_PixelClassifier(), optax.adam(1e-2), _loss)


def _jsonl(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_fit_writes_one_event_per_epoch(tmp_path, trainer):
  result = _fit(trainer, tmp_path, 3)
  files = _event_files(tmp_path / writers.TENSORBOARD_DIR)
  assert len(files) == 1
  scalars = _scalars(_read_events(files[0]))
  assert [step for step, _ in scalars] == [0, 1, 2]
  records = _jsonl(tmp_path)
  assert records == result.history
  for (step, values), record in zip(scalars, records):
    assert step == record["epoch"]
    assert set(values) == {"train/loss", "val/dice", "time/epoch_seconds"}
    np.testing.assert_allclose(values["train/loss"], record["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(values["val/dice"], record["val_dice"], rtol=1e-6)
  assert scalars[0][1]["train/loss"] != scalars[-1][1]["train/loss"]

  # A fresh run in the same workdir replaces the old event files.
  _fit(trainer, tmp_path, 1)
  files = _event_files(tmp_path / writers.TENSORBOARD_DIR)
  assert len(files) == 1 and [s for s, _ in _scalars(_read_events(files[0]))] == [0]


def test_fit_resume_hides_the_redone_epochs(tmp_path, trainer):
  _fit(trainer, tmp_path, 2)
  resumed = _fit(trainer, tmp_path, 3, resume=True)
  files = _event_files(tmp_path / writers.TENSORBOARD_DIR)
  assert len(files) == 2
  assert [s for s, _ in _scalars(_read_events(files[1]))] == [2]
  view = _tensorboard_view(tmp_path / writers.TENSORBOARD_DIR)
  assert sorted(view) == [0, 1, 2]
  for record in resumed.history:
    np.testing.assert_allclose(view[record["epoch"]]["train/loss"], record["train_loss"],
                               rtol=1e-6)


def test_fit_sweep_writes_one_run_per_configuration(tmp_path):
  sweep = Trainer(_PixelClassifier(), optax.adam(1e-2), _loss, num_configs=2)
  results = _fit(sweep, tmp_path, 2, loss_params={"scale": np.array([1.0, 3.0], np.float32)})
  for k, logdir in enumerate(run_logdirs(tmp_path, 2)):
    assert logdir.endswith(f"config{k}")
    (path,) = _event_files(logdir)
    scalars = _scalars(_read_events(path))
    assert [s for s, _ in scalars] == [0, 1]
    np.testing.assert_allclose([v["train/loss"] for _, v in scalars],
                               [h["train_loss"] for h in results[k].history], rtol=1e-6)
  assert not _event_files(tmp_path / writers.TENSORBOARD_DIR)  # nothing at the top level
