"""Shadow-model membership inference (Shokri et al., S&P 2017, Sec. IV).

Shadow model k's outputs on its own training examples (in) and on the rest (out)
become labelled records; one binary attack model per class (an MLP with one hidden
layer of 64 units, as the paper's CIFAR attack) is trained on the records of that
class, all classes at once with `jax.vmap`. The attack then scores the victim's
released vector for (x, y) with attack model y: higher = member.
"""

from typing import NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mlpriv_jax.attacks.membership.signals import released_log_probs
from mlpriv_jax.errors import UserError


class AttackModel(nn.Module):
  """One class's attack model: features f[..., C] -> membership logit f[...]."""
  hidden: int = 64

  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(nn.relu(nn.Dense(self.hidden)(x)))[..., 0]


class ShokriAttack(NamedTuple):
  params: dict        # AttackModel params with a leading class axis C
  features: str       # one of FEATURES; 'probs' is the paper's raw vector
  hidden: int


def attack_records(shadow_probs, labels, keep):
  """Shokri's attack training set from K shadows: (probs f[K*N, C], labels int[K*N], is_member bool[K*N]).

  shadow_probs f[K, N, C]: shadow k's softmax on all N examples; keep bool[K, N].
  """
  chex.assert_rank(shadow_probs, 3)
  k, n, c = shadow_probs.shape
  chex.assert_shape(keep, (k, n))
  return (jnp.reshape(shadow_probs, (k * n, c)), jnp.tile(jnp.asarray(labels), k),
          jnp.reshape(jnp.asarray(keep, bool), (k * n,)))


FEATURES = ("probs", "log_probs", "sorted_probs")


def _features(probs, kind):
  """The attack model's input: the raw vector (Shokri et al.), its log, or the vector sorted
  (Salem et al. 2019's class-free attack, which MemGuard's evaluation uses)."""
  if kind == "log_probs":
    return released_log_probs(probs)
  probs = jnp.asarray(probs, jnp.float32)
  return jnp.sort(probs, axis=-1) if kind == "sorted_probs" else probs


def train_shokri(key, probs, labels, is_member, num_classes: int, *, features: str = "probs", hidden: int = 64,
                 num_steps: int = 2000, batch_size: int = 128, learning_rate: float = 1e-3) -> ShokriAttack:
  """Trains the C per-class attack models at once (vmap over classes), Adam on the logistic loss.

  Each step draws `batch_size` records of each class uniformly with replacement.
  A class without records keeps its initial (uninformative) model.
  Args:
    probs: f[M, C] shadow outputs; labels: int[M]; is_member: bool[M].
  """
  if features not in FEATURES:
    raise UserError(f"shokri features must be one of {', '.join(FEATURES)}, got {features!r}")
  probs, labels, is_member = jnp.asarray(probs), jnp.asarray(labels), jnp.asarray(is_member, jnp.float32)
  chex.assert_rank(probs, 2)
  chex.assert_shape([labels, is_member], (probs.shape[0],))
  x = _features(probs, features)
  order = jnp.argsort(labels, stable=True)
  counts = jnp.bincount(labels, length=num_classes)
  starts = jnp.cumsum(counts) - counts
  model = AttackModel(hidden)
  tx = optax.adam(learning_rate)
  class_keys = jax.random.split(jax.random.fold_in(key, 0), num_classes)
  params = jax.vmap(lambda k: model.init(k, x[:1])["params"])(class_keys)
  opt_state = jax.vmap(tx.init)(params)

  def class_step(p, o, k, start, count):
    idx = order[start + jax.random.randint(k, (batch_size,), 0, jnp.maximum(count, 1))]
    loss, g = jax.value_and_grad(
        lambda p: optax.sigmoid_binary_cross_entropy(model.apply({"params": p}, x[idx]), is_member[idx]).mean())(p)
    g = jax.tree.map(lambda t: jnp.where(count > 0, t, 0.0), g)
    updates, o = tx.update(g, o)
    return optax.apply_updates(p, updates), o, loss

  @jax.jit
  def run(params, opt_state):
    def body(carry, t):
      p, o = carry
      keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, 1), t), num_classes)
      p, o, loss = jax.vmap(class_step)(p, o, keys, starts, counts)
      return (p, o), loss.mean()
    (p, _), losses = jax.lax.scan(body, (params, opt_state), jnp.arange(num_steps))
    return p, losses

  params, _ = run(params, opt_state)
  return ShokriAttack(params, features, hidden)


def shokri_score(attack: ShokriAttack, probs, labels):
  """Membership logit f32[N] of released probabilities f[N, C] with true labels int[N]."""
  chex.assert_rank(probs, 2)
  x = _features(probs, attack.features)
  all_classes = jax.vmap(lambda p: AttackModel(attack.hidden).apply({"params": p}, x))(attack.params)  # [C, N]
  return jnp.take_along_axis(all_classes, jnp.asarray(labels)[None], axis=0)[0]
