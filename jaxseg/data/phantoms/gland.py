"""Synthetic axial T2-weighted prostate volumes with a whole-gland label.

Stands in for the PROSTATEx whole-gland masks of the Tversky-vs-BCE study
(seed ``002``, REFERENCE §3): axial T2w slices of the male pelvis with one
binary label, 1 = prostate gland (peripheral + transition zone, capsule
included), 0 = everything else.

Geometry. As in `jaxseg.data.phantoms.pelvis`: NIfTI voxel order ``(x, y, z)``,
RAS+ affine ``diag(spacing)`` centred on the volume (`common.centred_affine`);
axis 0 left -> right, axis 1 posterior -> anterior, axis 2 inferior ->
superior. Anatomy is defined in millimetres, so any shape / spacing with the
same field of view renders the same case (anatomy, pose and deformation depend
only on the seed; textures and noise are drawn per resolution). The default
``128 x 128 x 16`` voxels of ``1.5 x 1.5 x 3 mm`` give a 192 x 192 x 48 mm
field of view: the in-plane field of view of PROSTATEx T2w (384 x 384 at
0.5 mm) at a third of the resolution, so that the gland covers the realistic
~1-6% of a slice (PROSTATEx: 1-6%, PROMISE12: median 2-10%). Render at
``shape=(384, 384, 16), spacing=(0.5, 0.5, 3.0)`` for full resolution.

Scene. The surroundings are those of the pelvis phantom, drawn with its
building blocks (`pelvis._draw_params` and its ``_paint_*`` functions): body
outline, muscles and the levator ani funnel around the apex, pelvic vessels,
the bony pelvis (pubic symphysis anterior, acetabula / femoral heads and
ischia laterally), the obturator internus lining the pelvic side wall, the
bladder anterior-superior to the gland, the rectum posterior, seminal vesicles
at the base and the neurovascular bundles. The gland is this module's own:

* size: an ellipsoid with semi-axes ``(a, b, c)`` (left-right, antero-
  posterior, cranio-caudal), ``a = 23 e``, ``b = 17 e``, ``c = 14.5 sqrt(e)``
  mm times up to +-8% jitter, with an enlargement factor ``e`` log-uniform in
  [0.8, 1.45] (mid-gland widths ~34-72 mm, lengths ~24-37 mm; ~10-65 ml);
* shape: flattened posteriorly (``b`` scaled by 0.6-0.92 behind the centre),
  in-plane axes scaled by ``1 + taper * z / c`` (narrow apex, wide base;
  ``taper`` 0.12-0.3), smooth lobulation of the normalised radius,
  ``rho = r / (1 + sum_k A_k cos(k theta + phi_k + w_k z / c))`` for
  ``k = 2..5`` (``A_k <= 0.05 / sqrt(k)``), and a posterior midline
  indentation (rectal impression). Being an ellipsoid, it shrinks to nothing
  toward the apex and the base, within the default 16-slice field of view
  (8-15 slices hold gland; a few voxels reach an end slice in ~8% of the
  cases);
* pose: tilted 5-20 degrees about the left-right axis, yawed up to 6 degrees,
  with the whole scene moved so that the gland centre lies up to 14 mm (left-
  right), 12 mm (antero-posterior) and 1.5 mm (cranio-caudal) off the centre of
  the field of view; a smooth random deformation (std 0.8-1.8 mm, correlation
  40 mm) on top, applied to the sampling coordinates (image and label deform
  identically);
* zones (texture only, one label): a transition zone (inner, anterior-superior
  ellipsoid, larger in enlarged glands; darker, heterogeneous, with BPH
  nodules), the peripheral zone around it (brighter), the anterior
  fibromuscular stroma (dark) and a capsule rim whose darkness varies;
* contrast: over the soft tissue within ``w`` = 2-6 mm of the gland (fat,
  venous plexus, levator), the image is blended toward
  ``pz + kappa (fat - pz)`` with weight ``1 - d / w`` (``d`` = distance to the
  gland); ``kappa`` is below 0.25 in ~35% of the cases (the gland edge nearly
  vanishes) and 0.4-1 otherwise; zone signals vary per case (PZ 0.45-0.78,
  TZ 0.28-0.48), and the levator ani (muscle) abuts the apex with a similarly
  low contrast;
* endorectal coil (25% of the cases): a distended, air-filled (signal void)
  rectal balloon that flattens the posterior gland, and the coil's bright near
  field, a multiplicative ``1 + A exp(-d / lambda)`` (``A`` 0.8-2.5,
  ``lambda`` 12-25 mm, ``d`` = distance to the coil behind the gland);
* acquisition: tissue gains, a 0.45-0.6 mm point-spread blur, a
  multiplicative bias field (``exp`` of a smooth field, log-std 0.08-0.25) and
  Rician noise (``sigma`` 0.012-0.05 of the urine signal).

Use `make_gland_case` for the case alone and `make_gland_scene` to get the
tissue map too (tests, figures). Intensities are float32 in arbitrary units
(urine ~1, fat ~0.8, muscle ~0.25), before any normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from jaxseg.data.phantoms import common
from jaxseg.data.phantoms import pelvis

# The pelvis phantom's building blocks are reused on purpose (one home for the
# surrounding anatomy); they are private to it, hence:
# pylint: disable=protected-access

__all__ = [
    "GLAND_PHANTOM_SHAPE",
    "GLAND_PHANTOM_SPACING",
    "TISSUE_NAMES",
    "make_gland_case",
    "make_gland_scene",
]

GLAND_PHANTOM_SHAPE = (128, 128, 16)
GLAND_PHANTOM_SPACING = (1.5, 1.5, 3.0)
_DEFAULT_FOV_HALF = (96.0, 96.0, 24.0)

# Tissues added to the pelvis phantom's table: name, mean (None: drawn per
# case), fine (2.5 mm) and medium (7 mm) multiplicative texture amplitudes.
# The pelvis phantom's "tz" and "capsule" tissues are reused with per-case
# means (the gland's PZ is this table's "pz").
_GLAND_TISSUES = (
    ("pz",        None, 0.10, 0.10),
    ("coil_void", 0.02, 0.20, 0.10),
)
_N_PELVIS = len(pelvis._TISSUES)
_PZ, _COIL_VOID = range(_N_PELVIS, _N_PELVIS + len(_GLAND_TISSUES))
TISSUE_NAMES = tuple(t[0] for t in pelvis._TISSUES) + tuple(
    t[0] for t in _GLAND_TISSUES)
"""Names of the tissue indices returned by `make_gland_scene`."""

_FINE = np.concatenate([pelvis._TISSUE_FINE,
                        np.float32([t[2] for t in _GLAND_TISSUES])])
_MED = np.concatenate([pelvis._TISSUE_MED,
                       np.float32([t[3] for t in _GLAND_TISSUES])])
_FINE[pelvis._TZ], _MED[pelvis._TZ] = 0.12, 0.16  # heterogeneous BPH
_MAX_NODULES = 6


def _u(rng: np.random.Generator, lo, hi, size=None):
  """Uniform draw(s) in ``[lo, hi)``."""
  return rng.uniform(lo, hi, size)


def _draw_gland_params(rng: np.random.Generator) -> dict:
  """All scalar parameters of the gland and acquisition, in fixed order."""
  g = {}
  enl = float(np.exp(_u(rng, np.log(0.8), np.log(1.45))))
  g["enl"] = enl
  g["a"] = 23.0 * enl * _u(rng, 0.92, 1.08)
  g["b"] = 17.0 * enl * _u(rng, 0.92, 1.08)
  g["c"] = 14.5 * np.sqrt(enl) * _u(rng, 0.92, 1.06)
  g["coil"] = bool(rng.uniform() < 0.25)
  g["post_flat"] = _u(rng, 0.6, 0.72) if g["coil"] else _u(rng, 0.75, 0.92)
  g["taper"] = _u(rng, 0.12, 0.3)
  g["tilt"] = _u(rng, 5.0, 20.0)
  g["yaw"] = _u(rng, -6.0, 6.0)
  k = np.arange(2, 6)
  g["lob_k"] = k
  g["lob_amp"] = _u(rng, 0.0, 0.05, k.size) / np.sqrt(k)
  g["lob_phase"] = _u(rng, 0.0, 2 * np.pi, k.size)
  g["lob_twist"] = _u(rng, -1.0, 1.0, k.size)
  g["dimple"] = _u(rng, 0.0, 0.15)
  g["dimple_w"] = _u(rng, 0.2, 0.35)
  g["afms_mm"] = _u(rng, 2.0, 5.0)
  g["tz_frac"] = float(np.clip(_u(rng, 0.45, 0.62) + 0.35 * (enl - 1.0),
                               0.4, 0.8))
  g["tz_frac_z"] = _u(rng, 0.55, 0.72)
  g["n_nodules"] = int(rng.integers(0, _MAX_NODULES + 1))
  g["nodules"] = _u(rng, -1.0, 1.0, size=(_MAX_NODULES, 5))
  # Where the gland centre lands in the field of view (mm).
  g["offset_mm"] = _u(rng, [-14.0, -12.0, -1.5], [14.0, 12.0, 1.5])
  # Intensities and contrast.
  g["pz_mean"] = _u(rng, 0.45, 0.78)
  g["tz_mean"] = _u(rng, 0.28, 0.48)
  g["capsule_dark"] = _u(rng, 0.0, 0.6)
  low = bool(rng.uniform() < 0.35)
  g["kappa"] = _u(rng, 0.0, 0.25) if low else _u(rng, 0.4, 1.0)
  g["band_mm"] = _u(rng, 2.0, 6.0)
  # Endorectal coil.
  g["coil_rectum_r"] = _u(rng, 14.0, 17.0)
  g["coil_gain"] = _u(rng, 0.8, 2.5)
  g["coil_decay_mm"] = _u(rng, 12.0, 25.0)
  # Acquisition.
  g["deform_mm"] = _u(rng, 0.8, 1.8)
  g["noise_sigma"] = _u(rng, 0.012, 0.05)
  g["bias_log_std"] = _u(rng, 0.08, 0.25)
  # Rectal wall and gap to the gland with a coil (distended, thin wall).
  g["coil_wall_mm"] = _u(rng, 1.5, 2.5)
  g["coil_gap_mm"] = _u(rng, 0.5, 1.5)
  return g


def _scene_params(rng_pelvis: np.random.Generator,
                  rng_gland: np.random.Generator) -> tuple[dict, dict]:
  """Pelvis-phantom parameters made consistent with the drawn gland.

  The pelvis phantom positions bladder, rectum, seminal vesicles, NVBs and the
  levator ani relative to its ``p["prostate"]`` entry; overriding it with the
  gland's size and pose keeps the neighbours hugging the gland.
  """
  p = pelvis._draw_params(rng_pelvis)
  g = _draw_gland_params(rng_gland)
  pr = p["prostate"]
  for key in ("a", "b", "c", "post_flat", "taper", "tilt", "yaw"):
    pr[key] = g[key]
  if g["coil"]:  # Distended, air-filled rectum around the balloon.
    p["rectum"].update(r=g["coil_rectum_r"], collapsed=False, air=-1e3,
                       wall=g["coil_wall_mm"], gap=g["coil_gap_mm"])
  # Global translation so that the gland centre lands at offset_mm:
  # anatomy point x appears at R x + t.
  rot = common.rotation_matrix(p["rot_deg"])
  p["shift_mm"] = g["offset_mm"] - rot @ pr["center"]
  return p, g


def _lattice_half_extent(fov_half: Sequence[float],
                         correlation_mm: float) -> list[float]:
  """Control-lattice half-extent covering at least the default field of view.

  Same role as in the pelvis phantom, for this phantom's default field of
  view (192 x 192 x 48 mm): a seed gives the same smooth fields at every
  shape / spacing whose field of view fits in it.
  """
  return [max(h, d) + 1.5 * correlation_mm + 1.0
          for h, d in zip(fov_half, _DEFAULT_FOV_HALF)]


def _gland_sdf(loc: common.Coords, g: dict, *,
               frac: Sequence[float] = (1.0, 1.0, 1.0),
               offset: Sequence[float] = (0.0, 0.0, 0.0),
               lobulate: bool = True) -> np.ndarray:
  """Approximate signed distance (mm) to the lobulated, tapered gland.

  In the gland frame (``x`` lateral, ``y`` anterior, ``z`` along the gland's
  long axis) with semi-axes ``frac * (a, b, c)``::

    s   = 1 + taper * clip(z / c, -1, 1)          (narrow apex, wide base)
    r   = ||(x / (a s), y / (b' s), z / c)||,  b' = b (y > 0), b post_flat
          (s frozen beyond |z| = c)
    rho = r / L(theta, z) + D exp(-(x / (w a))^2) clip(-y / b', 0, 1)
    sd  = (rho - 1) * min(a, b', c)

  with the lobulation ``L = 1 + sum_k A_k cos(k theta + phi_k + w_k z / c)``
  (``theta = atan2(y, x)``) and a posterior midline indentation of depth
  ``D``. Negative inside; the zero level set is the gland surface.
  """
  x, y, z = (l - np.float32(o) for l, o in zip(loc, offset))
  a, b, c = g["a"] * frac[0], g["b"] * frac[1], g["c"] * frac[2]
  bp = b * g["post_flat"]
  zn = np.clip(z / np.float32(c), -1.0, 1.0)
  s = 1.0 + np.float32(g["taper"]) * zn
  b_eff = np.where(y > 0, np.float32(b), np.float32(bp))
  r = np.sqrt((x / (np.float32(a) * s))**2 + (y / (b_eff * s))**2 + zn**2 +
              np.maximum(np.abs(z / np.float32(c)) - 1.0, 0.0)**2)
  if lobulate:
    theta = np.arctan2(y, x)
    lob = np.ones_like(r)
    for k, amp, ph, tw in zip(g["lob_k"], g["lob_amp"], g["lob_phase"],
                              g["lob_twist"]):
      lob += np.float32(amp) * np.cos(np.float32(k) * theta +
                                      np.float32(ph) + np.float32(tw) * zn)
    r = r / lob
    w = np.float32(g["dimple_w"] * a)
    r = r + np.float32(g["dimple"]) * np.exp(-(x / w)**2) * np.clip(
        -y / np.float32(bp), 0.0, 1.0)
  return (r - 1.0) * np.float32(min(a, bp, c))


def _paint_gland(canvas: common.Canvas, p: dict, g: dict, rot: np.ndarray
                 ) -> tuple[np.ndarray, tuple[slice, slice, slice],
                            np.ndarray]:
  """Paints PZ / TZ (+ nodules) / AFMS / capsule.

  Returns:
    ``(label, slices, band)``: the uint8 gland label, and the weight
    ``clip(1 - sd / band_mm, 0, 1)`` (on ``slices``) of the periprostatic band
    over soft tissue (fat, muscle, vessels) outside the gland.
  """
  pr = p["prostate"]
  # Bounding radius of the gland and its band (``sd`` is in units of the
  # shortest semi-axis, so ``sd <= band_mm`` reaches up to ``band_mm *
  # longest / shortest`` mm away along the longest axis).
  lob_max = 1.0 + float(np.sum(g["lob_amp"]))
  longest = max(g["a"] * (1 + g["taper"]), g["b"], g["c"])
  shortest = min(g["a"], g["b"] * g["post_flat"], g["c"])
  r = (longest * lob_max + g["band_mm"] * longest / shortest) * 1.1
  sl, sub = canvas.region(pr["center"] - r, pr["center"] + r)
  loc = common.transform_coords(sub, rotation=rot, translation=pr["center"])
  sd = _gland_sdf(loc, g)
  inside = sd <= 0
  soft = np.isin(canvas.tissue[sl], (pelvis._FAT, pelvis._MUSCLE,
                                     pelvis._VESSEL_DARK,
                                     pelvis._VESSEL_BRIGHT))
  band = np.where(soft & ~inside,
                  np.clip(1.0 - sd / np.float32(g["band_mm"]), 0.0, 1.0),
                  np.float32(0.0)).astype(np.float32)
  canvas.paint(sl, inside, tissue=_PZ)
  f, fz = g["tz_frac"], g["tz_frac_z"]
  tz_off = (0.0, 0.12 * g["b"], 0.15 * g["c"])
  tz_sd = _gland_sdf(loc, g, frac=(f, f, fz), offset=tz_off, lobulate=False)
  canvas.paint(sl, inside & (tz_sd <= 0), tissue=pelvis._TZ)
  # BPH nodules inside the TZ.
  tz_semi = np.array([g["a"] * f, g["b"] * f, g["c"] * fz])
  for k in range(g["n_nodules"]):
    u = g["nodules"][k]
    centre = np.array(tz_off) + 0.5 * u[:3] * tz_semi
    rad = (2.5 + 2.0 * (u[3] + 1)) * np.sqrt(g["enl"])
    d2 = sum((l - np.float32(cc))**2 for l, cc in zip(loc, centre))
    nod = (d2 <= np.float32(rad * rad)) & (tz_sd <= -1.0)
    canvas.paint(sl, nod, tissue=pelvis._TZ_NODULE_BRIGHT if u[4] > 0 else
                 pelvis._TZ_NODULE_DARK)
  # Anterior fibromuscular stroma: a crescent under the anterior surface,
  # thinning laterally.
  thick = np.float32(g["afms_mm"]) * np.exp(
      -(loc[0] / np.float32(0.45 * g["a"]))**2)
  canvas.paint(sl, inside & (loc[1] > 0) & (sd > -thick), tissue=pelvis._AFMS)
  canvas.paint(sl, inside & (sd > -1.0), tissue=pelvis._CAPSULE)
  label = np.zeros(canvas.shape, np.uint8)
  label[sl][inside] = 1
  return label, sl, band


def _coil_points(p: dict, g: dict) -> np.ndarray:
  """The coil: a short segment in the rectum just behind the gland."""
  pts, rads = pelvis._rectum_centreline(p)
  pr = p["prostate"]
  c = pr["center"]
  half = 0.6 * g["c"]
  zs = np.array([c[2] - half, c[2] + half])
  y = np.interp(zs, pts[:, 2], pts[:, 1]) + 0.3 * np.interp(zs, pts[:, 2], rads)
  x = np.interp(zs, pts[:, 2], pts[:, 0])
  return np.stack([x, y, zs], axis=1)


def _paint_coil(canvas: common.Canvas, p: dict, g: dict) -> None:
  """Signal-void balloon filling the distended rectal lumen at gland level."""
  pts, rads = pelvis._rectum_centreline(p)
  re = p["rectum"]
  scale = (re["ratio"], 1.0, 1.0)
  c = p["prostate"]["center"]
  lo = np.array([-60.0, pts[:, 1].min() - 30, c[2] - 1.2 * g["c"]])
  hi = np.array([60.0, pts[:, 1].max() + 30, c[2] + 1.2 * g["c"]])
  sl, sub = canvas.region(lo, hi)
  lumen = common.tube_sdf(sub, points=pts, radius=rads - re["wall"],
                          axis_scale=scale) <= 0
  in_z = np.abs(sub[2] - np.float32(c[2])) <= np.float32(1.1 * g["c"])
  canvas.paint(sl, lumen & in_z, tissue=_COIL_VOID)


def _check_seed(seed) -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise ValueError(f"seed must be an int, got {seed!r}.")
  if seed < 0:
    raise ValueError(f"seed must be >= 0, got {seed}.")
  return int(seed)


def make_gland_scene(seed: int, *,
                     shape: Sequence[int] = GLAND_PHANTOM_SHAPE,
                     spacing: Sequence[float] = GLAND_PHANTOM_SPACING
                     ) -> tuple[common.PhantomCase, np.ndarray]:
  """`make_gland_case` plus the tissue map it was rendered from.

  Args:
    seed: non-negative integer; the output is a pure function of it.
    shape: volume shape ``(nx, ny, nz)``.
    spacing: voxel size ``(sx, sy, sz)`` in mm.

  Returns:
    ``(case, tissue)``: the `common.PhantomCase` and a uint8 ``(x, y, z)`` map
    of tissue indices into `TISSUE_NAMES` (e.g. ``"urine"`` for the bladder,
    ``"rectal_wall"``, ``"pz"``).

  Raises:
    ValueError: for a negative / non-integer seed or a bad shape / spacing.
  """
  seed = _check_seed(seed)
  shape, spacing = common.check_shape_spacing(shape, spacing)
  # Independent streams: anatomy and deformation do not depend on the shape.
  rng_pel, rng_gl, rng_def, rng_tex, rng_bias, rng_noise = (
      np.random.default_rng(s)
      for s in np.random.SeedSequence([int(seed), 2]).spawn(6))
  p, g = _scene_params(rng_pel, rng_gl)

  fov_half = [(n - 1) / 2.0 * s for n, s in zip(shape, spacing)]
  grid = common.mm_grid(shape, spacing)
  rot_g = common.rotation_matrix(p["rot_deg"])
  q = common.transform_coords(grid, rotation=rot_g, translation=p["shift_mm"])
  del grid
  corr = 40.0
  u = common.random_displacement_field(
      rng_def, shape, spacing, correlation_mm=corr,
      magnitude_mm=g["deform_mm"],
      half_extent_mm=_lattice_half_extent(fov_half, corr))
  q = tuple(qi + ui for qi, ui in zip(q, u))
  del u
  canvas = common.Canvas(q, spacing=spacing)
  tex = tuple(
      common.smooth_random_field(rng_tex, shape, spacing, correlation_mm=c)
      for c in (2.5, 7.0))

  rot_p = common.rotation_matrix((g["tilt"], 0.0, g["yaw"]))
  pelvis._paint_body_and_muscles(canvas, p)
  pelvis._paint_vessels(canvas, p)
  pelvis._paint_obturator(canvas, p)
  pelvis._paint_bladder(canvas, p, tex)
  pelvis._paint_bones(canvas, p)
  pelvis._paint_rectum(canvas, p, tex)
  if g["coil"]:
    _paint_coil(canvas, p, g)
  pelvis._paint_sv(canvas, p, tex, rot_p)
  pelvis._paint_nvb(canvas, p, rot_p)
  label, band_sl, band = _paint_gland(canvas, p, g, rot_p)

  # Intensities: per-tissue mean with multiplicative textures.
  fat = pelvis._TISSUE_MEAN[pelvis._FAT] * p["tissue_gain"][pelvis._FAT]
  mean = np.concatenate([pelvis._TISSUE_MEAN * p["tissue_gain"],
                         [g["pz_mean"], _GLAND_TISSUES[-1][1]]])
  mean[pelvis._TZ] = g["tz_mean"]
  mean[pelvis._CAPSULE] = g["pz_mean"] * (1.0 - g["capsule_dark"])
  mean = mean.astype(np.float32)
  t = canvas.tissue
  image = mean[t] * (1.0 + _FINE[t] * tex[0] + _MED[t] * tex[1])
  # Periprostatic band: blend toward pz + kappa (fat - pz), fading outwards.
  peri = np.float32(g["pz_mean"] + g["kappa"] * (fat - g["pz_mean"]))
  peri = peri * (1.0 + np.float32(0.12) * tex[1][band_sl])
  image[band_sl] += band * (peri - image[band_sl])
  # Lobulated SV fluid with thin dark septa (as in the pelvis phantom).
  sv = t == pelvis._SV
  image[sv] *= 1.0 - 0.45 * np.exp(-(tex[0][sv] / np.float32(0.25))**2)
  np.maximum(image, 0.0, out=image)
  # Point-spread blur, bias field, coil near field, Rician noise.
  blur_mm = np.array([0.45, 0.45, 0.6])
  image = ndimage.gaussian_filter(image, sigma=blur_mm / np.array(spacing),
                                  mode="nearest", truncate=3.0)
  image *= common.random_bias_field(
      rng_bias, shape, spacing, correlation_mm=120.0,
      log_std=g["bias_log_std"],
      half_extent_mm=_lattice_half_extent(fov_half, 120.0))
  if g["coil"]:
    d = common.tube_sdf(q, points=_coil_points(p, g), radius=0.0)
    image *= 1.0 + np.float32(g["coil_gain"]) * np.exp(
        -d / np.float32(g["coil_decay_mm"]))
  image = common.add_rician_noise(rng_noise, image, sigma=g["noise_sigma"])
  case = common.PhantomCase(
      image=image.astype(np.float32, copy=False),
      label=label,
      spacing=spacing,
      affine=common.centred_affine(shape, spacing),
      case_id=f"gland-{seed:04d}")
  return case, t


def make_gland_case(seed: int, *,
                    shape: Sequence[int] = GLAND_PHANTOM_SHAPE,
                    spacing: Sequence[float] = GLAND_PHANTOM_SPACING
                    ) -> common.PhantomCase:
  """Generates one synthetic axial T2w prostate case (module docstring).

  Args:
    seed: non-negative integer; the case is a pure function of it (bitwise
      identical output for the same seed, shape and spacing).
    shape: volume shape ``(nx, ny, nz)``; default 128 x 128 x 16.
    spacing: voxel size ``(sx, sy, sz)`` in mm; default 1.5 x 1.5 x 3 (a
      192 x 192 x 48 mm field of view, as PROSTATEx in-plane).

  Returns:
    A `common.PhantomCase` with a float32 image, a uint8 label (1 = prostate
    gland, 0 = background), the spacing, a centred ``diag(spacing)`` affine
    and ``case_id = f"gland-{seed:04d}"``.

  Raises:
    ValueError: for a negative / non-integer seed or a bad shape / spacing.
  """
  return make_gland_scene(seed, shape=shape, spacing=spacing)[0]
