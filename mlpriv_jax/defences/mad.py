"""Prediction Poisoning, MAD and MAD-argmax (Orekondy, Schiele & Fritz, ICLR 2020).

The defender releases y~ instead of the victim's y so that an attacker's SGD step
on (x, y~) points away from its step on (x, y) (paper Eq. 4-6):

  max_{y~}  || G^T y~ / ||G^T y~|| - G^T y / ||G^T y|| ||^2   s.t. y~ in simplex, dist(y, y~) <= eps

with G the Jacobian of a proxy model's per-class NLL w.r.t. its last linear
layer (the reference code's `w_idx=-2`). For that layer, G^T y~ = vec((p - y~) h^T)
for any y~ on the simplex (p: the proxy's softmax, h: its features), so the
objective is 2 - 2 cos(p - y~, p - y) and h cancels (derived from the paper's Eq. 6;
tests/defences_test.py checks it against the explicit Jacobian). MAD is then O(C)
per candidate and batched over queries; the reference perturbs one query at a
time with C backward passes.

Oracle (reference `oracle='extreme'`, `objmax=True`): the vertex e_k maximising the
objective. MAD-argmax (`oracle='argmax'`): candidates 1_S / |S| with S containing
the top-1 class k* (plus 1e-5 on k*), all 2^(C-1) of them for C <= 12, else a
greedy growth of S. Then the line search y~ = (1 - a) y + a y*, with
a = min(eps / ||y - y*||_p, 1) for L1/L2 and 15 bisection steps for KL(y || y~).
"""

import itertools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax.defences.base import Defence, safe_log, stateless
from mlpriv_jax.errors import UserError

YDISTS = ("l1", "l2", "kl")


def angular_deviation(p, y, y_tilde):
  """Closed-form MAD objective ||G^T y~/|G^T y~| - G^T y/|G^T y|||^2 = 2 - 2 cos(p - y~, p - y)."""
  u, v = p - y_tilde, p - y
  cos = jnp.dot(u, v) / (jnp.linalg.norm(u) * jnp.linalg.norm(v) + 1e-12)
  return 2.0 - 2.0 * cos


def _distance(y, y_tilde, ydist):
  if ydist == "l1":
    return jnp.abs(y - y_tilde).sum(-1)
  if ydist == "l2":
    return jnp.linalg.norm(y - y_tilde, axis=-1)
  return (y * (safe_log(y) - safe_log(y_tilde))).sum(-1)


def _extreme_target(p, y):
  c = y.shape[-1]
  scores = jax.vmap(lambda e: angular_deviation(p, y, e))(jnp.eye(c, dtype=y.dtype))
  return jax.nn.one_hot(scores.argmax(), c, dtype=y.dtype)


def _subset_vertex(mask, top):
  bump = 1e-5 * jax.nn.one_hot(top, mask.shape[-1], dtype=mask.dtype)
  v = mask + bump.reshape((1,) * (mask.ndim - 1) + bump.shape)
  return v / v.sum(-1, keepdims=True)


def _argmax_target_enumerate(p, y, masks):
  top = y.argmax()
  cands = _subset_vertex(masks, top)                               # [2^C, C]
  scores = jax.vmap(lambda v: angular_deviation(p, y, v))(cands)
  scores = jnp.where(masks[:, top] > 0, scores, -jnp.inf)           # S must contain k*
  return cands[scores.argmax()]


def _argmax_target_greedy(p, y):
  """Greedy growth of S from {k*}: add the class that helps most, keep the best set seen."""
  c = y.shape[-1]
  top = y.argmax()
  mask0 = jax.nn.one_hot(top, c, dtype=y.dtype)
  best0 = _subset_vertex(mask0, top)

  def body(_, carry):
    mask, best, best_score = carry
    trial = jnp.clip(mask[None, :] + jnp.eye(c, dtype=y.dtype), 0, 1)     # add each class
    scores = jax.vmap(lambda m: angular_deviation(p, y, _subset_vertex(m, top)))(trial)
    scores = jnp.where(mask > 0, -jnp.inf, scores)
    j = scores.argmax()
    mask = trial[j]
    better = scores[j] > best_score
    return mask, jnp.where(better, _subset_vertex(mask, top), best), jnp.maximum(best_score, scores[j])

  _, best, _ = jax.lax.fori_loop(0, c - 1, body, (mask0, best0, angular_deviation(p, y, best0)))
  return best


def _line_search(y, target, epsilon, ydist):
  if ydist in ("l1", "l2"):
    alpha = jnp.clip(epsilon / (_distance(y, target, ydist) + 1e-7), 0.0, 1.0)
  else:
    def body(_, lohi):
      lo, hi = lohi
      mid = (lo + hi) / 2
      ok = _distance(y, (1 - mid) * y + mid * target, "kl") <= epsilon
      return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)
    full_ok = _distance(y, target, "kl") <= epsilon
    alpha = jnp.where(full_ok, 1.0, jax.lax.fori_loop(0, 15, body, (0.0, 1.0))[0])
  return (1 - alpha) * y + alpha * target


def mad(epsilon: float, proxy_probs: Callable, *, ydist: str = "l1", oracle: str = "extreme",
        max_enumerate_classes: int = 12) -> Defence:
  """Prediction Poisoning as a Defence.

  Args:
    epsilon: the perturbation budget in `ydist` (L1 <= 2 between distributions).
    proxy_probs: x f32[B, H, W, C] -> f32[B, C], the defender's proxy model (a
      random-init copy of the victim in the paper; `proxy_from_model`).
    ydist: 'l1', 'l2' or 'kl'.
    oracle: 'extreme' (MAD) or 'argmax' (MAD-argmax, keeps the top-1 label).
  """
  if not epsilon >= 0:
    raise UserError(f"mad: epsilon must be >= 0, got {epsilon}")
  if ydist not in YDISTS:
    raise UserError(f"mad: unknown ydist {ydist!r}; known: {', '.join(YDISTS)}")
  if oracle not in ("extreme", "argmax"):
    raise UserError(f"mad: unknown oracle {oracle!r}; known: extreme, argmax")

  def fn(x, probs, key):
    if epsilon == 0:
      return probs  # as the reference; float32 KL round-off would otherwise admit a tiny step
    p = proxy_probs(x)
    if p.shape != probs.shape:
      raise UserError(f"mad: the proxy gives {p.shape[-1]} classes, the victim {probs.shape[-1]}")
    c = probs.shape[-1]
    if oracle == "extreme":
      target = jax.vmap(_extreme_target)(p, probs)
    elif c <= max_enumerate_classes:
      masks = jnp.asarray(np.array(list(itertools.product((0.0, 1.0), repeat=c)), np.float32), probs.dtype)
      target = jax.vmap(lambda p_, y_: _argmax_target_enumerate(p_, y_, masks))(p, probs)
    else:
      target = jax.vmap(_argmax_target_greedy)(p, probs)
    return jax.vmap(lambda y, t: _line_search(y, t, epsilon, ydist))(probs, target)
  return stateless(fn, f"mad{'_argmax' if oracle == 'argmax' else ''}_{ydist}{epsilon:g}")


def proxy_from_model(model, variables) -> Callable:
  """x -> softmax of a zoo model in eval mode, as MAD's proxy."""
  return lambda x: jax.nn.softmax(model.apply(variables, x, train=False)[0])
