"""Synthetic biparametric prostate MRI (T2W, high-b DWI, ADC) with zones and csPCa lesions.

Stands in for the ProstateX / PI-CAI bpMRI exams of the anatomical-vs-diagnostic study (seed
``001``, Saha et al., REFERENCE §2): one patient = three co-registered channels, a zonal label
map and a mask of clinically significant prostate cancer (csPCa, ISUP grade group >= 2).

Outputs (`BpmriCase`), NIfTI voxel order ``(x, y, z)``, RAS+ affine ``diag(spacing)`` centred on
the volume (`common.centred_affine`):

* ``image`` float32 ``(x, y, z, 3)``, channels `CHANNELS` = (T2W, DWI at b = `B_VALUE` s/mm^2,
  ADC in um^2/s = 1e-6 mm^2/s, the unit of the PI-CAI / ProstateX ADC maps), raw (not
  normalised; the ``prostatex_bpmri`` builder z-scores T2W / DWI and divides ADC by 3000);
* ``zones`` uint8: `ZONE_CLASSES` = {0 background, 1 TZ, 2 PZ} -- the class order of the
  anatomical task of the project (REFERENCE §2). **PI-CAI zonal files use the opposite order**
  (``zonal_pz_tz``: 1 = PZ, 2 = TZ); readers of those files must remap them (the builder does);
* ``lesions`` uint8 0/1 (csPCa), ``lesion_index`` uint8 (0 = none, ``k`` = the k-th lesion, whose
  ISUP grade is ``lesion_isup[k - 1]``), ``patient_label`` = 1 iff any csPCa voxel exists.

Anatomy (reused, not redrawn). T2W image, surroundings and gland geometry are those of
`jaxseg.data.phantoms.gland` (`gland.make_gland_scene` with the same seed: bladder, rectum,
pelvic bones and muscles, seminal vesicles, a lobulated tapered gland with BPH nodules, anterior
fibromuscular stroma and endorectal coil in 25% of the cases). Zones are read from the gland
phantom's own geometry in its gland frame (``x`` lateral, ``y`` anterior, ``z`` long axis):
TZ = inside the transition-zone ellipsoid (central, anterior and cranial; larger in enlarged
glands) or the anterior fibromuscular stroma (counted with the TZ, as zonal delineations do);
PZ = the rest of the gland, a posterior-lateral crescent that thins anteriorly (anterior horns)
and dominates at the apex. The capsule rim belongs to the zone it bounds. (The TZ is ~25-45%
of the gland here, a little less than in the enlarged glands of PI-CAI.) Seed ``k`` has the
anatomy of ``gland-{k:04d}``; the gland frame is rebuilt from the gland phantom's parameters and
random streams, and a change there that breaks the match raises a RuntimeError.

Lesions (a pure function of the seed, placed in the gland frame in millimetres, so the same
seed gives the same lesions at every shape / spacing):

* count 0 / 1 / 2 / 3 with probabilities 0.5 / 0.3 / 0.15 / 0.05 (half of the patients have
  no csPCa);
* zone PZ with probability 0.7, else TZ; the centre is drawn uniformly in that zone (rejection
  sampling against the gland's signed distances), within the middle 80% of the gland length,
  at least ``r_i + r_j + 1`` mm from other lesions;
* ISUP 2 / 3 / 4 / 5 with probabilities 0.45 / 0.3 / 0.15 / 0.1; diameter uniform in
  [3, 15] mm, semi-axes jittered by 0.75-1.25, random orientation, and with probability 0.6 a
  satellite lobe (irregular outline); the mask is confined to the lesion's zone (PZ tumours
  spread along the PZ crescent). A lesion that covers no voxel centre at a coarse resolution
  gets its deepest voxel (if within one voxel size of the lesion); one outside the field of
  view is dropped (and so is its ISUP).
* appearance, blended in with a soft edge (1 mm): ADC lowered to 950-1200 (ISUP 2),
  850-1100 (3), 750-1000 (4), 650-900 um^2/s (5) against a normal PZ of 1500-1900 and TZ of
  1150-1450; bright on DWI as a consequence (``S0 exp(-b ADC)``); T2W darkened by 12-30%
  (subtle: the gland phantom's TZ and nodules are dark too).

Benign confounders, so that detection is not trivial: 0-3 stromal BPH nodules in the TZ
(radius 2.5-6 mm, ADC 1050-1300, T2W darker by 10-30%: mildly DWI-bright, overlapping low-grade
TZ cancers) on top of the gland phantom's own nodules, and 0-2 flat prostatitis-like foci in the
PZ (ADC 1150-1400, T2W darker by 10-25%). With the partial volume of the blurred gland edge,
the darkest 2% of the gland's ADC outside lesions is typically below the lesions' mean ADC, and
its brightest 2% of DWI near the lesions' mean: thresholding does not find the lesions.

DWI / ADC synthesis. Every tissue of the gland scene has an ADC and a b = 0 signal ``S0``
(fat-suppressed: fat and marrow dark; urine, seminal vesicles and PZ bright); the high-b image
is ``S0 exp(-b ADC)`` with ``b = 1400 s/mm^2`` (the PI-CAI ``hbv``), so low-ADC tissue (tumour)
is bright, free water (urine) dark. Both maps get a mild texture, then the lower native
resolution of echo-planar DWI (2 x 2 x 3 mm in PI-CAI) is simulated by a Gaussian point-spread
blur of 1.0 mm (in-plane) and 0.5 mm (through-plane) standard deviation, plus a small rigid
in-plane misregistration (<= 1 mm, as between the T2W and EPI series of real exams). DWI gets a
smooth bias field (log-std 0.1) and Rician noise (sigma 0.006-0.012 against a PZ signal of
~0.07); the ADC map Gaussian noise (std 40-90 um^2/s), clipped at 0. Both noises are spatially
correlated like the coarse EPI voxels (white noise through the same blur, rescaled to the
stated std). Background (air, bone cortex, coil) has ADC ~0 as on scanner maps.

Field of view. The default ``192 x 192 x 20`` voxels of ``0.5 x 0.5 x 3 mm`` (the study's native
grid) cover 96 x 96 x 60 mm around the gland: the builder's default centre crop of 160 x 160 x 20
(80 x 80 x 60 mm) fits, and so do CPU-sized crops at a coarser spacing (e.g. 64 x 64 x 12 at
1.25 x 1.25 x 4 mm = 80 x 80 x 48 mm). Anatomy is in millimetres: render directly at a coarse
``spacing`` with a ``shape`` giving the same field of view (e.g. ``(64, 64, 20)`` at
``(1.5, 1.5, 3.0)``) for fast tests. About 0.5 s per case at the default size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from jaxseg.data.phantoms import common
from jaxseg.data.phantoms import gland
from jaxseg.data.preprocess import validate_spacing

# The gland phantom's geometry (its parameters, signed distances and random streams) is reused
# on purpose, so that there is one prostate in the project: pylint: disable=protected-access

__all__ = [
    "BPMRI_PHANTOM_SHAPE",
    "BPMRI_PHANTOM_SPACING",
    "B_VALUE",
    "BpmriCase",
    "CHANNELS",
    "ZONE_CLASSES",
    "make_bpmri_case",
    "planned_patient_label",
]

BPMRI_PHANTOM_SHAPE = (192, 192, 20)
BPMRI_PHANTOM_SPACING = (0.5, 0.5, 3.0)
CHANNELS = ("t2w", "dwi", "adc")
"""Channel order of `BpmriCase.image`: T2W, high-b DWI, ADC (um^2/s)."""
ZONE_CLASSES = ("background", "tz", "pz")
"""Zonal classes of `BpmriCase.zones` (REFERENCE §2); PI-CAI files use 1 = PZ, 2 = TZ."""
B_VALUE = 1400.0
"""b-value (s/mm^2) of the simulated high-b DWI channel (the PI-CAI ``hbv``)."""

_LESION_COUNT_P = (0.5, 0.3, 0.15, 0.05)
_ISUP = (2, 3, 4, 5)
_ISUP_P = (0.45, 0.3, 0.15, 0.1)
_ISUP_ADC = {2: (950.0, 1200.0), 3: (850.0, 1100.0), 4: (750.0, 1000.0), 5: (650.0, 900.0)}
_P_PZ = 0.7
_TZ, _PZ = 1, 2
_EDGE_MM = 1.0          # width of the soft lesion edge in the intensities
_DWI_PSF_MM = (1.0, 1.0, 0.5)
_MAX_SHIFT_MM = 1.0
_N_CANDIDATES = 4096    # points per rejection-sampling batch (fixed: keeps draws shape-free)

# Per gland-scene tissue: ADC (um^2/s) and b = 0 signal (fat-suppressed), by name.
_DIFFUSION = {
    "air": (0.0, 0.0), "fat": (200.0, 0.03), "skin": (1100.0, 0.25),
    "muscle": (1400.0, 0.3), "cortex": (0.0, 0.01), "marrow": (450.0, 0.1),
    "cartilage": (1500.0, 0.3), "urine": (2900.0, 1.0), "bladder_wall": (1500.0, 0.35),
    "tz": (None, 0.5), "tz_nodule_bright": (1650.0, 0.6), "tz_nodule_dark": (1150.0, 0.45),
    "cg": (1250.0, 0.5), "afms": (1150.0, 0.35), "capsule": (1400.0, 0.4),
    "sv": (2000.0, 0.9), "rectal_wall": (1300.0, 0.4), "rectal_air": (0.0, 0.0),
    "rectal_content": (1200.0, 0.45), "nvb": (1700.0, 0.4), "vessel_dark": (2200.0, 0.1),
    "vessel_bright": (2000.0, 0.4), "pz": (None, 0.7), "coil_void": (0.0, 0.0),
}


@dataclasses.dataclass(frozen=True)
class BpmriCase:
  """One synthetic bpMRI patient.

  Attributes:
    image: float32 ``(x, y, z, 3)``, channels `CHANNELS` (T2W, DWI, ADC in um^2/s).
    zones: uint8 ``(x, y, z)``: 0 background, 1 TZ, 2 PZ (`ZONE_CLASSES`).
    lesions: uint8 ``(x, y, z)`` csPCa mask (0/1), inside the gland.
    lesion_index: uint8 ``(x, y, z)``: 0 outside lesions, ``k`` inside the k-th lesion.
    lesion_isup: ISUP grade group (2-5) of each lesion, in the order of ``lesion_index``.
    patient_label: 1 if the patient has csPCa (any lesion voxel), else 0.
    spacing: voxel size ``(sx, sy, sz)`` in mm.
    affine: float64 (4, 4) voxel-to-world matrix (mm).
    case_id: ``f"bpmri-{seed:04d}"``.
  """

  image: np.ndarray
  zones: np.ndarray
  lesions: np.ndarray
  lesion_index: np.ndarray
  lesion_isup: tuple[int, ...]
  patient_label: int
  spacing: tuple[float, float, float]
  affine: np.ndarray
  case_id: str

  def __post_init__(self):
    if self.image.ndim != 4 or self.image.shape[-1] != len(CHANNELS):
      raise ValueError(f"image must be (x, y, z, 3), got shape {self.image.shape}.")
    if self.image.dtype != np.float32:
      raise ValueError(f"image must be float32, got {self.image.dtype}.")
    for name in ("zones", "lesions", "lesion_index"):
      arr = getattr(self, name)
      if arr.shape != self.image.shape[:3] or arr.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 of shape {self.image.shape[:3]}, got "
                         f"{arr.dtype} {arr.shape}.")
    if int(self.lesion_index.max(initial=0)) != len(self.lesion_isup):
      raise ValueError("lesion_index and lesion_isup disagree.")
    if self.patient_label != int(bool(self.lesions.any())):
      raise ValueError("patient_label must be 1 iff the lesion mask is non-empty.")
    validate_spacing(self.spacing)
    if np.asarray(self.affine).shape != (4, 4):
      raise ValueError(f"affine must be (4, 4), got {np.shape(self.affine)}.")


def _streams(seed: int) -> list[np.random.Generator]:
  """This phantom's own random streams (the gland scene uses ``SeedSequence([seed, 2])``)."""
  return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, 4]).spawn(6)]


def planned_patient_label(seed: int) -> int:
  """The patient label of ``make_bpmri_case(seed)`` as planned, without rendering it.

  It is the number of csPCa lesions drawn for the seed, > 0. The rendered case agrees unless
  every planned lesion falls outside a (small) field of view. Cheap: used to stratify splits.
  """
  seed = gland._check_seed(seed)
  return int(_draw_count(_streams(seed)[0]) > 0)


def _draw_count(rng: np.random.Generator) -> int:
  return int(rng.choice(len(_LESION_COUNT_P), p=_LESION_COUNT_P))


def _gland_frame_sdfs(loc: common.Coords, g: dict) -> tuple[np.ndarray, np.ndarray]:
  """Signed distances (mm) to the gland and to the transition-zone ellipsoid at ``loc``."""
  sd = gland._gland_sdf(loc, g)
  f, fz = g["tz_frac"], g["tz_frac_z"]
  tz_sd = gland._gland_sdf(loc, g, frac=(f, f, fz), offset=_tz_offset(g), lobulate=False)
  return sd, tz_sd


def _tz_offset(g: dict) -> tuple[float, float, float]:
  return (0.0, 0.12 * g["b"], 0.15 * g["c"])


def _afms(loc: common.Coords, sd: np.ndarray, g: dict) -> np.ndarray:
  """The anterior fibromuscular stroma as painted by the gland phantom."""
  thick = np.float32(g["afms_mm"]) * np.exp(-(loc[0] / np.float32(0.45 * g["a"]))**2)
  return (loc[1] > 0) & (sd > -thick)


def _sample_centre(rng: np.random.Generator, g: dict, *, zone: int, margin: float,
                   placed: Sequence[tuple[np.ndarray, float]], radius: float
                   ) -> np.ndarray | None:
  """A point of ``zone`` (gland frame, mm) away from ``placed`` (centre, radius) blobs."""
  lob = 1.0 + float(np.sum(g["lob_amp"]))
  half = np.array([g["a"] * (1.0 + g["taper"]) * lob, g["b"] * lob, 0.8 * g["c"]])
  for _ in range(4):
    pts = rng.uniform(-half, half, size=(_N_CANDIDATES, 3)).astype(np.float32)
    loc = (pts[:, 0], pts[:, 1], pts[:, 2])
    sd, tz_sd = _gland_frame_sdfs(loc, g)
    tz = (tz_sd <= 0) | _afms(loc, sd, g)
    ok = sd <= -margin
    ok &= (tz & (tz_sd <= -margin)) if zone == _TZ else (~tz & (tz_sd > margin))
    for centre, r in placed:
      ok &= np.linalg.norm(pts - centre[None].astype(np.float32), axis=1) >= r + radius + 1.0
    hits = np.flatnonzero(ok)
    if hits.size:
      return pts[hits[0]].astype(np.float64)
  return None


def _draw_blob(rng: np.random.Generator, radius: float, *, flat: float = 1.0,
               satellite_p: float = 0.0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Lobes ``(offset, semi_axes, rotation)`` of one blob of nominal ``radius`` (mm)."""
  semi = radius * rng.uniform(0.75, 1.25, 3) * np.array([1.0, flat, 1.0])
  rot = common.rotation_matrix(rng.uniform(-180.0, 180.0, 3))
  lobes = [(np.zeros(3), semi, rot)]
  has_sat = rng.uniform() < satellite_p
  direction = rng.normal(size=3)
  sat_semi = radius * rng.uniform(0.5, 0.8, 3)
  sat_rot = common.rotation_matrix(rng.uniform(-180.0, 180.0, 3))
  if has_sat:
    direction /= np.linalg.norm(direction) + 1e-12
    lobes.append((0.6 * radius * direction, sat_semi, sat_rot))
  return lobes


def _draw_plan(rng: np.random.Generator, g: dict) -> tuple[list[dict], list[dict]]:
  """Lesions and benign confounders in the gland frame (a function of the seed only)."""
  lesions: list[dict] = []
  placed: list[tuple[np.ndarray, float]] = []
  for _ in range(_draw_count(rng)):
    zone = _PZ if rng.uniform() < _P_PZ else _TZ
    isup = int(rng.choice(_ISUP, p=_ISUP_P))
    radius = 0.5 * rng.uniform(3.0, 15.0)
    lobes = _draw_blob(rng, radius, satellite_p=0.6)
    adc = rng.uniform(*_ISUP_ADC[isup])
    s0 = rng.uniform(0.5, 0.65)
    dark = rng.uniform(0.12, 0.3)
    margin = min(1.5, 0.3 * radius)
    centre = _sample_centre(rng, g, zone=zone, margin=margin, placed=placed, radius=radius)
    if centre is None:  # e.g. no room left in a small PZ: try the other zone.
      zone = _TZ + _PZ - zone
      centre = _sample_centre(rng, g, zone=zone, margin=margin, placed=placed, radius=radius)
    if centre is None:
      continue
    placed.append((centre, radius))
    lesions.append(dict(centre=centre, lobes=lobes, zone=zone, isup=isup, adc=adc, s0=s0,
                        dark=dark, radius=radius))
  benign: list[dict] = []
  n_bph, n_prostatitis = int(rng.integers(0, 4)), int(rng.integers(0, 3))
  for zone, n in ((_TZ, n_bph), (_PZ, n_prostatitis)):
    for _ in range(n):
      if zone == _TZ:
        radius = rng.uniform(2.5, 6.0)
        lobes = _draw_blob(rng, radius)
        adc, s0, dark = rng.uniform(1050.0, 1300.0), rng.uniform(0.45, 0.55), rng.uniform(
            0.1, 0.3)
      else:
        radius = rng.uniform(3.0, 8.0)
        lobes = _draw_blob(rng, radius, flat=0.45)
        adc, s0, dark = rng.uniform(1150.0, 1400.0), rng.uniform(0.5, 0.65), rng.uniform(
            0.1, 0.25)
      centre = _sample_centre(rng, g, zone=zone, margin=1.0, placed=placed, radius=radius)
      if centre is None:
        continue
      placed.append((centre, radius))
      benign.append(dict(centre=centre, lobes=lobes, zone=zone, adc=adc, s0=s0, dark=dark,
                         radius=radius))
  return lesions, benign


def _blob_sdf(loc: common.Coords, blob: dict) -> np.ndarray:
  """Signed distance (mm, approximate) to the union of a blob's ellipsoidal lobes."""
  out = None
  for offset, semi, rot in blob["lobes"]:
    sd = common.ellipsoid_sdf(loc, center=blob["centre"] + offset, semi_axes=semi,
                              rotation=rot)
    out = sd if out is None else np.minimum(out, sd)
  return out


def _blob_voxels(loc: common.Coords, blob: dict, pad: float) -> np.ndarray:
  """Flat indices of the voxels whose gland-frame position is in the blob's box + ``pad``."""
  reach = max(float(np.linalg.norm(off)) + float(np.max(semi))
              for off, semi, _ in blob["lobes"]) + pad
  c = blob["centre"]
  box = None
  for a in range(3):
    inside = np.abs(loc[a] - np.float32(c[a])) <= np.float32(reach)
    box = inside if box is None else box & inside
  return np.flatnonzero(box)


def _tissue_tables(pz_adc: float, tz_adc: float) -> tuple[np.ndarray, np.ndarray]:
  """ADC (um^2/s) and S0 per gland-scene tissue index (PZ / TZ ADC drawn per case)."""
  per_case = {"pz": pz_adc, "tz": tz_adc}
  adc = np.zeros(len(gland.TISSUE_NAMES), np.float32)
  s0 = np.zeros(len(gland.TISSUE_NAMES), np.float32)
  for i, name in enumerate(gland.TISSUE_NAMES):
    a, s = _DIFFUSION[name]
    adc[i] = per_case[name] if a is None else a
    s0[i] = s
  return adc, s0


def _correlated_noise(rng: np.random.Generator, shape: Sequence[int],
                      sigma_vox: np.ndarray) -> np.ndarray:
  """Gaussian noise smoothed by ``sigma_vox`` (voxels), rescaled to unit standard deviation."""
  n = ndimage.gaussian_filter(rng.standard_normal(tuple(shape), np.float32), sigma=sigma_vox,
                              mode="wrap", truncate=3.0)
  std = float(n.std())
  return n / np.float32(std) if std > 0 else n


def make_bpmri_case(seed: int, *,
                    shape: Sequence[int] = BPMRI_PHANTOM_SHAPE,
                    spacing: Sequence[float] = BPMRI_PHANTOM_SPACING) -> BpmriCase:
  """Generates one synthetic bpMRI patient (module docstring).

  Args:
    seed: non-negative integer; the case is a pure function of ``(seed, shape, spacing)``
      (anatomy and lesions of ``seed`` alone).
    shape: volume shape ``(nx, ny, nz)``; default 192 x 192 x 20.
    spacing: voxel size in mm; default 0.5 x 0.5 x 3 (a 96 x 96 x 60 mm field of view).

  Returns:
    A `BpmriCase` (``case_id = f"bpmri-{seed:04d}"``).

  Raises:
    ValueError: for a negative / non-integer seed or a bad shape / spacing.
  """
  seed = gland._check_seed(seed)
  shape, spacing = common.check_shape_spacing(shape, spacing)
  scene, tissue = gland.make_gland_scene(seed, shape=shape, spacing=spacing)
  t2w = scene.image
  in_gland = scene.label.astype(bool)

  # Gland-frame coordinates of every voxel, rebuilt exactly as `gland.make_gland_scene` does
  # (same random streams, same operations).
  rng_pel, rng_gl, rng_def = (np.random.default_rng(s) for s in
                              np.random.SeedSequence([seed, 2]).spawn(6)[:3])
  p, g = gland._scene_params(rng_pel, rng_gl)
  fov_half = [(n - 1) / 2.0 * s for n, s in zip(shape, spacing)]
  q = common.transform_coords(common.mm_grid(shape, spacing),
                              rotation=common.rotation_matrix(p["rot_deg"]),
                              translation=p["shift_mm"])
  u = common.random_displacement_field(
      rng_def, shape, spacing, correlation_mm=40.0, magnitude_mm=g["deform_mm"],
      half_extent_mm=gland._lattice_half_extent(fov_half, 40.0))
  q = tuple(qi + ui for qi, ui in zip(q, u))
  del u
  loc = common.transform_coords(q, rotation=common.rotation_matrix((g["tilt"], 0.0, g["yaw"])),
                                translation=p["prostate"]["center"])
  del q

  # Zones.
  gi = np.flatnonzero(in_gland)
  gloc = tuple(c.ravel()[gi] for c in loc)
  sd, tz_sd = _gland_frame_sdfs(gloc, g)
  if gi.size and float(sd.max()) > 1e-3:
    raise RuntimeError("bpmri: the gland phantom's geometry changed; the gland-frame "
                       "coordinates no longer match its label (update bpmri.make_bpmri_case).")
  zones = np.zeros(shape, np.uint8)
  zones.ravel()[gi] = np.where((tz_sd <= 0) | _afms(gloc, sd, g), _TZ, _PZ).astype(np.uint8)

  rng_plan, rng_tex, rng_bias, rng_noise, rng_adc, rng_shift = _streams(seed)
  lesion_plan, benign_plan = _draw_plan(rng_plan, g)

  # Rasterise: masks (lesions only) and soft weights (lesions and confounders).
  flat_zones = zones.ravel()
  lesion_index = np.zeros(shape, np.uint8)
  isup: list[int] = []
  blobs: list[tuple[dict, np.ndarray, np.ndarray]] = []  # (blob, voxel indices, weights)
  for blob in lesion_plan:
    idx = _blob_voxels(loc, blob, pad=_EDGE_MM)
    if idx.size == 0:
      continue  # outside the field of view
    bsd = _blob_sdf(tuple(c.ravel()[idx] for c in loc), blob)
    in_zone = flat_zones[idx] == blob["zone"]
    inside = (bsd <= 0) & in_zone
    if not inside.any():
      ok = np.flatnonzero(in_zone)
      if ok.size == 0:
        continue
      deepest = ok[np.argmin(bsd[ok])]
      if bsd[deepest] > max(spacing):
        continue
      inside[deepest] = True
    inside &= lesion_index.ravel()[idx] == 0  # (lesions are placed apart; never overlap)
    if not inside.any():
      continue
    lesion_index.ravel()[idx[inside]] = len(isup) + 1
    isup.append(blob["isup"])
    weight = np.clip(0.5 - bsd / _EDGE_MM, 0.0, 1.0) * in_zone
    blobs.append((blob, idx, np.maximum(weight, 0.5 * inside)))  # (a forced voxel: >= 0.5)
  for blob in benign_plan:
    idx = _blob_voxels(loc, blob, pad=_EDGE_MM)
    if idx.size:
      bsd = _blob_sdf(tuple(c.ravel()[idx] for c in loc), blob)
      in_zone = flat_zones[idx] == blob["zone"]
      blobs.append((blob, idx, np.clip(0.5 - bsd / _EDGE_MM, 0.0, 1.0) * in_zone))
  del loc

  # Diffusion maps of the normal tissue.
  pz_adc, tz_adc = rng_tex.uniform(1500.0, 1900.0), rng_tex.uniform(1150.0, 1450.0)
  adc_table, s0_table = _tissue_tables(pz_adc, tz_adc)
  tex = [common.smooth_random_field(rng_tex, shape, spacing, correlation_mm=c)
         for c in (2.5, 7.0)]
  adc = adc_table[tissue] * (1.0 + np.float32(0.04) * tex[0] + np.float32(0.06) * tex[1])
  s0 = s0_table[tissue] * (1.0 + np.float32(0.05) * tex[1])
  t2_gain = np.ones(shape, np.float32)
  for blob, idx, w in blobs:
    w = w.astype(np.float32)
    for arr, value in ((adc, blob["adc"]), (s0, blob["s0"])):
      flat = arr.ravel()
      flat[idx] += w * (np.float32(value) * (1.0 + np.float32(0.05) * tex[0].ravel()[idx])
                        - flat[idx])
    t2_gain.ravel()[idx] *= 1.0 - np.float32(blob["dark"]) * w
  t2w = t2w * t2_gain
  np.maximum(adc, 0.0, out=adc)
  dwi = s0 * np.exp(np.float32(-B_VALUE * 1e-6) * adc)

  # Lower native resolution of EPI, misregistration, bias and noise.
  sigma = np.asarray(_DWI_PSF_MM) / np.asarray(spacing)
  angle, radius = rng_shift.uniform(0.0, 2 * np.pi), _MAX_SHIFT_MM * np.sqrt(rng_shift.uniform())
  shift_vox = np.array([np.cos(angle), np.sin(angle), 0.0]) * radius / np.asarray(spacing)
  maps = []
  for arr in (dwi, adc):
    arr = ndimage.gaussian_filter(arr, sigma=sigma, mode="nearest", truncate=3.0)
    maps.append(ndimage.shift(arr, shift_vox, order=1, mode="nearest"))
  dwi, adc = maps
  dwi *= common.random_bias_field(rng_bias, shape, spacing, correlation_mm=120.0,
                                  log_std=0.1)
  # Noise of the coarse EPI voxels: white noise through the same point-spread blur.
  noise_sigma = np.float32(rng_noise.uniform(0.006, 0.012))
  re = dwi + noise_sigma * _correlated_noise(rng_noise, shape, sigma)
  im = noise_sigma * _correlated_noise(rng_noise, shape, sigma)
  dwi = np.sqrt(re * re + im * im)  # Rician magnitude (Gudbjartsson & Patz 1995)
  adc_noise = np.float32(rng_adc.uniform(40.0, 90.0))
  adc = np.maximum(adc + adc_noise * _correlated_noise(rng_adc, shape, sigma), 0.0)

  image = np.stack([t2w, dwi, adc], axis=-1).astype(np.float32, copy=False)
  lesions = (lesion_index > 0).astype(np.uint8)
  return BpmriCase(
      image=image,
      zones=zones,
      lesions=lesions,
      lesion_index=lesion_index,
      lesion_isup=tuple(isup),
      patient_label=int(bool(isup)),
      spacing=spacing,
      affine=scene.affine,
      case_id=f"bpmri-{seed:04d}",
  )
