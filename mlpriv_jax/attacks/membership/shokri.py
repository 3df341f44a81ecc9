"""Shadow-model membership inference (Shokri et al., S&P 2017, Sec. IV).

Shadow model k's outputs on its own training examples (in) and on the rest (out)
become labelled records; one binary attack model per class (an MLP with one hidden
layer of 64 units, as the paper's CIFAR attack) is trained on the records of that
class, all classes at once (`train.mlp`, vmap over classes). The attack then scores the victim's
released vector for (x, y) with attack model y: higher = member.
"""

from typing import NamedTuple

import chex
import jax.numpy as jnp

from mlpriv_jax.attacks.membership.signals import released_log_probs
from mlpriv_jax.errors import UserError
from mlpriv_jax.train.mlp import grouped_logits, train_binary_mlps


class ShokriAttack(NamedTuple):
  params: dict        # MLP params (one hidden layer) with a leading class axis C
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
  """Trains the C per-class attack models at once (`train.mlp`: vmap over classes), Adam on the logistic loss.

  Each step draws `batch_size` records of each class uniformly with replacement.
  A class without records keeps its initial (uninformative) model.
  Args:
    probs: f[M, C] shadow outputs; labels: int[M]; is_member: bool[M].
  """
  if features not in FEATURES:
    raise UserError(f"shokri features must be one of {', '.join(FEATURES)}, got {features!r}")
  probs, labels = jnp.asarray(probs), jnp.asarray(labels)
  chex.assert_rank(probs, 2)
  params = train_binary_mlps(key, _features(probs, features), jnp.asarray(is_member, jnp.float32), labels,
                             num_classes, widths=(hidden,), num_steps=num_steps, batch_size=batch_size,
                             learning_rate=learning_rate)
  return ShokriAttack(params, features, hidden)


def shokri_score(attack: ShokriAttack, probs, labels):
  """Membership logit f32[N] of released probabilities f[N, C] with true labels int[N]."""
  chex.assert_rank(probs, 2)
  return grouped_logits(attack.params, _features(probs, attack.features), labels, (attack.hidden,))
