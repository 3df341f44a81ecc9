"""IPGuard (Cao, Jia & Gong, AsiaCCS 2021): a fingerprint of points just across the victim's decision boundary,
whose labels a copy of the victim shares and an independent model does not.

Chosen over conferrable adversarial examples (Lukas et al., ICLR 2021) because it needs only the victim and the
suspect's labels: no surrogate and reference ensembles to train (CAE's), no assumption about how the thief trained.

From each seed x with the victim's label i, a target j != i drawn at random: Adam (lr 0.01) on the pixels of
  loss(x) = ReLU(Z_i(x) - Z_j(x) + k) + ReLU(max_{t != i, j} Z_t(x) - Z_i(x)),  k = 10,
on the victim's logits Z, for at most 1000 steps, each point stopping as soon as its label is j; the point is clipped
to [0, 1] after every step (the public port does not clip). The fingerprint is the points and the victim's labels on
them; a suspect's statistic is the fraction of them it labels alike. Theft is claimed when that fraction is unlikely
for an independent model: P[Bin(n, q) >= matches], q the reference models' matching rate.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlpriv_jax import streams
from mlpriv_jax.errors import UserError, integer
from mlpriv_jax.oracle import Oracle, query_all


@dataclasses.dataclass(frozen=True)
class IPGuardOptions:
  num_points: int = 100      # fingerprint size
  margin: float = 10.0       # k
  lr: float = 0.01           # Adam's, on the pixels
  max_steps: int = 1000

  def validate(self):
    integer(self.num_points, "num_points")
    integer(self.max_steps, "max_steps")
    if not (self.margin >= 0 and self.lr > 0):
      raise UserError(f"IPGuard needs margin >= 0 and lr > 0, got {self.margin} and {self.lr}")
    return self


def boundary_loss(logits, i, j, margin):
  """f32[N]: ReLU(Z_i - Z_j + k) + ReLU(max_{t != i, j} Z_t - Z_i)."""
  rows = jnp.arange(len(logits))
  zi, zj = logits[rows, i], logits[rows, j]
  others = logits.at[rows, i].set(-jnp.inf).at[rows, j].set(-jnp.inf).max(-1)
  return jax.nn.relu(zi - zj + margin) + jax.nn.relu(others - zi)


def make_fingerprint_fn(logits_fn, options: IPGuardOptions = IPGuardOptions()):
  """Returns jitted `run(x f32[N, H, W, C], i int[N], j int[N]) -> (points, done bool[N])`; `logits_fn(x)` is the
  victim's."""
  tx = optax.adam(options.lr)
  total = lambda x, i, j: boundary_loss(logits_fn(x), i, j, options.margin).sum()

  @jax.jit
  def run(x, i, j):
    def cond(c):
      return (c[0] < options.max_steps) & ~c[3].all()

    def body(c):
      step, x, s, done = c
      updates, s = tx.update(jax.grad(total)(x, i, j), s)
      x = jnp.where(done[:, None, None, None], x, jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0))
      return step + 1, x, s, done | (logits_fn(x).argmax(-1) == j)
    _, x, _, done = jax.lax.while_loop(cond, body, (0, x, tx.init(x), logits_fn(x).argmax(-1) == j))
    return x, done
  return run


class Fingerprint(NamedTuple):
  x: np.ndarray        # f32[n, H, W, C] the points
  labels: np.ndarray   # int[n] the victim's labels on them
  crossed: float       # the fraction of points that reached their target class


def fingerprint(logits_fn, seeds, key, num_classes: int, options: IPGuardOptions = IPGuardOptions()) -> Fingerprint:
  """The victim's fingerprint from `num_points` of `seeds` (u8 or floats in [0, 1]), drawn and targeted from `key`."""
  options.validate()
  seeds = np.asarray(seeds)
  if len(seeds) < options.num_points:
    raise UserError(f"IPGuard needs {options.num_points} seed points, got {len(seeds)}")
  pick = np.asarray(jax.random.permutation(streams.derive(key, streams.IPGUARD_SEEDS), len(seeds)))
  x = seeds[pick[:options.num_points]]
  x = jnp.asarray(x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x, jnp.float32)
  i = logits_fn(x).argmax(-1)
  shift = jax.random.randint(streams.derive(key, streams.IPGUARD_TARGETS), i.shape, 1, num_classes)
  j = (i + shift) % num_classes   # uniform over the other classes
  points, done = make_fingerprint_fn(logits_fn, options)(x, i, j)
  labels = np.asarray(logits_fn(points).argmax(-1))
  return Fingerprint(np.asarray(points), labels, float(np.mean(done)))


def matches(fp: Fingerprint, suspect: Oracle) -> dict:
  """{matched, points, queries}: how many fingerprint points the suspect labels as the victim."""
  start = suspect.queries_used
  matched = int((query_all(suspect, fp.x).argmax(-1) == fp.labels).sum())
  return dict(matched=matched, points=len(fp.x), queries=suspect.queries_used - start)
