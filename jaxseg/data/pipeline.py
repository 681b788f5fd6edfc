"""Input pipeline: patches or 2D slices sampled from in-memory volumes, batched by Grain, sharded.

Volumes are host NumPy arrays in ``(x, y, z)`` order (axial slices along the last axis), images
optionally with a trailing channel axis. Every sample is a pure function of ``(seed, epoch,
index)`` (`PatchSampler`), so an interrupted run that resumes at epoch ``e`` sees exactly the
batches it would have seen, and any number of worker processes produce the same batches.

Sampling follows nnU-Net: each sample picks a case (cases are visited in a fresh random order each
epoch), then with probability ``foreground_prob`` centres the patch on a random foreground voxel of
that case, otherwise on a uniformly random voxel. With ``foreground_sampling="class"`` the
foreground centre is a random voxel of a foreground class drawn uniformly among the classes
present in the case (nnU-Net's oversampling), so a thin class such as the neurovascular bundle
is centred as often as the bladder. A 2D ``patch_shape`` ``(h, w)`` yields axial
slices ``(h, w)`` (a patch of depth 1). Augmentation (`jaxseg.data.augment`) runs on each sample.

Batching is Grain's (`patch_dataset`: a ``grain.MapDataset`` over sample indices, ``map`` then
``batch``); `PatchLoader` iterates it, with ``workers`` Grain worker processes (``mp_prefetch``)
doing the sampling, augmentation and cropping of distance maps in parallel, and a JSON iterator
state that the training loop checkpoints. The volumes are read from the tfds data sources of the
builders (``datasets/``) into memory first: a case is sampled many times per epoch, and decoding
a compressed volume per sample would cost more than the sampling itself.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np
from absl import flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxseg.data.augment import Augment
from jaxseg.data.preprocess import validate_spacing

Batch = dict[str, np.ndarray]

DATA_AXIS = "data"
CONFIG_AXIS = "config"
#: How a foreground centre is drawn: ``"voxel"`` (any foreground voxel, so large classes
#: dominate) or ``"class"`` (a present foreground class uniformly, then one of its voxels).
FOREGROUND_SAMPLING = ("voxel", "class")


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
    foreground: np.ndarray | Sequence[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
  """One patch ``{"image", "label", **dense extras}``.

  ``foreground``: the flat indices of the foreground voxels (a centre is one of them), or a list
  of such arrays, one per foreground class present (a class is drawn uniformly first); None:
  every non-zero label voxel.
  """
  shape = volume.label.shape
  full = tuple(patch_shape) + (1,) * (len(shape) - len(patch_shape))
  if len(full) != len(shape):
    raise ValueError(f"patch_shape {tuple(patch_shape)} has more axes than the volume {shape}")
  if foreground is None:
    foreground = np.flatnonzero(volume.label)
  size = (len(foreground) if isinstance(foreground, (list, tuple)) else foreground.size)
  if size and rng.random() < foreground_prob:
    if isinstance(foreground, (list, tuple)):  # per class: a class first, then one of its voxels
      foreground = foreground[rng.integers(len(foreground))]
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
  """The NumPy generator of one epoch's case order: a pure function of ``(seed, epoch)``."""
  return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
  """The generator of sample ``index`` of ``epoch``: a pure function of the three, so that any
  process can draw any sample (Grain workers draw them in parallel)."""
  return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


class PatchSampler:
  """Sample ``i`` of the run, as a pure function of ``i``: Grain's random-access source.

  Index ``i`` is sample ``j = i mod n`` of epoch ``e = i // n`` (``n`` samples per epoch: whole
  batches of :func:`batches_per_epoch`). The case is ``order(e)[j]``, where each epoch visits
  the cases in fresh random orders (`epoch_rng`); the patch centre and the augmentation draw
  from `sample_rng` ``(seed, e, j)``. The sampler holds the training volumes and is pickled to
  Grain's worker processes as it is. ``foreground_sampling`` is one of
  :data:`FOREGROUND_SAMPLING` (module docstring).
  """

  def __init__(self, volumes: Sequence[Volume], *, batch_size: int, patch_shape: Sequence[int],
               foreground_prob: float, seed: int, samples_per_epoch: int | None = None,
               augment: Augment | None = None, foreground_sampling: str = "voxel"):
    if not volumes:
      raise ValueError("the input pipeline needs at least one volume to train on")
    if not 0.0 <= foreground_prob <= 1.0:
      raise ValueError(f"foreground_prob must be in [0, 1], got {foreground_prob}")
    if foreground_sampling not in FOREGROUND_SAMPLING:
      raise ValueError(f"foreground_sampling must be one of {FOREGROUND_SAMPLING}, got "
                       f"{foreground_sampling!r}")
    self.volumes = list(volumes)
    self.batch_size = int(batch_size)
    self.patch_shape = tuple(int(n) for n in patch_shape)
    self.foreground_prob = float(foreground_prob)
    self.seed = int(seed)
    self.augment = augment
    self.num_batches = batches_per_epoch(volumes, batch_size=batch_size, patch_shape=patch_shape,
                                         samples_per_epoch=samples_per_epoch)
    self.samples_per_epoch = self.num_batches * self.batch_size
    self.foreground_sampling = foreground_sampling
    if foreground_sampling == "class":
      self._foregrounds = [[np.flatnonzero(v.label.ravel() == c) for c in np.unique(v.label) if c]
                           for v in self.volumes]
    else:
      self._foregrounds = [np.flatnonzero(v.label) for v in self.volumes]
    self._orders: dict[int, np.ndarray] = {}

  def order(self, epoch: int) -> np.ndarray:
    """The volume index of every sample of ``epoch``: concatenated random permutations."""
    if epoch not in self._orders:
      rng = epoch_rng(self.seed, epoch)
      n = len(self.volumes)
      reps = -(-self.samples_per_epoch // n)
      self._orders = {epoch: np.concatenate([rng.permutation(n) for _ in range(reps)])}
    return self._orders[epoch]

  def __call__(self, index: int) -> dict[str, np.ndarray]:
    epoch, j = divmod(int(index), self.samples_per_epoch)
    v = int(self.order(epoch)[j])
    rng = sample_rng(self.seed, epoch, j)
    patch = sample_patch(self.volumes[v], rng, patch_shape=self.patch_shape,
                         foreground_prob=self.foreground_prob, foreground=self._foregrounds[v])
    return patch if self.augment is None else self.augment(rng, patch)


def collate(samples: Sequence[Mapping[str, np.ndarray]]) -> Batch:
  """Stacks sample dicts into a batch: ``image`` float32, ``label`` int32, extras as they are."""
  batch = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
  batch["image"] = batch["image"].astype(np.float32)
  batch["label"] = batch["label"].astype(np.int32)
  return batch


def patch_dataset(sampler: PatchSampler, num_epochs: int) -> grain.MapDataset:
  """The batches of ``num_epochs`` epochs as a Grain `MapDataset`: batch ``b`` of epoch ``e``
  is element ``e * sampler.num_batches + b``."""
  return (grain.MapDataset.range(int(num_epochs) * sampler.samples_per_epoch)
          .map(sampler).batch(sampler.batch_size, drop_remainder=True, batch_fn=collate))


class PatchLoader:
  """The training input of one run, through Grain: ``loader(epoch)`` yields that epoch's batches.

  It is the ``batches`` argument of :meth:`jaxseg.train.loop.Trainer.fit`. The batches are those
  of `patch_dataset` (a pure function of the seed), computed in this process (``workers=0``) or
  by ``workers`` Grain worker processes (``mp_prefetch``; each keeps ``prefetch`` batches ready),
  which give the same batches in the same order. One Grain iterator serves consecutive epochs,
  so the workers start once per run; asking for an epoch out of sequence (a new run from epoch
  0, a resumed one) opens a new iterator there.

  `get_state` / `set_state` are the iterator's position as JSON (Grain's own iterator state,
  and the element it starts from); the loop saves it with every checkpoint (orbax, next to the
  train state) and restores it on resume. `close` stops the workers; a loader is also a context
  manager.

  Args:
    volumes, batch_size, patch_shape, foreground_prob, seed, samples_per_epoch, augment,
      foreground_sampling: as in `PatchSampler`.
    num_epochs: epochs the loader can serve.
    workers: Grain worker processes (0: none, the batches are made on demand in this process).
    prefetch: batches each worker keeps ready.
  """

  def __init__(self, volumes: Sequence[Volume], *, batch_size: int, patch_shape: Sequence[int],
               foreground_prob: float, seed: int, num_epochs: int,
               samples_per_epoch: int | None = None, augment: Augment | None = None,
               workers: int = 0, prefetch: int = 2, foreground_sampling: str = "voxel"):
    if workers < 0 or prefetch < 1:
      raise ValueError(f"workers must be >= 0 and prefetch >= 1, got {workers} and {prefetch}")
    self.sampler = PatchSampler(volumes, batch_size=batch_size, patch_shape=patch_shape,
                                foreground_prob=foreground_prob, seed=seed,
                                samples_per_epoch=samples_per_epoch, augment=augment,
                                foreground_sampling=foreground_sampling)
    self.num_batches = self.sampler.num_batches
    self.num_epochs = int(num_epochs)
    self.workers = int(workers)
    self.prefetch = int(prefetch)
    self.dataset = patch_dataset(self.sampler, self.num_epochs)
    self._iterator: Any = None
    self._start = 0  # element of `dataset` the iterator started at
    self._taken = 0  # elements taken from it since

  def sample(self) -> Batch:
    """The first batch (computed here), e.g. to initialise a model."""
    return self.dataset[0]

  def _open(self, start: int) -> None:
    self.close()
    ds = self.dataset[start:].to_iter_dataset(grain.ReadOptions(num_threads=0))
    if self.workers:
      _absl_flags_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers,
                                                       per_worker_buffer_size=self.prefetch))
    self._iterator, self._start, self._taken = iter(ds), start, 0

  def __call__(self, epoch: int) -> Iterator[Batch]:
    if not 0 <= epoch < self.num_epochs:
      raise ValueError(f"epoch {epoch} is outside the loader's {self.num_epochs} epochs")
    start = epoch * self.num_batches
    if self._iterator is None or self._start + self._taken != start:
      self._open(start)
    return self._epoch()

  def _epoch(self) -> Iterator[Batch]:
    for _ in range(self.num_batches):
      batch = next(self._iterator)
      self._taken += 1
      yield batch

  def get_state(self) -> dict[str, Any]:
    """The iterator's position (JSON): ``{"start", "taken", "grain": iterator state}``."""
    grain_state = None if self._iterator is None else self._iterator.get_state()
    return {"start": self._start, "taken": self._taken, "grain": grain_state,
            "workers": self.workers}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Continues from a `get_state` of a loader with the same settings (any ``workers``)."""
    position = int(state["start"]) + int(state["taken"])
    if state.get("grain") is not None and int(state.get("workers", -1)) == self.workers:
      self._open(int(state["start"]))
      self._iterator.set_state(state["grain"])
      self._taken = int(state["taken"])
    else:  # Another worker count slices the data differently: reopen at the position.
      self._open(position)

  def close(self) -> None:
    """Stops the worker processes (if any) of the current iterator."""
    if self._iterator is None:
      return
    if hasattr(self._iterator, "close"):
      self._iterator.close()
    self._iterator = None
    if self.workers:
      # Collect the workers' iterators now: collected at interpreter exit, they print errors.
      gc.collect()

  def __enter__(self) -> "PatchLoader":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _absl_flags_parsed() -> None:
  """Grain's worker processes read absl flags; outside an absl app they are never parsed."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


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
  """Yields the batches of one epoch, in this process: those of `PatchLoader` ``(epoch)``.

  ``image`` ``(B, *patch, C)`` float32, ``label`` ``(B, *patch)`` int32, and every dense extra
  map of the volumes (see :func:`dense_extras`) under its key.

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
      dense extras; see :mod:`jaxseg.data.augment`), drawing from the sample's generator.
  """
  sampler = PatchSampler(volumes, batch_size=batch_size, patch_shape=patch_shape,
                         foreground_prob=foreground_prob, seed=seed,
                         samples_per_epoch=samples_per_epoch, augment=augment)
  dataset = patch_dataset(sampler, epoch + 1)
  for b in range(sampler.num_batches):
    yield dataset[epoch * sampler.num_batches + b]


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


def sweep_mesh(num_configs: int, devices: Sequence[jax.Device] | None = None, *,
               config_size: int | None = None) -> Mesh:
  """A 2D ``(config, data)`` mesh for a sweep of ``num_configs`` configurations.

  The stacked training states are sharded over the ``config`` axis, the batch over the ``data``
  axis: ``K`` configurations spread over ``D`` devices. By default the config axis has
  ``gcd(K, D)`` devices -- every configuration its own ``D / K`` devices when ``D`` is a
  multiple of ``K``, ``K / D`` configurations on each device when ``K`` is a multiple of ``D``.

  Raises:
    ValueError: a ``config_size`` that divides neither the devices nor the configurations.
  """
  devices = list(jax.devices() if devices is None else devices)
  c = math.gcd(int(num_configs), len(devices)) if config_size is None else int(config_size)
  if c < 1 or len(devices) % c or num_configs % c:
    raise ValueError(f"config axis of {c} devices must divide both the {len(devices)} devices "
                     f"and the {num_configs} configurations")
  return Mesh(np.asarray(devices).reshape(c, len(devices) // c), (CONFIG_AXIS, DATA_AXIS))


def data_size(mesh: Mesh) -> int:
  """Devices along the batch axis of ``mesh`` (all of them for a 1D data mesh)."""
  return int(mesh.shape[DATA_AXIS])


def place_configs(tree: Any, mesh: Mesh) -> Any:
  """Places a stacked pytree (leading axis = configurations) on ``mesh``: sharded over its
  ``config`` axis when it has one, replicated otherwise."""
  spec = PartitionSpec(CONFIG_AXIS) if CONFIG_AXIS in mesh.axis_names else PartitionSpec()
  return jax.device_put(tree, NamedSharding(mesh, spec))


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
  size = data_size(mesh)
  sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
  processes, index = jax.process_count(), jax.process_index()
  if processes > 1 and CONFIG_AXIS in mesh.axis_names:
    raise ValueError("a (config, data) mesh runs on one process; use a data mesh with "
                     "jax.distributed")
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


class _Failure:
  """An exception raised by the producer thread of :func:`prefetch_to_mesh`."""

  def __init__(self, error: BaseException):
    self.error = error


def prefetch_to_mesh(batches: Iterable[Mapping[str, np.ndarray]], mesh: Mesh, *,
                     size: int = 2) -> Iterator[dict[str, jax.Array]]:
  """Host batches placed on ``mesh`` (:func:`shard_batch`) by a background thread, ``size`` ahead.

  While the device runs step ``n``, the thread builds batch ``n + 1`` (and up to ``size``
  batches) and copies it to the devices, so the training loop never waits for the input
  pipeline when the pipeline is faster than a step (flax's and big_vision's
  ``prefetch_to_device``). The batches come out in order; an exception raised while producing
  one is raised here, where the batch would have been; closing the iterator early stops the
  thread. ``size=0`` places each batch in the caller's thread (no background work).

  Raises:
    ValueError: a negative ``size``.
  """
  if isinstance(size, bool) or not isinstance(size, int) or size < 0:
    raise ValueError(f"prefetch size must be an integer >= 0, got {size!r}")
  if size == 0:
    for batch in batches:
      yield shard_batch(batch, mesh)
    return
  slots: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()
  done = object()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        slots.put(item, timeout=0.05)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for batch in batches:
        if not put(shard_batch(batch, mesh)):
          return
      put(done)
    except BaseException as e:  # pylint: disable=broad-except  (re-raised in the consumer)
      put(_Failure(e))

  thread = threading.Thread(target=produce, name="jaxseg-prefetch", daemon=True)
  thread.start()
  try:
    while True:
      item = slots.get()
      if item is done:
        return
      if isinstance(item, _Failure):
        raise item.error
      yield item
  finally:
    stop.set()
    thread.join()
