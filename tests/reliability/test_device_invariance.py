"""Device-count invariance: 1 and 4 devices give the same training trajectory for each model.

``tests/train/test_loop.py`` checks this for the hierarchical study's UNet2D; here it is checked for
the models of the other studies, each trained with its own experiment's loss function
(``_invariance_worker.py`` has the details):

* TransUNet with deep supervision and dropout (seed 003; sigmoid focal + AG-BCE + adaptive focal,
  whose gamma is a batch-level statistic);
* the probabilistic 3D attention U-Net (seed 001; ELBO with posterior latent samples, MC dropout,
  CE + balanced CE + focal + Dice/boundary over deep-supervision heads);
* UNet2D with BatchNorm (seed 002; BCE + Tversky pooled over the batch): batch statistics and
  batch-pooled counts must span all devices.

One fresh process with 4 host CPU devices runs the same ``Trainer`` over a 1-device mesh and over a
4-device mesh (batch split in 4). Per-step losses must agree within 1e-5, and so must the
parameters (and BatchNorm statistics) after the steps.

Two choices keep the comparison about data parallelism rather than about rounding:

* plain SGD with momentum. Adam-type optimisers move every parameter by about +-lr in their first
  steps whatever the gradient's size, so a parameter whose true gradient is zero and whose
  computed gradient is rounding noise moves by +-lr in a direction set by rounding;
* parameters nudged (0.01 N(0, 1)) off the initialisation point. At initialisation the
  probabilistic U-Net's squeeze-and-excitation input is the spatial mean of an instance-normalised
  map, i.e. exactly its (zero) bias, so the LeakyReLU that follows sits exactly on its kink and the
  branch of its derivative is decided by rounding (the gradient then differs between *any* two
  programs, e.g. batch 4 vs batch 1 on one device, by ~100%).
"""

from __future__ import annotations


import numpy as np
import pytest
import reliability_harness as harness  # tests/reliability/conftest.py


MODELS = ("transunet", "prob_unet3d", "unet2d_bn")
STEPS = 3


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory):
  out = tmp_path_factory.mktemp("invariance") / "trajectories.npz"
  env = harness.worker_env(harness.session_dir(tmp_path_factory) / "xla-cache", devices=4)
  harness.run_worker("_invariance_worker.py", ["--out", str(out), "--models", ",".join(MODELS),
                                               "--steps", str(STEPS)], env=env, timeout=540)
  with np.load(out) as f:
    return dict(f)


@pytest.mark.parametrize("model", MODELS)
def test_one_and_four_devices_give_the_same_trajectory(trajectories, model):
  one = {k.split("/", 2)[2]: v for k, v in trajectories.items() if k.startswith(f"{model}/1/")}
  four = {k.split("/", 2)[2]: v for k, v in trajectories.items() if k.startswith(f"{model}/4/")}
  assert one and sorted(one) == sorted(four)
  assert one["loss"].shape == (STEPS,) and np.all(np.isfinite(one["loss"]))
  assert np.ptp(one["loss"]) > 1e-3  # it trained
  np.testing.assert_allclose(four["loss"], one["loss"], rtol=0, atol=1e-5)
  assert len(one) > 10  # every parameter leaf is compared, not just a few
  for name in one:
    np.testing.assert_allclose(four[name], one[name], rtol=0, atol=1e-5, err_msg=name)
  if model == "unet2d_bn":
    assert any(name.startswith("stat") for name in one)  # BatchNorm statistics were compared
