"""Reusable building blocks for the synthetic anatomy phantoms (pure NumPy).

Every phantom in `jaxseg.data.phantoms` is built the same way:

1. a grid of voxel-centre coordinates in millimetres, centred on the volume
   (`mm_grid`, `centred_affine`), so that anatomy is defined in physical units
   and the same case can be rendered at any shape / spacing;
2. a smooth random deformation (`random_displacement_field`) that moves the
   sampling coordinates, ``q(p) = p + u(p)``; evaluating the anatomy at ``q``
   deforms image and labels identically (exact, no resampling). To deform
   volumes that already exist, `deform_volume` resamples the image linearly and
   the labels by nearest neighbour (label preserving) with the same pull-back
   convention;
3. geometric primitives returning approximate signed distances in mm
   (negative inside): `ellipsoid_sdf` and `tube_sdf` (a capsule swept along a
   polyline, optionally with a radius that varies along it);
4. tissue intensities, then a smooth multiplicative bias field
   (`random_bias_field`) and Rician noise (`add_rician_noise`).

All randomness comes from a `numpy.random.Generator` passed in by the caller, so
a phantom is a pure function of its seed.

Smooth random fields (`smooth_random_field`) are Gaussian-kernel smoothed white
noise on a coarse control lattice: with lattice spacing ``h = c / 2`` and kernel
width ``sigma = c / 2`` (``c`` = ``correlation_mm``), the field is

.. math::
  f(x) = \\sum_k w(x - x_k) g_k, \\quad
  w(d) = \\exp(-d^2 / (2 \\sigma^2)) / Z(x), \\quad
  Z(x)^2 = \\sum_k \\exp(-(x - x_k)^2 / \\sigma^2),

separably along each axis, with ``g_k ~ N(0, 1)``; the row normalisation gives
every voxel unit marginal variance and the correlation decays roughly as
``exp(-d^2 / c^2)``. Rician noise follows Gudbjartsson & Patz, "The Rician
distribution of noisy MRI data", MRM 34 (1995): the magnitude of a complex
signal with Gaussian noise of standard deviation ``sigma`` on both channels,
``|I + sigma n_1 + i sigma n_2|``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from jaxseg.data.preprocess import validate_spacing

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class PhantomCase:
  """One synthetic case.

  Attributes:
    image: float32 volume of shape ``(x, y, z)`` (NIfTI voxel order).
    label: uint8 label map of the same shape.
    spacing: voxel size ``(sx, sy, sz)`` in millimetres.
    affine: float64 (4, 4) voxel-to-world matrix (mm).
    case_id: identifier such as ``"phantom-0007"``.
  """

  image: np.ndarray
  label: np.ndarray
  spacing: tuple[float, float, float]
  affine: np.ndarray
  case_id: str

  def __post_init__(self):
    if self.image.ndim != 3:
      raise ValueError(f"image must be 3D, got shape {self.image.shape}.")
    if self.label.shape != self.image.shape:
      raise ValueError(
          f"label shape {self.label.shape} != image shape {self.image.shape}.")
    if self.image.dtype != np.float32:
      raise ValueError(f"image must be float32, got {self.image.dtype}.")
    if self.label.dtype != np.uint8:
      raise ValueError(f"label must be uint8, got {self.label.dtype}.")
    validate_spacing(self.spacing)
    if np.asarray(self.affine).shape != (4, 4):
      raise ValueError(f"affine must be (4, 4), got {np.shape(self.affine)}.")


def check_shape_spacing(shape: Sequence[int],
                        spacing: Sequence[float]) -> tuple[tuple[int, ...],
                                                           tuple[float, ...]]:
  """Validates a 3D shape and spacing; returns them as tuples of int / float.

  Raises:
    ValueError: if either does not have 3 entries, a size is < 1 or a spacing
      is not finite and positive.
  """
  shape = tuple(int(n) for n in shape)
  if len(shape) != 3 or any(n < 1 for n in shape):
    raise ValueError(f"shape must be 3 positive sizes, got {shape}.")
  return shape, tuple(validate_spacing(spacing).tolist())


def axis_coordinates(n: int, s: float) -> np.ndarray:
  """Voxel-centre positions (mm, float32) on one axis: ``(i - (n-1)/2) s``."""
  return ((np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * s).astype(
      np.float32)


def centred_affine(shape: Sequence[int],
                   spacing: Sequence[float]) -> np.ndarray:
  """Voxel-to-world affine ``diag(spacing)`` whose origin is the volume centre.

  World coordinate of voxel ``i`` along axis ``a`` is
  ``(i - (n_a - 1) / 2) * spacing_a``, matching `mm_grid`.

  Returns:
    float64 array of shape (4, 4).
  """
  shape, spacing = check_shape_spacing(shape, spacing)
  affine = np.diag([*spacing, 1.0]).astype(np.float64)
  affine[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(shape, spacing)]
  return affine


def mm_grid(shape: Sequence[int], spacing: Sequence[float], *,
            sparse: bool = False) -> Coords:
  """Coordinates (mm, float32) of the voxel centres, origin at the centre.

  Args:
    shape: volume shape ``(nx, ny, nz)``.
    spacing: voxel size ``(sx, sy, sz)`` in mm.
    sparse: if True, return broadcastable arrays of shapes ``(nx, 1, 1)``,
      ``(1, ny, 1)``, ``(1, 1, nz)``; otherwise three full ``shape`` arrays.

  Returns:
    ``(x, y, z)`` coordinate arrays, consistent with `centred_affine`.
  """
  shape, spacing = check_shape_spacing(shape, spacing)
  axes = [axis_coordinates(n, s) for n, s in zip(shape, spacing)]
  grids = np.meshgrid(*axes, indexing="ij", sparse=True)
  if sparse:
    return tuple(grids)
  return tuple(np.ascontiguousarray(np.broadcast_to(g, shape)) for g in grids)


def bbox_slices(lo_mm: Sequence[float], hi_mm: Sequence[float], *,
                shape: Sequence[int], spacing: Sequence[float],
                margin_mm: float | Sequence[float] = 0.0
                ) -> tuple[slice, slice, slice]:
  """Voxel slices covering the world box ``[lo - margin, hi + margin]``.

  Used to evaluate a primitive only where it can be non-empty: if the sampling
  coordinates ``q`` differ from the voxel positions ``p`` by at most
  ``margin_mm`` per axis, every voxel whose ``q`` falls in ``[lo, hi]`` lies in
  the returned slices. Empty boxes give empty slices.
  """
  shape, spacing = check_shape_spacing(shape, spacing)
  margin = np.broadcast_to(np.asarray(margin_mm, np.float64), (3,))
  out = []
  for a in range(3):
    n, s = shape[a], spacing[a]
    centre = (n - 1) / 2.0
    i0 = int(np.floor((lo_mm[a] - margin[a]) / s + centre))
    i1 = int(np.ceil((hi_mm[a] + margin[a]) / s + centre)) + 1
    out.append(slice(min(max(i0, 0), n), min(max(i1, 0), n)))
  return tuple(out)


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
  """Rotation ``R = Rz(c) @ Ry(b) @ Rx(a)`` for angles ``(a, b, c)`` in degrees.

  Returns:
    float64 (3, 3) orthogonal matrix with determinant 1.
  """
  if len(angles_deg) != 3:
    raise ValueError(f"angles_deg must have 3 entries, got {angles_deg}.")
  a, b, c = np.deg2rad(np.asarray(angles_deg, np.float64))
  rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)],
                 [0, np.sin(a), np.cos(a)]])
  ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0],
                 [-np.sin(b), 0, np.cos(b)]])
  rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0],
                 [0, 0, 1]])
  return rz @ ry @ rx


def transform_coords(coords: Coords, *, rotation: np.ndarray | None = None,
                     translation: Sequence[float] = (0.0, 0.0, 0.0),
                     centre: Sequence[float] = (0.0, 0.0, 0.0)) -> Coords:
  """Maps coordinates into a moved frame: ``q = R^T (p - centre - t) + centre``.

  Evaluating anatomy defined in the frame at ``q`` renders it rotated by ``R``
  about ``centre`` and then translated by ``t``.
  """
  t = np.asarray(translation, np.float64) + np.asarray(centre, np.float64)
  d = [c - np.float32(ti) for c, ti in zip(coords, t)]
  if rotation is None:
    return tuple(di + np.float32(ci) for di, ci in zip(d, centre))
  r = np.asarray(rotation, np.float64)
  if r.shape != (3, 3):
    raise ValueError(f"rotation must be (3, 3), got {r.shape}.")
  out = []
  for j in range(3):  # q_j = sum_i R[i, j] d_i
    out.append(np.float32(r[0, j]) * d[0] + np.float32(r[1, j]) * d[1] +
               np.float32(r[2, j]) * d[2] + np.float32(centre[j]))
  return tuple(out)


def _gaussian_weights(n: int, s: float, correlation_mm: float,
                      half_extent_mm: float | None) -> np.ndarray:
  """(n, m) row-normalised Gaussian weights from a control lattice to voxels.

  The lattice is anchored at the volume centre (``x_k = k h``) and covers
  ``[-H, H]`` with ``H = max(half_extent_mm, half field of view + 3 sigma)``,
  so two grids with the same centre and ``H`` share the same lattice (the same
  random field, sampled at different resolutions).
  """
  sigma = correlation_mm / 2.0
  h = correlation_mm / 2.0
  x = (np.arange(n) - (n - 1) / 2.0) * s
  half = (n - 1) / 2.0 * s + 3.0 * sigma
  if half_extent_mm is not None:
    half = max(half, float(half_extent_mm))
  k = int(np.ceil(half / h))
  ctrl = np.arange(-k, k + 1) * h
  w = np.exp(-0.5 * ((x[:, None] - ctrl[None, :]) / sigma) ** 2)
  w /= np.sqrt(np.sum(w**2, axis=1, keepdims=True))
  return w


def smooth_random_field(rng: np.random.Generator, shape: Sequence[int],
                        spacing: Sequence[float], *, correlation_mm: float,
                        std: float = 1.0,
                        half_extent_mm: Sequence[float] | None = None
                        ) -> np.ndarray:
  """Smooth zero-mean Gaussian random field (float32) of marginal std ``std``.

  Gaussian-kernel smoothed white noise on a lattice of spacing
  ``correlation_mm / 2`` anchored at the volume centre (see the module
  docstring); the cost is three small matrix products.

  Args:
    rng: source of randomness.
    shape: volume shape.
    spacing: voxel size in mm.
    correlation_mm: correlation length in mm (> 0).
    std: marginal standard deviation of the field.
    half_extent_mm: optional per-axis half-extent (mm) the lattice must cover.
      Volumes with the same centre whose field of view fits inside it get the
      same field (up to sampling) from the same generator state, whatever
      their shape and spacing.
  """
  shape, spacing = check_shape_spacing(shape, spacing)
  if not correlation_mm > 0:
    raise ValueError(f"correlation_mm must be > 0, got {correlation_mm}.")
  if std < 0:
    raise ValueError(f"std must be >= 0, got {std}.")
  ext = (None,) * 3 if half_extent_mm is None else tuple(half_extent_mm)
  if len(ext) != 3:
    raise ValueError(f"half_extent_mm must have 3 entries, got {ext}.")
  ws = [_gaussian_weights(n, s, correlation_mm, e)
        for n, s, e in zip(shape, spacing, ext)]
  g = rng.standard_normal(tuple(w.shape[1] for w in ws))
  # Contract one axis at a time, smallest intermediate first.
  f = np.tensordot(g, ws[2], axes=([2], [1]))          # (m0, m1, n2)
  f = np.tensordot(ws[1], f, axes=([1], [1]))          # (n1, m0, n2)
  f = np.tensordot(ws[0], f, axes=([1], [1]))          # (n0, n1, n2)
  return (f * std).astype(np.float32)


def random_displacement_field(rng: np.random.Generator, shape: Sequence[int],
                              spacing: Sequence[float], *,
                              correlation_mm: float = 40.0,
                              magnitude_mm: float = 3.0,
                              half_extent_mm: Sequence[float] | None = None
                              ) -> np.ndarray:
  """Smooth random displacement field ``u`` in mm, shape ``(3, *shape)``.

  Each component is an independent `smooth_random_field` with marginal std
  ``magnitude_mm`` (``half_extent_mm`` as in `smooth_random_field`). Use it as
  a pull-back map: the deformed volume at ``p`` is
  the original at ``p + u(p)`` (`deform_volume`, or add ``u`` to the sampling
  coordinates of an analytic phantom).
  """
  if magnitude_mm < 0:
    raise ValueError(f"magnitude_mm must be >= 0, got {magnitude_mm}.")
  return np.stack([
      smooth_random_field(rng, shape, spacing, correlation_mm=correlation_mm,
                          std=magnitude_mm, half_extent_mm=half_extent_mm)
      for _ in range(3)
  ])


def deform_volume(image: np.ndarray, label: np.ndarray | None,
                  displacement_mm: np.ndarray, spacing: Sequence[float]
                  ) -> tuple[np.ndarray, np.ndarray | None]:
  """Warps an image (linear) and a label map (nearest) by one displacement.

  ``out(p) = in(p + u(p))`` with ``u`` in mm; voxels mapped outside the volume
  take the nearest edge value. Nearest-neighbour sampling keeps labels
  integral and never creates classes absent from the input.

  Args:
    image: (x, y, z) float volume.
    label: (x, y, z) integer label map, or None.
    displacement_mm: (3, x, y, z) displacement in mm.
    spacing: voxel size in mm.

  Returns:
    ``(warped_image, warped_label)``; dtypes are preserved.
  """
  image = np.asarray(image)
  if image.ndim != 3:
    raise ValueError(f"image must be 3D, got shape {image.shape}.")
  _, spacing = check_shape_spacing(image.shape, spacing)
  if displacement_mm.shape != (3, *image.shape):
    raise ValueError(f"displacement_mm must have shape {(3, *image.shape)}, "
                     f"got {displacement_mm.shape}.")
  if label is not None and np.shape(label) != image.shape:
    raise ValueError(f"label shape {np.shape(label)} != {image.shape}.")
  idx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in image.shape],
                    indexing="ij", sparse=True)
  coords = np.stack([idx[a] + displacement_mm[a] / np.float32(spacing[a])
                     for a in range(3)])
  out_image = ndimage.map_coordinates(image, coords, order=1, mode="nearest")
  out_image = out_image.astype(image.dtype, copy=False)
  out_label = None
  if label is not None:
    label = np.asarray(label)
    out_label = ndimage.map_coordinates(label, coords, order=0, mode="nearest")
    out_label = out_label.astype(label.dtype, copy=False)
  return out_image, out_label


def random_bias_field(rng: np.random.Generator, shape: Sequence[int],
                      spacing: Sequence[float], *,
                      correlation_mm: float = 120.0,
                      log_std: float = 0.2,
                      half_extent_mm: Sequence[float] | None = None
                      ) -> np.ndarray:
  """Smooth positive multiplicative bias field ``exp(f)``, float32.

  ``f`` is a `smooth_random_field` with marginal std ``log_std``
  (``half_extent_mm`` as there); multiply the image by the returned field.
  """
  if log_std < 0:
    raise ValueError(f"log_std must be >= 0, got {log_std}.")
  f = smooth_random_field(rng, shape, spacing, correlation_mm=correlation_mm,
                          std=log_std, half_extent_mm=half_extent_mm)
  return np.exp(f).astype(np.float32)


def add_rician_noise(rng: np.random.Generator, image: np.ndarray, *,
                     sigma: float) -> np.ndarray:
  """Rician noise: ``sqrt((I + sigma n1)^2 + (sigma n2)^2)``, n ~ N(0, 1).

  (Gudbjartsson & Patz 1995: magnitude of a complex signal with Gaussian noise
  on both channels.)

  Returns:
    float32 array of the image's shape (non-negative).
  """
  if sigma < 0:
    raise ValueError(f"sigma must be >= 0, got {sigma}.")
  image = np.asarray(image, np.float32)
  n1 = rng.standard_normal(image.shape, dtype=np.float32)
  n2 = rng.standard_normal(image.shape, dtype=np.float32)
  sigma = np.float32(sigma)
  re = image + sigma * n1
  im = sigma * n2
  return np.sqrt(re * re + im * im)


def ellipsoid_sdf(coords: Coords, *, center: Sequence[float],
                  semi_axes: Sequence[float],
                  rotation: np.ndarray | None = None) -> np.ndarray:
  """Approximate signed distance (mm) to an ellipsoid; negative inside.

  ``d(p) = (||A^{-1} R^T (p - c)|| - 1) * min(a)``: exact on the shortest
  axis, a lower bound of the true distance elsewhere; its zero level set is the
  ellipsoid surface exactly.

  Args:
    coords: ``(x, y, z)`` arrays in mm (any broadcastable shapes).
    center: ellipsoid centre in mm.
    semi_axes: semi-axis lengths ``a`` in mm (> 0) along the rotated frame.
    rotation: optional (3, 3) rotation ``R`` of the ellipsoid's axes.
  """
  a = np.asarray(semi_axes, np.float64)
  if a.shape != (3,) or not np.all(a > 0):
    raise ValueError(f"semi_axes must be 3 positive values, got {semi_axes}.")
  d = [c - np.float32(ci) for c, ci in zip(coords, center)]
  if rotation is not None:
    d = list(transform_coords(tuple(d), rotation=rotation))
  r2 = sum((di * np.float32(1.0 / ai))**2 for di, ai in zip(d, a))
  return (np.sqrt(r2) - np.float32(1.0)) * np.float32(a.min())


def tube_sdf(coords: Coords, *, points: Sequence[Sequence[float]],
             radius: float | Sequence[float],
             axis_scale: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
  """Signed distance (mm) to a tube (capsule swept along a polyline).

  For each segment ``[a, b]`` the closest point is ``a + t (b - a)``,
  ``t = clip(<p - a, b - a> / |b - a|^2, 0, 1)``; the tube is
  ``min_segments(|p - a - t (b - a)| - r(t))`` with the radius linearly
  interpolated between per-point radii. ``axis_scale`` divides the coordinate
  differences per axis before measuring (e.g. ``(1.4, 1, 1)`` gives an
  elliptic cross-section 1.4 times wider in x; a large z scale extrudes the
  tube into a sheet along z); distances are then in the scaled frame.

  Args:
    coords: ``(x, y, z)`` arrays in mm.
    points: (k, 3) polyline vertices in mm, k >= 1 (k = 1 gives a sphere).
    radius: scalar or k per-vertex radii in mm (>= 0).
    axis_scale: positive per-axis divisors of the coordinate differences.
  """
  pts = np.asarray(points, np.float64)
  if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] < 1:
    raise ValueError(f"points must have shape (k, 3), k >= 1, got {pts.shape}.")
  rad = np.broadcast_to(np.asarray(radius, np.float64), (pts.shape[0],))
  if np.any(rad < 0):
    raise ValueError(f"radius must be >= 0, got {radius}.")
  sc = np.asarray(axis_scale, np.float64)
  if sc.shape != (3,) or not np.all(sc > 0):
    raise ValueError(f"axis_scale must be 3 positive values, got {axis_scale}.")
  inv = [np.float32(1.0 / s) for s in sc]
  if pts.shape[0] == 1:
    pts = np.concatenate([pts, pts])
    rad = np.concatenate([rad, rad])
  best = None
  for k in range(pts.shape[0] - 1):
    a = pts[k] / sc
    ab = (pts[k + 1] - pts[k]) / sc
    ap = [c * inv[i] - np.float32(a[i]) for i, c in enumerate(coords)]
    len2 = float(ab @ ab)
    if len2 > 0:
      t = (ap[0] * np.float32(ab[0] / len2) + ap[1] * np.float32(ab[1] / len2) +
           ap[2] * np.float32(ab[2] / len2))
      np.clip(t, 0.0, 1.0, out=t)
      d2 = sum((api - t * np.float32(abi))**2 for api, abi in zip(ap, ab))
      r = np.float32(rad[k]) + t * np.float32(rad[k + 1] - rad[k])
    else:
      d2 = sum(api * api for api in ap)
      r = np.float32(rad[k])
    sd = np.sqrt(d2) - r
    best = sd if best is None else np.minimum(best, sd)
  return best


class Canvas:
  """Paints tissue and label maps from primitives evaluated on a sub-box.

  Holds the sampling coordinates ``q`` (one array per axis, mm, anatomy frame)
  of a volume and a bound ``margin_mm`` on ``|q - p|`` per axis, where ``p``
  are the undeformed voxel positions of `mm_grid`. `region` returns the voxel
  box where a primitive with a given anatomy-frame bounding box can be
  non-empty, so each primitive is evaluated only there. Later `paint` calls
  overwrite earlier ones (painter's algorithm).

  A Canvas is a local scratch object of one generator call; it keeps no
  randomness and no global state.
  """

  def __init__(self, coords: Coords, *, spacing: Sequence[float],
               margin_mm: Sequence[float] | None = None):
    if len(coords) != 3 or any(c.shape != coords[0].shape for c in coords):
      raise ValueError("coords must be three arrays of the same 3D shape.")
    shape, spacing = check_shape_spacing(coords[0].shape, spacing)
    self.coords = coords
    self.shape = shape
    self.spacing = spacing
    if margin_mm is None:
      p = mm_grid(shape, spacing, sparse=True)
      margin_mm = [float(np.max(np.abs(c - pi))) for c, pi in zip(coords, p)]
    self.margin_mm = tuple(float(m) for m in margin_mm)
    self.tissue = np.zeros(shape, np.uint8)
    self.label = np.zeros(shape, np.uint8)

  def region(self, lo_mm: Sequence[float], hi_mm: Sequence[float]
             ) -> tuple[tuple[slice, slice, slice], Coords]:
    """Voxel box (slices) and sub-coordinates for an anatomy-frame box."""
    sl = bbox_slices(lo_mm, hi_mm, shape=self.shape, spacing=self.spacing,
                     margin_mm=self.margin_mm)
    return sl, tuple(c[sl] for c in self.coords)

  def paint(self, slices: tuple[slice, slice, slice], mask: np.ndarray, *,
            tissue: int | None = None, label: int | None = None) -> None:
    """Sets ``tissue`` and/or ``label`` where ``mask`` is True in ``slices``."""
    if tissue is not None:
      self.tissue[slices][mask] = tissue
    if label is not None:
      self.label[slices][mask] = label
