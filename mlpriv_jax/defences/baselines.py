"""The baseline output defences: top-k, rounding, label-only, logit noise, reverse sigmoid."""

import jax
import jax.numpy as jnp

from mlpriv_jax.defences.base import Defence, safe_log, stateless
from mlpriv_jax.errors import UserError, integer


def _num_classes(probs, k, what):
  c = probs.shape[-1]
  if k > c:
    raise UserError(f"{what}: k={k} exceeds the number of classes C={c}")
  return c


def top_k(k: int) -> Defence:
  """Releases the k largest probabilities, renormalised; the rest are zero."""
  k = integer(k, "top_k: k")

  def fn(x, probs, key):
    _num_classes(probs, k, "top_k")
    # Ranks, not a threshold: with ties a threshold would keep more than k.
    ranks = jnp.argsort(jnp.argsort(-probs, axis=-1), axis=-1)
    kept = jnp.where(ranks < k, probs, 0.0)
    return kept / kept.sum(-1, keepdims=True)
  return stateless(fn, f"top{k}")


def rounding(decimals: int) -> Defence:
  """Rounds each probability to `decimals` places (Tramer et al. 2016).

  Keeps the top-1 label: if rounding ties the top class with another, the top
  entry is raised by one unit (10**-decimals). The sum then lies within
  (C/2 + 1) * 10**-decimals of one, not exactly on the simplex.
  """
  decimals = integer(decimals, "rounding: decimals", at_least=0)
  unit = 10.0 ** -decimals

  def fn(x, probs, key):
    r = jnp.round(probs / unit) * unit
    top = probs.argmax(-1)
    onehot = jax.nn.one_hot(top, probs.shape[-1], dtype=probs.dtype)
    rival = jnp.where(onehot > 0, -jnp.inf, r).max(-1)
    top_r = jnp.take_along_axis(r, top[:, None], -1)[:, 0]
    return r + onehot * (unit * (top_r <= rival))[:, None]
  return stateless(fn, f"round{decimals}")


def label_only() -> Defence:
  """Releases only the top-1 label, as a one-hot vector."""
  return stateless(lambda x, probs, key: jax.nn.one_hot(probs.argmax(-1), probs.shape[-1], dtype=probs.dtype),
                   "label")


def logit_noise(scale: float, kind: str = "gaussian") -> Defence:
  """Adds Gaussian or Laplace noise of the given scale to the logits log(p)."""
  if not scale >= 0:
    raise UserError(f"logit_noise: scale must be >= 0, got {scale}")
  if kind not in ("gaussian", "laplace"):
    raise UserError(f"logit_noise: unknown kind {kind!r}; known: gaussian, laplace")
  sample = jax.random.normal if kind == "gaussian" else jax.random.laplace

  def fn(x, probs, key):
    return jax.nn.softmax(safe_log(probs) + scale * sample(key, probs.shape))
  return stateless(fn, f"{kind}{scale:g}")


def reverse_sigmoid(beta: float = 1.0, gamma: float = 0.1) -> Defence:
  """Reverse sigmoid (Lee et al. 2019, Eq. 2): y - beta * (sigmoid(gamma * logit(y)) - 1/2), normalised.

  As ART does: y clipped to [1e-9, 1 - 1e-9] before the logit, the result clipped
  to [0, 1], then normalised (an all-zero row falls back to uniform). With
  beta = gamma = 1 every entry becomes 1/2 (uniform output): sweep beta with gamma < 1.
  The map is not monotone, so the top-1 label can change (Lee et al. 2019, Sec. 4).
  """
  if not beta > 0 or not gamma > 0:
    raise UserError(f"reverse_sigmoid: beta and gamma must be > 0, got {beta}, {gamma}")

  def fn(x, probs, key):
    y = jnp.clip(probs, 1e-9, 1 - 1e-9)
    r = jnp.clip(y - beta * (jax.nn.sigmoid(gamma * (jnp.log(y) - jnp.log1p(-y))) - 0.5), 0.0, 1.0)
    s = r.sum(-1, keepdims=True)
    return jnp.where(s > 0, r / jnp.where(s > 0, s, 1.0), 1.0 / probs.shape[-1])
  return stateless(fn, f"revsig{beta:g}_{gamma:g}")
