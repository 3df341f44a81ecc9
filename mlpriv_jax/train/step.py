"""Train state, optimiser, and the jitted, donated update step (one model or K).

Written for one model; `make_train_step_fn(..., num_models=K)` adds the model axis
with one `vmap` (the only place the library does so for training).
"""

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from mlpriv_jax.data.augment import random_crop_flip, to_float
from mlpriv_jax.errors import UserError
from mlpriv_jax.models import Model


class TrainState(NamedTuple):
  """Arrays only, so it can be donated, vmapped and serialised as is."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Hyper-parameters of one training run (units in the names).

  Defaults are the WRN recipe (Zagoruyko & Komodakis 2016, Sec. 3), minus the epochs.
  """
  num_epochs: int = 200
  batch_size: int = 128
  learning_rate: float = 0.1
  momentum: float = 0.9
  nesterov: bool = True
  weight_decay: float = 5e-4
  schedule: str = "multistep"  # 'multistep' | 'cosine' | 'constant'
  milestones_epochs: Sequence[int] = (60, 120, 160)
  lr_decay_factor: float = 0.2
  augment: bool = True
  warmup_epochs: float = 0.0  # linear warm-up from 0; the schedule runs after it

  def validate(self):
    if self.num_epochs < 1:
      raise UserError(f"num_epochs must be >= 1, got {self.num_epochs}")
    if self.batch_size < 1:
      raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
    if not self.learning_rate > 0:
      raise UserError(f"learning_rate must be > 0, got {self.learning_rate}")
    if self.weight_decay < 0 or not 0 <= self.momentum < 1:
      raise UserError(f"need weight_decay >= 0 and 0 <= momentum < 1, got {self.weight_decay}, {self.momentum}")
    if not 0 <= self.warmup_epochs < self.num_epochs:
      raise UserError(f"warmup_epochs must be in [0, num_epochs), got {self.warmup_epochs}")
    if self.schedule not in ("multistep", "cosine", "constant"):
      raise UserError(f"unknown schedule {self.schedule!r}; known: multistep, cosine, constant")
    return self


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum and coupled weight decay, as PyTorch's SGD.

  Weight decay applies to every parameter, BN and biases included, like the
  reference PyTorch code (WRN, knockoffnets).
  """
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  total = config.num_epochs * steps_per_epoch - warmup
  if config.schedule == "cosine":
    lr = optax.cosine_decay_schedule(config.learning_rate, total)
  elif config.schedule == "multistep":
    lr = optax.piecewise_constant_schedule(
        config.learning_rate,
        {int(e) * steps_per_epoch - warmup: config.lr_decay_factor for e in config.milestones_epochs})
  else:
    lr = optax.constant_schedule(config.learning_rate)
  if warmup:
    lr = optax.join_schedules([optax.linear_schedule(0.0, config.learning_rate, warmup), lr], [warmup])
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay),
      optax.sgd(lr, momentum=config.momentum or None, nesterov=config.nesterov and config.momentum > 0))


def init_train_state(model: Model, tx: optax.GradientTransformation, key, image_shape) -> TrainState:
  """Initial state of one model from `key`; image_shape is (H, W, C)."""
  variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32))
  params = variables["params"]
  return TrainState(jnp.zeros((), jnp.int32), params, variables.get("batch_stats", {}), tx.init(params))


def variables_of(state: TrainState):
  return {"params": state.params, "batch_stats": state.batch_stats}


def cross_entropy(logits, labels):
  """Mean cross-entropy; labels are int[N] (hard) or f32[N, C] probabilities (soft).

  Soft labels give the KnockoffNets loss, the cross-entropy against the victim's
  probability vectors (Orekondy et al. 2019, section 4.2).
  """
  logp = jax.nn.log_softmax(logits)
  if labels.ndim == 1:
    return -jnp.take_along_axis(logp, labels[:, None], axis=-1).mean()
  return -(labels * logp).sum(-1).mean()


def _update(model: Model, tx, augment: bool, state: TrainState, images, labels, idx, key):
  """One SGD step of one model on the batch images[idx]."""
  aug_key, dropout_key = jax.random.split(key)
  x = to_float(images[idx])
  if augment:
    x = random_crop_flip(aug_key, x)
  y = labels[idx]

  def loss_fn(params):
    logits, new_model_state = model.apply({"params": params, "batch_stats": state.batch_stats}, x,
                                          train=True, key=dropout_key)
    return cross_entropy(logits, y), (logits, new_model_state)

  (loss, (logits, new_model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  hard = y if y.ndim == 1 else y.argmax(-1)
  measurements = {"loss": loss, "accuracy": (logits.argmax(-1) == hard).mean()}
  return TrainState(state.step + 1, params, new_model_state.get("batch_stats", state.batch_stats),
                    opt_state), measurements


MODEL_AXIS_STRATEGIES = ("auto", "vmap", "unroll")


def resolve_model_axis(strategy: str = "auto") -> str:
  """How K models share one jitted step: 'vmap', or 'unroll' (a Python loop over
  the K models traced into one XLA program). 'auto' is 'unroll' on CPU, 'vmap'
  elsewhere: on XLA:CPU a vmapped conv weight becomes a grouped convolution whose
  backward pass is slow (jax #13800), and im2col under vmap is still slower than
  unrolling (BUILD_NOTES.md has the measurements)."""
  if strategy not in MODEL_AXIS_STRATEGIES:
    raise UserError(f"unknown model axis strategy {strategy!r}; known: {', '.join(MODEL_AXIS_STRATEGIES)}")
  if strategy == "auto":
    return "unroll" if jax.default_backend() == "cpu" else "vmap"
  return strategy


def over_models(fn, num_models: int, in_axes: Sequence[int | None], strategy: str = "auto"):
  """Adds a leading model axis K to `fn`, by `vmap` or by unrolling (same result)."""
  if resolve_model_axis(strategy) == "vmap":
    return jax.vmap(fn, in_axes=tuple(in_axes))

  def unrolled(*args):
    outs = [fn(*(a if ax is None else jax.tree.map(lambda t: t[j], a) for a, ax in zip(args, in_axes)))
            for j in range(num_models)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  return unrolled


def make_train_step_fn(model: Model, tx, *, augment: bool = True, num_models: int | None = None,
                       model_axis: str = "auto"):
  """Returns jitted `step(state, images, labels, idx, key) -> (state, measurements)`.

  images: u8[N, H, W, C] and labels (int[N] or f32[N, C]) stay on the device and
  are shared; idx: int[B] (int[K, B] with num_models) selects the batch; key is
  the step's key (one per model with num_models). The state is donated.
  """
  fn = lambda *a: _update(model, tx, augment, *a)
  if num_models is not None:
    fn = over_models(fn, num_models, (0, None, None, 0, 0), model_axis)
  return jax.jit(fn, donate_argnums=0)


def make_predict_fn(model: Model, *, num_models: int | None = None, model_axis: str = "auto"):
  """Returns jitted `predict(variables, images) -> logits f32[N, C]` ([K, N, C]).

  images are u8 (scaled to [0, 1] here) or floats already in [0, 1].
  """
  def fn(variables, images):
    x = to_float(images) if images.dtype == jnp.uint8 else images
    return model.apply(variables, x, train=False)[0]

  if num_models is not None:
    fn = over_models(fn, num_models, (0, None), model_axis)
  return jax.jit(fn)
