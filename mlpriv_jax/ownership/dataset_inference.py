"""Dataset Inference (Maini, Yaghini & Papernot, ICLR 2021): a model trained on the victim's private data, or stolen
from a model that was, sits further from its decision boundary on those points than on public points of the same
distribution. The verifier needs only the suspect's labels.

Blind Walk (Sec. 4.2, the label-only embedding): from each point x with true label y, for each norm (l-inf, l2, l1)
and each of `num_directions` random directions delta0 (per pixel: U(-0.005, 0.005), N(0, 0.005^2), Laplace(0, 0.01)),
query x + clip(k delta0) for k = 1, 2, ..., `max_steps` (the clip keeps the image in [0, 1]) until the suspect's label
differs from y; the feature is the norm of the step that flipped it (a point never flipped gets k = max_steps + 1,
as the original code). Only the points still walking are queried at each k.

The test (Sec. 5): the distances are normalised per norm with the victim's statistics on its private points; each
point's embedding is its 3 x num_directions distances, norm-major (the original notebook's `X.T.reshape` mixes 30
points into each row; we build one row per point); a regressor g, Linear(30, 100)-ReLU-Linear(100, 1)-tanh, is
trained on the victim alone to score public points (+1) above private ones (-1), loss -mean((2y - 1) g), full-batch
SGD; a suspect's p-value is the one-sided Welch t-test that g is larger on public points than on private ones, on m
points of each revealed at the same positions, the harmonic mean over `num_resamples` draws. The victim's points are
split in halves: the first trains g on the victim's walks, the second is walked through every suspect.
"""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats

from mlpriv_jax import streams
from mlpriv_jax.errors import UserError, integer
from mlpriv_jax.oracle import Oracle, query_all

NORMS = ("linf", "l2", "l1")
NOISE = (0.005, 0.005, 0.01)   # U(-a, a), N(0, a^2), Laplace(0, a): the original's CIFAR scales


@dataclasses.dataclass(frozen=True)
class DatasetInferenceOptions:
  """The original code's CIFAR defaults (`src/generate_features.py`, the notebooks)."""
  num_directions: int = 10     # random directions per norm
  max_steps: int = 50          # multiples of each direction tried
  num_revealed: int = 10       # m: private and public points revealed to the test
  num_resamples: int = 100     # draws of the m points; p is the harmonic mean
  regressor_steps: int = 1000  # full-batch SGD steps of g
  regressor_lr: float = 0.1
  hidden: int = 100
  chunk: int = 32              # points walked at once (memory: chunk x 3 x num_directions images)

  def validate(self):
    for f in ("num_directions", "max_steps", "num_revealed", "num_resamples", "regressor_steps", "hidden", "chunk"):
      integer(getattr(self, f), f, at_least=1 if f != "num_revealed" else 2)
    if not self.regressor_lr > 0:
      raise UserError(f"regressor_lr must be > 0, got {self.regressor_lr}")
    return self


def _directions(key, image_shape, num_directions: int):
  """f32[3, D, H, W, C]: the point's random directions, one row per norm (`NORMS`)."""
  k = jax.random.split(key, 3)
  shape = (num_directions, *image_shape)
  return jnp.stack([jax.random.uniform(k[0], shape, minval=-NOISE[0], maxval=NOISE[0]),
                    NOISE[1] * jax.random.normal(k[1], shape),
                    NOISE[2] * jax.random.laplace(k[2], shape)])


@functools.partial(jax.jit, static_argnums=(2, 3))
def _walk_directions(key, index, image_shape, num_directions: int):
  """f32[n, 3, D, H, W, C]: the directions of the points at `index`, point i's from fold_in(key, i)."""
  return jax.vmap(lambda i: _directions(jax.random.fold_in(key, i), image_shape, num_directions))(index)


@jax.jit
def _step(x, base, k):
  """The k-th points of every walk and their distances: x f32[n, H, W, C], base f32[n, 3, D, H, W, C] ->
  (images f32[n, 3, D, H, W, C], distances f32[n, 3, D] in each row's own norm)."""
  x = x[:, None, None]
  images = jnp.clip(x + k * base, 0.0, 1.0)
  delta = (images - x).reshape(*images.shape[:3], -1)
  dist = jnp.stack([jnp.abs(delta[:, 0]).max(-1), jnp.sqrt((delta[:, 1] ** 2).sum(-1)), jnp.abs(delta[:, 2]).sum(-1)],
                   axis=1)
  return images, dist


def blind_walk(oracle: Oracle, x, y, key, options: DatasetInferenceOptions = DatasetInferenceOptions()):
  """(distances f32[N, 3, D], queries): each point's Blind Walk through the oracle's labels.

  x: u8[N, H, W, C] or floats in [0, 1]; y: int[N] the true labels. Point i's directions are drawn from
  fold_in(key, i), so a point walks the same directions through every suspect and in any chunk.
  """
  x = np.asarray(x)
  x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else np.asarray(x, np.float32)
  y = np.asarray(y)
  if x.ndim != 4 or len(y) != len(x):
    raise UserError(f"blind_walk takes images [N, H, W, C] and N labels, got {list(x.shape)} and {list(y.shape)}")
  o = options
  out = np.zeros((len(x), 3, o.num_directions), np.float32)
  start = oracle.queries_used
  for s in range(0, len(x), o.chunk):
    xs, ys = x[s:s + o.chunk], y[s:s + o.chunk]
    base = _walk_directions(key, jnp.arange(s, s + len(xs)), tuple(x.shape[1:]), o.num_directions)
    walking = np.ones(out[s:s + len(xs)].shape, bool)
    for k in range(1, o.max_steps + 2):
      images, dist = (np.asarray(a) for a in _step(xs, base, jnp.float32(k)))
      if k == o.max_steps + 1:   # never flipped: the next step's distance, unchecked (the original's)
        out[s:s + len(xs)][walking] = dist[walking]
        break
      labels = query_all(oracle, images[walking]).argmax(-1)
      flipped = labels != np.broadcast_to(ys[:, None, None], walking.shape)[walking]
      idx = tuple(i[flipped] for i in np.nonzero(walking))
      out[s:s + len(xs)][idx] = dist[idx]
      walking[idx] = False
      if not walking.any():
        break
  return out, oracle.queries_used - start


def embed(distances, mean, std):
  """f32[N, 3 D]: each point's distances normalised per norm (`mean`, `std` f32[3]), norm-major."""
  d = (np.asarray(distances) - np.asarray(mean)[None, :, None]) / np.asarray(std)[None, :, None]
  return d.reshape(len(d), -1).astype(np.float32)


def _init_regressor(key, dim: int, hidden: int):
  """PyTorch's default Linear initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as the original."""
  k = jax.random.split(key, 4)
  u = lambda kk, shape, fan: jax.random.uniform(kk, shape, minval=-fan ** -0.5, maxval=fan ** -0.5)
  return dict(w1=u(k[0], (dim, hidden), dim), b1=u(k[1], (hidden,), dim), w2=u(k[2], (hidden, 1), hidden),
              b2=u(k[3], (1,), hidden))


def regressor(params, e):
  """g(e) = tanh(Linear(ReLU(Linear(e)))), f32[N]."""
  h = jax.nn.relu(e @ params["w1"] + params["b1"][None])
  return jnp.tanh(h @ params["w2"] + params["b2"][None])[:, 0]


def fit_regressor(key, private, public, options: DatasetInferenceOptions = DatasetInferenceOptions()):
  """g trained to score `public` embeddings (+1) above `private` ones (-1): loss -mean((2y - 1) g)."""
  e = jnp.concatenate([jnp.asarray(private), jnp.asarray(public)])
  sign = jnp.concatenate([-jnp.ones(len(private)), jnp.ones(len(public))])
  tx = optax.sgd(options.regressor_lr)
  loss = lambda p: -jnp.mean(sign * regressor(p, e))

  @jax.jit
  def fit(params):
    def step(carry, _):
      p, s = carry
      updates, s = tx.update(jax.grad(loss)(p), s)
      return (optax.apply_updates(p, updates), s), None
    return jax.lax.scan(step, (params, tx.init(params)), None, length=options.regressor_steps)[0][0]
  return fit(_init_regressor(key, e.shape[1], options.hidden))


def p_value(g_private, g_public, key, options: DatasetInferenceOptions = DatasetInferenceOptions()) -> float:
  """The harmonic mean over `num_resamples` draws of m positions (the same in both arrays) of the one-sided Welch
  t-test's p that g is larger on the public points (small: the suspect knows the private ones)."""
  g_private, g_public = np.asarray(g_private, np.float64), np.asarray(g_public, np.float64)
  n = min(len(g_private), len(g_public))
  if n < options.num_revealed:
    raise UserError(f"the test reveals {options.num_revealed} points of each kind; only {n} were walked")
  ps = []
  for r in range(options.num_resamples):
    pos = np.asarray(jax.random.permutation(jax.random.fold_in(key, r), n))[:options.num_revealed]
    t = scipy.stats.ttest_ind(g_public[pos], g_private[pos], equal_var=False, alternative="greater")
    ps.append(1.0 if np.isnan(t.pvalue) else t.pvalue)   # identical scores: no evidence
  return float(scipy.stats.hmean(np.maximum(ps, 1e-300)))


class Evidence(NamedTuple):
  """What the victim's owner keeps to test any suspect: the points walked through suspects (the second halves),
  the victim's normalisation and its regressor g."""
  x_private: np.ndarray
  y_private: np.ndarray
  x_public: np.ndarray
  y_public: np.ndarray
  mean: np.ndarray          # f32[3] the victim's mean distance per norm on its private points
  std: np.ndarray
  regressor: dict
  key: jax.Array            # the walks' and the resamples' key
  options: DatasetInferenceOptions


def prepare(victim: Oracle, x_private, y_private, x_public, y_public, key,
            options: DatasetInferenceOptions = DatasetInferenceOptions()) -> Evidence:
  """The owner's side: the victim's walks on its private (training) and public points, g fitted on their first
  halves. `victim` is the owner's own undefended model (its queries are the owner's)."""
  options.validate()
  n = min(len(x_private), len(x_public))
  if n < 2 * options.num_revealed:
    raise UserError(f"dataset inference needs at least {2 * options.num_revealed} private and public points (half "
                    f"to fit the regressor, half to test), got {len(x_private)} and {len(x_public)}")
  h = n // 2
  k_walk, k_fit, k_test = (streams.derive(key, i) for i in (streams.DI_WALK, streams.DI_REGRESSOR,
                                                            streams.DI_RESAMPLE))
  d_priv, _ = blind_walk(victim, x_private[:h], y_private[:h], streams.derive(k_walk, streams.DI_FIT_PRIVATE), options)
  d_pub, _ = blind_walk(victim, x_public[:h], y_public[:h], streams.derive(k_walk, streams.DI_FIT_PUBLIC), options)
  mean, std = d_priv.mean(axis=(0, 2)), d_priv.std(axis=(0, 2)) + 1e-12
  g = fit_regressor(k_fit, embed(d_priv, mean, std), embed(d_pub, mean, std), options)
  return Evidence(np.asarray(x_private[h:n]), np.asarray(y_private[h:n]), np.asarray(x_public[h:n]),
                  np.asarray(y_public[h:n]), mean, std, g, key, options)


def verify(evidence: Evidence, suspect: Oracle) -> dict:
  """{p_value, statistic (mean g on public minus private points), queries}: the suspect's walks on the evidence's
  points, scored by the victim's g. A small p says the suspect knows the victim's private points."""
  e, o = evidence, evidence.options
  k_walk = streams.derive(e.key, streams.DI_WALK)
  d_priv, q1 = blind_walk(suspect, e.x_private, e.y_private, streams.derive(k_walk, streams.DI_TEST_PRIVATE), o)
  d_pub, q2 = blind_walk(suspect, e.x_public, e.y_public, streams.derive(k_walk, streams.DI_TEST_PUBLIC), o)
  g_priv = np.asarray(regressor(e.regressor, embed(d_priv, e.mean, e.std)))
  g_pub = np.asarray(regressor(e.regressor, embed(d_pub, e.mean, e.std)))
  p = p_value(g_priv, g_pub, streams.derive(e.key, streams.DI_RESAMPLE), o)
  return dict(p_value=p, statistic=float(g_pub.mean() - g_priv.mean()), queries=int(q1 + q2))
