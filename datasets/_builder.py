"""`CaseBuilder`: the tfds side that every builder of jaxseg shares.

Every dataset of the project is a set of *cases* (a patient, a phantom seed), one example per
case keyed by its ``case_id``, split at random by case -- never by slice -- into the tfds splits
``train``, ``validation`` and ``test`` (`jaxseg.data.preprocess.split_cases` with the config's
``split_fractions`` and ``split_seed``). A subclass lists the cases in ``_split_generators``
and hands them to `CaseBuilder._split_by_case`, and turns one case into one example in
``_example``; ``_info`` uses `CaseBuilder._dataset_info` (which records the config's settings
and fingerprint, read back by `datasets._common.prepare`) with `volume_feature` /
`geometry_features`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data import preprocess

__all__ = ["CaseBuilder", "geometry_features", "phantom_seeds", "volume_feature"]


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


def phantom_seeds(cfg: Any) -> range:
  """The seeds of a phantom config's cases: ``base_seed + i`` for ``i < num_cases``."""
  return range(int(cfg.base_seed), int(cfg.base_seed) + int(cfg.num_cases))


class CaseBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder of one example per case, split by case (module docstring)."""

  def _example(self, case: Any) -> dict[str, Any]:
    """One case (as given to `_split_by_case`) -> one example with a ``case_id``."""
    raise NotImplementedError

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
    for case in cases:
      example = self._example(case)
      yield example["case_id"], example
