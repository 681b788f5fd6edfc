"""Input pipeline: patches or 2D slices sampled from in-memory volumes, batched and sharded.

Volumes are host NumPy arrays in ``(x, y, z)`` order (axial slices along the last axis), images
optionally with a trailing channel axis. Sampling is a pure function of ``(seed, epoch)``, so an
interrupted run that resumes at epoch ``e`` sees exactly the batches it would have seen.

Sampling follows nnU-Net: each sample picks a case (cases are visited in a fresh random order each
epoch), then with probability ``foreground_prob`` centres the patch on a random foreground voxel of
that case, otherwise on a uniformly random voxel. A 2D ``patch_shape`` ``(h, w)`` yields axial
slices ``(h, w)`` (a patch of depth 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxseg.data.augment import Augment
from jaxseg.data.preprocess import validate_spacing

Batch = dict[str, np.ndarray]

DATA_AXIS = "data"


@dataclasses.dataclass(frozen=True)
class Volume:
  """One case in memory: ``image`` ``(x, y, z[, channels])`` float32, ``label`` ``(x, y, z)``.

  ``spacing`` (mm, one finite positive value per label axis) is checked and stored as floats.
  """

  image: np.ndarray
  label: np.ndarray
  spacing: tuple[float, ...]
  case_id: str
  affine: np.ndarray | None = None
  extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.image.shape[: self.label.ndim] != self.label.shape:
      raise ValueError(f"case {self.case_id}: image {self.image.shape} and label "
                       f"{self.label.shape} differ in shape")
    if self.image.ndim not in (self.label.ndim, self.label.ndim + 1):
      raise ValueError(f"case {self.case_id}: image must be the label's shape plus at most one "
                       f"channel axis, got {self.image.shape} vs {self.label.shape}")
    spacing = validate_spacing(self.spacing, name=f"case {self.case_id}: spacing",
                               ndim=self.label.ndim)
    object.__setattr__(self, "spacing", tuple(float(s) for s in spacing))

  @classmethod
  def from_example(cls, example: Mapping[str, Any]) -> "Volume":
    """Builds a volume from a tfds example dict (``image``, ``label``, ``spacing``, ``case_id``...)."""
    known = ("image", "label", "spacing", "case_id", "affine")
    case_id = example.get("case_id", "")
    if isinstance(case_id, bytes):
      case_id = case_id.decode()
    return cls(
        image=np.asarray(example["image"], np.float32),
        label=np.asarray(example["label"]),
        spacing=tuple(float(s) for s in example["spacing"]),
        case_id=str(case_id),
        affine=None if example.get("affine") is None else np.asarray(example["affine"]),
        extras={k: v for k, v in example.items() if k not in known},
    )

  @property
  def channels_image(self) -> np.ndarray:
    """The image with an explicit trailing channel axis."""
    return self.image if self.image.ndim == self.label.ndim + 1 else self.image[..., None]


def _crop(array: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float) -> np.ndarray:
  """Crops ``array[start : start + size]`` on the leading axes, padding with ``fill`` outside."""
  out = np.full(tuple(size) + array.shape[len(size):], fill, dtype=array.dtype)
  src, dst = [], []
  for s, n, dim in zip(start, size, array.shape):
    lo, hi = max(s, 0), min(s + n, dim)
    if hi <= lo:
      return out
    src.append(slice(lo, hi))
    dst.append(slice(lo - s, hi - s))
  out[tuple(dst)] = array[tuple(src)]
  return out


def dense_extras(volume: "Volume") -> dict[str, np.ndarray]:
  """Extra voxel-wise maps of a volume: arrays whose leading shape is the label's.

  Such maps (a second annotation, signed distance maps, ...) are cropped together with the image
  and label and travel in the batch under their own key.
  """
  return {k: v for k, v in volume.extras.items()
          if isinstance(v, np.ndarray) and v.shape[:volume.label.ndim] == volume.label.shape}


def sample_patch(
    volume: Volume,
    rng: np.random.Generator,
    *,
    patch_shape: Sequence[int],
    foreground_prob: float,
    foreground: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
  """One patch ``{"image", "label", **dense extras}``; ``foreground`` = flat foreground indices."""
  shape = volume.label.shape
  full = tuple(patch_shape) + (1,) * (len(shape) - len(patch_shape))
  if len(full) != len(shape):
    raise ValueError(f"patch_shape {tuple(patch_shape)} has more axes than the volume {shape}")
  if foreground is None:
    foreground = np.flatnonzero(volume.label)
  if foreground.size and rng.random() < foreground_prob:
    centre = np.unravel_index(foreground[rng.integers(foreground.size)], shape)
  else:
    centre = tuple(rng.integers(dim) for dim in shape)
  start = [int(c) - n // 2 for c, n in zip(centre, full)]
  image = volume.channels_image
  fill = float(image.min()) if image.size else 0.0
  patch = {"image": _crop(image, start, full, fill), "label": _crop(volume.label, start, full, 0)}
  for key, value in dense_extras(volume).items():
    patch[key] = _crop(value, start, full, 0)
  if len(patch_shape) < len(shape):  # 2D slices: drop the unit depth axis
    patch = {k: v.reshape(tuple(patch_shape) + v.shape[len(shape):]) for k, v in patch.items()}
  return patch


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
  """The NumPy generator of one epoch: a pure function of ``(seed, epoch)``."""
  return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))


def patch_batches(
    volumes: Sequence[Volume],
    *,
    batch_size: int,
    patch_shape: Sequence[int],
    foreground_prob: float,
    seed: int,
    epoch: int,
    samples_per_epoch: int | None = None,
    augment: Augment | None = None,
) -> Iterator[Batch]:
  """Yields the batches of one epoch: ``image`` ``(B, *patch, C)`` float32, ``label`` ``(B, *patch)``
  int32, and every dense extra map of the volumes (see :func:`dense_extras`) under its key.

  Args:
    volumes: training cases.
    batch_size: global batch size.
    patch_shape: ``(h, w)`` for 2D slices or ``(h, w, d)`` for 3D patches.
    foreground_prob: probability of centring a sample on a foreground voxel.
    seed: run seed; together with ``epoch`` it fixes every sample of the epoch.
    epoch: epoch index.
    samples_per_epoch: samples per epoch (default: the number of axial slices of all volumes, or
      the number of volumes for 3D patches); rounded down to whole batches (at least one).
    augment: optional ``(rng, sample) -> sample`` applied to every sample dict (image, label and
      dense extras; see :mod:`jaxseg.data.augment`), drawing from the epoch's generator.
  """
  if not volumes:
    raise ValueError("patch_batches needs at least one volume")
  if not 0.0 <= foreground_prob <= 1.0:
    raise ValueError(f"foreground_prob must be in [0, 1], got {foreground_prob}")
  num_batches = batches_per_epoch(volumes, batch_size=batch_size, patch_shape=patch_shape,
                                  samples_per_epoch=samples_per_epoch)
  rng = epoch_rng(seed, epoch)
  foregrounds = [np.flatnonzero(v.label) for v in volumes]
  order = np.concatenate([rng.permutation(len(volumes))
                          for _ in range(-(-num_batches * batch_size // len(volumes)))])
  for b in range(num_batches):
    samples = []
    for i in order[b * batch_size:(b + 1) * batch_size]:
      patch = sample_patch(volumes[i], rng, patch_shape=patch_shape,
                           foreground_prob=foreground_prob, foreground=foregrounds[i])
      if augment is not None:
        patch = augment(rng, patch)
      samples.append(patch)
    batch = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
    batch["image"] = batch["image"].astype(np.float32)
    batch["label"] = batch["label"].astype(np.int32)
    yield batch


def batches_per_epoch(volumes: Sequence[Volume], *, batch_size: int, patch_shape: Sequence[int],
                      samples_per_epoch: int | None = None) -> int:
  """Number of batches :func:`patch_batches` yields per epoch for these training volumes.

  ``samples_per_epoch`` (default: every axial slice of every volume for a 2D ``patch_shape``,
  or one sample per volume for 3D patches) rounded down to whole batches, at least one. A
  learning-rate schedule sized with this counts the training cases only.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if samples_per_epoch is None:
    samples_per_epoch = (sum(v.label.shape[-1] for v in volumes) if len(patch_shape) == 2
                         else len(volumes))
  return max(1, int(samples_per_epoch) // batch_size)


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1D mesh over ``devices`` (default: all devices) whose axis shards the batch."""
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree fully replicated on every device of ``mesh``."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Places a global host batch on ``mesh``, split along the leading (batch) axis.

  On several processes (``jax.distributed``), every process holds the same global host batch (the
  sampler is a pure function of seed and epoch) and contributes only its own contiguous block of
  rows, which lands on its local devices.

  Raises:
    ValueError: if the batch size is not a multiple of the number of devices.
  """
  size = mesh.devices.size
  sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
  processes, index = jax.process_count(), jax.process_index()
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if value.shape[0] % size:
      raise ValueError(f"batch size {value.shape[0]} of {key!r} is not a multiple of the "
                       f"{size} devices; choose a batch size divisible by {size}")
    if processes == 1:
      out[key] = jax.device_put(value, sharding)
    else:
      rows = value.shape[0] // processes
      local = value[index * rows:(index + 1) * rows]
      out[key] = jax.make_array_from_process_local_data(sharding, local, value.shape)
  return out
