"""Small binary MLPs trained G at once: Shokri's per-class attack models, MemGuard's defence classifier, and
the attack models of the label-only attacks, all through one trainer.

`train_binary_mlps` fits G independent MLPs (one per group of records: a class for Shokri, everything for
MemGuard) on the logistic loss with Adam, all G in one `lax.scan` over steps with `vmap` over groups. Each step
draws `batch_size` records of each group uniformly with replacement; a group without records keeps its initial
(uninformative) model.
"""

from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mlpriv_jax import streams
from mlpriv_jax.errors import UserError


class MLP(nn.Module):
  """features f[..., D] -> one logit f[...]: ReLU layers of `widths`, then a linear output."""
  widths: Sequence[int] = (64,)

  @nn.compact
  def __call__(self, x):
    for w in self.widths:
      x = nn.relu(nn.Dense(w)(x))
    return nn.Dense(1)(x)[..., 0]


def mlp_logits(params, x, widths: Sequence[int]):
  """Logits f[N] of one MLP (params without a group axis) on features f[N, D]."""
  return MLP(tuple(widths)).apply({"params": params}, x)


def train_binary_mlps(key, x, targets, groups, num_groups: int, *, widths: Sequence[int] = (64,),
                      num_steps: int = 2000, batch_size: int = 128, learning_rate: float = 1e-3):
  """G MLPs at once, MLP g on the records with groups == g; returns params with a leading axis G.

  Args:
    x: f[M, D] features; targets: f[M] in {0, 1}; groups: int[M] in [0, G).
  """
  x, targets, groups = jnp.asarray(x, jnp.float32), jnp.asarray(targets, jnp.float32), jnp.asarray(groups)
  chex.assert_rank(x, 2)
  chex.assert_shape([targets, groups], (x.shape[0],))
  if num_steps < 1 or batch_size < 1 or not learning_rate > 0:
    raise UserError(f"need num_steps >= 1, batch_size >= 1 and learning_rate > 0, got {num_steps}, {batch_size}, "
                    f"{learning_rate}")
  widths = tuple(int(w) for w in widths)
  model = MLP(widths)
  order = jnp.argsort(groups, stable=True)
  counts = jnp.bincount(groups, length=num_groups)
  starts = jnp.cumsum(counts) - counts
  tx = optax.adam(learning_rate)
  group_keys = jax.random.split(streams.derive(key, streams.MLP_INIT), num_groups)
  params = jax.vmap(lambda k: model.init(k, x[:1])["params"])(group_keys)
  opt_state = jax.vmap(tx.init)(params)

  def group_step(p, o, k, start, count):
    idx = order[start + jax.random.randint(k, (batch_size,), 0, jnp.maximum(count, 1))]
    loss, g = jax.value_and_grad(
        lambda p: optax.sigmoid_binary_cross_entropy(model.apply({"params": p}, x[idx]), targets[idx]).mean())(p)
    g = jax.tree.map(lambda t: jnp.where(count > 0, t, 0.0), g)
    updates, o = tx.update(g, o)
    return optax.apply_updates(p, updates), o, loss

  @jax.jit
  def run(params, opt_state):
    def body(carry, t):
      p, o = carry
      keys = jax.random.split(streams.derive(key, streams.MLP_BATCHES, t), num_groups)
      p, o, loss = jax.vmap(group_step)(p, o, keys, starts, counts)
      return (p, o), loss.mean()
    (p, _), losses = jax.lax.scan(body, (params, opt_state), jnp.arange(num_steps))
    return p, losses

  params, _ = run(params, opt_state)
  return params


def grouped_logits(params, x, groups, widths: Sequence[int]):
  """Logits f32[N] of record n under MLP groups[n]: params with a leading axis G, x f[N, D], groups int[N]."""
  all_groups = jax.vmap(lambda p: mlp_logits(p, x, tuple(widths)))(params)   # [G, N]
  return jnp.take_along_axis(all_groups, jnp.asarray(groups)[None], axis=0)[0]
