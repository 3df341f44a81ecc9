"""Label-only membership inference: the attacker sees only the top-1 label (Choquette-Choo, Tramer, Carlini &
Papernot, ICML 2021; Li & Zhang, CCS 2021). Members are more robust: their label survives augmentation and
noise, and they lie farther from the decision boundary. Every score is higher = member.

The pieces take a `decide`/`labels_of` function of images, so that they run on the victim's query door (every
query counted) and on the attacker's own shadow models (for calibration) alike. Images are f32[N, H, W, C] in
[0, 1] (or uint8).
"""

import math
from typing import Callable, NamedTuple, Optional

import jax
import numpy as np

from mlpriv_jax import streams
from mlpriv_jax.errors import UserError, integer, number


def translations(d: int):
  """The paper code's 4d + 1 shifts (dy, dx): the identity, then the walk around |dy| + |dx| = d from (d, 0).

  d = 1: (0, 0), (1, 0), (0, -1), (-1, 0), (0, 1).
  """
  d = integer(d, "the translation distance d", at_least=0)
  if d == 0:
    return [(0, 0)]
  out, (dy, dx), vdir, hdir = [], (d, 0), -1, -1
  while True:
    out.append((dy, dx))
    dy, dx = dy + vdir, dx + hdir
    if abs(dy) == d:
      vdir = -vdir
    if abs(dx) == d:
      hdir = -hdir
    if (dy, dx) == (d, 0):
      return [(0, 0)] + out


def translate(images, dy: int, dx: int):
  """Images moved by (dy, dx) pixels with edge replication (scipy.ndimage.shift, mode='nearest', as the
  paper code): out[i, j] = in[clip(i - dy), clip(j - dx)]."""
  images = np.asarray(images)
  h, w = images.shape[1:3]
  rows, cols = np.clip(np.arange(h) - dy, 0, h - 1), np.clip(np.arange(w) - dx, 0, w - 1)
  return images[:, rows][:, :, cols]


def augmentation_views(images, d: int = 1, *, mirror: bool = False):
  """u8/f32[A, N, H, W, C]: the translations of `translations(d)`, each also flipped if `mirror` (the paper
  code has no flips)."""
  views = []
  for dy, dx in translations(d):
    v = translate(images, dy, dx)
    views += [v, v[:, :, ::-1]] if mirror else [v]
  return np.stack(views)


def augmentation_features(labels_of: Callable, images, labels, d: int = 1, *, mirror: bool = False):
  """c(x) bool[N, A]: is the label of each augmented copy the true one (Choquette-Choo et al., Sec. 4)."""
  views = augmentation_views(images, d, mirror=mirror)
  a, n = views.shape[:2]
  predicted = np.asarray(labels_of(views.reshape(a * n, *views.shape[2:]))).reshape(a, n)
  return (predicted == np.asarray(labels)[None]).T


def noise_robustness(labels_of: Callable, images, labels, key, *, sigma: float, num_samples: int,
                     chunk_images: int = 4096):
  """f64[N]: the fraction of `num_samples` copies x + N(0, sigma^2 I), clipped to [0, 1], still labelled y; 0
  for a misclassified x, whose copies are never queried (the paper code's `continuous_rand_robust`).

  Queries: N + num_samples per correctly labelled x. The noise of example n is drawn from fold_in(key, n).
  """
  number(sigma, "the noise attack's sigma", above=0)
  integer(num_samples, "the noise attack's num_samples")
  x = as_float(images)
  y = np.asarray(labels)
  correct = np.asarray(labels_of(x)) == y
  score = np.zeros(len(x))
  todo = np.flatnonzero(correct)
  per = max(1, chunk_images // num_samples)
  draw = jax.jit(lambda k: jax.random.normal(k, (num_samples, *x.shape[1:])))
  for s in range(0, len(todo), per):
    idx = todo[s:s + per]
    noisy = np.stack([np.clip(x[i] + sigma * np.asarray(draw(jax.random.fold_in(key, int(i)))), 0, 1)
                      for i in idx])
    kept = np.asarray(labels_of(noisy.reshape(-1, *x.shape[1:]))).reshape(len(idx), num_samples) == y[idx, None]
    score[idx] = kept.mean(1)
  return score


def gap_score(labels_of: Callable, images, labels):
  """f64[N]: 1 if the label is right (predict member), else 0 (Yeom et al. 2018's gap attack; the baseline)."""
  return (np.asarray(labels_of(as_float(images))) == np.asarray(labels)).astype(np.float64)


def _rng(key):
  """A host generator addressed by a JAX key: HopSkipJump draws on the host, where its queries are formed, and a
  shape that changes every iteration would recompile a device draw each time."""
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())


def as_float(images):
  """f32 images in [0, 1] from uint8 (or floats as they are)."""
  images = np.asarray(images)
  return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


# ------------------------------------------------------------------ HopSkipJump (Chen, Jordan & Wainwright 2020)

class HsjResult(NamedTuple):
  distance: np.ndarray          # f32[B]: L2 distance from x0 to the adversarial point found (the diameter if none)
  adversarial: np.ndarray       # f32[B, D]: that point
  queries: np.ndarray           # int[B]: decisions asked per example
  gradient_queries: np.ndarray  # int[B]: of which for the gradient estimates
  found: np.ndarray             # bool[B]: an adversarial starting point was found


def hsj_iteration_evals(j: int, initial_num_evals: int, max_num_evals: int) -> int:
  """Queries of the gradient estimate at iteration j >= 1: min(initial * sqrt(j), max), as cleverhans."""
  return int(min(initial_num_evals * math.sqrt(j), max_num_evals))


def hopskipjump_l2(decide: Callable, x0, key, *, num_iterations: int = 64, initial_num_evals: int = 100,
                   max_num_evals: int = 10_000, gamma: float = 1.0, max_queries: Optional[int] = None,
                   init_tries: int = 100, max_halvings: int = 30, chunk_elements: int = 1 << 25) -> HsjResult:
  """Untargeted HopSkipJump in L2 (Chen et al., S&P 2020, Alg. 2), batched over examples, clip [0, 1].

  decide(x f32[M, D], idx int[M]) -> bool[M]: is x adversarial for example idx (its label is not the true one).
  Defaults are cleverhans' (used by the label-only paper code): 64 iterations, 100 initial evaluations growing
  as sqrt(j) up to 10,000, binary-search threshold theta = gamma / D^(3/2), geometric step-size search. Examples
  stop where the next iteration would pass `max_queries` (per example; None: no cap), so none passes it.
  """
  x0 = np.asarray(x0, np.float32)
  if x0.ndim != 2:
    raise UserError(f"hopskipjump_l2 takes flattened examples f32[B, D], got shape {list(x0.shape)}")
  if num_iterations < 0 or initial_num_evals < 1 or max_num_evals < 1 or not gamma > 0 or init_tries < 1:
    raise UserError(f"HopSkipJump needs num_iterations >= 0, evals >= 1, gamma > 0, init_tries >= 1; got "
                    f"{num_iterations}, {initial_num_evals}, {max_num_evals}, {gamma}, {init_tries}")
  b, d = x0.shape
  theta = gamma / (d * math.sqrt(d))
  bs_steps = _binary_search_steps(d, gamma)
  cap = math.inf if max_queries is None else int(max_queries)
  if cap < hsj_min_queries(d, gamma):
    raise UserError(f"HopSkipJump needs at least {hsj_min_queries(d, gamma)} queries per example to find a starting "
                    f"point (dimension {d}); the cap is {max_queries}")
  queries, grad_queries = np.zeros(b, np.int64), np.zeros(b, np.int64)
  k_init, k_grad = streams.derive(key, streams.HSJ_INIT), streams.derive(key, streams.HSJ_GRADIENT)

  def ask(x, idx):
    np.add.at(queries, idx, 1)
    return np.asarray(decide(x, idx), bool)

  def blend(alpha, idx, towards):
    return (1 - alpha[:, None]) * x0[idx] + alpha[:, None] * towards

  def binary_search(idx, pert, steps):
    """The blend of x0 and the adversarial `pert` closest to x0 that stays adversarial, to 2^-steps."""
    low, high = np.zeros(len(idx), np.float32), np.ones(len(idx), np.float32)
    for _ in range(steps):
      mid = (low + high) / 2
      adv = ask(blend(mid, idx, pert), idx)
      high, low = np.where(adv, mid, high), np.where(adv, low, mid)
    out = blend(high, idx, pert)
    return out, np.linalg.norm(out - x0[idx], axis=1)

  # Start: uniform noise until adversarial, then the blend with x0 searched to 1e-3 (cleverhans `initialize`).
  start, found = np.zeros_like(x0), np.zeros(b, bool)
  for t in range(init_tries):
    todo = np.flatnonzero(~found & (queries + 1 + 10 + bs_steps <= cap))
    if not len(todo):
      break
    u = _rng(jax.random.fold_in(k_init, t)).random((b, d), np.float32)[todo]
    adv = ask(u, todo)
    start[todo[adv]], found[todo[adv]] = u[adv], True
  idx = np.flatnonzero(found)
  pert, dist = x0.copy(), np.full(b, np.float32(np.sqrt(d)))   # no start found: the diameter of [0, 1]^D
  pert[idx], dist[idx] = binary_search(idx, binary_search(idx, start[idx], 10)[0], bs_steps)   # 2^-10 < 1e-3

  for j in range(1, num_iterations + 1):
    evals = hsj_iteration_evals(j, initial_num_evals, max_num_evals)
    # A distance of 0: x0 itself was answered as adversarial (a randomised defence can flip its label), so the
    # boundary is x0 and there is no step to estimate (delta would be 0, every probe 0 / 0).
    idx = np.flatnonzero(found & (dist > 0) & (queries + evals + 1 + bs_steps <= cap))
    if not len(idx):
      break
    delta = np.full(len(idx), 0.1, np.float32) if j == 1 else np.float32(np.sqrt(d) * theta) * dist[idx]
    # Gradient direction at the boundary point from `evals` random unit directions (Alg. 2, Eq. 9-10).
    grad = np.zeros((len(idx), d), np.float32)
    per = max(1, chunk_elements // (evals * d))
    for s in range(0, len(idx), per):
      sl = slice(s, s + per)
      ii = idx[sl]
      rv = _rng(jax.random.fold_in(jax.random.fold_in(k_grad, j), s)).standard_normal((len(ii), evals, d), np.float32)
      rv /= np.linalg.norm(rv, axis=2, keepdims=True)
      probe = np.clip(pert[ii, None] + delta[sl, None, None] * rv, 0, 1)
      rv = (probe - pert[ii, None]) / delta[sl, None, None]
      fval = 2.0 * ask(probe.reshape(-1, d), np.repeat(ii, evals)).reshape(len(ii), evals) - 1.0
      grad_queries[ii] += evals
      mean = fval.mean(1, keepdims=True)
      centred = ((fval - mean)[..., None] * rv).mean(1)   # all probes on one side: +-mean(rv), as cleverhans
      g = np.where(mean == 1.0, rv.mean(1), np.where(mean == -1.0, -rv.mean(1), centred))
      grad[sl] = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    # Geometric step size: epsilon = dist / sqrt(j), halved until the step stays adversarial.
    eps = dist[idx] / np.sqrt(j)
    ok = np.zeros(len(idx), bool)
    for _ in range(max_halvings):
      todo = np.flatnonzero(~ok & (queries[idx] + 1 + bs_steps <= cap))
      if not len(todo):
        break
      cand = np.clip(pert[idx[todo]] + eps[todo, None] * grad[todo], 0, 1)
      adv = ask(cand, idx[todo])
      ok[todo[adv]] = True
      eps[todo[~adv]] /= 2
    stepped = pert[idx].copy()
    stepped[ok] = np.clip(pert[idx[ok]] + eps[ok, None] * grad[ok], 0, 1)
    pert[idx], dist[idx] = binary_search(idx, stepped, bs_steps)
  return HsjResult(dist, pert, queries, grad_queries, found)


def calibrate_threshold(member_scores, nonmember_scores, num_thresholds: int = 99):
  """(tau, accuracy): ART's supervised calibration. Of the thresholds i * max(score) / (num + 1), i = 1..num,
  the first with the best accuracy of 'member iff score > tau' on the pooled shadow records."""
  s_in, s_out = np.asarray(member_scores, np.float64), np.asarray(nonmember_scores, np.float64)
  if not len(s_in) or not len(s_out):
    raise UserError("threshold calibration needs shadow members and non-members")
  top = max(s_in.max(), s_out.max())
  taus = np.arange(1, num_thresholds + 1) * top / (num_thresholds + 1)
  acc = ((s_in[None] > taus[:, None]).sum(1) + (s_out[None] <= taus[:, None]).sum(1)) / (len(s_in) + len(s_out))
  best = int(np.argmax(acc))
  return float(taus[best]), float(acc[best])


def _binary_search_steps(d: int, gamma: float) -> int:
  """Halvings of [0, 1] down to cleverhans' threshold theta = gamma / d^(3/2)."""
  return max(0, math.ceil(math.log2(d * math.sqrt(d) / gamma)))


def hsj_min_queries(d: int, gamma: float = 1.0) -> int:
  """The fewest decisions `hopskipjump_l2` needs per example: one draw, the blend search and a binary search."""
  return 1 + 10 + _binary_search_steps(d, gamma)


def hsj_max_queries(d: int, *, num_iterations: int = 64, initial_num_evals: int = 100, max_num_evals: int = 10_000,
                    gamma: float = 1.0, init_tries: int = 100, max_halvings: int = 30) -> int:
  """The most decisions `hopskipjump_l2` can ask for one example of dimension d without a cap."""
  bs_steps = _binary_search_steps(d, gamma)
  return init_tries + 10 + bs_steps + sum(hsj_iteration_evals(j, initial_num_evals, max_num_evals) + max_halvings
                                          + bs_steps for j in range(1, num_iterations + 1))
