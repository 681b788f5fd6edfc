"""Tests for jaxseg.losses.lovasz (Lovász hinge, Lovász-Softmax)."""

import functools
import itertools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses import lovasz


def _softmax_np(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _lovasz_grad_np(gt_sorted):
  gts = gt_sorted.sum()
  intersection = gts - np.cumsum(gt_sorted)
  union = gts + np.cumsum(1.0 - gt_sorted)
  jaccard = 1.0 - intersection / union
  jaccard[1:] = jaccard[1:] - jaccard[:-1]
  return jaccard


def _extension_np(errors, gt):
  perm = np.argsort(-errors, kind="stable")
  return float(np.dot(errors[perm], _lovasz_grad_np(gt[perm])))


def _hinge_np(logits, mask, per_image):
  """Reference lovasz_hinge: logits (B, *S), mask (B, *S), float64."""
  logits = np.asarray(logits, np.float64)
  mask = np.asarray(mask, np.float64)
  groups = ([(l.ravel(), m.ravel()) for l, m in zip(logits, mask)]
            if per_image else [(logits.ravel(), mask.ravel())])
  out = []
  for lg, gt in groups:
    errors = 1.0 - lg * (2.0 * gt - 1.0)
    perm = np.argsort(-errors, kind="stable")
    out.append(np.dot(np.maximum(errors[perm], 0.0),
                      _lovasz_grad_np(gt[perm])))
  out = np.asarray(out)
  return out if per_image else np.broadcast_to(out, (logits.shape[0],))


def _softmax_loss_np(probs, labels, classes, per_image):
  """Reference lovasz_softmax: probs (B, *S, C), integer labels (B, *S)."""
  probs = np.asarray(probs, np.float64)
  num = probs.shape[-1]
  groups = (list(zip(probs, labels)) if per_image else [(probs, labels)])
  out = []
  for p, lab in groups:
    p, lab = p.reshape(-1, num), np.asarray(lab).ravel()
    losses = []
    todo = range(num) if isinstance(classes, str) else classes
    for c in todo:
      fg = (lab == c).astype(np.float64)
      if classes == "present" and fg.sum() == 0:
        continue
      losses.append(_extension_np(np.abs(fg - p[:, c]), fg))
    out.append(np.mean(losses) if losses else 0.0)
  out = np.asarray(out)
  return out if per_image else np.broadcast_to(out, (probs.shape[0],))


def _data(seed=0, shape=(2, 5, 4), classes=3, scale=2.0):
  rng = np.random.default_rng(seed)
  logits = (scale * rng.normal(size=shape + (classes,))).astype(np.float32)
  labels = rng.integers(0, classes, size=shape)
  return logits, labels


class LovaszHingeTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(per_image=(True, False), ndim=(2, 3))
  def test_matches_numpy(self, per_image, ndim):
    shape = (3, 5, 4) if ndim == 2 else (2, 3, 4, 3)
    rng = np.random.default_rng(ndim)
    logits = (2 * rng.normal(size=shape + (1,))).astype(np.float32)
    mask = rng.integers(0, 2, size=shape)
    got = self.variant(functools.partial(
        lovasz.lovasz_hinge_loss, per_image=per_image))(logits, mask)
    chex.assert_shape(got, (shape[0],))
    chex.assert_type(got, jnp.float32)
    np.testing.assert_allclose(got, _hinge_np(logits[..., 0], mask, per_image),
                               rtol=1e-5, atol=1e-6)
    # The mask may carry the channel axis too.
    np.testing.assert_allclose(
        lovasz.lovasz_hinge_loss(logits, mask[..., None], per_image=per_image),
        got, rtol=1e-6)

  def test_hand_computed(self):
    # labels [1, 0], logits [0.5, 0.5]: errors [0.5, 1.5]; sorted [1.5, 0.5]
    # with gt [0, 1]: J = [1 - 1/2, 1 - 0/2] = [0.5, 1], grad [0.5, 0.5];
    # loss = 1.5 * 0.5 + 0.5 * 0.5 = 1.
    logits = jnp.array([0.5, 0.5]).reshape(1, 2, 1, 1)
    mask = jnp.array([1, 0]).reshape(1, 2, 1)
    np.testing.assert_allclose(lovasz.lovasz_hinge_loss(logits, mask), [1.0],
                               rtol=1e-6)

  def test_unit_margin_errors_give_jaccard_loss(self):
    # Hinge errors in {0, 1}: margin 1 where right, score 0 where wrong; the
    # Lovász extension at 1_M is |M| / |G u M|.
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 2, size=(2, 4, 5))
    wrong = rng.uniform(size=gt.shape) < 0.3
    logits = np.where(wrong, 0.0, 2.0 * gt - 1.0)[..., None]
    got = lovasz.lovasz_hinge_loss(logits.astype(np.float32), gt)
    for b in range(2):
      m, g = wrong[b], gt[b].astype(bool)
      np.testing.assert_allclose(got[b], m.sum() / (g | m).sum(), rtol=1e-6)

  def test_confident_correct_scores_zero(self):
    mask = np.random.default_rng(2).integers(0, 2, size=(2, 4, 4))
    logits = 1e4 * (2.0 * mask - 1.0)[..., None]
    np.testing.assert_allclose(
        lovasz.lovasz_hinge_loss(logits.astype(np.float32), mask), [0.0, 0.0])

  def test_pooled_broadcasts_one_value(self):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 4, 4, 1)).astype(np.float32)
    mask = rng.integers(0, 2, size=(2, 4, 4))
    pooled = lovasz.lovasz_hinge_loss(logits, mask, per_image=False)
    np.testing.assert_allclose(pooled[0], pooled[1])

  def test_vmap_and_bf16(self):
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 4, 5, 1)).astype(np.float32)
    mask = rng.integers(0, 2, size=(3, 4, 5))
    vmapped = jax.vmap(lambda x, y: lovasz.lovasz_hinge_loss(
        x[None], y[None])[0])(logits, mask)
    np.testing.assert_allclose(
        vmapped, lovasz.lovasz_hinge_loss(logits, mask), rtol=1e-6)
    got = lovasz.lovasz_hinge_loss(jnp.asarray(logits, jnp.bfloat16), mask)
    chex.assert_type(got, jnp.float32)
    np.testing.assert_allclose(
        got, lovasz.lovasz_hinge_loss(logits, mask), atol=2e-2)

  @parameterized.product(sign=(1.0, -1.0), per_image=(True, False),
                         all_background=(True, False))
  def test_finite_value_and_grad_at_extreme_logits(self, sign, per_image,
                                                   all_background):
    rng = np.random.default_rng(5)
    logits = jnp.asarray(
        sign * 1e4 * np.sign(rng.normal(size=(2, 4, 4, 1))), jnp.float32)
    mask = (np.zeros((2, 4, 4), np.int32) if all_background
            else rng.integers(0, 2, size=(2, 4, 4)))
    f = lambda x: jnp.sum(lovasz.lovasz_hinge_loss(x, mask,
                                                   per_image=per_image))
    value, grad = jax.jit(jax.value_and_grad(f))(logits)
    self.assertTrue(np.isfinite(value))
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_gradient_matches_numpy(self):
    # With distinct errors the loss is linear around the point: the gradient
    # w.r.t. the logit of pixel i is -sign_i * grad_k (if its error > 0).
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(1, 3, 3, 1))
    mask = rng.integers(0, 2, size=(1, 3, 3))
    grad = jax.grad(lambda x: lovasz.lovasz_hinge_loss(x, mask)[0])(
        jnp.asarray(logits, jnp.float32))
    eps = 1e-6
    num = np.zeros(9)
    base = _hinge_np(logits[..., 0], mask, True)[0]
    for i in range(9):
      bumped = logits.copy().reshape(-1)
      bumped[i] += eps
      num[i] = (_hinge_np(bumped.reshape(1, 3, 3), mask, True)[0] - base) / eps
    np.testing.assert_allclose(np.asarray(grad).ravel(), num, atol=1e-4)

  def test_errors(self):
    logits, labels = _data(classes=2)
    with self.assertRaisesRegex(ValueError, "single channel"):
      lovasz.lovasz_hinge_loss(logits, labels)
    with self.assertRaisesRegex(ValueError, "labels must have shape"):
      lovasz.lovasz_hinge_loss(logits[..., :1], labels[:, :-1])
    with self.assertRaisesRegex(ValueError, "binary"):
      lovasz.lovasz_hinge_loss(logits[..., :1], labels + 1)


class LovaszSoftmaxTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(per_image=(True, False),
                         classes=("present", "all", (0, 2)))
  def test_matches_numpy(self, per_image, classes):
    logits, labels = _data(seed=7, shape=(3, 4, 5), classes=4)
    labels[0][labels[0] == 3] = 1  # Class 3 absent from example 0.
    got = self.variant(functools.partial(
        lovasz.lovasz_softmax_loss, per_image=per_image,
        classes=classes))(logits, labels)
    ref = _softmax_loss_np(_softmax_np(logits), labels, classes, per_image)
    chex.assert_shape(got, (3,))
    chex.assert_type(got, jnp.float32)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)

  def test_one_hot_labels_and_3d(self):
    logits, labels = _data(seed=8, shape=(2, 3, 3, 4), classes=3)
    got = lovasz.lovasz_softmax_loss(logits, labels, per_image=True)
    np.testing.assert_allclose(
        got, _softmax_loss_np(_softmax_np(logits), labels, "present", True),
        rtol=1e-5)
    np.testing.assert_allclose(
        lovasz.lovasz_softmax_loss(logits, np.eye(3)[labels], per_image=True),
        got, rtol=1e-6)

  @parameterized.parameters(True, False)
  def test_hard_probabilities_give_one_minus_iou(self, per_image):
    # At an indicator vector the Lovász extension is the Jaccard loss.
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 3, size=(2, 5, 4))
    pred = rng.integers(0, 3, size=(2, 5, 4))
    got = lovasz.lovasz_softmax_loss(
        np.eye(3, dtype=np.float32)[pred], labels, activation="none",
        classes="all", per_image=per_image)
    groups = ([(labels[b], pred[b]) for b in range(2)] if per_image
              else [(labels, pred)])
    ref = []
    for lab, prd in groups:
      ious = [((lab == c) & (prd == c)).sum() / ((lab == c) | (prd == c)).sum()
              for c in range(3)]
      ref.append(1.0 - np.mean(ious))
    np.testing.assert_allclose(got, np.broadcast_to(ref, (2,)), rtol=1e-6)

  def test_brute_force_lovasz_extension(self):
    # Lovász extension from its definition: sum over the sorted errors of
    # m_k (Delta(top k) - Delta(top k-1)), with Delta the set Jaccard loss.
    rng = np.random.default_rng(10)
    probs = rng.uniform(size=(1, 6, 1, 1)).astype(np.float32)
    gt = np.array([1, 0, 1, 1, 0, 0])
    errors = np.abs(gt - probs.ravel().astype(np.float64))
    order = np.argsort(-errors)

    def jaccard_loss(mistakes):
      g = gt.astype(bool)
      return mistakes.sum() / (g | mistakes).sum() if mistakes.any() else 0.0

    ref, prev = 0.0, 0.0
    for k in range(1, 7):
      m = np.zeros(6, bool)
      m[order[:k]] = True
      cur = jaccard_loss(m)
      ref += errors[order[k - 1]] * (cur - prev)
      prev = cur
    got = lovasz.lovasz_softmax_loss(probs, gt.reshape(1, 6, 1),
                                     activation="none")
    np.testing.assert_allclose(got, [ref], rtol=1e-6)

  def test_hand_computed(self):
    # One sigmoid channel (the foreground): gt [1, 0], p [0.75, 0.5] ->
    # errors [0.25, 0.5]; sorted [0.5 (gt 0), 0.25 (gt 1)]; grad [0.5, 0.5];
    # loss = 0.375.
    p = jnp.array([0.75, 0.5]).reshape(1, 2, 1, 1)
    gt = jnp.array([1, 0]).reshape(1, 2, 1)
    np.testing.assert_allclose(
        lovasz.lovasz_softmax_loss(p, gt, activation="none"), [0.375],
        rtol=1e-6)

  def test_nothing_present_is_zero(self):
    # An all-zero one-hot map: no class present -> 0, finite gradient.
    logits = jnp.asarray(_data(seed=11)[0])
    empty = jnp.zeros(logits.shape)
    for per_image in (True, False):
      f = lambda x, pi=per_image: jnp.sum(lovasz.lovasz_softmax_loss(
          x, empty, per_image=pi))
      value, grad = jax.jit(jax.value_and_grad(f))(logits)
      np.testing.assert_array_equal(value, 0.0)
      np.testing.assert_array_equal(grad, 0.0)

  def test_per_image_presence(self):
    # Example 1 holds only class 0: with per_image its loss is class 0's.
    logits, labels = _data(seed=12, classes=3)
    labels[1] = 0
    got = lovasz.lovasz_softmax_loss(logits, labels, per_image=True)
    only0 = lovasz.lovasz_softmax_loss(logits, labels, per_image=True,
                                       classes=[0])
    np.testing.assert_allclose(got[1], only0[1], rtol=1e-6)

  def test_vmap_and_bf16(self):
    logits, labels = _data(seed=13)
    fn = functools.partial(lovasz.lovasz_softmax_loss, per_image=True)
    vmapped = jax.vmap(lambda x, y: fn(x[None], y[None])[0])(logits, labels)
    np.testing.assert_allclose(vmapped, fn(logits, labels), rtol=1e-6)
    got = lovasz.lovasz_softmax_loss(jnp.asarray(logits, jnp.bfloat16), labels)
    chex.assert_type(got, jnp.float32)
    np.testing.assert_allclose(
        got, lovasz.lovasz_softmax_loss(logits, labels), atol=2e-2)

  @parameterized.parameters(
      *itertools.product(("softmax", "sigmoid"), (1.0, -1.0), (True, False)))
  def test_finite_value_and_grad_at_extreme_logits(self, activation, sign,
                                                   per_image):
    rng = np.random.default_rng(14)
    logits = jnp.asarray(
        sign * 1e4 * np.sign(rng.normal(size=(2, 4, 4, 3))), jnp.float32)
    labels = rng.integers(0, 3, size=(2, 4, 4))
    f = lambda x: jnp.sum(lovasz.lovasz_softmax_loss(
        x, labels, activation=activation, per_image=per_image))
    value, grad = jax.jit(jax.value_and_grad(f))(logits)
    self.assertTrue(np.isfinite(value))
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_errors(self):
    logits, labels = _data()
    with self.assertRaisesRegex(ValueError, "classes"):
      lovasz.lovasz_softmax_loss(logits, labels, classes="some")
    with self.assertRaisesRegex(ValueError, "classes"):
      lovasz.lovasz_softmax_loss(logits, labels, classes=[3])
    with self.assertRaisesRegex(ValueError, "classes"):
      lovasz.lovasz_softmax_loss(logits, labels, classes=[])
    with self.assertRaisesRegex(ValueError, "activation"):
      lovasz.lovasz_softmax_loss(logits, labels, activation="relu")
    with self.assertRaisesRegex(ValueError, r"\[0, 3\)"):
      lovasz.lovasz_softmax_loss(logits, labels + 1)
