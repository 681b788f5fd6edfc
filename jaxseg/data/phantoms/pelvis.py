"""Synthetic 3D T2-weighted male-pelvis phantom with 9 exclusive labels.

Stands in for the "Cross-institution Male Pelvic Structures" data of the
hierarchical-loss study (seed ``000``; Zenodo 7013610): T2w MR at
0.75 x 0.75 x 3 mm with labels

  0 background, 1 bladder, 2 bone, 3 obturator internus, 4 transition zone
  (TZ), 5 central gland (CG), 6 rectum, 7 seminal vesicle (SV),
  8 neurovascular bundle (NVB).

Geometry. Volumes are in NIfTI voxel order ``(x, y, z)`` with a RAS+ affine
``diag(spacing)`` whose world origin is the volume centre
(`common.centred_affine`): axis 0 runs from the patient's left to right (the
phantom is near-symmetric, so left and right carry no label difference), axis 1
posterior -> anterior (higher index = more anterior), axis 2 inferior ->
superior (axial slices along the last axis). Anatomy is defined in
millimetres around that centre, so the field of view is ``shape * spacing``
(default 144 x 144 x 72 mm) and any shape / spacing with the same field of
view renders the same case at another resolution (anatomy, pose and
deformation depend only on the seed; textures and noise are drawn per
resolution).

Anatomy (anatomy frame, origin near the prostate; x lateral, y anterior,
z superior): a body outline (elliptic cylinder of fat with skin, air outside),
muscles (gluteus maximus, rectus abdominis, iliopsoas, obturator externus,
levator ani funnel; unlabelled, same T2 signal as the obturator internus) and
small pelvic vessels (dark flow voids or bright, NVB-like distractors); the
bony pelvis (pubic bodies either side of the symphysis, superior and inferior
pubic rami, acetabular walls with the femoral heads at the lateral edge,
ischia), each with dark cortex and intermediate marrow; the obturator internus
as a sheet lining the inner pelvic wall, medial to the bone; the prostate as a
tilted, tapered ellipsoid flattened posteriorly, whose inner ellipsoid is the
TZ (with BPH nodules) and the surrounding shell the CG (with anterior
fibromuscular stroma and a dark capsule); the bladder anterior-superior to it;
the rectum (wall + air / stool lumen) posterior, along a curved centreline;
paired seminal vesicles (flattened, lobulated tubes) superior-posterior to the
prostate between bladder base and rectum; and two thin (2.4-4 mm) NVBs running
cranio-caudally posterolateral to the prostate capsule.

Variation per seed: organ sizes (prostate enlargement, bladder filling,
rectal calibre and content), small pose changes (rotation up to ~6 degrees,
translation up to 4 mm), a smooth random deformation (std 1.5-3.5 mm,
correlation 40 mm) applied by moving the sampling coordinates (image and labels
deform identically), tissue intensity jitter, a multiplicative bias field and
Rician noise. The image is float32 in arbitrary units (urine ~1, fat ~0.8,
muscle ~0.25), before any normalisation.

Difficulty is by design: NVB ~0.1% of voxels, the prostate ~1-3%, and TZ, CG
and SV have close intensities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from jaxseg.data.phantoms import common

PELVIS_PHANTOM_SHAPE = (192, 192, 24)
PELVIS_PHANTOM_SPACING = (0.75, 0.75, 3.0)
PELVIS_CLASS_NAMES = ("background", "bladder", "bone", "obturator_internus",
                      "transition_zone", "central_gland", "rectum",
                      "seminal_vesicle", "neurovascular_bundle")
PELVIS_NUM_CLASSES = len(PELVIS_CLASS_NAMES)

(BACKGROUND, BLADDER, BONE, OBTURATOR, TZ, CG, RECTUM, SV,
 NVB) = range(PELVIS_NUM_CLASSES)

# Tissues (intensity classes, finer than the labels): T2-like mean signal and
# amplitudes of the fine (2.5 mm) and medium (7 mm) multiplicative textures.
_TISSUES = (
    # name            mean  fine  medium
    ("air",            0.00, 0.00, 0.00),
    ("fat",            0.80, 0.05, 0.05),
    ("skin",           0.45, 0.05, 0.03),
    ("muscle",         0.25, 0.10, 0.06),
    ("cortex",         0.07, 0.10, 0.05),
    ("marrow",         0.50, 0.12, 0.15),
    ("cartilage",      0.33, 0.05, 0.03),
    ("urine",          1.00, 0.02, 0.02),
    ("bladder_wall",   0.24, 0.08, 0.05),
    ("tz",             0.40, 0.12, 0.12),
    ("tz_nodule_bright", 0.52, 0.08, 0.05),
    ("tz_nodule_dark", 0.30, 0.08, 0.05),
    ("cg",             0.47, 0.08, 0.08),
    ("afms",           0.30, 0.10, 0.05),  # anterior fibromuscular stroma
    ("capsule",        0.28, 0.08, 0.03),
    ("sv",             0.55, 0.10, 0.10),
    ("rectal_wall",    0.22, 0.10, 0.05),
    ("rectal_air",     0.03, 0.20, 0.20),
    ("rectal_content", 0.42, 0.30, 0.25),
    ("nvb",            0.45, 0.35, 0.10),
    ("vessel_dark",    0.15, 0.20, 0.10),  # flow void
    ("vessel_bright",  0.70, 0.10, 0.10),  # slow flow
)
(_AIR, _FAT, _SKIN, _MUSCLE, _CORTEX, _MARROW, _CARTILAGE, _URINE,
 _BLADDER_WALL, _TZ, _TZ_NODULE_BRIGHT, _TZ_NODULE_DARK, _CG, _AFMS, _CAPSULE,
 _SV, _RECTAL_WALL, _RECTAL_AIR, _RECTAL_CONTENT, _NVB, _VESSEL_DARK,
 _VESSEL_BRIGHT) = range(len(_TISSUES))
_TISSUE_MEAN, _TISSUE_FINE, _TISSUE_MED = (
    np.array([t[i] for t in _TISSUES], np.float32) for i in (1, 2, 3))
_MAX_VESSELS = 28


def _u(rng: np.random.Generator, lo, hi, size=None):
  """Uniform draw(s) in ``[lo, hi)``."""
  return rng.uniform(lo, hi, size)


def _draw_params(rng: np.random.Generator) -> dict:
  """All scalar anatomy / acquisition parameters of one case, in fixed order."""
  p = {}
  p["rot_deg"] = _u(rng, [-5, -3, -6], [5, 3, 6])
  p["shift_mm"] = _u(rng, [-4, -4, -3], [4, 4, 3])
  p["deform_mm"] = _u(rng, 1.5, 3.5)
  # Body.
  p["body"] = dict(cy=_u(rng, -14, -8), ax=_u(rng, 92, 110),
                   ay_ant=_u(rng, 66, 78), ay_post=_u(rng, 85, 100),
                   subcut=_u(rng, 8, 18))
  # Bony pelvis.
  p["pelvis_width"] = _u(rng, 0.95, 1.07)
  p["pubis_y"] = _u(rng, 41, 47)
  p["cortex_mm"] = _u(rng, 1.5, 2.5)
  p["bone_jitter"] = _u(rng, -1.5, 1.5, size=(2, 3))
  # Obturator internus.
  p["obt_half"] = _u(rng, 3.5, 5.0, size=2)
  # Prostate.
  enl = _u(rng, 0.85, 1.3)
  p["prostate"] = dict(
      center=np.array([_u(rng, -1.5, 1.5), 4 + _u(rng, -3, 3),
                       -6 + _u(rng, -3, 3)]),
      a=21 * enl * _u(rng, 0.94, 1.06), b=15 * enl * _u(rng, 0.94, 1.06),
      c=17 * enl * _u(rng, 0.94, 1.06), post_flat=_u(rng, 0.78, 0.9),
      taper=_u(rng, 0.1, 0.22), tilt=_u(rng, 8, 22), yaw=_u(rng, -5, 5),
      tz_frac=np.clip(_u(rng, 0.5, 0.66) + 0.3 * (enl - 1), 0.45, 0.75),
      tz_frac_z=_u(rng, 0.55, 0.72), n_nodules=int(rng.integers(2, 8)),
      nodules=_u(rng, -1, 1, size=(8, 5)))
  # Bladder.
  fill = _u(rng, 0.55, 1.35)
  p["bladder"] = dict(
      semi=np.array([27, 21, 18]) * fill**0.7 * _u(rng, 0.92, 1.08, 3),
      dx=_u(rng, -2, 2), dy=_u(rng, 11, 16), tilt=_u(rng, -10, 10),
      wall=_u(rng, 2.0, 3.0) / fill**0.5, fill=fill)
  # Rectum.
  p["rectum"] = dict(r=_u(rng, 9, 13), ratio=_u(rng, 1.2, 1.6),
                     wall=_u(rng, 2.5, 4.0), gap=_u(rng, 1.5, 4.0),
                     dx=_u(rng, -4, 4, 3), air=_u(rng, -1.0, 1.5),
                     collapsed=bool(rng.uniform() < 0.3))
  # Seminal vesicles and NVBs (per side).
  p["sv"] = dict(length=_u(rng, 0.8, 1.2, 2), radius=_u(rng, 0.8, 1.2, 2),
                 rise=_u(rng, -3, 3, 2), depth=_u(rng, -2, 2, 2))
  p["nvb"] = dict(radius=_u(rng, 1.2, 2.0, 2), angle=_u(rng, 35, 50, 2),
                  offset=_u(rng, 0.5, 1.5, 2))
  # Pelvic vessels (unlabelled distractors, some NVB-like): per vessel
  # lateral / AP position, tilt, radius, brightness.
  p["n_vessels"] = int(rng.integers(10, _MAX_VESSELS + 1))
  p["vessels"] = _u(rng, 0.0, 1.0, size=(_MAX_VESSELS, 7))
  # Acquisition.
  p["tissue_gain"] = _u(rng, 0.93, 1.07, len(_TISSUE_MEAN))
  p["noise_sigma"] = _u(rng, 0.015, 0.035)
  p["bias_log_std"] = _u(rng, 0.08, 0.2)
  return p


def _lattice_half_extent(fov_half: Sequence[float],
                         correlation_mm: float) -> list[float]:
  """Control-lattice half-extent covering at least the default field of view.

  With it, a seed gives the same smooth field (deformation, bias) at every
  shape / spacing whose field of view fits in the default 144 x 144 x 72 mm.
  """
  default_half = (72.0, 72.0, 36.0)
  return [max(h, d) + 1.5 * correlation_mm + 1.0
          for h, d in zip(fov_half, default_half)]


def _tube_box(points, radius, scale=(1.0, 1.0, 1.0)):
  """Anatomy-frame bounding box of a tube."""
  pts = np.asarray(points, np.float64)
  pad = float(np.max(radius)) * np.asarray(scale, np.float64)
  return pts.min(0) - pad, pts.max(0) + pad


def _tube(canvas: common.Canvas, points, radius, scale=(1.0, 1.0, 1.0)):
  """(slices, sub-coordinates, signed distance) of a tube on its box."""
  lo, hi = _tube_box(points, radius, scale)
  sl, sub = canvas.region(lo, hi)
  return sl, sub, common.tube_sdf(sub, points=points, radius=radius,
                                  axis_scale=scale)


def _ellipsoid(canvas: common.Canvas, center, semi, rotation=None):
  """(slices, sub-coordinates, signed distance) of an ellipsoid on its box."""
  c = np.asarray(center, np.float64)
  r = float(np.max(semi))
  sl, sub = canvas.region(c - r, c + r)
  return sl, sub, common.ellipsoid_sdf(sub, center=center, semi_axes=semi,
                                       rotation=rotation)


def _prostate_local(sub: common.Coords, pr: dict,
                    rot: np.ndarray) -> common.Coords:
  """Prostate-frame coordinates (tilted about x, small yaw)."""
  return common.transform_coords(sub, rotation=rot,
                                 translation=pr["center"])


def _prostate_sdf(loc: common.Coords, pr: dict, *, offset=(0.0, 0.0, 0.0),
                  frac=(1.0, 1.0, 1.0)) -> np.ndarray:
  """Tapered ellipsoid, flatter posteriorly; approximate signed distance.

  Semi-axes ``frac * (a, b, c)`` (``b * post_flat`` behind the centre), the
  lateral one scaled by ``1 + taper * z / c`` (wider at the base).
  """
  x, y, z = (l - np.float32(o) for l, o in zip(loc, offset))
  a, b, c = pr["a"] * frac[0], pr["b"] * frac[1], pr["c"] * frac[2]
  taper = 1.0 + pr["taper"] * np.clip(loc[2] / np.float32(pr["c"]), -1, 1)
  b_eff = np.where(y > 0, np.float32(b), np.float32(b * pr["post_flat"]))
  r = np.sqrt((x / (a * taper))**2 + (y / b_eff)**2 + (z / np.float32(c))**2)
  return (r - 1.0) * np.float32(min(a, b * pr["post_flat"], c))


def _paint_body_and_muscles(canvas: common.Canvas, p: dict) -> None:
  """Body outline (fat, skin; air outside) and unlabelled muscles."""
  bd = p["body"]
  half = np.array([bd["ax"], max(bd["ay_ant"], bd["ay_post"]), 200.0])
  sl, (x, y, z) = canvas.region([-half[0], bd["cy"] - half[1], -200],
                                [half[0], bd["cy"] + half[1], 200])
  ay = np.where(y > bd["cy"], np.float32(bd["ay_ant"]),
                np.float32(bd["ay_post"]))
  r = np.sqrt((x / np.float32(bd["ax"]))**2 + ((y - bd["cy"]) / ay)**2)
  sd = (r - 1.0) * np.float32(bd["ay_ant"])
  canvas.paint(sl, sd <= 0, tissue=_FAT)
  canvas.paint(sl, (sd <= 0) & (sd > -1.5), tissue=_SKIN)
  y_ant = bd["cy"] + bd["ay_ant"]
  w = p["pelvis_width"]
  for s in (-1.0, 1.0):
    muscles = [
        # gluteus maximus, rectus abdominis, iliopsoas, pectineus and
        # obturator externus (outside the obturator membrane).
        ((s * 62 * w, -78.0, 0.0), (42.0, 30.0, 80.0)),
        ((s * 20, y_ant - bd["subcut"] - 5, 30.0), (15.0, 5.0, 32.0)),
        ((s * 60 * w, 44.0, 14.0), (13.0, 12.0, 30.0)),
        ((s * 44 * w, 34.0, -30.0), (13.0, 9.0, 12.0)),
        ((s * 58 * w, 16.0, -24.0), (9.0, 14.0, 14.0)),
    ]
    for center, semi in muscles:
      sl, _, sd = _ellipsoid(canvas, center, semi)
      canvas.paint(sl, sd <= 0, tissue=_MUSCLE)
  # Levator ani: a funnel (elliptic ring widening superiorly) around the
  # prostate apex and the anorectum, open anteriorly.
  pr = p["prostate"]
  zc = pr["center"][2]
  z_low = zc - 24.0
  yc = pr["center"][1] - 14.0
  sl, (x, y, z) = canvas.region([-50, -50, z_low - 14], [50, pr["center"][1] +
                                                         14, zc + 10])
  dz = np.clip(z - np.float32(z_low), -10, None)
  big_a = 20.0 + 0.6 * dz
  big_b = 18.0 + 0.35 * dz
  r = np.sqrt((x / big_a)**2 + ((y - np.float32(yc)) / big_b)**2)
  ring = (np.abs(r - 1.0) * big_b < 1.6) & (y < pr["center"][1])
  ring &= (z > z_low - 12) & (z < zc + 8)
  canvas.paint(sl, ring, tissue=_MUSCLE)


def _paint_vessels(canvas: common.Canvas, p: dict) -> None:
  """Small vessels running cranio-caudally through the pelvic fat."""
  for k in range(p["n_vessels"]):
    v = p["vessels"][k]
    side = -1.0 if v[0] < 0.5 else 1.0
    x0 = side * (12.0 + 32.0 * v[1])
    y0 = -35.0 + 70.0 * v[2]
    dx, dy = 12.0 * (v[3] - 0.5), 12.0 * (v[4] - 0.5)
    pts = [[x0 - dx, y0 - dy, -40.0], [x0, y0, 0.0], [x0 + dx, y0 + dy, 40.0]]
    rad = 0.8 + 2.2 * v[5]
    sl, _, sd = _tube(canvas, pts, rad)
    canvas.paint(sl, sd <= 0,
                 tissue=_VESSEL_BRIGHT if v[6] < 0.35 else _VESSEL_DARK)


def _paint_obturator(canvas: common.Canvas, p: dict) -> None:
  """Obturator internus: a sheet lining the inner pelvic wall (z-extruded)."""
  w = p["pelvis_width"]
  # Lateral surface (mm from the midline), from behind the pubis to the ischium.
  lateral = np.array([38.0, 47.0, 52.0, 52.0, 48.0, 43.0])
  ys = np.array([26.0, 19.0, 7.0, -6.0, -16.0, -22.0])
  taper = np.array([0.45, 0.8, 1.0, 1.0, 0.8, 0.5])
  for i, s in enumerate((-1.0, 1.0)):
    t = p["obt_half"][i]
    pts = np.stack([s * (lateral * w - t * taper), ys,
                    np.full_like(ys, -10.0)], 1)
    sl, sub, sd = _tube(canvas, pts, t * taper, scale=(1.0, 1.0, 1e3))
    sd = np.maximum(sd, np.abs(sub[2] + np.float32(10.0)) - np.float32(26.0))
    canvas.paint(sl, sd <= 0, tissue=_MUSCLE, label=OBTURATOR)


def _paint_bones(canvas: common.Canvas, p: dict) -> None:
  """Pubis, pubic rami, ischia, acetabula, femoral heads (cortex + marrow)."""
  w = p["pelvis_width"]
  py = p["pubis_y"]
  cortex = p["cortex_mm"]
  for i, s in enumerate((-1.0, 1.0)):
    j = p["bone_jitter"][i]
    parts = [
        # pubic body (oval, AP-elongated) beside the symphysis
        ([[s * 7.6, py, -36], [s * 7.6, py + 1, -4]], 8.0, (0.8, 1.3, 1.0)),
        # superior pubic ramus to the acetabulum
        ([[s * 8, py + 2, -6], [s * 28 * w, py - 3, 0],
          [s * 48 * w, py - 16, 4], [s * 62 * w, 12, 6]], 6.5,
         (1.0, 1.0, 1.0)),
        # inferior pubic ramus (leaves the field of view inferiorly)
        ([[s * 7, py - 2, -30], [s * 20 * w, py - 14, -38],
          [s * 32 * w, py - 26, -46]], 5.5, (1.0, 1.0, 1.0)),
        # ischium and ischial tuberosity
        ([[s * 56 * w, -2, 4], [s * 54 * w, -18, -22], [s * 51 * w, -30, -46]],
         8.0, (1.0, 1.0, 1.0)),
    ]
    for pts, rad, sc in parts:
      pts = np.asarray(pts, float) + j
      sl, _, sd = _tube(canvas, pts, rad, sc)
      canvas.paint(sl, sd <= 0, tissue=_MARROW, label=BONE)
      canvas.paint(sl, (sd <= 0) & (sd > -cortex), tissue=_CORTEX)
    # Acetabulum (medial wall + roof) around the femoral head.
    head_c = np.array([s * 86 * w, 12.0, 4.0]) + j
    acet_c = np.array([s * 70 * w, 10.0, 4.0]) + j
    sl, sub, sd = _ellipsoid(canvas, acet_c, (18.0, 24.0, 40.0))
    head = common.ellipsoid_sdf(sub, center=head_c, semi_axes=(23, 23, 23))
    acet = np.maximum(sd, -(head - np.float32(2.5)))
    canvas.paint(sl, acet <= 0, tissue=_MARROW, label=BONE)
    canvas.paint(sl, (acet <= 0) & (acet > -cortex), tissue=_CORTEX)
    canvas.paint(sl, (head > 0) & (head <= 2.5) & (sd <= 0),
                 tissue=_CARTILAGE, label=BACKGROUND)
    sl, _, head = _ellipsoid(canvas, head_c, (23.0, 23.0, 23.0))
    canvas.paint(sl, head <= 0, tissue=_MARROW, label=BONE)
    canvas.paint(sl, (head <= 0) & (head > -cortex), tissue=_CORTEX)


def _paint_bladder(canvas: common.Canvas, p: dict, tex) -> None:
  """Bladder (urine + dark wall) resting on the prostate base."""
  pr, bl = p["prostate"], p["bladder"]
  semi = bl["semi"]
  center = pr["center"] + np.array(
      [bl["dx"], bl["dy"], pr["c"] * 0.75 + semi[2] * 0.92])
  rot = common.rotation_matrix((bl["tilt"], 0.0, 0.0))
  sl, sub, sd = _ellipsoid(canvas, center, semi, rot)
  sd = sd + np.float32(0.8) * tex[1][sl]
  canvas.paint(sl, sd <= 0, tissue=_URINE, label=BLADDER)
  canvas.paint(sl, (sd <= 0) & (sd > -bl["wall"]), tissue=_BLADDER_WALL)


def _rectum_centreline(p: dict) -> tuple[np.ndarray, np.ndarray]:
  """Rectum centreline (curving posteriorly upwards) and per-vertex radii."""
  pr, re = p["prostate"], p["rectum"]
  c = pr["center"]
  yc = c[1] - pr["b"] * pr["post_flat"] - re["gap"] - re["r"]
  zs = np.array([-40.0, -20.0, 4.0, 24.0, 46.0])
  ys = np.array([-5.0, 0.0, 0.0, -5.0, -13.0]) + yc
  xs = np.array([0.0, 0.0, re["dx"][0], re["dx"][1], re["dx"][2]]) + c[0]
  rads = re["r"] * np.array([0.65, 0.95, 1.0, 1.0, 0.85])
  return np.stack([xs, ys, zs + c[2]], axis=1), rads


def _paint_rectum(canvas: common.Canvas, p: dict, tex) -> None:
  """Rectum: dark wall, lumen of air and / or stool (possibly collapsed)."""
  re = p["rectum"]
  pts, rads = _rectum_centreline(p)
  scale = (re["ratio"], 1.0, 1.0)
  sl, sub, sd = _tube(canvas, pts, rads, scale)
  inside = sd <= 0
  canvas.paint(sl, inside, label=RECTUM, tissue=_RECTAL_WALL)
  lumen_r = rads - re["wall"]
  if re["collapsed"]:
    lumen_r = np.maximum(rads * 0.3, 1.0)
  lumen = common.tube_sdf(sub, points=pts, radius=np.maximum(lumen_r, 0.5),
                          axis_scale=scale) <= 0
  air = tex[1][sl] > np.float32(re["air"])
  canvas.paint(sl, lumen & air, tissue=_RECTAL_AIR)
  canvas.paint(sl, lumen & ~air, tissue=_RECTAL_CONTENT)


def _local_to_world(pts_local, pr: dict, rot: np.ndarray) -> np.ndarray:
  """Prostate-frame points to the anatomy frame: ``R x + centre``."""
  return np.asarray(pts_local) @ rot.T + pr["center"]


def _paint_sv(canvas: common.Canvas, p: dict, tex, rot: np.ndarray) -> None:
  """Paired lobulated SVs from the prostate base, superolaterally backwards."""
  pr, sv = p["prostate"], p["sv"]
  b, c = pr["b"], pr["c"]
  for i, s in enumerate((-1.0, 1.0)):
    length, rise, depth = sv["length"][i], sv["rise"][i], sv["depth"][i]
    local = np.array([[4, -0.45 * b, 0.75 * c], [10, -0.65 * b, c + 3],
                      [18, -0.65 * b, c + 9], [26, -0.5 * b, c + 13]])
    local[:, 1] += depth
    local[1:, 2] += rise * np.array([0.3, 0.7, 1.0])
    local[1:] = local[0] + (local[1:] - local[0]) * length
    local[:, 0] *= s
    pts = _local_to_world(local, pr, rot)
    rad = np.array([3.0, 5.5, 6.5, 5.0]) * sv["radius"][i]
    sl, sub, sd = _tube(canvas, pts, rad, (1.0, 0.7, 1.0))
    sd = sd + np.float32(1.5) * tex[0][sl]
    canvas.paint(sl, sd <= 0, tissue=_SV, label=SV)


def _paint_nvb(canvas: common.Canvas, p: dict, rot: np.ndarray) -> None:
  """Thin NVB tubes hugging the posterolateral capsule, apex to base."""
  pr, nv = p["prostate"], p["nvb"]
  a, b, c = pr["a"], pr["b"] * pr["post_flat"], pr["c"]
  zl = np.linspace(-1.05, 1.0, 7) * c
  frac = np.sqrt(np.clip(1 - (zl / c)**2, 0.12, 1.0))
  taper = 1.0 + pr["taper"] * np.clip(zl / c, -1, 1)
  for i, s in enumerate((-1.0, 1.0)):
    th = np.deg2rad(nv["angle"][i])
    off = nv["radius"][i] + nv["offset"][i]
    xl = s * (a * taper * frac * np.sin(th) + off * np.sin(th) + 1.0)
    yl = -(b * frac * np.cos(th) + off * np.cos(th) + 1.0)
    pts = _local_to_world(np.stack([xl, yl, zl], 1), pr, rot)
    sl, _, sd = _tube(canvas, pts, nv["radius"][i])
    canvas.paint(sl, sd <= 0, tissue=_NVB, label=NVB)


def _paint_prostate(canvas: common.Canvas, p: dict, rot: np.ndarray) -> None:
  """CG shell (stroma, capsule) and inner TZ ellipsoid with BPH nodules."""
  pr = p["prostate"]
  r = max(pr["a"] * (1 + pr["taper"]), pr["b"], pr["c"])
  sl, sub = canvas.region(pr["center"] - r, pr["center"] + r)
  loc = _prostate_local(sub, pr, rot)
  sd = _prostate_sdf(loc, pr)
  inside = sd <= 0
  canvas.paint(sl, inside, tissue=_CG, label=CG)
  afms = inside & (loc[1] > np.float32(0.5 * pr["b"])) & (
      np.abs(loc[0]) < np.float32(0.55 * pr["a"]))
  canvas.paint(sl, afms, tissue=_AFMS)
  canvas.paint(sl, inside & (sd > -1.0), tissue=_CAPSULE)
  f, fz = pr["tz_frac"], pr["tz_frac_z"]
  tz_off = (0.0, 0.1 * pr["b"], 0.12 * pr["c"])
  tz_sd = _prostate_sdf(loc, pr, offset=tz_off, frac=(f, f, fz))
  canvas.paint(sl, tz_sd <= 0, tissue=_TZ, label=TZ)
  # BPH nodules inside the TZ.
  tz_semi = np.array([pr["a"] * f, pr["b"] * f, pr["c"] * fz])
  for k in range(pr["n_nodules"]):
    u = pr["nodules"][k]
    centre = np.array(tz_off) + 0.5 * u[:3] * tz_semi
    rad = 3.0 + 2.5 * (u[3] + 1)
    d2 = sum((l - np.float32(cc))**2 for l, cc in zip(loc, centre))
    nod = (d2 <= np.float32(rad * rad)) & (tz_sd <= -1.0)
    canvas.paint(sl, nod, tissue=_TZ_NODULE_BRIGHT if u[4] > 0 else
                 _TZ_NODULE_DARK)


def make_pelvis_case(seed: int, *,
                     shape: Sequence[int] = PELVIS_PHANTOM_SHAPE,
                     spacing: Sequence[float] = PELVIS_PHANTOM_SPACING
                     ) -> common.PhantomCase:
  """Generates one synthetic T2w male-pelvis case (see the module docstring).

  Args:
    seed: non-negative integer; the case is a pure function of it (bitwise
      identical output for the same seed, shape and spacing).
    shape: volume shape ``(nx, ny, nz)``.
    spacing: voxel size ``(sx, sy, sz)`` in mm; the field of view is
      ``shape * spacing`` around the anatomy centre.

  Returns:
    A `common.PhantomCase` with a float32 image, a uint8 label map (classes in
    `PELVIS_CLASS_NAMES` order), the spacing, a centred ``diag(spacing)``
    affine and ``case_id = f"phantom-{seed:04d}"``.

  Raises:
    ValueError: for a negative / non-integer seed or a bad shape / spacing.
  """
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise ValueError(f"seed must be an int, got {seed!r}.")
  if seed < 0:
    raise ValueError(f"seed must be >= 0, got {seed}.")
  shape, spacing = common.check_shape_spacing(shape, spacing)
  # Independent streams: anatomy and deformation do not depend on the shape.
  rng_par, rng_def, rng_tex, rng_bias, rng_noise = (
      np.random.default_rng(s)
      for s in np.random.SeedSequence(int(seed)).spawn(5))
  p = _draw_params(rng_par)

  # Sampling coordinates: global pose, then a smooth deformation (pull-back).
  fov_half = [(n - 1) / 2.0 * s for n, s in zip(shape, spacing)]
  grid = common.mm_grid(shape, spacing)
  rot_g = common.rotation_matrix(p["rot_deg"])
  q = common.transform_coords(grid, rotation=rot_g, translation=p["shift_mm"])
  del grid
  corr = 40.0
  ext = _lattice_half_extent(fov_half, corr)
  u = common.random_displacement_field(rng_def, shape, spacing,
                                       correlation_mm=corr,
                                       magnitude_mm=p["deform_mm"],
                                       half_extent_mm=ext)
  q = tuple(qi + ui for qi, ui in zip(q, u))
  del u
  canvas = common.Canvas(q, spacing=spacing)
  tex = tuple(
      common.smooth_random_field(rng_tex, shape, spacing, correlation_mm=c)
      for c in (2.5, 7.0))

  rot_p = common.rotation_matrix((p["prostate"]["tilt"], 0.0,
                                  p["prostate"]["yaw"]))
  _paint_body_and_muscles(canvas, p)
  _paint_vessels(canvas, p)
  _paint_obturator(canvas, p)
  _paint_bladder(canvas, p, tex)
  _paint_bones(canvas, p)
  _paint_rectum(canvas, p, tex)
  _paint_sv(canvas, p, tex, rot_p)
  _paint_nvb(canvas, p, rot_p)
  _paint_prostate(canvas, p, rot_p)

  # Intensities: per-tissue mean with multiplicative textures.
  t = canvas.tissue
  mean = (_TISSUE_MEAN * p["tissue_gain"]).astype(np.float32)
  image = mean[t] * (1.0 + _TISSUE_FINE[t] * tex[0] + _TISSUE_MED[t] * tex[1])
  # Lobulated SV fluid with thin dark septa.
  sv = t == _SV
  image[sv] *= 1.0 - 0.45 * np.exp(-(tex[0][sv] / np.float32(0.25))**2)
  np.maximum(image, 0.0, out=image)
  # Point-spread blur (partial volume), bias field, Rician noise.
  blur_mm = np.array([0.45, 0.45, 0.6])
  image = ndimage.gaussian_filter(image, sigma=blur_mm / np.array(spacing),
                                  mode="nearest", truncate=3.0)
  bias_ext = _lattice_half_extent(fov_half, 120.0)
  image *= common.random_bias_field(rng_bias, shape, spacing,
                                    correlation_mm=120.0,
                                    log_std=p["bias_log_std"],
                                    half_extent_mm=bias_ext)
  image = common.add_rician_noise(rng_noise, image, sigma=p["noise_sigma"])
  return common.PhantomCase(
      image=image.astype(np.float32, copy=False),
      label=canvas.label,
      spacing=spacing,
      affine=common.centred_affine(shape, spacing),
      case_id=f"phantom-{int(seed):04d}")
