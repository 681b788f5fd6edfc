"""Synthetic micro-ultrasound prostate slice stacks with expert and non-expert masks.

Stands in for the MicroSegNet data of the adaptive-focal-loss study (seed ``003``,
REFERENCE §4; Zenodo 10475293): stacks of 29-MHz transrectal micro-ultrasound (micro-US)
slices in a pseudo-sagittal plane, each patient annotated by an expert and a non-expert,
whose disagreement ("hard regions") concentrates where the capsule is hard to see — the
prostate-bladder interface and the midline near the apex (MicroSegNet, Jiang et al. 2024).

Geometry. A case is a float32 volume ``(x, y, z)`` = ``(along the probe, depth, slice)``: a
stack of 2D slices along the last axis, like the released volumes read in NIfTI order.

* axis 0 (``u``, mm, centred on the image): along the probe, apex (low index) -> base;
* axis 1 (``d``, mm): depth from the transducer surface, ``d = (j + 1/2) s``; index 0 is the
  top of the displayed image, where the probe's near field is;
* axis 2 (``w``, mm, centred): slice position across the sweep, modelled as parallel planes
  ``slice_mm`` apart (the real sweep is a fan of angles; the spacing is nominal).

The affine maps these axes to RAS+ world coordinates: axis 0 -> +z (superior), axis 1 -> +y
(anterior: the transrectal probe sits posterior to the gland, so depth runs anteriorly),
axis 2 -> +x; the world origin is the centre of the probe surface on the middle slice.

Field of view. The released slices are ~1372 x 962 pixels (the size hard-coded in the original
``preprocessing.py``; not verified here) at 0.033586 mm (the in-plane spacing the original test
code multiplies native-resolution HD95 by), i.e. about 46 x 32 mm, resized to 224 x 224 for
the network (about 0.21 x 0.14 mm per pixel). The phantom uses square pixels:
the default 224 x 224 pixels of 0.2 mm cover 44.8 x 44.8 mm, enough for a gland 27-40 mm long
(apex to base) and 17-27 mm deep, and the bladder beyond it. Anatomy is defined in
millimetres, so another ``size`` / ``spacing`` with the same field of view renders the same
gland (speckle and textures are drawn per resolution); a smaller field of view crops it.
The default 16 slices 2.5 mm apart (40 mm) span the gland's lateral extent, so the gland
shrinks toward the first and last slices (possibly to nothing).

Anatomy (per seed). The gland is, in slice ``w``, a star-shaped curve around
``(u0(w), d0(w))`` (drifting up to 2 mm across the sweep) with normalised radius

.. math::

  R(\\theta) = (1 + \\tau\\cos\\theta)\\,(1 - f \\min(\\sin\\theta, 0)^2)
    \\,(1 + \\textstyle\\sum_{k=2}^{5} c_k(w) \\cos(k\\theta + \\phi_k(w)))

(egg-shaped: wider at the base ``theta = 0``, ``tau`` 0.04-0.14; flattened posteriorly, toward
the probe, ``f`` 0.05-0.2; lobulated, ``|c_k| <= 0.08 / sqrt(k - 1)``, with amplitudes and
phases varying smoothly along the sweep) and semi-axes
``a(w), b(w) = (a, b) sqrt(1 - (w / W)^2)`` (``a`` 13.5-19 mm along the probe, ``b`` 9-13.5 mm
in depth; an ellipsoidal lateral profile with left and right half-widths ``W`` of 17-24 mm
drawn separately); its signed distance (mm, negative inside) is the radial pseudo-distance
``(rho - R(theta)) sqrt((a cos theta)^2 + (b sin theta)^2)``, ``rho`` being the normalised
radius of the voxel. The posterior capsule lies 2-5 mm deep, behind the rectal
wall (a bright mucosa line, a dark muscularis band) and periprostatic fat. The bladder (an
anechoic ellipsoid with a tissue-like wall) sits anterior to the base, 1-2.5 mm from the
capsule at the contact angle ``theta_b`` (30-55 degrees from the base direction toward
anterior); the urethra (a dark tube) runs through the midline slices from the bladder neck to
the apex; the transition zone is a darker inner region; 1-4 calcifications (bright blobs,
radius 0.35-0.9 mm) lie inside the gland, each on one slice among those where the gland has at
least 60% of its largest size (which slice depends on ``num_slices`` / ``spacing``).

Boundary weakness. A field ``omega`` in [0, 1] says how invisible the capsule is:

.. math::

  \\omega = 1 - (1 - \\omega_b)(1 - \\omega_a)(1 - \\omega_{ant})(1 - \\omega_{end})
    (1 - \\omega_{sh}),

with von Mises bumps in the gland angle ``theta`` at the bladder contact (``omega_b``, up to
1 on the midline), the apex (``omega_a``) and anteriorly (``omega_ant`` <= 0.3; anterior
fibromuscular stroma), a lateral term ``omega_end = 0.5 (w / W)^4`` (the capsule is tangent
to the slice near the ends), and the acoustic shadow of calcifications (``omega_sh = 1 - T_c``).
The capsule's intensity step scales with ``1 - omega`` (outside tissue looks like gland within
~2.5 mm of a weak boundary) and its edge widens (0.15 mm + 0.9 mm ``omega``), so the bright
posterior capsule is crisp while the bladder neck and apex fade. The angular terms are
tabulated on 2048 angles per slice (`_angle_tables`) and looked up per pixel.

Annotations. ``expert`` is the true gland (``sdf < 0``). ``non_expert`` is
``sdf - delta < 0``: the boundary moved outward by

.. math::

  \\delta = (\\omega A + \\epsilon) g + \\omega_b \\beta_b + \\omega_a \\beta_a,

with ``g`` a smooth unit Gaussian random field (correlation 8 mm, so neighbouring slices
deviate alike), ``A`` 0.5-1 mm, ``epsilon`` = 0.03 mm, a bladder-side bias ``beta_b`` of
0.3-1.2 mm outward (the non-expert follows the visible bladder edge) and an apex bias
``beta_a`` of -1 to 0.5 mm. The hard regions (expert XOR non-expert) are then ~3-8% of the
gland at 0.2 mm pixels, their density per boundary pixel well below average on the posterior
capsule and above it anteriorly (bladder side, apex).

Image formation. Backscatter power ``P = E T a T_c``: tissue echogenicity ``E`` (gland 0.12-0.25,
periprostatic tissue 0.55-0.8, urine ~0.005, calcifications +6-15, saturating; the near-field
reverberation, a bright ringing band decaying over the first ~1.5 mm, added), a multiplicative
texture ``T = exp(t f)`` (``f`` a smooth field of correlation 2.5 mm, log-std ``t`` 0.25-0.45
inside the gland, 0.1-0.25 outside), depth attenuation ``a(d) = exp(-int_0^d mu) (1 + focal
bump)`` with ``mu`` 0.02-0.045 /mm in tissue and ten times less in urine (so tissue behind the
bladder is brighter: posterior enhancement), and the calcification shadows

.. math::

  T_c = \\prod_i \\exp\\big(-\\tau_i\\, e^{-(u - u_i)^2 / 2 r_i^2}\\,
    \\Phi((d - d_i) / r_i)\\big)

(on the calcification's slice; a Gaussian profile across the beam, a normal CDF along it: a
dark streak from each calcification to the bottom of the image, transmission ``exp(-tau)``
0.007-0.08 at its centre). The displayed image is

.. math::

  I = \\mathrm{clip}(g\\, P^{\\gamma / 2} S,\\ 0,\\ 1),

a power-law compression of the amplitude (``gamma`` 0.8-1) with the gain ``g`` putting
periprostatic tissue at ~0.45, times multiplicative speckle ``S`` (`gamma_speckle`: gamma
distributed with 8-14 looks, i.e. coefficient of variation 0.27-0.35 and skewness
0.53-0.71, correlated over ~1 pixel in-plane, independent between slices). So the local
standard deviation is proportional to the local mean and the grey levels are skewed, not
Gaussian. Intensities are in [0, 1], like the release after dividing by 254.

All randomness comes from ``numpy.random.SeedSequence(seed)``: a case is a pure function of
``(seed, num_slices, size, spacing, shadowing)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy import special

from jaxseg.data.phantoms import common
from jaxseg.data.preprocess import validate_spacing

__all__ = [
    "MICRO_US_NUM_SLICES",
    "MICRO_US_SIZE",
    "MICRO_US_SPACING",
    "MicroUSCase",
    "gamma_speckle",
    "make_micro_us_case",
    "micro_us_affine",
]

MICRO_US_SIZE = (224, 224)
"""Default in-plane size ``(along the probe, depth)`` in pixels."""
MICRO_US_SPACING = (0.2, 2.5)
"""Default ``(in-plane pixel size, slice spacing)`` in mm: a 44.8 mm field of view."""
MICRO_US_NUM_SLICES = 16
"""Default number of slices per stack."""

_MAX_CALCIFICATIONS = 4
_N_HARMONICS = 4  # lobulation harmonics k = 2..5
_N_ANGLES = 2048  # angular resolution of the gland's lookup tables (0.18 degrees)


@dataclasses.dataclass(frozen=True)
class MicroUSCase:
  """One synthetic micro-US patient: a stack of slices with two annotations.

  Attributes:
    image: float32 ``(x, y, z)`` = ``(along probe, depth, slice)``, values in [0, 1].
    expert: uint8 ``(x, y, z)`` expert mask (the true gland), 0/1.
    non_expert: uint8 ``(x, y, z)`` non-expert mask, 0/1.
    spacing: ``(sx, sy, sz)`` in mm (in-plane, in-plane, slice).
    affine: float64 (4, 4) voxel-to-world matrix (mm, RAS+; see the module docstring).
    case_id: identifier ``"phantom-{seed:04d}"``.
    calcifications: float64 ``(k, 4)``: voxel coordinates ``(x, y, z)`` of each
      calcification's centre (z an integer: it lies on a slice; x, y may fall outside a
      field of view that crops the gland) and its radius in mm.
  """

  image: np.ndarray
  expert: np.ndarray
  non_expert: np.ndarray
  spacing: tuple[float, float, float]
  affine: np.ndarray
  case_id: str
  calcifications: np.ndarray

  def __post_init__(self):
    if self.image.ndim != 3 or self.image.dtype != np.float32:
      raise ValueError(
          f"image must be a 3D float32 array, got {self.image.dtype} {self.image.shape}.")
    for name in ("expert", "non_expert"):
      mask = getattr(self, name)
      if mask.shape != self.image.shape or mask.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 of shape {self.image.shape}, got "
                         f"{mask.dtype} {mask.shape}.")
    validate_spacing(self.spacing)
    if np.asarray(self.affine).shape != (4, 4):
      raise ValueError(f"affine must be (4, 4), got {np.shape(self.affine)}.")
    if self.calcifications.ndim != 2 or self.calcifications.shape[1] != 4:
      raise ValueError(
          f"calcifications must be (k, 4), got {self.calcifications.shape}.")

  @property
  def label(self) -> np.ndarray:
    """The expert mask (the name generic pipeline code reads)."""
    return self.expert

  @property
  def disagreement(self) -> np.ndarray:
    """uint8 ``expert XOR non_expert``: the (undilated) hard regions of AG-BCE."""
    return np.bitwise_xor(self.expert, self.non_expert)


# ------------------------------------------------------------------------------------------
# Speckle.
# ------------------------------------------------------------------------------------------


def gamma_speckle(rng: np.random.Generator, shape: Sequence[int], *,
                  looks: float = 10.0,
                  sigma_px: Sequence[float] = (1.0, 0.7)) -> np.ndarray:
  """Spatially correlated multiplicative speckle with a gamma marginal (float32, mean 1).

  Fully developed speckle has an exponential intensity; averaging ``L`` independent looks
  (compounding, or the many native pixels behind one resized pixel) gives a gamma
  distribution of shape ``L`` and scale ``1 / L``: mean 1, coefficient of variation
  ``1 / sqrt(L)``, skewness ``2 / sqrt(L)`` (Goodman, "Speckle phenomena in optics", 2007).
  The field is the Wilson-Hilferty transform (Wilson & Hilferty, "The distribution of
  chi-square", PNAS 17, 1931) of a correlated standard Gaussian ``z``,

  .. math::

    S = \\max\\big(1 - \\tfrac{1}{9L} + z \\sqrt{\\tfrac{1}{9L}},\\ 0\\big)^3,

  whose mean and standard deviation match the gamma law's to within 0.5% and its skewness to
  within 3% for ``L >= 1`` (at much lower cost than the exact quantile); ``z`` is white noise
  convolved with a Gaussian point-spread function of standard deviations ``sigma_px`` pixels
  along the first two axes (periodic boundaries),
  renormalised to unit variance exactly (the filter is applied to a unit impulse to get
  ``sum h^2``). Axes beyond the first two are independent (the slices of a stack).

  Args:
    rng: source of randomness.
    shape: output shape, at least 2D.
    looks: number of looks ``L >= 1`` (larger = smoother speckle).
    sigma_px: PSF standard deviations in pixels along axes 0 and 1 (>= 0; 0 = white).

  Returns:
    float32 array of ``shape``, non-negative, mean ~1.
  """
  shape = tuple(int(n) for n in shape)
  if len(shape) < 2 or any(n < 1 for n in shape):
    raise ValueError(f"shape must have >= 2 positive sizes, got {shape}.")
  sig = tuple(float(v) for v in sigma_px)
  if len(sig) != 2 or not all(np.isfinite(v) and v >= 0 for v in sig):
    raise ValueError(f"sigma_px must be 2 finite values >= 0, got {sigma_px}.")
  if not (np.isfinite(looks) and looks >= 1):
    raise ValueError(f"looks must be a finite number >= 1, got {looks}.")
  z = rng.standard_normal(shape, dtype=np.float32)
  if any(v > 0 for v in sig):
    delta = np.zeros(shape[:2], np.float64)
    delta[0, 0] = 1.0
    k2 = float(np.sum(ndimage.gaussian_filter(delta, sig, mode="wrap") ** 2))
    z = ndimage.gaussian_filter(z, sig + (0.0,) * (len(shape) - 2), mode="wrap")
    z *= np.float32(1.0 / math.sqrt(k2))
  a = 1.0 / (9.0 * float(looks))
  z *= np.float32(math.sqrt(a))
  z += np.float32(1.0 - a)
  np.maximum(z, 0.0, out=z)
  return z * z * z


# ------------------------------------------------------------------------------------------
# Parameters and geometry.
# ------------------------------------------------------------------------------------------


def _u(rng: np.random.Generator, lo, hi, size=None):
  """Uniform draw(s) in ``[lo, hi)``."""
  return rng.uniform(lo, hi, size)


def _draw_params(rng: np.random.Generator) -> dict:
  """All scalar anatomy / acquisition parameters of one case, in fixed order."""
  p = {}
  # Gland (mm): semi-axes along the probe / in depth, lateral half-widths.
  p["a"] = _u(rng, 13.5, 19.0)
  p["b"] = _u(rng, 9.0, 13.5)
  p["W"] = _u(rng, 17.0, 24.0, 2)  # (left w < 0, right w >= 0)
  p["u0"] = _u(rng, -2.5, 2.5)
  p["flat"] = _u(rng, 0.05, 0.2)
  p["egg"] = _u(rng, 0.04, 0.14)
  # Lobulation, per k = 2..5: amplitude, its slope and curvature along the sweep, phase, drift.
  p["harm"] = _u(rng, -1.0, 1.0, (_N_HARMONICS, 5))
  p["drift"] = _u(rng, -2.0, 2.0, 2)  # lateral drift of the centre (u, d) at |w| = W
  # Rectal wall and periprostatic layers (depths in mm).
  p["t_mucosa"] = _u(rng, 0.4, 0.7)
  p["t_wall"] = _u(rng, 1.6, 2.6)
  p["d_post"] = p["t_wall"] + _u(rng, 0.8, 2.2)
  # Tissue echogenicities (backscatter power, arbitrary units).
  p["E_mucosa"] = _u(rng, 0.9, 1.4)
  p["E_muscularis"] = _u(rng, 0.08, 0.2)
  p["E_out"] = _u(rng, 0.55, 0.8)
  p["E_in"] = _u(rng, 0.12, 0.25)
  p["E_tz"] = _u(rng, 0.65, 0.9)  # relative to E_in
  p["rim"] = _u(rng, 0.5, 1.0)
  p["E_lumen"] = _u(rng, 0.003, 0.01)
  p["E_urethra"] = _u(rng, 0.2, 0.45)  # relative to E_in
  p["tex_in"] = _u(rng, 0.25, 0.45)  # log-std of the texture inside / outside the gland
  p["tex_out"] = _u(rng, 0.1, 0.25)
  # Bladder: contact angle, gap (bladder neck wall), semi-axes (u, d, w), lateral centre.
  p["theta_b"] = np.deg2rad(_u(rng, 30.0, 55.0))
  p["gap"] = _u(rng, 1.0, 2.5)
  p["bladder"] = _u(rng, [12.0, 8.0, 25.0], [18.0, 12.0, 35.0])
  p["bladder_w"] = _u(rng, -3.0, 3.0)
  p["bladder_wall"] = _u(rng, 1.0, 2.0)
  # Urethra: radius (mm), posterior bend (fraction of b).
  p["urethra_r"] = _u(rng, 0.5, 0.9)
  p["urethra_bend"] = _u(rng, 0.1, 0.35)
  # Boundary weakness: bladder / apex bump widths (rad), apex direction, midline width.
  p["sigma_b"] = np.deg2rad(_u(rng, 25.0, 40.0))
  p["strength_b"] = _u(rng, 0.8, 1.0)
  p["sigma_a"] = np.deg2rad(_u(rng, 20.0, 35.0))
  p["theta_a"] = math.pi - np.deg2rad(_u(rng, 0.0, 25.0))
  p["midline_mm"] = _u(rng, 6.0, 10.0)
  # Non-expert deviation (mm).
  p["ne_amp"] = _u(rng, 0.5, 1.0)
  p["ne_bias_b"] = _u(rng, 0.3, 1.2)
  p["ne_bias_a"] = _u(rng, -1.0, 0.5)
  # Calcifications: count and, per slot, (slice pick, radius, radial fraction, angle,
  # brightness, shadow optical depth tau).
  p["n_calc"] = int(rng.integers(1, _MAX_CALCIFICATIONS + 1))
  p["calc"] = np.stack([
      _u(rng, 0.0, 1.0, _MAX_CALCIFICATIONS),
      _u(rng, 0.35, 0.9, _MAX_CALCIFICATIONS),
      _u(rng, 0.1, 0.45, _MAX_CALCIFICATIONS),
      _u(rng, -math.pi, math.pi, _MAX_CALCIFICATIONS),
      _u(rng, 6.0, 15.0, _MAX_CALCIFICATIONS),
      _u(rng, 2.5, 5.0, _MAX_CALCIFICATIONS),
  ], axis=1)
  # Acquisition.
  p["mu"] = _u(rng, 0.02, 0.045)
  p["focus_d"] = _u(rng, 12.0, 22.0)
  p["focus_gain"] = _u(rng, 0.1, 0.35)
  p["nf_amp"] = _u(rng, 2.0, 5.0)
  p["nf_decay"] = _u(rng, 0.3, 0.6)
  p["nf_period"] = _u(rng, 0.5, 0.9)
  p["psf_px"] = _u(rng, [0.8, 0.5], [1.2, 0.8])
  p["looks"] = _u(rng, 8.0, 14.0)
  p["gamma"] = _u(rng, 0.8, 1.0)
  p["gain"] = _u(rng, 0.85, 1.15)
  return p


def _gland_slices(p: dict, w: np.ndarray) -> dict:
  """Per-slice gland geometry at slice positions ``w`` (mm): 1D arrays."""
  big_w = np.where(w < 0, p["W"][0], p["W"][1])
  t = w / big_w
  g = np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))
  gs = np.maximum(g, 1e-3)
  a = p["a"] * gs
  b = p["b"] * gs
  u0 = p["u0"] + p["drift"][0] * t * t
  d0 = p["d_post"] + b * (1.0 - p["flat"]) + p["drift"][1] * t * t * g
  h = p["harm"]
  k = np.arange(2, 2 + _N_HARMONICS)[:, None]
  amp = (0.045 / np.sqrt(k - 1.0)) * h[:, 0:1] * (
      1.0 + 0.4 * h[:, 1:2] * t + 0.3 * h[:, 2:3] * (t * t - 1.0 / 3.0))  # (K, nz)
  phase = math.pi * h[:, 3:4] + 0.5 * h[:, 4:5] * t  # (K, nz)
  return dict(g=g, t=t, a=a, b=b, u0=u0, d0=d0, amp=amp, phase=phase,
              present=g > 0.08)


def _radius(p: dict, c, s, amp, phase):
  """Normalised boundary radius ``R(theta)`` from ``cos``/``sin`` of theta."""
  r = (1.0 + p["egg"] * c) * (1.0 - p["flat"] * np.minimum(s, 0.0) ** 2)
  theta = np.arctan2(s, c)
  harm = 1.0
  for k in range(_N_HARMONICS):
    harm = harm + amp[k] * np.cos((k + 2) * theta + phase[k])
  return r * harm


def _von_mises(c, s, theta0: float, sigma: float):
  """``exp((cos(theta - theta0) - 1) / sigma^2)``: a bump of width ~sigma at theta0."""
  return np.exp((c * math.cos(theta0) + s * math.sin(theta0) - 1.0) / sigma**2)


def _angle_tables(p: dict, geo: dict, w: np.ndarray) -> dict:
  """Functions of (gland angle, slice) on ``_N_ANGLES`` angles: float64 ``(n_angles, nz)``.

  ``radius`` (normalised boundary radius), ``scale`` (mm per normalised unit along the ray),
  ``omega`` (angular boundary weakness: bladder, apex, anterior and lateral-end terms),
  ``omega_b`` and ``omega_a`` (the bladder and apex terms alone).
  """
  theta = (2 * math.pi / _N_ANGLES) * np.arange(_N_ANGLES)[:, None]
  c, s = np.cos(theta), np.sin(theta)
  radius = _radius(p, c, s, geo["amp"][:, None, :], geo["phase"][:, None, :])
  scale = np.sqrt((geo["a"] * c) ** 2 + (geo["b"] * s) ** 2)
  mid = np.exp(-(w / p["midline_mm"]) ** 2)
  om_b = _von_mises(c, s, p["theta_b"], p["sigma_b"]) * (
      p["strength_b"] * (0.55 + 0.45 * mid))
  om_a = _von_mises(c, s, p["theta_a"], p["sigma_a"]) * (0.45 + 0.45 * mid)
  om_ant = 0.3 * _von_mises(c, s, 0.5 * math.pi, 0.5)
  om_end = 0.5 * np.minimum(geo["t"] ** 4, 1.0)
  omega = 1 - (1 - om_b) * (1 - om_a) * (1 - om_ant) * (1 - om_end)
  return dict(radius=radius, scale=scale, omega=omega, omega_b=om_b, omega_a=om_a)


def _boundary_point(p: dict, geo: dict, k: int, theta: float,
                    frac: float = 1.0) -> np.ndarray:
  """``(u, d)`` in mm of the point at angle ``theta``, ``frac`` of the way to the boundary."""
  c, s = math.cos(theta), math.sin(theta)
  r = float(_radius(p, c, s, geo["amp"][:, k], geo["phase"][:, k]))
  return np.array([geo["u0"][k] + frac * r * c * geo["a"][k],
                   geo["d0"][k] + frac * r * s * geo["b"][k]])


def _index_range(coords: np.ndarray, lo: float, hi: float) -> slice:
  """Indices of the (increasing) 1D ``coords`` within ``[lo, hi]``."""
  return slice(int(np.searchsorted(coords, lo, side="left")),
               int(np.searchsorted(coords, hi, side="right")))


def micro_us_affine(size: Sequence[int], num_slices: int,
                    spacing: Sequence[float]) -> np.ndarray:
  """The phantom's voxel-to-world (RAS+, mm) affine; see the module docstring.

  Voxel ``(i, j, k)`` maps to ``x = w_k``, ``y = d_j = (j + 1/2) s``, ``z = u_i`` with
  ``u_i = (i - (n_x - 1) / 2) s`` and ``w_k = (k - (n_z - 1) / 2) s_z``.

  Args:
    size: in-plane size ``(n_x, n_y)``.
    num_slices: number of slices ``n_z``.
    spacing: ``(in-plane, slice)`` spacing in mm.

  Returns:
    float64 (4, 4) matrix (a permutation of ``diag(s, s, s_z)`` plus an offset).
  """
  (nx, _, nz), (s, _, sz) = _check_geometry(num_slices, size, spacing)
  a = np.zeros((4, 4), np.float64)
  a[2, 0] = s
  a[1, 1] = s
  a[0, 2] = sz
  a[:3, 3] = [-(nz - 1) / 2.0 * sz, 0.5 * s, -(nx - 1) / 2.0 * s]
  a[3, 3] = 1.0
  return a


def _check_geometry(num_slices, size, spacing):
  if isinstance(num_slices, bool) or not isinstance(num_slices, (int, np.integer)):
    raise ValueError(f"num_slices must be an int, got {num_slices!r}.")
  size = tuple(size)
  if len(size) != 2:
    raise ValueError(f"size must be (n_x, n_y), got {size}.")
  sp = tuple(spacing)
  if len(sp) != 2:
    raise ValueError(f"spacing must be (in_plane_mm, slice_mm), got {sp}.")
  return common.check_shape_spacing((*size, num_slices), (sp[0], sp[0], sp[1]))


# ------------------------------------------------------------------------------------------
# The case.
# ------------------------------------------------------------------------------------------


def make_micro_us_case(seed: int, *,
                       num_slices: int = MICRO_US_NUM_SLICES,
                       size: Sequence[int] = MICRO_US_SIZE,
                       spacing: Sequence[float] = MICRO_US_SPACING,
                       shadowing: bool = True) -> MicroUSCase:
  """Generates one synthetic micro-US patient (see the module docstring).

  Args:
    seed: non-negative integer; the case is a pure function of it and the other arguments.
    num_slices: number of slices of the stack (last axis).
    size: in-plane size ``(n_x, n_y)`` = ``(along the probe, depth)`` in pixels.
    spacing: ``(in_plane_mm, slice_mm)``: square pixel size and slice spacing; the field of
      view is ``size * in_plane_mm`` (default 44.8 mm).
    shadowing: if False, calcifications cast no acoustic shadow (everything else, including
      every random draw, is unchanged: an ablation of the artefact).

  Returns:
    A `MicroUSCase` with ``case_id = f"phantom-{seed:04d}"``.

  Raises:
    ValueError: for a negative / non-integer seed or a bad size / spacing / num_slices.
  """
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise ValueError(f"seed must be an int, got {seed!r}.")
  if seed < 0:
    raise ValueError(f"seed must be >= 0, got {seed}.")
  shape, spacing3 = _check_geometry(num_slices, size, spacing)
  nx, ny, nz = shape
  s, sz = spacing3[0], spacing3[2]
  f32 = np.float32
  rng_par, rng_tex, rng_ann, rng_speckle = (
      np.random.default_rng(q) for q in np.random.SeedSequence(int(seed)).spawn(4))
  p = _draw_params(rng_par)

  u1 = common.axis_coordinates(nx, s)
  d1 = ((np.arange(ny, dtype=np.float64) + 0.5) * s).astype(f32)
  w1 = common.axis_coordinates(nz, sz)
  u, d = u1[:, None, None], d1[None, :, None]
  geo = _gland_slices(p, w1.astype(np.float64))
  per = {k: v.astype(f32)[None, None, :] for k, v in geo.items() if k in ("a", "b", "u0", "d0")}

  # Smooth random fields: texture, shape irregularity, non-expert deviation.
  tex = common.smooth_random_field(rng_tex, shape, spacing3, correlation_mm=2.5)
  g_ne = common.smooth_random_field(rng_ann, shape, spacing3, correlation_mm=8.0)

  # Gland: normalised coordinates, angle -> per-(angle, slice) lookup tables.
  xi = (u - per["u0"]) / per["a"]
  eta = (d - per["d0"]) / per["b"]
  rho = np.sqrt(xi * xi + eta * eta)
  theta = np.arctan2(eta, xi)
  idx = np.rint(theta * f32(_N_ANGLES / (2 * math.pi))).astype(np.int32)
  idx %= _N_ANGLES
  idx *= nz
  idx += np.arange(nz, dtype=np.int32)
  del theta
  tab = _angle_tables(p, geo, w1.astype(np.float64))
  tab["radius"] *= tab["scale"]
  tab["bias"] = tab["omega_b"] * p["ne_bias_b"] + tab["omega_a"] * p["ne_bias_a"]
  look = {k: np.take(tab[k].astype(f32).ravel(), idx)
          for k in ("radius", "scale", "omega", "bias")}
  del idx
  sdf = rho * look["scale"]
  sdf -= look["radius"]
  sdf[..., ~geo["present"]] = 50.0
  del rho

  # Calcifications (on central slices, inside the gland) and their shadows.
  candidates = np.flatnonzero(geo["g"] > 0.6)
  if candidates.size == 0:
    candidates = np.array([int(np.argmax(geo["g"]))])
  calcs = []
  for pick, r_c, frac, ang, bright, tau in p["calc"][:p["n_calc"]]:
    k = int(candidates[min(int(pick * candidates.size), candidates.size - 1)])
    uc, dc = _boundary_point(p, geo, k, ang, frac)
    calcs.append((uc, dc, k, r_c, bright, tau))
  transmission = np.ones(shape, f32)
  bright_blobs = np.zeros(shape, f32)
  for uc, dc, k, r_c, bright, tau in calcs:
    iu = _index_range(u1, uc - 4 * r_c, uc + 4 * r_c)
    jd = _index_range(d1, dc - 4 * r_c, dc + 4 * r_c)
    across = np.exp(-0.5 * ((u1[iu] - uc) / r_c) ** 2)[:, None]
    along = np.exp(-0.5 * ((d1[jd] - dc) / r_c) ** 2)[None, :]
    bright_blobs[iu, jd, k] += f32(bright) * across * along
    if shadowing:
      depth = special.ndtr((d1 - dc) / r_c)[None, :]
      transmission[iu, :, k] *= np.exp(-f32(tau) * across * depth).astype(f32)

  # Boundary weakness: the angular terms (table) and the shadows.
  omega = 1 - (1 - look["omega"]) * transmission

  # Annotations.
  expert = sdf < 0
  delta = (omega * f32(p["ne_amp"]) + f32(0.03)) * g_ne + look["bias"]
  non_expert = (sdf - delta) < 0
  del g_ne, delta, look

  # Echogenicity: depth layers (rectal wall, fat) + near-field ringing, then the gland.
  def _step(x, width):
    return special.expit(x / width)

  h1 = _step(d1 - p["t_mucosa"], 0.1)
  h2 = _step(d1 - p["t_wall"], 0.15)
  e_bg = (p["E_mucosa"] * (1 - h1) + p["E_muscularis"] * h1 * (1 - h2)
          + p["E_out"] * h2)
  e_bg = e_bg + p["nf_amp"] * np.exp(-d1 / p["nf_decay"]) * (
      0.55 + 0.45 * np.cos(2 * math.pi * d1 / p["nf_period"]))
  e_bg = e_bg.astype(f32)[None, :, None]
  e_in = f32(p["E_in"])
  rho_tz = np.sqrt((xi / f32(0.62)) ** 2 + ((eta - f32(0.25)) / f32(0.55)) ** 2)
  e_gland = e_in * (1 + (f32(p["E_tz"]) - 1) * special.expit((1 - rho_tz) / f32(0.08)))
  del rho_tz, xi, eta
  omega_loc = omega * np.exp(-np.maximum(sdf, 0) / f32(2.5))
  e_outside = e_in + (e_bg - e_in) * (1 - omega_loc)
  h = special.expit(sdf / (f32(0.15) + f32(0.9) * omega))
  echo = e_gland * (1 - h) + e_outside * h
  echo += f32(p["rim"]) * (1 - omega) ** 2 * np.exp(-(sdf / f32(0.3)) ** 2)
  del omega_loc, e_outside, e_gland

  # Bladder: anechoic lumen (never inside the gland) with a tissue-like wall.
  k_mid = int(np.argmax(geo["g"]))
  n_b = np.array([math.cos(p["theta_b"]), math.sin(p["theta_b"])])
  semi = p["bladder"]
  r_n = 1.0 / math.sqrt((n_b[0] / semi[0]) ** 2 + (n_b[1] / semi[1]) ** 2)
  contact = _boundary_point(p, geo, k_mid, p["theta_b"])
  centre_b = contact + (p["gap"] + r_n) * n_b
  # Evaluated in a box holding every voxel whose pseudo-distance (`ellipsoid_sdf`: the
  # normalised radius minus 1, times the shortest semi-axis) is below the wall + 2 mm.
  grow = 1.0 + (p["bladder_wall"] + 2.0) / semi.min()
  centre3 = (*centre_b, p["bladder_w"])
  box = tuple(_index_range(x, c - grow * r, c + grow * r)
              for x, c, r in zip((u1, d1, w1), centre3, semi))
  lumen = np.zeros(shape, f32)
  bsdf = common.ellipsoid_sdf((u1[box[0], None, None], d1[None, box[1], None],
                               w1[None, None, box[2]]), center=centre3, semi_axes=semi)
  lumen[box] = special.expit(-bsdf / f32(0.15)) * special.expit((sdf[box] - f32(0.6)) / f32(0.15))
  wall = special.expit(-(bsdf - f32(p["bladder_wall"])) / f32(0.2)) * h[box] * (1 - lumen[box])
  echo[box] = echo[box] * (1 - wall) + e_in * f32(1.1) * wall
  echo[box] = echo[box] * (1 - lumen[box]) + f32(p["E_lumen"]) * lumen[box]
  del bsdf, wall

  # Urethra (midline slices): a dark tube from the bladder neck to the apex.
  neck = _boundary_point(p, geo, k_mid, p["theta_b"], 0.95)
  apex = _boundary_point(p, geo, k_mid, p["theta_a"], 0.9)
  bend = np.array([geo["u0"][k_mid], geo["d0"][k_mid] - p["urethra_bend"] * geo["b"][k_mid]])
  tt = np.linspace(0.0, 1.0, 7)[:, None]
  curve = (1 - tt) ** 2 * neck + 2 * tt * (1 - tt) * bend + tt**2 * apex
  pts = np.concatenate([curve, np.zeros((len(tt), 1))], axis=1)
  r_u, lat = p["urethra_r"], 2.0
  iu = _index_range(u1, curve[:, 0].min() - 2 * r_u, curve[:, 0].max() + 2 * r_u)
  jd = _index_range(d1, curve[:, 1].min() - 2 * r_u, curve[:, 1].max() + 2 * r_u)
  kw = _index_range(w1, -2 * lat * r_u, 2 * lat * r_u)
  if iu.stop > iu.start and jd.stop > jd.start and kw.stop > kw.start:
    usdf = common.tube_sdf((u1[iu, None, None], d1[None, jd, None], w1[None, None, kw]),
                           points=pts, radius=r_u, axis_scale=(1.0, 1.0, lat))
    ur = special.expit(-usdf / f32(0.15)) * (1 - h[iu, jd, kw])
    box = echo[iu, jd, kw]
    echo[iu, jd, kw] = box * (1 - ur * (1 - f32(p["E_urethra"])))
  echo += bright_blobs
  del bright_blobs

  # Texture, attenuation (less in urine), focal gain, shadows.
  amp_tex = f32(p["tex_out"]) + f32(p["tex_in"] - p["tex_out"]) * (1 - h)
  echo *= np.exp(amp_tex * tex)
  del amp_tex, tex, h
  mu = f32(p["mu"] * s) * (1 - f32(0.9) * lumen)
  att = np.exp(-np.cumsum(mu, axis=1, dtype=f32))
  focus = 1 + p["focus_gain"] * np.exp(-((d1 - p["focus_d"]) / 8.0) ** 2)
  power = np.maximum(echo, 0) * att * transmission * focus.astype(f32)[None, :, None]
  del mu, att, lumen, echo

  # Speckle and power-law display compression, in [0, 1].
  gam = p["gamma"]
  ref = p["E_out"] * math.exp(-p["mu"] * 8.0)
  gain = p["gain"] * 0.45 / ref ** (gam / 2)
  image = power ** f32(gam / 2)
  image *= f32(gain)
  image *= gamma_speckle(rng_speckle, shape, looks=p["looks"], sigma_px=tuple(p["psf_px"]))
  np.clip(image, 0.0, 1.0, out=image)

  calc_arr = np.array([[(uc - u1[0]) / s, dc / s - 0.5, k, r_c]
                       for uc, dc, k, r_c, _, _ in calcs], np.float64).reshape(-1, 4)
  return MicroUSCase(
      image=image.astype(f32, copy=False),
      expert=expert.astype(np.uint8),
      non_expert=non_expert.astype(np.uint8),
      spacing=spacing3,
      affine=micro_us_affine((nx, ny), nz, (s, sz)),
      case_id=f"phantom-{int(seed):04d}",
      calcifications=calc_arr)
