"""DP-SGD (Abadi et al. 2016, Alg. 1) as a gradient function of the engine, with Poisson sampling.

Each step samples every example of a model's data independently with probability q = B / n (B the expected
batch size, `TrainConfig.batch_size`), gathers the sample into `num_chunks` physical batches of P rows padded
with a mask (P fixed per run, so nothing recompiles; a sample larger than P takes a second pass, never a
truncation), and `make_dp_grad_fn`'s gradient is

    (sum_i clip_C(g_i) + N(0, sigma^2 C^2 I)) / B

with g_i the gradient of example i (the mean loss over its `augmult` augmented views, De et al. 2022, Sec. 3.1,
averaged before clipping), clip_C(g) = g min(1, C / ||g||_2) over all parameters, and the division by the
*expected* batch size B, never the realised one (which would depend on the data). Clipping and summing are
jax-privacy's `clipped_grad` (NaN-safe, padded rows exactly zero); the noise comes from the step's own key.

BatchNorm mixes the examples of a batch and keeps un-noised running statistics: a model with BatchNorm is
refused (`check_dp_model`); the zoo's `_gn` names are the GroupNorm variants.
"""

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlpriv_jax.data.augment import random_crop_flip, to_float
from mlpriv_jax import streams
from mlpriv_jax.errors import UserError
from mlpriv_jax.models import Model, with_conv_impl
from mlpriv_jax.train.step import cross_entropy



@dataclasses.dataclass(frozen=True)
class DPConfig:
  """The DP-SGD recipe: noise on the sum std `noise_multiplier * clip_norm`; the sampling rate is B / n.

  augmult: augmented views per example whose gradients are averaged before clipping (1: none).
  physical_batch: rows per pass (default `physical_batch_size(B)`); microbatch_size: per-example gradients
  computed this many at a time inside a pass (memory), None: all at once.
  """
  noise_multiplier: float
  clip_norm: float = 1.0
  augmult: int = 1
  physical_batch: Optional[int] = None
  microbatch_size: Optional[int] = None

  def validate(self):
    if not (self.clip_norm > 0):
      raise UserError(f"the DP clip norm must be > 0, got {self.clip_norm}")
    if not (self.noise_multiplier >= 0) or math.isinf(self.noise_multiplier):
      raise UserError(f"the DP noise multiplier must be finite and >= 0, got {self.noise_multiplier}")
    if self.augmult < 1:
      raise UserError(f"augmult must be >= 1, got {self.augmult}")
    if self.physical_batch is not None and self.physical_batch < 1:
      raise UserError(f"physical_batch must be >= 1, got {self.physical_batch}")
    if self.microbatch_size is not None and self.microbatch_size < 1:
      raise UserError(f"microbatch_size must be >= 1, got {self.microbatch_size}")
    return self


def physical_batch_size(expected_batch_size: int) -> int:
  """Rows per pass: B + 3 sqrt(B), rounded up to a multiple of 8 (a second pass about once in 700 steps)."""
  b = int(expected_batch_size)
  return 8 * math.ceil((b + 3 * math.sqrt(b)) / 8)


def check_dp_model(model: Model) -> None:
  """Raises a UserError naming the GroupNorm variant if `model` has BatchNorm (running statistics)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  if shapes.get("batch_stats"):
    gn = model.name + "_gn" if not model.name.endswith("_gn") else model.name
    raise UserError(f"{model.name} has BatchNorm, which DP-SGD cannot train (it mixes the examples of a batch and "
                    f"releases un-noised statistics); use its GroupNorm variant {gn}")


def make_dp_grad_fn(model: Model, dp: DPConfig, expected_batch_size: int, *, augment: bool = True):
  """The DP-SGD gradient: grad_fn(params, batch_stats, batch, key) -> (grads, aux), as `step.make_grad_fn`.

  batch: {'x': u8[num_chunks, P, H, W, C], 'y': int[num_chunks, P], 'mask': bool[num_chunks, P]} (the Poisson
  sample, `poisson_sample` + `gather_sample`). grads = (sum of clipped per-example gradients + N(0, (sigma C)^2))
  / expected_batch_size. aux: {'loss' (mean over the sampled rows), 'logits' f32[num_chunks, P, classes] of each
  row's first view, 'batch_stats'}.
  """
  try:
    from jax_privacy import clipped_grad
  except ImportError as e:
    raise UserError("DP-SGD needs the 'dp' extra (jax-privacy, dp-accounting; Python >= 3.11): "
                    "pip install 'mlpriv_jax[dp]'") from e
  dp.validate()
  views = int(dp.augmult)
  if jax.default_backend() == "cpu" and model.module.conv_impl == "auto":
    # The per-example gradients vmap the model over examples, and XLA:CPU runs vmapped lax convs as slow grouped
    # convolutions (the layers' docstring): im2col made this gradient 1.2-1.3x faster on 2 cores.
    model = with_conv_impl(model, "im2col")

  def loss_one(params, x, y, key):
    """One example (leading axis 1): the mean loss over its views, and the first view's logits."""
    aug_key, dropout_key = jax.random.split(key)
    x = jnp.repeat(to_float(x), views, axis=0)
    if augment:
      x = random_crop_flip(aug_key, x)
    logits, _ = model.apply({"params": params}, x, train=True, key=dropout_key)
    return cross_entropy(logits, jnp.repeat(y, views)), logits[:1]

  clipped = clipped_grad(loss_one, has_aux=True, l2_clip_norm=float(dp.clip_norm), batch_argnums=(1, 2),
                         prng_argnum=3, return_values=True, microbatch_size=dp.microbatch_size)
  std = float(dp.noise_multiplier) * float(dp.clip_norm)

  def grad_fn(params, batch_stats, batch, key):
    noise_key, data_key = jax.random.split(key)

    # The passes are unrolled, not scanned: a loop on XLA:CPU runs several times slower, and there is
    # almost always one pass.
    total, values, logits = None, [], []
    for c in range(batch["x"].shape[0]):
      g, aux = clipped(params, batch["x"][c], batch["y"][c], jax.random.fold_in(data_key, c),
                       is_padding_example=~batch["mask"][c])
      total = g if total is None else jax.tree.map(jnp.add, total, g)
      values.append(aux.values)   # per row: its loss, its first view's logits f32[P, classes]
      logits.append(aux.aux)
    values, logits = jnp.stack(values), jnp.stack(logits)
    if std > 0:
      noise = optax.tree.random_like(noise_key, params, jax.random.normal)
      total = jax.tree.map(lambda t, z: t + std * z, total, noise)
    grads = jax.tree.map(lambda t: t / expected_batch_size, total)
    mask = batch["mask"]
    loss = jnp.where(mask, values, 0.0).sum() / jnp.maximum(mask.sum(), 1)
    return grads, dict(loss=loss, logits=logits, batch_stats=batch_stats)
  return grad_fn


def sampling_rates(expected_batch_size: int, counts) -> np.ndarray:
  """f32[K]: q_k = B / n_k rounded down to a multiple of 2^-23, so that P[uniform < q_k] never exceeds B / n_k.

  JAX's float32 uniforms are k / 2^23 for k uniform, so for such q, P[u < q] = q exactly."""
  q = expected_batch_size / np.asarray(counts, np.float64)
  return (np.floor(q * 2.0 ** 23) / 2.0 ** 23).astype(np.float32)


def poisson_sample(model_key, keep_row, rate, step):
  """One model's Poisson sample at a global step: (order int[N], count): the sampled indices first, in order.

  Every example with keep_row True is in with probability `rate`, independently (Abadi et al. 2016, Sec. 3.1).
  """
  key = streams.derive(model_key, streams.POISSON, step)
  take = keep_row & (jax.random.uniform(key, keep_row.shape) < rate)
  return jnp.argsort(~take, stable=True), take.sum()


def gather_sample(order_row, count, images, labels, *, num_chunks: int, rows: int):
  """The sample as `num_chunks` physical batches of `rows` rows, padded with mask False."""
  pos = jnp.arange(num_chunks * rows)
  idx = order_row[jnp.minimum(pos, order_row.shape[0] - 1)]
  return {"x": images[idx].reshape(num_chunks, rows, *images.shape[1:]),
          "y": labels[idx].reshape(num_chunks, rows, *labels.shape[1:]),
          "mask": (pos < count).reshape(num_chunks, rows)}
