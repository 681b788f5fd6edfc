"""The comparison runner: config validation, command line, summaries, and the fixed defects."""

import types

import jax
import numpy as np
import pytest

from experiments import adaptive_focal, runner, tversky
from experiments.configs import anatomical_vs_diagnostic as avd_config
from experiments.configs import tversky as tversky_config
from jaxseg.data import augment
from jaxseg.data.pipeline import Volume
from jaxseg.errors import ConfigError
from jaxseg.metrics import stats


def _cfg(**train):
  cfg = tversky_config.get_config("cpu")
  cfg.train.update(**train)
  return cfg


@pytest.mark.parametrize("field,value,words", [
    ("epochs", 0, "train.epochs = 0"), ("epochs", -3, "train.epochs = -3"),
    ("batch_size", 0, "train.batch_size = 0"), ("batch_size", 6, "multiple of the 4 devices"),
    ("foreground_prob", 1.5, "probability in [0, 1]"), ("schedule", "step", "'constant'"),
    ("scale", (1.2, 0.8), "0 < low <= high"), ("scale", (0.0, 1.0), "train.scale = (0.0, 1.0)"),
    ("foreground_sampling", "organ", "voxel or class"),
    ("ema_decay", 1.0, "train.ema_decay = 1.0"), ("ema_decay", -0.1, "0: no parameter average"),
    ("checkpoint_every", 0, "train.checkpoint_every = 0"),
    ("checkpoint_every", -2, "an integer >= 1 (1: every epoch)"),
    ("sweep_impl", "grouped", "'auto', 'vmap' or 'unroll'"),
])
def test_validate_config_names_field_value_and_allowed(field, value, words):
  with pytest.raises(ConfigError, match=None) as e:
    runner.validate_config(_cfg(**{field: value}))
  assert words in str(e.value) and "\n" not in str(e.value)


def test_setting_the_dataset_does_not_have():
  cfg = tversky_config.get_config("cpu")
  cfg.data.source = "promise12"
  cfg.data.settings.num_cases = 5
  with pytest.raises(ConfigError) as e:
    runner.validate_config(cfg)
  assert "data.settings.num_cases" in str(e.value) and "promise12/preprocessed" in str(e.value)


@pytest.mark.parametrize("flags", [["--epochs", "0"], ["--batch-size", "0"],
                                   ["--epochs", "-3"], ["--data", "nowhere"]])
def test_bad_flags_stop_before_any_work_with_one_line(flags, capsys, tmp_path):
  with pytest.raises(SystemExit) as e:
    tversky.main(flags + ["--workdir", str(tmp_path / "out")])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("python -m experiments.tversky: error:"), err
  assert not (tmp_path / "out").exists()  # nothing ran


def test_help_shows_preset_values_and_meaning(capsys):
  with pytest.raises(SystemExit) as e:
    tversky.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  epochs = tversky_config.get_config("cpu").train.epochs
  assert "--train.epochs" in out and "--epochs" in out and f"[{epochs}]" in out
  assert "number of training epochs" in out
  assert "--data.settings.num_cases" in out and "[40]" in out


def test_overrides_parse_to_typed_values():
  cfg, _ = runner.parse(["--epochs", "3", "--alphas", "0.3", "0.7", "--train.patch", "32", "32",
                         "--data.settings.num_cases", "6", "--train.patience", "2"],
                        prog="x", config="experiments.configs.tversky", description="")
  assert cfg.train.epochs == 3 and cfg.alphas == (0.3, 0.7) and cfg.train.patch == (32, 32)
  assert cfg.data.settings.num_cases == 6 and cfg.train.patience == 2


def test_zoom_reaches_the_2d_augmentation_and_is_refused_for_3d():
  aug = runner._augment(_cfg(scale=(0.7, 1.4), max_degrees=0.0, jitter=(0.0, 0.0, 0.0)).train)
  assert isinstance(aug, augment.FlipRotate) and aug.scale == (0.7, 1.4)
  assert runner._augment(_cfg(scale=(1.0, 1.0), max_degrees=0.0, flip_prob=0.0,
                              jitter=(0.0, 0.0, 0.0)).train) is None
  with pytest.raises(ConfigError, match="zooms are 2D only"):
    runner.validate_config(_cfg(scale=(0.8, 1.2), patch=(32, 32, 8)))


def test_level_lines_say_who_reached_the_level_and_who_sits_at_chance():
  cfg = tversky_config.get_config("cpu")
  cfg.eval.levels = {"dice": 0.85, "hard_dice_WG": 0.85}   # the second: another task's metric
  study = types.SimpleNamespace(metrics=(("dice", "Dice"),), chance={"AUROC": 0.5},
                                statistic_labels=lambda cmp: (("AUROC", "AUROC"),))
  est = lambda value, low, high: stats.Estimate(value, low, high, 4)
  result = {"names": ["A", "B"],
            "estimates": {"A": {"dice": est(0.9, 0.85, 0.95)}, "B": {"dice": est(0.8, 0.7, 0.9)}},
            "study_statistics": {"A": [{"AUROC": est(0.9, 0.8, 0.97)}],
                                 "B": [{"AUROC": est(0.55, 0.4, 0.7)}]}}
  cmp = types.SimpleNamespace(cfg=cfg, study=study, metric_columns=lambda: [("dice", "Dice")])
  cmp._estimate = lambda *a: runner.Comparison._estimate(cmp, *a)
  text = "\n".join(runner.Comparison.level_lines(cmp, result))
  assert "- Dice ≥ 0.85: reached by A (0.900)" in text and "`eval.levels`" in text
  assert "**not reached** by B (0.800)" in text and "WG" not in text
  assert "AUROC CI includes chance (0.5) for B: this comparison is not informative" in text
  assert "for A" not in text
  cfg.eval.levels = {}
  study.chance = {}
  assert runner.Comparison.level_lines(cmp, result) == []
  bad = tversky_config.get_config("cpu")
  bad.eval.levels = {"dice": "high"}
  with pytest.raises(ConfigError, match="eval.levels.dice"):
    runner.validate_config(bad)


class _Stop(Exception):
  pass


def test_schedule_length_counts_training_cases_only(monkeypatch):
  cfg = tversky_config.get_config("cpu")
  cfg.train.update(samples_per_epoch=None, batch_size=8, epochs=5, schedule="cosine",
                   final_learning_rate=1e-7)
  seen = {}

  def fake_optimizer(t, total_steps):
    seen["total"] = total_steps
    raise _Stop

  monkeypatch.setattr(runner, "_optimizer", fake_optimizer)
  cmp = runner.Comparison(cfg, tversky.STUDY)
  train = [_volume(np.ones((64, 64, 16)), f"t{i}") for i in range(3)]       # 48 slices
  validation = [_volume(np.ones((64, 64, 16)), f"v{i}") for i in range(5)]  # 80 more slices
  with pytest.raises(_Stop):
    cmp.train(tversky.STUDY.configurations(cmp), runner.Fold(train, validation, []), name="x")
  assert seen["total"] == 48 // 8 * 5


@pytest.mark.parametrize("decay,expected", [(0.0, None), (0.99, 0.99)])
def test_ema_decay_reaches_the_trainer(decay, expected):
  cfg = tversky_config.get_config("cpu")
  cfg.train.ema_decay = decay
  cmp = runner.Comparison(cfg, tversky.STUDY)
  trainer = cmp.trainer(tversky.STUDY.configurations(cmp)[:1], steps_per_epoch=4,
                        num_configs=None)
  assert trainer.ema_decay == expected


@pytest.mark.parametrize("impl,expected", [("auto", "unroll"), ("vmap", "vmap"),
                                           ("unroll", "unroll")])
def test_sweep_impl_reaches_the_trainer(impl, expected):
  cfg = tversky_config.get_config("cpu")
  cfg.train.sweep_impl = impl
  cmp = runner.Comparison(cfg, tversky.STUDY)
  trainer = cmp.trainer(tversky.STUDY.configurations(cmp)[:2], steps_per_epoch=4, num_configs=2)
  assert trainer.sweep_impl == (None if impl == "auto" else expected)
  trainer.init(jax.random.key(0), {"image": np.zeros((1, 16, 16, 1), np.float32)})
  assert trainer.sweep_impl == expected  # auto: unroll, a U-Net with convolutions on CPUs


def test_paper_presets_resolve_and_validate():
  from experiments.configs import adaptive_focal as af_config
  from experiments.configs import hierarchical as hi_config
  for module in (tversky_config, af_config, hi_config, avd_config):
    cfg = module.get_config("paper")
    cfg.train.batch_size = 4 * max(1, cfg.train.batch_size // 4)
    runner.validate_config(cfg)
  assert avd_config.get_config("paper").train.epochs == 100


def _binary_cmp(threshold=0.5):
  cfg = types.SimpleNamespace(model=types.SimpleNamespace(activation="sigmoid",
                                                          class_names=("bg", "fg")),
                              eval=types.SimpleNamespace(threshold=threshold,
                                                         num_resamples=500),
                              seed=0)
  return types.SimpleNamespace(cfg=cfg)


def _volume(label, case_id="c", **extras):
  label = np.asarray(label, np.int32)
  return Volume(image=np.zeros(label.shape, np.float32), label=label, spacing=(1.0,) * label.ndim,
                case_id=case_id, extras=extras)


def test_tversky_empty_prediction_is_undefined_precision_and_f1_uses_the_same_cases():
  # Three cases; the model predicts nothing on the third.
  truths = [np.zeros((4, 4, 1), np.int32) for _ in range(3)]
  for t in truths:
    t[:2, :2, 0] = 1
  preds = [np.zeros((4, 4, 1)) for _ in range(3)]
  preds[0][:2, :2, 0] = 0.9                       # perfect
  preds[1][:2, :1, 0] = 0.9                       # precision 1, recall 0.5
  volumes = [_volume(t, f"c{i}") for i, t in enumerate(truths)]
  cmp, study = _binary_cmp(), tversky.Tversky()
  values = study.case_metrics(cmp, runner.Predictions(preds), volumes)
  np.testing.assert_allclose(values["recall"], [1.0, 0.5, 0.0])
  assert np.isnan(values["precision"][2])
  p = stats.bootstrap_ci_runs(values["precision"], num_resamples=200)
  assert (p.n, p.n_undefined) == (2, 1)
  assert "n=2, 1 undef." in stats.format_estimate(p)
  f1 = study.study_statistics(cmp, runner.Predictions(preds), volumes, values)["f1"]
  # F1 of the mean precision (1.0) and mean recall (0.75) over the 2 cases where both are defined.
  np.testing.assert_allclose(f1.value, 2 * 1.0 * 0.75 / 1.75)
  assert (f1.n, f1.n_undefined) == (2, 1)


def test_adaptive_focal_dice_is_per_slice_then_per_patient():
  truth = np.zeros((8, 8, 2), np.int32)
  truth[:, :, 0] = 1                 # a large slice
  truth[:2, :2, 1] = 1               # a small slice
  pred = truth.astype(float) * 0.9
  pred[:2, :2, 1] = 0.0
  pred[2:4, 2:4, 1] = 0.9            # the small slice is missed: its Dice is 0
  volume = _volume(truth, non_expert=truth.copy())
  cmp = _binary_cmp()
  values = adaptive_focal.AdaptiveFocal().case_metrics(cmp, runner.Predictions([pred]), [volume])
  np.testing.assert_allclose(values["dice"], [0.5])            # mean of slices 1.0 and 0.0
  np.testing.assert_allclose(values["dice_pooled"], [2 * 64 / (68 + 68)])


def test_bootstrap_ci_runs_one_run_is_bootstrap_ci_and_two_runs_widen():
  rng = np.random.default_rng(0)
  x = rng.random(12)
  a = stats.bootstrap_ci_runs(x, num_resamples=500, seed=3)
  b = stats.bootstrap_ci(x, num_resamples=500, seed=3)
  np.testing.assert_allclose([a.value, a.low, a.high], [b.value, b.low, b.high])
  two = np.stack([x, x + 0.5])
  c = stats.bootstrap_ci_runs(two, num_resamples=500, seed=3)
  np.testing.assert_allclose(c.value, x.mean() + 0.25)
  assert c.high - c.low > a.high - a.low and c.n == 24
  with_nan = two.copy()
  with_nan[0, 0] = np.nan
  assert stats.bootstrap_ci_runs(with_nan, num_resamples=200).n_undefined == 1


def test_sweep_loss_selects_each_configuration():
  import jax.numpy as jnp
  calls = []

  def f(outputs, batch, *, a):
    calls.append("f")
    return outputs * a

  def g(outputs, batch):
    return outputs + 100.0

  configs = [runner.LossConfig("f1", f, {"a": 1.0}), runner.LossConfig("f2", f, {"a": 2.0}),
             runner.LossConfig("g", g)]
  loss_fn, params = runner.sweep_loss(configs)
  x = jnp.ones(3)
  np.testing.assert_allclose(loss_fn(x, {}, params[0]), 1.0)
  np.testing.assert_allclose(loss_fn(x, {}, params[1]), 2.0)
  np.testing.assert_allclose(loss_fn(x, {}, params[2]), 101.0)


def test_adaptive_focal_original_hd95_is_medpys_pooled_percentile():
  # One slice whose 95th percentile over both directions pooled differs from the larger of the
  # two directed 95th percentiles (what the "HD95" column reports).
  truth = np.zeros((24, 24, 1), np.int32)
  truth[4:20, 4:20, 0] = 1
  pred = np.zeros((24, 24, 1))
  pred[6:18, 6:18, 0] = 0.9   # too small by 2 voxels all round
  pred[0:2, 0:2, 0] = 0.9     # and a speck in the corner (about 4.7 voxels from the truth)
  volume = _volume(truth, non_expert=truth.copy())
  values = adaptive_focal.AdaptiveFocal().case_metrics(_binary_cmp(), runner.Predictions([pred]),
                                                       [volume])
  p = (pred > 0.5).astype(np.uint8)
  from jaxseg.metrics import surface
  pooled = surface.hd95_per_case([p], [truth.astype(np.uint8)], spacing=[(1.0, 1.0, 1.0)],
                                 method="pooled", connectivity=1, per_slice=True,
                                 skip_empty_slices="either").values
  np.testing.assert_allclose(values["hd95_original"], pooled)
  np.testing.assert_allclose(values["hd95_original"], [2 * np.sqrt(2)], rtol=1e-6)
  assert values["hd95"][0] > values["hd95_original"][0] + 1.0  # max of the directed percentiles


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_largest_component_post_processing_keeps_the_probabilities_of_the_kept_voxels(activation):
  p = np.zeros((6, 6, 2))
  p[:3, :3, :] = 0.9      # the gland: 18 voxels
  p[5, 5, 1] = 0.8        # a stray voxel: removed
  p[0, 5, 0] = 0.3        # below the threshold: not foreground, untouched
  cfg = types.SimpleNamespace(model=types.SimpleNamespace(activation=activation,
                                                          class_names=("bg", "fg")),
                              eval=types.SimpleNamespace(threshold=0.5))
  probs = p if activation == "sigmoid" else np.stack([1 - p, p], -1)
  cmp = types.SimpleNamespace(cfg=cfg, study=tversky.Tversky() if activation == "sigmoid"
                              else runner.Study())
  out = runner.Comparison.largest_component(cmp, runner.Predictions([probs])).probs[0]
  expected = p.copy()
  expected[5, 5, 1] = 0.0
  if activation == "softmax":
    expected = np.stack([1 - expected, expected], -1)
  np.testing.assert_allclose(out, expected)
  labels = cmp.study.labels(cmp, runner.Predictions([out]))[0]
  assert labels.sum() == 18


def test_the_default_source_applies_its_preset_too():
  """The hierarchical phantom's preset (Table 1's penalty) holds for the default run, not only
  with --data phantom; a flag still overrides it."""
  cfg, _ = runner.parse([], prog="h", config="experiments.configs.hierarchical", description="")
  assert cfg.data.source == "phantom" and cfg.penalty == "paper"
  cfg, _ = runner.parse(["--data", "phantom"], prog="h", config="experiments.configs.hierarchical",
                        description="")
  assert cfg.penalty == "paper"
  cfg, _ = runner.parse(["--penalty", "data"], prog="h",
                        config="experiments.configs.hierarchical", description="")
  assert cfg.penalty == "data"
