"""Query synthesis from the surrogate's gradients: JBDA and CloudLeak-style active learning.

* JBDA (Papernot et al., AsiaCCS 2017, Alg. 1): label-only oracle; each round
  trains the surrogate on all labelled points, then adds
  x + lambda_rho * sign(grad_x F_{O(x)}(x)) (the surrogate's logit of the oracle label)
  for every point, lambda_rho = lambda * (-1)^floor(rho / tau), and queries only
  the new points.
* CloudLeak-style (Yu et al., NDSS 2020, Algorithm 1): rounds of train ->
  craft adversarial candidates of the surrogate from unused pool images
  (FeatureFool: move toward a guide image of another class in feature space,
  triplet loss, Eq. 10-11; or PGD on the margin) -> query the candidates nearest
  the surrogate's decision boundary -> retrain.

Deviations (documented in docs/differences.md): new points are clipped to [0, 1] and
stored as uint8 (the victim accepts only valid images; cleverhans does not
clip); FeatureFool is solved with projected signed-gradient steps in an L-inf
box of 8/255 rather than box-constrained L-BFGS (the paper's Eq. 11 solver); the surrogate is trained from scratch each round.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax import streams, train
from mlpriv_jax.attacks.extraction.knockoff import fit_batch, train_surrogate
from mlpriv_jax.models import Model
from mlpriv_jax.oracle import Oracle, query_all


def _to_u8(x):
  x = np.asarray(x)
  if not np.all(np.isfinite(x)):
    raise FloatingPointError("crafted queries hold NaN or inf; refusing to send them to the victim")
  return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def _distance(a, b):
  """Euclidean distance with a finite gradient where a == b (the first step starts at x_s)."""
  return jnp.sqrt(((a - b) ** 2).sum(-1) + 1e-12)


def _jacobian_sign(surrogate: Model, variables, x, labels):
  """sign(grad_x of the surrogate's logit for `labels`), f32[N, H, W, C] (jitted once per architecture)."""
  def make():
    def sign(v, xx, yy):
      logit = lambda z: jnp.take_along_axis(surrogate.apply(v, z, train=False)[0], yy[:, None], -1).sum()
      return jnp.sign(jax.grad(logit)(xx))
    return jax.jit(sign)
  return train.FUNCTIONS.get(("jacobian_sign", surrogate.module), make)(variables, x, labels)


class ActiveResult(NamedTuple):
  images: np.ndarray       # u8[B, H, W, C], every queried image
  answers: np.ndarray      # f32[B, C], the victim's answers
  sources: np.ndarray      # int[B]: CloudLeak: the pool image each query was made from;
                           # JBDA: the index in `images` of the point it was stepped from
  state: train.TrainState  # the last surrogate
  snapshots: list          # [(queries used, surrogate state)] after each round's training


def jbda(oracle: Oracle, seed_images, budget: int, key, surrogate: Model, config: train.TrainConfig, *,
         lam: float = 0.1, tau: int = 3, batch_size: int = 256) -> ActiveResult:
  """Jacobian-based dataset augmentation until `budget` queries are spent (seeds included; the budget is the
  caller's to check, `extraction.run`)."""
  seeds = np.asarray(seed_images)[:budget]
  images = seeds if seeds.dtype == np.uint8 else _to_u8(seeds)
  answers = query_all(oracle, images, batch_size)
  sources = np.arange(len(images))
  snapshots, rho, state = [], 0, None
  while True:
    result = train_surrogate(surrogate, fit_batch(config, len(images)), images, answers,
                             jax.random.fold_in(key, rho), label_only=True)
    state = result.state
    snapshots.append((oracle.queries_used, state))
    left = budget - len(images)
    if left <= 0:
      break
    step = lam * (-1) ** (rho // tau)
    labels = jnp.asarray(answers.argmax(-1))
    x = jnp.asarray(images, jnp.float32) / 255
    v = train.variables_of(state)
    new = np.concatenate([_to_u8(x[s:s + batch_size] + step * _jacobian_sign(surrogate, v, x[s:s + batch_size],
                                                                               labels[s:s + batch_size]))
                          for s in range(0, len(x), batch_size)])[:left]
    images = np.concatenate([images, new])
    sources = np.concatenate([sources, np.arange(len(new))])   # the parent point in `images`
    answers = np.concatenate([answers, query_all(oracle, new, batch_size)])
    rho += 1
  return ActiveResult(images, answers, sources, state, snapshots)


def margin(logits):
  """Top-1 minus top-2 logit: small = near the decision boundary."""
  top2 = jax.lax.top_k(logits, 2)[0]
  return top2[:, 0] - top2[:, 1]


def featurefool(surrogate: Model, variables, x_src, x_guide, *, eps: float = 8 / 255, steps: int = 10,
                step_size: float = 2 / 255, lam: float = 1.0, alpha: float = 0.5):
  """FeatureFool (CloudLeak Eq. 10-11) by projected signed-gradient steps.

  min ||x' - x_s||^2 + lam * max(D(phi(x'), phi(x_t)) - D(phi(x'), phi(x_s)) + M, 0)
  with phi the surrogate's penultimate features, D Euclidean, and the margin
  M = alpha - mean intra-class distance of the guides (approximated over the batch).
  """
  phi = lambda xx: surrogate.features(variables, xx)[1]
  f_s, f_t = phi(x_src), phi(x_guide)
  m = alpha - _distance(f_t, f_t.mean(0, keepdims=True)).mean()

  def loss(xx):
    f = phi(xx)
    triplet = _distance(f, f_t) - _distance(f, f_s) + m
    return (((xx - x_src) ** 2).sum((1, 2, 3)) + lam * jax.nn.relu(triplet)).sum()
  return projected_sign_descent(loss, x_src, eps=eps, steps=steps, step_size=step_size)


def pgd_margin(surrogate: Model, variables, x_src, *, eps: float = 8 / 255, steps: int = 10, step_size: float = 2 / 255):
  """PGD that shrinks the surrogate's top-1/top-2 margin within an L-inf ball."""
  loss = lambda xx: margin(surrogate.apply(variables, xx, train=False)[0]).sum()
  return projected_sign_descent(loss, x_src, eps=eps, steps=steps, step_size=step_size)


def projected_sign_descent(loss, x_src, *, eps: float, steps: int, step_size: float):
  """`steps` signed-gradient steps down `loss`, each projected onto the L-inf ball of radius eps around x_src
  and onto [0, 1] (Madry et al. 2018's PGD, descending)."""
  def body(_, xx):
    xx = xx - step_size * jnp.sign(jax.grad(loss)(xx))
    return jnp.clip(jnp.clip(xx, x_src - eps, x_src + eps), 0.0, 1.0)
  return jax.lax.fori_loop(0, steps, body, x_src)


def _cloudleak_functions(surrogate: Model, method: str, eps: float, steps: int):
  """(craft, margins, predict), jitted once per surrogate architecture and crafting recipe (the arena runs the
  attack once per defence setting)."""
  def make():
    if method == "featurefool":
      craft = jax.jit(lambda v, xs, xg: featurefool(surrogate, v, xs, xg, eps=eps, steps=steps))
    else:
      craft = jax.jit(lambda v, xs, xg: pgd_margin(surrogate, v, xs, eps=eps, steps=steps))
    return (craft, jax.jit(lambda v, xx: margin(surrogate.apply(v, xx, train=False)[0])),
            jax.jit(lambda v, xx: surrogate.apply(v, xx, train=False)[0]))
  return train.FUNCTIONS.get(("cloudleak", surrogate.module, method, float(eps), int(steps)), make)


def cloudleak(oracle: Oracle, pool_x, budget: int, key, surrogate: Model, config: train.TrainConfig, *,
              num_rounds: int = 5, seed_fraction: float = 0.3, candidates_per_query: int = 4,
              method: str = "featurefool", eps: float = 8 / 255, steps: int = 10,
              batch_size: int = 256) -> ActiveResult:
  """Margin-based adversarial active learning (CloudLeak Algorithm 1) within `budget` queries (budget and
  options checked by the caller: `extraction.run`, `CloudLeakOptions.validate`)."""
  order = np.asarray(jax.random.permutation(streams.derive(key, streams.CLOUDLEAK_ORDER), len(pool_x)))
  n_seed = max(1, int(round(seed_fraction * budget))) if num_rounds > 1 else budget
  images = pool_x[order[:n_seed]]
  sources = order[:n_seed]
  answers = query_all(oracle, images, batch_size)
  cursor = n_seed
  per_round = int(np.ceil((budget - n_seed) / max(num_rounds - 1, 1)))
  craft, margins, predict = _cloudleak_functions(surrogate, method, eps, steps)
  snapshots, state = [], None
  for r in range(num_rounds):
    state = train_surrogate(surrogate, fit_batch(config, len(images)), images, answers,
                            jax.random.fold_in(key, r + 1)).state
    snapshots.append((oracle.queries_used, state))
    quota = min(per_round, budget - len(images))
    if quota <= 0 or r == num_rounds - 1:
      break
    n_cand = min(quota * candidates_per_query, len(pool_x) - cursor)
    if n_cand <= 0:
      break
    cand_idx = order[cursor:cursor + n_cand]
    cursor += n_cand
    v = train.variables_of(state)
    x_src = jnp.asarray(pool_x[cand_idx], jnp.float32) / 255
    # Guides from another class: sort the candidates by the surrogate's label and pair each with the
    # candidate half the list away (a different class unless one class holds half the candidates).
    pred = np.asarray(predict(v, x_src).argmax(-1))
    by_class = np.argsort(pred, kind="stable")
    guide = np.empty(n_cand, np.int64)
    guide[by_class] = np.roll(by_class, n_cand // 2)
    adv = np.concatenate([_to_u8(craft(v, x_src[s:s + batch_size], x_src[guide[s:s + batch_size]]))
                          for s in range(0, n_cand, batch_size)])
    m = np.concatenate([np.asarray(margins(v, jnp.asarray(adv[s:s + batch_size], jnp.float32) / 255))
                        for s in range(0, n_cand, batch_size)])
    pick = np.argsort(m)[: min(quota, n_cand)]          # nearest the surrogate's decision boundary
    images = np.concatenate([images, adv[pick]])
    sources = np.concatenate([sources, cand_idx[pick]])
    answers = np.concatenate([answers, query_all(oracle, adv[pick], batch_size)])
  return ActiveResult(images, answers, sources, state, snapshots)
