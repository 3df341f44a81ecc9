"""On-device augmentation: pure functions of a key.

Images travel as uint8 NHWC and become f32 in [0, 1] here; per-channel
normalisation happens inside the model (see `models/architectures.py`).
"""

import jax
import jax.numpy as jnp
from jax import lax


def to_float(images_u8):
  """uint8[..., H, W, C] -> f32 in [0, 1]."""
  return images_u8.astype(jnp.float32) / 255.0


def random_crop_flip(key, images, pad: int = 4):
  """Reflect-pad by `pad`, take a random crop of the original size, flip half.

  The standard CIFAR augmentation (He et al. 2016, Sec. 4.2).

  Args:
    key: a PRNG key.
    images: f32[N, H, W, C].
  Returns:
    f32[N, H, W, C].
  """
  n, h, w, c = images.shape
  k_y, k_x, k_f = jax.random.split(key, 3)
  dy = jax.random.randint(k_y, (n,), 0, 2 * pad + 1)
  dx = jax.random.randint(k_x, (n,), 0, 2 * pad + 1)
  flip = jax.random.bernoulli(k_f, 0.5, (n,))
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")

  def one(img, y0, x0, f):
    crop = lax.dynamic_slice(img, (y0, x0, 0), (h, w, c))
    return jnp.where(f, crop[:, ::-1, :], crop)

  return jax.vmap(one)(padded, dy, dx, flip)


def hflip(images):
  """Mirror f[..., H, W, C] on the width axis."""
  return images[..., :, ::-1, :]


def shift(images, dy: int, dx: int, pad: int = 4):
  """Deterministic reflect-padded translation by (dy, dx) pixels, |d| <= pad."""
  h, w = images.shape[-3], images.shape[-2]
  padded = jnp.pad(images, [(0, 0)] * (images.ndim - 3) + [(pad, pad), (pad, pad), (0, 0)], mode="reflect")
  return padded[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w, :]
