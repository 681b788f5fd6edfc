"""Host-side 2D augmentation of ``(image, label)`` samples, driven by a passed NumPy generator.

Each function has the pipeline's ``augment`` signature ``(rng, image, label) -> (image, label)``
(``image`` ``(h, w, C)``, ``label`` ``(h, w)``), so it plugs into
:func:`jaxseg.data.pipeline.patch_batches`. Images are interpolated linearly, labels by nearest
neighbour, and points rotated in from outside take the image's minimum (background).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage


@dataclasses.dataclass(frozen=True)
class FlipRotate:
  """Random rotation in-plane, then horizontal and vertical flips.

  Attributes:
    max_degrees: rotation angle drawn uniformly from ``[-max_degrees, max_degrees]`` (0: none).
    horizontal_prob: probability of flipping left-right (axis 0 of the slice).
    vertical_prob: probability of flipping antero-posteriorly (axis 1).
  """

  max_degrees: float = 0.0
  horizontal_prob: float = 0.5
  vertical_prob: float = 0.0

  def __call__(self, rng: np.random.Generator, image: np.ndarray, label: np.ndarray):
    if image.shape[:2] != label.shape[:2] or label.ndim != 2:
      raise ValueError(f"expected a 2D sample, got image {image.shape} and label {label.shape}")
    if self.max_degrees:
      angle = rng.uniform(-self.max_degrees, self.max_degrees)
      fill = float(image.min())
      image = ndimage.rotate(image, angle, axes=(0, 1), reshape=False, order=1, mode="constant",
                             cval=fill)
      label = ndimage.rotate(label, angle, axes=(0, 1), reshape=False, order=0, mode="constant",
                             cval=0)
    if rng.random() < self.horizontal_prob:
      image, label = image[::-1], label[::-1]
    if rng.random() < self.vertical_prob:
      image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)
