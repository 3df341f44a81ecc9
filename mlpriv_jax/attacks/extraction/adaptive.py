"""Extraction attacks that know the defence (Kerckhoffs' principle): the adaptive attacks of ModelGuard (Tang et
al., USENIX Security 2024) and D-DAE's recovery (Chen et al., IEEE S&P 2023).

* top1: KnockoffNets-random trained on one_hot(argmax) of every answer (ModelGuard's "Top-1", `hardlabel=1`).
  Behind a defence that keeps the victim's label (MAD-argmax, MemGuard, rounding) it trains exactly the
  surrogate a label-only API gives, whatever the perturbation.
* smoothing: ModelGuard's "Smoothing" (`transform=1, qpi=3`): each of floor(B / k) pool images is queried k
  times under the pool's train augmentation (random crop with 4 pixels of padding, horizontal flip; a fresh draw
  per pass), and the mean of its k answers is stored with the un-augmented image. Every copy is a query: B
  queries buy floor(B / k) images (the original counts B unique images and spends 3B).
* recovery (D-DAE): the attacker trains shadow victims on its own labelled pool (each on a random subset of C of
  the pool's classes, relabelled 0..C-1), answers them through the *known* defence (its own copy, from the
  registry, with its own auxiliary models made by the defender's recipe), learns a recovery network perturbed ->
  clean on that table, and trains the surrogate on the recovered answers. A randomised defence is handled as the
  table samples it: one fresh draw per row, so the network regresses the clean vector on the released one
  (an L1 fit: a conditional median); it cannot undo what the noise destroyed.

The three share KnockoffNets-random's streams (`KNOCKOFF_QUERIES`, `KNOCKOFF_TRAIN`): at one key, `top1` queries
the same images and initialises the same surrogate as `knockoff_random`, and smoothing's images are the first
floor(B / k) of them.
"""

from typing import NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlpriv_jax import defences, streams, train
from mlpriv_jax.data.augment import random_crop_flip
from mlpriv_jax.errors import UserError
from mlpriv_jax.models import Model
from mlpriv_jax.oracle import Oracle, query_all


def smoothing_queries(oracle: Oracle, pool_x, budget: int, key, *, copies: int = 3, batch_size: int = 256,
                      pad: int = 4):
  """ModelGuard's Smoothing: floor(budget / copies) pool images, each answered `copies` times under random crops
  (`pad` pixels of reflect padding) and flips, one pass of the whole set per copy.

  Returns:
    (indices int[n] into pool_x, mean answers f32[n, C]) with n = floor(budget / copies).
  """
  n = budget // copies
  if n < 1:
    raise UserError(f"smoothing queries each image {copies} times: a budget of {budget} buys no image")
  idx = np.asarray(jax.random.permutation(streams.derive(key, streams.KNOCKOFF_QUERIES), len(pool_x))[:n])
  images = jnp.asarray(pool_x[idx])
  total = 0.0
  for j in range(copies):
    views = random_crop_flip(streams.derive(key, streams.SMOOTHING_VIEWS, j), images.astype(jnp.float32), pad=pad)
    views = np.asarray(views).astype(np.uint8) if images.dtype == jnp.uint8 else np.asarray(views)
    total = total + query_all(oracle, views, batch_size)
  return idx, (total / copies).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- recovery

class RecoveryNet(nn.Module):
  """D-DAE's recovery network as ModelGuard's `Recover_NN`: C -> h1 -> h2 -> C, every Dense followed by
  BatchNorm and LeakyReLU(0.2), the last one included, then a softmax."""
  widths: Tuple[int, int]
  num_classes: int

  @nn.compact
  def __call__(self, y, train: bool = False):
    for w in (*self.widths, self.num_classes):
      y = nn.Dense(w)(y)
      y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(y)   # torch's momentum 0.1
      y = nn.leaky_relu(y, 0.2)
    return jax.nn.softmax(y)


def recovery_widths(num_classes: int) -> Tuple[int, int]:
  """The hidden widths ModelGuard picks by the number of classes: (128, 64) for 10, (512, 256) up to 43,
  (1024, 512) up to 100, (2048, 1024) beyond."""
  for c, w in ((10, (128, 64)), (43, (512, 256)), (100, (1024, 512))):
    if num_classes <= c:
      return w
  return 2048, 1024


class Recovery(NamedTuple):
  net: RecoveryNet
  variables: dict          # params and batch_stats
  losses: np.ndarray       # f32[epochs]: the mean training loss of each epoch

  def __call__(self, perturbed) -> np.ndarray:
    """The recovered answers f32[N, C] of released ones."""
    return np.asarray(jax.jit(lambda v, y: self.net.apply(v, y))(self.variables, jnp.asarray(perturbed, jnp.float32)))


def train_recovery(key, perturbed, clean, *, epochs: int = 200, batch_size: int = 1024, learning_rate: float = 1e-2,
                   momentum: float = 0.9, weight_decay: float = 1e-4, step_epochs: int = 100,
                   gamma: float = 0.5) -> Recovery:
  """Fits the recovery network on (perturbed -> clean) rows f32[M, C] with ModelGuard's defaults: the L1 loss
  times C (the mean per-row L1 distance), SGD with momentum 0.9 and weight decay 1e-4 (added to the gradient, as
  torch's), the learning rate halved every 100 epochs; each epoch a fresh permutation in batches of 1024, the
  last partial batch dropped (a deviation: a BatchNorm batch of one row is degenerate). One compiled scan."""
  perturbed, clean = jnp.asarray(perturbed, jnp.float32), jnp.asarray(clean, jnp.float32)
  m, c = perturbed.shape
  if clean.shape != (m, c) or m < 2:
    raise UserError(f"recovery: the table needs at least 2 rows of (perturbed, clean) f32[M, C] pairs, got "
                    f"{list(perturbed.shape)} and {list(clean.shape)}")
  b = min(batch_size, m)
  steps = m // b
  net = RecoveryNet(recovery_widths(c), c)
  variables = net.init(streams.derive(key, streams.MLP_INIT), perturbed[:2], train=False)
  schedule = optax.exponential_decay(learning_rate, steps * step_epochs, gamma, staircase=True)
  tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(schedule, momentum=momentum))
  opt_state = tx.init(variables["params"])

  def loss_fn(params, stats, y, target):
    out, upd = net.apply({"params": params, "batch_stats": stats}, y, train=True, mutable=["batch_stats"])
    return jnp.abs(out - target).sum(-1).mean(), upd["batch_stats"]

  def step(carry, batch):
    params, stats, opt = carry
    (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, *batch)
    updates, opt = tx.update(g, opt, params)
    return (optax.apply_updates(params, updates), stats, opt), loss

  def epoch(carry, e):
    order = jax.random.permutation(streams.derive(key, streams.MLP_BATCHES, e), m)[:steps * b].reshape(steps, b)
    carry, losses = jax.lax.scan(step, carry, (perturbed[order], clean[order]))
    return carry, losses.mean()

  @jax.jit
  def fit(params, stats, opt):
    (params, stats, _), losses = jax.lax.scan(epoch, (params, stats, opt), jnp.arange(epochs))
    return {"params": params, "batch_stats": stats}, losses

  variables, losses = fit(variables["params"], variables["batch_stats"], opt_state)
  return Recovery(net, variables, np.asarray(losses))


def shadow_keep(key, pool_labels, num_classes: int, num_shadows: int, *, halves: bool = False):
  """D-DAE's shadow training sets: shadow k keeps the pool images of `num_classes` random classes of the pool's
  labels, relabelled 0..C-1 in the order drawn (with `halves`, a random half of them: the other half are its
  non-members, for a defence that needs them).

  Returns:
    (keep bool[K, N], labels int[K, N]: the relabelled class, -1 outside the subset).
  """
  labels = np.asarray(pool_labels)
  classes = np.unique(labels)
  if len(classes) < num_classes:
    raise UserError(f"recovery trains shadows on {num_classes} of the pool's classes; its labels hold "
                    f"{len(classes)}")
  keep = np.zeros((num_shadows, len(labels)), bool)
  relabelled = np.full((num_shadows, len(labels)), -1, np.int64)
  for k in range(num_shadows):
    chosen = np.asarray(jax.random.permutation(streams.derive(key, streams.SHADOW_CLASSES, k), classes))[:num_classes]
    for new, old in enumerate(chosen):
      relabelled[k, labels == old] = new
    keep[k] = relabelled[k] >= 0
    if halves:
      keep[k] &= np.asarray(jax.random.bernoulli(streams.derive(key, streams.SHADOW_HALF, k), 0.5, (len(labels),)))
  return keep, relabelled


_SHADOWS: list = []   # the last shadows trained: [(pool, what else determines them, variables, their extractor)]


def train_shadows(shadow: Model, config: train.TrainConfig, pool_x, keep, relabelled, key):
  """The shadows' variables (a leading axis K), shadow k trained on pool_x[keep[k]] with labels relabelled[k].

  They depend on the attacker's data and key, not on the defence: the last ones trained are kept, so that the
  attack run against each defence setting in turn (the arena) trains them once."""
  what = (shadow.name, shadow.module, config, keep.tobytes(), relabelled.tobytes(),
          np.asarray(jax.random.key_data(key)).tobytes())
  if _SHADOWS and _SHADOWS[0][0] is pool_x and _SHADOWS[0][1] == what and _SHADOWS[0][3] is shadow.pretrained:
    return _SHADOWS[0][2]
  onehot = np.eye(shadow.num_classes, dtype=np.float32)[np.maximum(relabelled, 0)]   # rows outside unused
  variables = train.variables_of(train.train_k(shadow, config, pool_x, onehot, keep, key).state)
  _SHADOWS[:] = [(pool_x, what, variables, shadow.pretrained)]
  return variables


def recovery_table(shadow: Model, shadow_variables, images, defence: defences.Defence, key, *,
                   batch_size: int = 256):
  """D-DAE's table: for every shadow k and image x, clean = softmax(shadow_k(x)) and perturbed = the defence's
  answer to it (each shadow a fresh account of the defence; one key per batch, addressed like an account's by the
  rows answered).

  Returns:
    (perturbed f32[K * N, C], clean f32[K * N, C]).
  """
  clean = np.asarray(jax.nn.softmax(train.predict_k(shadow, shadow_variables, images)))   # [K, N, C]
  x = jnp.asarray(images, jnp.float32) / 255.0 if images.dtype == np.uint8 else jnp.asarray(images, jnp.float32)
  apply = jax.jit(defence.apply)
  perturbed = []
  for k in range(clean.shape[0]):
    state = defence.init()
    for s in range(0, len(images), batch_size):
      y, state = apply(x[s:s + batch_size], jnp.asarray(clean[k, s:s + batch_size]), state,
                       streams.derive(key, k, s))
      perturbed.append(np.asarray(y))
  c = clean.shape[-1]
  return np.concatenate(perturbed).reshape(-1, c), clean.reshape(-1, c)


def recovery_attack(oracle: Oracle, pool_x, pool_labels, budget: int, key, surrogate: Model,
                    config: train.TrainConfig, defence: Tuple[str, Optional[float]], *, num_shadows: int = 20,
                    shadow_config: Optional[train.TrainConfig] = None, table_images: int = 0,
                    batch_size: int = 256, epochs: int = 200, guard_steps: int = 500):
  """D-DAE against `defence` = (registry name, strength): the answers to KnockoffNets-random's B queries,
  recovered by a network fitted on the attacker's shadows answered through its own copy of the defence.

  table_images: pool images run through every shadow for the table (0: the B queried ones; they cost no query).
  Returns:
    (indices int[B], answers f32[B, C] as released, recovered f32[B, C], Recovery, the shadows' mean accuracy
    on (up to 2,000 of) their training images).
  """
  name, strength = defence
  n_table = table_images or budget
  if n_table > len(pool_x):
    raise UserError(f"recovery: table_images {n_table} is more than the pool's {len(pool_x)} images")
  c = oracle.num_classes
  needs_members = "members" in defences.get(name).needs
  keep, relabelled = shadow_keep(streams.derive(key, streams.RECOVERY_SUBSETS), pool_labels, c, num_shadows,
                                 halves=needs_members)
  idx = np.asarray(jax.random.permutation(streams.derive(key, streams.KNOCKOFF_QUERIES), len(pool_x))[:budget])
  answers = query_all(oracle, pool_x[idx], batch_size)
  variables = train_shadows(surrogate, shadow_config or config, pool_x, keep, relabelled,
                            streams.derive(key, streams.RECOVERY_SHADOWS))
  first = jax.tree.map(lambda v: v[0], variables)
  members = nonmembers = None
  if needs_members:
    inside = relabelled[0] >= 0
    members, nonmembers = pool_x[inside & keep[0]], pool_x[inside & ~keep[0]]
  mine = defences.attacker_copy(name, strength, surrogate, first, streams.derive(key, streams.RECOVERY_KIT),
                                input_shape=pool_x.shape[1:], members=members, nonmembers=nonmembers,
                                guard_steps=guard_steps)
  table_idx = idx if not table_images else np.asarray(
      jax.random.permutation(streams.derive(key, streams.RECOVERY_TABLE), len(pool_x))[:n_table])
  perturbed, clean = recovery_table(surrogate, variables, pool_x[table_idx], mine,
                                    streams.derive(key, streams.RECOVERY_TABLE), batch_size=batch_size)
  net = train_recovery(streams.derive(key, streams.RECOVERY_NET), perturbed, clean, epochs=epochs)
  logits = train.predict_k(surrogate, variables, pool_x[keep.any(0)][:2000])
  own = relabelled[:, keep.any(0)][:, :2000]
  acc = float(np.mean([(logits[k].argmax(-1) == own[k])[own[k] >= 0].mean() for k in range(num_shadows)]))
  return idx, answers, net(answers), net, acc
