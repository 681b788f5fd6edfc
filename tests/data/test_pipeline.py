"""Tests of the sampling, batching and sharding pipeline."""

import json

import jax
import numpy as np
import pytest

from jaxseg.data import pipeline
from jaxseg.data.augment import Mirror


def _volumes(n=3, shape=(20, 18, 6)):
  rng = np.random.default_rng(0)
  volumes = []
  for i in range(n):
    label = np.zeros(shape, np.uint8)
    label[8:11, 7:10, 2:4] = 1 + i % 2
    volumes.append(pipeline.Volume(image=rng.normal(size=shape).astype(np.float32), label=label,
                                   spacing=(1.0, 1.0, 3.0), case_id=f"c{i}"))
  return volumes


def test_batches_are_a_pure_function_of_seed_and_epoch():
  vols = _volumes()
  kw = dict(batch_size=4, patch_shape=(8, 8), foreground_prob=0.5, seed=3)
  a = list(pipeline.patch_batches(vols, epoch=1, **kw))
  b = list(pipeline.patch_batches(vols, epoch=1, **kw))
  c = list(pipeline.patch_batches(vols, epoch=2, **kw))
  assert len(a) == 18 // 4  # default: one sample per axial slice, whole batches
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
  assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, c))
  assert a[0]["image"].shape == (4, 8, 8, 1) and a[0]["image"].dtype == np.float32
  assert a[0]["label"].shape == (4, 8, 8) and a[0]["label"].dtype == np.int32


def test_foreground_probability_one_always_contains_foreground():
  vols = _volumes()
  for batch in pipeline.patch_batches(vols, batch_size=2, patch_shape=(6, 6),
                                      foreground_prob=1.0, seed=0, epoch=0,
                                      samples_per_epoch=40):
    assert np.all(batch["label"].reshape(2, -1).max(-1) > 0)
  # With probability 0, most random 6x6 slices of this volume miss the small object.
  labels = np.concatenate([b["label"] for b in pipeline.patch_batches(
      vols, batch_size=2, patch_shape=(6, 6), foreground_prob=0.0, seed=0, epoch=0,
      samples_per_epoch=200)])
  assert (labels.reshape(len(labels), -1).max(-1) > 0).mean() < 0.5


def test_class_sampling_centres_every_present_class_equally_often():
  # A big class (1: 400 voxels) and a thin one (2: 4 voxels): voxel sampling centres on the thin
  # class about 1% of the time, class sampling half of the time (nnU-Net's oversampling).
  label = np.zeros((40, 40, 1), np.uint8)
  label[0:20, 0:20] = 1
  label[30, 30:34] = 2
  vol = pipeline.Volume(image=np.zeros(label.shape, np.float32), label=label,
                        spacing=(1.0, 1.0, 1.0), case_id="a")
  share = {}
  for mode in pipeline.FOREGROUND_SAMPLING:
    sampler = pipeline.PatchSampler([vol], batch_size=1, patch_shape=(1, 1), foreground_prob=1.0,
                                    seed=0, samples_per_epoch=2000, foreground_sampling=mode)
    centres = np.array([sampler(i)["label"][0, 0] for i in range(2000)])
    assert set(np.unique(centres)) <= {1, 2}   # foreground_prob 1: always on the foreground
    share[mode] = (centres == 2).mean()
  assert share["voxel"] < 0.03 and 0.45 < share["class"] < 0.55, share
  with pytest.raises(ValueError, match="foreground_sampling must be one of"):
    pipeline.PatchSampler([vol], batch_size=1, patch_shape=(1, 1), foreground_prob=1.0, seed=0,
                          foreground_sampling="organ")


def test_patch_crop_pads_outside_the_volume_and_3d_patches():
  vol = _volumes(1, shape=(5, 5, 4))[0]
  rng = np.random.default_rng(0)
  patch = pipeline.sample_patch(vol, rng, patch_shape=(12, 12, 2), foreground_prob=1.0)
  image, label = patch["image"], patch["label"]
  assert image.shape == (12, 12, 2, 1) and label.shape == (12, 12, 2)
  assert image.min() == pytest.approx(vol.image.min())  # padded with the volume's minimum
  assert label.sum() == vol.label[..., :].astype(bool).sum() or label.sum() > 0


def test_sharding_over_four_devices():
  mesh = pipeline.data_mesh()
  assert mesh.devices.size == len(jax.devices()) == 4  # from tests/conftest.py
  batch = {"image": np.zeros((8, 4, 4, 1), np.float32)}
  sharded = pipeline.shard_batch(batch, mesh)
  assert len(sharded["image"].sharding.device_set) == 4
  assert sharded["image"].addressable_shards[0].data.shape == (2, 4, 4, 1)
  with pytest.raises(ValueError, match="multiple of the 4 devices"):
    pipeline.shard_batch({"image": np.zeros((6, 2))}, mesh)


def test_volume_validation():
  with pytest.raises(ValueError, match="differ in shape"):
    pipeline.Volume(image=np.zeros((4, 4, 2)), label=np.zeros((4, 5, 2)), spacing=(1, 1, 1),
                    case_id="x")
  for spacing, match in (((1, 1, 0), "case x: spacing"), ((1, 1), "case x: spacing"),
                         ((1, -2, 3), "case x: spacing"), ((1, np.nan, 3), "case x: spacing")):
    with pytest.raises(ValueError, match=match):
      pipeline.Volume(image=np.zeros((4, 4, 2)), label=np.zeros((4, 4, 2)), spacing=spacing,
                      case_id="x")
  ok = pipeline.Volume(image=np.zeros((4, 4, 2)), label=np.zeros((4, 4, 2)),
                       spacing=np.array([1, 2, 3]), case_id="x")
  assert ok.spacing == (1.0, 2.0, 3.0) and all(type(s) is float for s in ok.spacing)
  with pytest.raises(ValueError, match="at least one volume"):
    next(pipeline.patch_batches([], batch_size=1, patch_shape=(2, 2), foreground_prob=0.5,
                                seed=0, epoch=0))


def test_dense_extras_are_cropped_with_the_label():
  rng = np.random.default_rng(0)
  label = np.zeros((12, 12, 3), np.uint8)
  label[3:6, 4:8, 1] = 1
  other = label.copy()
  other[5, 7, 1] = 0   # a second annotation that differs by one voxel
  maps = np.stack([label * 2.0, -label * 1.0], axis=-1).astype(np.float32)
  vol = pipeline.Volume(image=rng.normal(size=label.shape).astype(np.float32), label=label,
                        spacing=(1, 1, 1), case_id="x",
                        extras={"non_expert": other, "dist": maps, "note": "not a map"})
  assert set(pipeline.dense_extras(vol)) == {"non_expert", "dist"}
  batch = next(pipeline.patch_batches([vol], batch_size=2, patch_shape=(6, 6),
                                      foreground_prob=1.0, seed=0, epoch=0))
  assert batch["non_expert"].shape == (2, 6, 6) and batch["dist"].shape == (2, 6, 6, 2)
  np.testing.assert_array_equal(batch["dist"][..., 0], batch["label"] * 2.0)
  np.testing.assert_array_equal(batch["non_expert"] <= batch["label"], True)
  # An augmentation sees and moves the extra maps with the label.
  flipped = next(pipeline.patch_batches([vol], batch_size=2, patch_shape=(6, 6),
                                        foreground_prob=1.0, seed=0, epoch=0,
                                        augment=Mirror(probs=(1.0, 1.0))))
  for key in ("image", "label", "non_expert", "dist"):
    assert flipped[key].shape == batch[key].shape, key
  np.testing.assert_array_equal(flipped["dist"][..., 0], flipped["label"] * 2.0)
  np.testing.assert_array_equal(flipped["non_expert"] <= flipped["label"], True)


def _loader(vols, **kw):
  args = dict(batch_size=4, patch_shape=(8, 8), foreground_prob=0.5, seed=3, num_epochs=3,
              augment=Mirror(probs=(0.5, 0.5)))
  args.update(kw)
  return pipeline.PatchLoader(vols, **args)


def _assert_same_batches(xs, ys):
  assert len(xs) == len(ys) > 0
  for x, y in zip(xs, ys):
    assert sorted(x) == sorted(y)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_loader_gives_patch_batches_and_its_first_batch_as_sample():
  vols = _volumes()
  with _loader(vols) as loader:
    epochs = [list(loader(e)) for e in range(3)]
    assert loader.num_batches == 18 // 4
    _assert_same_batches([loader.sample()], epochs[0][:1])
    again = list(loader(1))  # out of sequence: a new iterator at epoch 1
  for e in range(3):
    _assert_same_batches(epochs[e], list(pipeline.patch_batches(
        vols, batch_size=4, patch_shape=(8, 8), foreground_prob=0.5, seed=3, epoch=e,
        augment=Mirror(probs=(0.5, 0.5)))))
  _assert_same_batches(again, epochs[1])
  assert not np.array_equal(epochs[0][0]["image"], epochs[1][0]["image"])


def test_loader_with_worker_processes_matches_and_resumes_from_its_state():
  vols = _volumes()
  with _loader(vols) as loader:
    expected = [list(loader(e)) for e in range(3)]
  with _loader(vols, workers=2) as loader:
    first = list(loader(0))
    state = loader.get_state()
  assert state["taken"] == loader.num_batches and state["grain"] is not None
  json.dumps(state)  # saved as JSON with the checkpoint
  _assert_same_batches(first, expected[0])
  for workers in (2, 0):  # same worker count: Grain's state; another: reopened at the position
    with _loader(vols, workers=workers) as resumed:
      resumed.set_state(json.loads(json.dumps(state)))
      _assert_same_batches(list(resumed(1)) + list(resumed(2)), expected[1] + expected[2])


def test_loader_rejects_bad_settings():
  vols = _volumes()
  with pytest.raises(ValueError, match="workers must be >= 0"):
    _loader(vols, workers=-1)
  with pytest.raises(ValueError, match="outside the loader's 3 epochs"):
    _loader(vols)(3)
