"""`CaseBuilder`: the tfds side that every builder of jaxseg shares.

Every dataset of the project is a set of *cases* (a patient, a phantom seed), one example per
case keyed by its ``case_id``, split at random by case -- never by slice -- into the tfds splits
``train``, ``validation`` and ``test`` (`jaxseg.data.preprocess.split_cases` with the config's
``split_fractions`` and ``split_seed``).

A builder module holds what its release is -- its layout, its label map, its phantom -- and fills
in the hooks of `CaseBuilder`:

* ``_release_splits(dl_manager)``: the real release's cases, found in the manual directory and
  handed to `CaseBuilder._split_by_case`; ``_example(case)``: one such case -> one example;
* for a builder with a phantom config (``source == "phantom"``, `is_phantom`): ``PHANTOM_CASE_ID``
  (the id of the phantom of seed ``seed``, e.g. ``"gland-{seed:04d}"``) and
  ``_phantom_example(seed)``. `CaseBuilder` lists the seeds (`phantom_seeds`), leaves out the
  config's ``exclude_ids`` and splits them (``_phantom_groups`` may stratify the split);
* ``_info`` through `CaseBuilder._dataset_info` (which records the config's settings and
  fingerprint, read back by `datasets._common.prepare`) with `volume_feature` /
  `geometry_features`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from datasets import _exclude
from jaxseg.data import preprocess

__all__ = ["CaseBuilder", "PHANTOM", "geometry_features", "is_phantom", "phantom_seeds",
           "volume_feature"]


def volume_feature(dtype: Any, *, channels: int | None = None) -> tfds.features.Tensor:
  """A zlib-compressed ``(x, y, z)`` tensor (``(x, y, z, channels)`` if ``channels``)."""
  shape = (None, None, None) + (() if channels is None else (channels,))
  return tfds.features.Tensor(shape=shape, dtype=dtype, encoding="zlib")


def geometry_features(*, affine_encoding: str | None = None) -> dict[str, tfds.features.Tensor]:
  """``spacing`` float32 ``(3,)`` (mm) and ``affine`` float64 ``(4, 4)`` (voxel to world).

  ``affine_encoding="bytes"`` stores the affine as raw bytes: without it tfds serialises a
  float64 tensor as float32 values (``tf.train.FloatList``).
  """
  encoding = {} if affine_encoding is None else {"encoding": affine_encoding}
  return {
      "spacing": tfds.features.Tensor(shape=(3,), dtype=np.float32),
      "affine": tfds.features.Tensor(shape=(4, 4), dtype=np.float64, **encoding),
  }


PHANTOM = "phantom"
"""The ``source`` of every phantom config: builds that read no manual directory."""


def is_phantom(cfg: Any) -> bool:
  """Whether builds of ``cfg`` are synthetic (``source == "phantom"``), reading no manual data."""
  return getattr(cfg, "source", None) == PHANTOM


def phantom_seeds(cfg: Any) -> range:
  """The seeds of a phantom config's cases: ``base_seed + i`` for ``i < num_cases``."""
  return range(int(cfg.base_seed), int(cfg.base_seed) + int(cfg.num_cases))


class CaseBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder of one example per case, split by case (module docstring)."""

  PHANTOM_CASE_ID: str | None = None
  """``str.format`` pattern of a phantom case's id, with field ``seed`` (None: no phantom)."""

  def _release_splits(self, dl_manager: tfds.download.DownloadManager):
    """The split generators of the real release (`_split_by_case` of its cases)."""
    raise NotImplementedError

  def _example(self, case: Any) -> dict[str, Any]:
    """One case of the release (as given to `_split_by_case`) -> one example with a ``case_id``."""
    raise NotImplementedError

  def _phantom_example(self, seed: int) -> dict[str, Any]:
    """The example of the phantom of seed ``seed``, with case id ``PHANTOM_CASE_ID``."""
    raise NotImplementedError

  def _phantom_groups(self, cases: Mapping[str, int]) -> Mapping[str, Any] | None:
    """``{case_id: group}`` to stratify the phantom split by, or None (default): not stratified."""
    del cases
    return None

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    if not is_phantom(cfg):
      return self._release_splits(dl_manager)
    cases = {self.PHANTOM_CASE_ID.format(seed=seed): seed for seed in phantom_seeds(cfg)}
    if getattr(cfg, "exclude_ids", ()):
      cases = _exclude.exclude_cases(cases, cfg.exclude_ids, dataset=f"{self.name} (phantom)")
    return self._split_by_case(cases, groups=self._phantom_groups(cases))

  def _dataset_info(
      self,
      *,
      description: str,
      features: Mapping[str, Any],
      homepage: str,
      citation: str,
      **metadata: Any,
  ) -> tfds.core.DatasetInfo:
    """The `DatasetInfo`, with the config's fingerprint and settings in the metadata."""
    cfg = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=description,
        features=tfds.features.FeaturesDict(dict(features)),
        homepage=homepage,
        metadata=tfds.core.MetadataDict(
            config_fingerprint=cfg.fingerprint(), settings=cfg.settings(), **metadata
        ),
        citation=citation,
    )

  def _split_by_case(
      self,
      cases: Mapping[str, Any],
      *,
      groups: Mapping[str, Any] | None = None,
      split: Mapping[str, Sequence[str]] | None = None,
  ) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
    """The split generators of ``cases`` (``{case_id: case}``).

    Args:
      cases: the cases by id.
      groups: ``{case_id: group}`` to stratify the split by (e.g. institution), or None.
      split: ``{split name: [case_id, ...]}`` to use instead of the config's random split.

    Returns:
      ``{split name: generator}`` for the non-empty splits: a split with no case (a zero
      fraction) is left out, as tfds cannot write an empty split.
    """
    if split is None:
      cfg = self.builder_config
      ids = sorted(cases)
      split = preprocess.split_cases(
          ids, fractions=cfg.split_fractions, seed=cfg.split_seed,
          groups=None if groups is None else [groups[c] for c in ids],
      )
    return {
        name: self._generate_examples([cases[c] for c in split[name]])
        for name in preprocess.SPLITS
        if split[name]
    }

  def _generate_examples(self, cases: Iterable[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    phantom = is_phantom(self.builder_config)
    for case in cases:
      example = self._phantom_example(int(case)) if phantom else self._example(case)
      yield example["case_id"], example
