"""Embedded procedural image datasets: no download, deterministic from a seed.

* `shapes10`: 10 classes of shapes (disk, square, ...) on smooth random
  backgrounds, 32x32x3. A small CNN learns it to about 90% in a minute on CPU.
  It plays the victim's private distribution (the role of CIFAR-10).
* `figures20`: the attacker's default query pool, in the relation CIFAR-100 has
  to CIFAR-10: the same visual world (solid figures on the same backgrounds,
  colours, scales and positions), other objects. 20 fine classes in 5 coarse
  groups (round, polygon, stroke, group, outline: e.g. crescent, star, zigzag,
  three dots, a ring with a gap), fully rotated, over faint textures and with
  small clutter. None of them is a shapes10 class as such, but each shares parts
  with some (an ellipse with the disk, a hollow triangle with the triangle and
  the frame, a tee with the plus), so a victim answers it with most of its
  classes and unconfidently, and those answers teach a surrogate its function.
* `patterns20`: a *farther* distribution (gratings, checkerboards, random
  strokes, random dots, polygons), 20 fine classes in 5 coarse families. It
  shares only low-level parts (edges, bars, round blobs) with the victim's
  classes; a confident victim answers it with a few classes, so it teaches a
  surrogate little (the hard case, like querying with textures).

Both pools carry a coarse -> fine hierarchy for adaptive KnockoffNets.
Images are rendered from signed distance functions with anti-aliased edges,
random position, scale, rotation and colours, plus pixel noise.
"""

import numpy as np

SHAPES10_CLASSES = ("disk", "square", "triangle", "ring", "plus", "diamond", "bar", "dots", "x_cross",
                    "frame")
PATTERNS20_COARSE = ("grating", "checkerboard", "strokes", "dots", "polygon")
PATTERNS20_CLASSES = tuple(f"{family}_{i}" for family in PATTERNS20_COARSE for i in range(4))
FIGURES20_COARSE = ("round", "polygon", "stroke", "group", "outline")
FIGURES20_CLASSES = ("ellipse", "half_disk", "crescent", "pie",
                     "pentagon", "hexagon", "rectangle", "star",
                     "ell", "tee", "chevron", "zigzag",
                     "snowman", "three_dots", "lollipop", "domino",
                     "hollow_triangle", "hollow_hexagon", "arc", "double_ring")

_SIZE = 32
_yy, _xx = np.mgrid[0:_SIZE, 0:_SIZE].astype(np.float32) + 0.5


def _polygon_sdf(u, v, n_sides, radius):
  """Approximate signed distance to a regular n-gon of circumradius `radius`."""
  rho = np.hypot(u, v)
  theta = np.arctan2(v, u)
  sector = 2 * np.pi / n_sides
  local = np.mod(theta, sector) - sector / 2
  return rho * np.cos(local) - radius * np.cos(np.pi / n_sides)


def _box(u, v, half_u, half_v):
  return np.maximum(np.abs(u) - half_u, np.abs(v) - half_v)


def _shape_sdf(cls, u, v, r):
  """Signed distance (pixels, negative inside) of shapes10 class `cls`."""
  rho = np.hypot(u, v)
  if cls == 0:
    return rho - r
  if cls == 1:
    return _box(u, v, 0.8 * r, 0.8 * r)
  if cls == 2:
    return _polygon_sdf(u, v, 3, r)
  if cls == 3:
    return np.abs(rho - 0.8 * r) - 0.25 * r
  if cls in (4, 8):
    if cls == 8:  # the plus turned by 45 degrees
      u, v = (u - v) / np.sqrt(2), (u + v) / np.sqrt(2)
    return np.minimum(_box(u, v, r, 0.28 * r), _box(u, v, 0.28 * r, r))
  if cls == 5:
    return (np.abs(u) + np.abs(v)) / np.sqrt(2) - 0.7 * r
  if cls == 6:
    return _box(u, v, 1.1 * r, 0.35 * r)
  if cls == 7:
    return np.minimum(np.hypot(u - 0.6 * r, v), np.hypot(u + 0.6 * r, v)) - 0.4 * r
  if cls == 9:
    return np.abs(np.maximum(np.abs(u), np.abs(v)) - 0.75 * r) - 0.18 * r
  raise ValueError(cls)


def _backgrounds(rng, n):
  """Smooth two-colour gradients, f32[n, 32, 32, 3] in [0, 1]."""
  c0, c1 = rng.uniform(0, 1, (2, n, 1, 1, 3)).astype(np.float32)
  angle = rng.uniform(0, 2 * np.pi, (n, 1, 1))
  t = ((_xx - 16) * np.cos(angle) + (_yy - 16) * np.sin(angle)) / 32 + 0.5
  t = np.clip(t, 0, 1)[..., None]
  return c0 * (1 - t) + c1 * t


def _contrasting(rng, background_mean):
  """A colour at least 0.35 away (per channel, cyclically) from the background."""
  offset = rng.uniform(0.35, 0.65, background_mean.shape).astype(np.float32)
  return np.mod(background_mean + offset, 1.0)


def _finish(rng, images, noise_std=0.04):
  images = images + rng.normal(0, noise_std, images.shape).astype(np.float32)
  return np.clip(np.round(images * 255), 0, 255).astype(np.uint8)


def _paint(images, labels, num_classes, sdf, fg, radius, cy, cx, rot):
  """Paints each image's figure `sdf(label, u, v, radius)` in colour fg, centred at (cy, cx), turned by rot; in place."""
  for cls in range(num_classes):
    (idx,) = np.nonzero(labels == cls)
    if not len(idx):
      continue
    dy, dx = _yy - cy[idx, None, None], _xx - cx[idx, None, None]
    c, s = np.cos(rot[idx])[:, None, None], np.sin(rot[idx])[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy
    mask = np.clip(0.5 - sdf(cls, u, v, radius[idx, None, None]), 0, 1)[..., None]
    images[idx] = images[idx] * (1 - mask) + fg[idx, None, None, :] * mask


def shapes10(num_examples: int, seed: int):
  """Renders `num_examples` shapes10 images; returns (uint8[N, 32, 32, 3], int64[N])."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, num_examples)
  images = _backgrounds(rng, num_examples)
  radius = rng.uniform(5.0, 10.0, num_examples).astype(np.float32)
  cy, cx = rng.uniform(11, 21, (2, num_examples)).astype(np.float32)
  rot = rng.uniform(-0.3, 0.3, num_examples).astype(np.float32)
  fg = _contrasting(rng, images.mean(axis=(1, 2)))
  _paint(images, labels, 10, _shape_sdf, fg, radius, cy, cx, rot)
  return _finish(rng, images), labels.astype(np.int64)


def _pattern_field(family, sub, rng, n):
  """Scalar pattern in [0, 1], f32[n, 32, 32], for family index and sub-class."""
  cy, cx = rng.uniform(8, 24, (2, n, 1, 1)).astype(np.float32)
  dy, dx = _yy - cy, _xx - cx
  phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
  if family == 0:  # gratings, 4 orientation bins
    angle = (sub + rng.uniform(-0.3, 0.3, (n, 1, 1))) * np.pi / 4
    freq = rng.uniform(0.25, 0.6, (n, 1, 1))
    return 0.5 + 0.5 * np.sin(freq * (dx * np.cos(angle) + dy * np.sin(angle)) + phase)
  if family == 1:  # checkerboards, 4 cell sizes
    cell = (2.5, 4.0, 6.0, 9.0)[sub] * rng.uniform(0.85, 1.15, (n, 1, 1))
    return ((np.floor(dx / cell) + np.floor(dy / cell)) % 2).astype(np.float32)
  if family == 2:  # 1..4 random strokes (bars of random length, width and orientation)
    sdf = np.full((n, _SIZE, _SIZE), np.inf, np.float32)
    for _ in range(sub + 1):
      by, bx = rng.uniform(6, 26, (2, n, 1, 1))
      ang = rng.uniform(0, np.pi, (n, 1, 1))
      half_len, half_w = rng.uniform(3, 11, (n, 1, 1)), rng.uniform(0.8, 2.5, (n, 1, 1))
      u = (_xx - bx) * np.cos(ang) + (_yy - by) * np.sin(ang)
      v = -(_xx - bx) * np.sin(ang) + (_yy - by) * np.cos(ang)
      sdf = np.minimum(sdf, _box(u, v, half_len, half_w))
    return np.clip(0.5 - sdf, 0, 1)
  if family == 3:  # 1..4 sharp dots of random size
    sdf = np.full((n, _SIZE, _SIZE), np.inf, np.float32)
    for _ in range(sub + 1):
      by, bx = rng.uniform(5, 27, (2, n, 1, 1))
      sdf = np.minimum(sdf, np.hypot(_yy - by, _xx - bx) - rng.uniform(1.5, 6.0, (n, 1, 1)))
    return np.clip(0.5 - sdf, 0, 1)
  # polygons with 5..8 sides, none of which is a shapes10 class
  radius = rng.uniform(6, 11, (n, 1, 1))
  rot = rng.uniform(0, 2 * np.pi, (n, 1, 1))
  c, s = np.cos(rot), np.sin(rot)
  return np.clip(0.5 - _polygon_sdf(c * dx + s * dy, -s * dx + c * dy, sub + 5, radius), 0, 1)


def patterns20(num_examples: int, seed: int):
  """Renders patterns20; returns (uint8[N, 32, 32, 3], fine int64[N], coarse int64[N])."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 20, num_examples)
  images = _backgrounds(rng, num_examples)
  fg = _contrasting(rng, images.mean(axis=(1, 2)))
  for cls in range(20):
    (idx,) = np.nonzero(labels == cls)
    if not len(idx):
      continue
    field = _pattern_field(cls // 4, cls % 4, rng, len(idx)).astype(np.float32)[..., None]
    images[idx] = images[idx] * (1 - field) + fg[idx, None, None, :] * field
  return _finish(rng, images), labels.astype(np.int64), (labels // 4).astype(np.int64)


def _segment(u, v, a, b):
  """Distance to the segment from point a to point b (tuples of pixel offsets)."""
  (au, av), (bu, bv) = a, b
  pu, pv, du, dv = u - au, v - av, bu - au, bv - av
  t = np.clip((pu * du + pv * dv) / (du * du + dv * dv), 0, 1)
  return np.hypot(pu - t * du, pv - t * dv)


def _strokes(u, v, r, points, width):
  """Signed distance to a polyline through `points` (in units of r), `width` r thick."""
  pts = [(pu * r, pv * r) for pu, pv in points]
  d = np.minimum.reduce([_segment(u, v, a, b) for a, b in zip(pts[:-1], pts[1:])])
  return d - width * r


def _star(rho, theta, r):
  """Approximate signed distance to a five-pointed star: tips at r, inner corners at 0.45 r."""
  a = np.abs(np.mod(theta + np.pi / 5, 2 * np.pi / 5) - np.pi / 5) / (np.pi / 5)
  return rho - r * (1.0 - 0.55 * a)


def _figure_sdf(cls, u, v, r):
  """Signed distance (pixels, negative inside) of figures20 class `cls`."""
  rho, theta = np.hypot(u, v), np.arctan2(v, u)
  if cls == 0:   # ellipse, aspect 1.8
    a, b = 1.05 * r, 0.58 * r
    return (np.hypot(u / a, v / b) - 1) * b
  if cls == 1:   # half disk
    return np.maximum(rho - r, -v)
  if cls == 2:   # crescent
    return np.maximum(rho - r, 0.85 * r - np.hypot(u - 0.5 * r, v))
  if cls == 3:   # pie: a disk with one quadrant cut out
    return np.maximum(rho - r, np.minimum(u, v))
  if cls == 4:
    return _polygon_sdf(u, v, 5, r)
  if cls == 5:
    return _polygon_sdf(u, v, 6, r)
  if cls == 6:   # rectangle, aspect 1.6 (shapes10's square is 1, its bar 3.1)
    return _box(u, v, 0.95 * r, 0.58 * r)
  if cls == 7:
    return _star(rho, theta, 1.1 * r)
  if cls == 8:
    return _strokes(u, v, r, [(-0.5, -0.8), (-0.5, 0.7), (0.6, 0.7)], 0.17)
  if cls == 9:
    return np.minimum(_strokes(u, v, r, [(-0.85, -0.7), (0.85, -0.7)], 0.17),
                      _strokes(u, v, r, [(0.0, -0.7), (0.0, 0.85)], 0.17))
  if cls == 10:
    return _strokes(u, v, r, [(-0.85, -0.6), (0.0, 0.6), (0.85, -0.6)], 0.17)
  if cls == 11:
    return _strokes(u, v, r, [(-0.95, -0.5), (-0.32, 0.5), (0.32, -0.5), (0.95, 0.5)], 0.14)
  if cls == 12:  # two touching disks of different sizes
    return np.minimum(np.hypot(u, v - 0.4 * r) - 0.6 * r, np.hypot(u, v + 0.6 * r) - 0.4 * r)
  if cls == 13:  # three dots on a triangle
    centres = [(0.65 * r * np.cos(a), 0.65 * r * np.sin(a)) for a in (np.pi / 2, 7 * np.pi / 6, 11 * np.pi / 6)]
    return np.minimum.reduce([np.hypot(u - cu, v - cv) for cu, cv in centres]) - 0.3 * r
  if cls == 14:  # a disk on a stick
    return np.minimum(np.hypot(u, v + 0.45 * r) - 0.5 * r, _strokes(u, v, r, [(0.0, 0.0), (0.0, 1.05)], 0.11))
  if cls == 15:  # a domino: a rectangle with two holes
    holes = np.minimum(np.hypot(u, v - 0.45 * r), np.hypot(u, v + 0.45 * r)) - 0.22 * r
    return np.maximum(_box(u, v, 0.5 * r, 0.98 * r), -holes)
  if cls == 16:
    return np.abs(_polygon_sdf(u, v, 3, 1.05 * r)) - 0.13 * r
  if cls == 17:
    return np.abs(_polygon_sdf(u, v, 6, 0.9 * r)) - 0.12 * r
  if cls == 18:  # a ring with a gap of a quarter turn
    ring = np.abs(rho - 0.75 * r) - 0.16 * r
    return np.where(np.abs(theta) < np.pi / 4, np.maximum(ring, 1.0), ring)
  if cls == 19:
    return np.minimum(np.abs(rho - 0.9 * r) - 0.1 * r, np.abs(rho - 0.4 * r) - 0.1 * r)
  raise ValueError(cls)


def _textures(rng, n):
  """Faint blocky noise or gratings, f32[n, 32, 32, 1] in [-1, 1]."""
  fine = np.repeat(np.repeat(rng.uniform(-1, 1, (n, 8, 8)), 4, axis=1), 4, axis=2)
  coarse = np.repeat(np.repeat(rng.uniform(-1, 1, (n, 4, 4)), 8, axis=1), 8, axis=2)
  blocks = np.where(rng.uniform(size=(n, 1, 1)) < 0.5, fine, coarse)
  angle, freq = rng.uniform(0, np.pi, (2, n, 1, 1))
  freq = 0.3 + freq / np.pi
  grating = np.sin(freq * (_xx * np.cos(angle) + _yy * np.sin(angle)))
  return np.where(rng.uniform(size=(n, 1, 1)) < 0.5, blocks, grating)[..., None].astype(np.float32)


def figures20(num_examples: int, seed: int):
  """Renders figures20; returns (uint8[N, 32, 32, 3], fine int64[N], coarse int64[N])."""
  rng = np.random.default_rng(seed)
  n = num_examples
  labels = rng.integers(0, 20, n)
  images = _backgrounds(rng, n)
  textured = rng.uniform(size=n) < 0.4
  contrast = rng.uniform(0.05, 0.15, (n, 1, 1, 1)).astype(np.float32)
  images = np.where(textured[:, None, None, None], images + contrast * _textures(rng, n), images)
  fg = _contrasting(rng, images.mean(axis=(1, 2)))
  radius = rng.uniform(4.0, 12.0, n).astype(np.float32)
  cy, cx = rng.uniform(10, 22, (2, n)).astype(np.float32)
  rot = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
  _paint(images, labels, 20, _figure_sdf, fg, radius, cy, cx, rot)
  # small clutter: a blob of another colour somewhere in 30% of the images
  (idx,) = np.nonzero(rng.uniform(size=n) < 0.3)
  by, bx = rng.uniform(3, 29, (2, len(idx), 1, 1)).astype(np.float32)
  blob = np.clip(0.5 - (np.hypot(_yy - by, _xx - bx) - rng.uniform(1.0, 2.5, (len(idx), 1, 1))), 0, 1)[..., None]
  colour = rng.uniform(0, 1, (len(idx), 1, 1, 3)).astype(np.float32)
  images[idx] = images[idx] * (1 - blob) + colour * blob
  images = np.clip(images, 0, 1)
  return _finish(rng, images), labels.astype(np.int64), (labels // 4).astype(np.int64)
