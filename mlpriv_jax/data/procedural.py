"""Embedded procedural image datasets: no download, deterministic from a seed.

* `shapes10`: 10 classes of shapes (disk, square, ...) on smooth random
  backgrounds, 32x32x3. A small CNN learns it to about 90% in a minute on CPU.
  It plays the victim's private distribution (the role of CIFAR-10).
* `patterns20`: a *different* distribution (gratings, checkerboards, random
  strokes, random dots, and polygons the victim never saw), 20 fine classes in 5
  coarse families. Like CIFAR-100 for CIFAR-10, it shares low-level parts (edges,
  bars, round blobs) with the victim's classes without containing them. It
  plays the attacker's query pool (the role of CIFAR-100 for a CIFAR-10 victim);
  its coarse -> fine hierarchy feeds adaptive KnockoffNets.

Images are rendered from signed distance functions with anti-aliased edges,
random position, scale, rotation and colours, plus pixel noise.
"""

import numpy as np

SHAPES10_CLASSES = ("disk", "square", "triangle", "ring", "plus", "diamond", "bar", "dots", "x_cross",
                    "frame")
PATTERNS20_COARSE = ("grating", "checkerboard", "strokes", "dots", "polygon")
PATTERNS20_CLASSES = tuple(f"{family}_{i}" for family in PATTERNS20_COARSE for i in range(4))

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


def shapes10(num_examples: int, seed: int):
  """Renders `num_examples` shapes10 images; returns (uint8[N, 32, 32, 3], int64[N])."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, num_examples)
  images = _backgrounds(rng, num_examples)
  radius = rng.uniform(5.0, 10.0, num_examples).astype(np.float32)
  cy, cx = rng.uniform(11, 21, (2, num_examples)).astype(np.float32)
  rot = rng.uniform(-0.3, 0.3, num_examples).astype(np.float32)
  fg = _contrasting(rng, images.mean(axis=(1, 2)))
  for cls in range(10):
    (idx,) = np.nonzero(labels == cls)
    if not len(idx):
      continue
    dy, dx = _yy - cy[idx, None, None], _xx - cx[idx, None, None]
    c, s = np.cos(rot[idx])[:, None, None], np.sin(rot[idx])[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy
    mask = np.clip(0.5 - _shape_sdf(cls, u, v, radius[idx, None, None]), 0, 1)[..., None]
    images[idx] = images[idx] * (1 - mask) + fg[idx, None, None, :] * mask
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
