"""Train state, optimiser, and the jitted, donated update step (one model or K).

Written for one model; `make_train_step_fn(..., num_models=K)` adds the model axis
(`over_models`, the only place the library does so for training).

What the compiled step depends on: the model, the optimiser's structure, the gradient function,
the batch size and K. Nothing else: the learning rate arrives as a value each step (the schedule
is evaluated outside, `learning_rates`), the batch is gathered outside it, and the step's key is
folded from `state.step` inside it. So a new dataset size, epoch count or schedule compiles
nothing new.
"""

import dataclasses
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlpriv_jax.data.augment import random_crop_flip, to_float
from mlpriv_jax import streams
from mlpriv_jax.errors import UserError
from mlpriv_jax.models import Model



class TrainState(NamedTuple):
  """Arrays only, so it can be donated, vmapped, sharded and serialised as is."""
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
  label_smoothing: float = 0.0  # targets (1 - e) y + e / C (Szegedy et al. 2016, Sec. 7), hard or soft labels

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
    if not 0 <= self.label_smoothing < 1:
      raise UserError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
    if self.schedule not in ("multistep", "cosine", "constant"):
      raise UserError(f"unknown schedule {self.schedule!r}; known: multistep, cosine, constant")
    return self


def learning_rates(config: TrainConfig, steps_per_epoch: int) -> np.ndarray:
  """f32[num_epochs * steps_per_epoch]: the learning rate of every global step, computed on the host.

  An optional linear warm-up from 0 over `warmup_epochs`, then multistep (x lr_decay_factor at each of
  `milestones_epochs`, absolute epochs), cosine (to 0 at the end; Loshchilov & Hutter 2017) or constant:
  optax's `linear_schedule`, `piecewise_constant_schedule`, `cosine_decay_schedule` joined by
  `join_schedules`, in closed form, so that no schedule is compiled.
  """
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  t = np.arange(config.num_epochs * steps_per_epoch, dtype=np.float64)
  s = t - warmup                                    # the schedule's own count, after the warm-up
  total = config.num_epochs * steps_per_epoch - warmup
  if config.schedule == "cosine":
    lr = config.learning_rate * 0.5 * (1 + np.cos(np.pi * np.minimum(s, total) / total))
  elif config.schedule == "multistep":
    lr = np.full_like(t, config.learning_rate)
    for e in config.milestones_epochs:
      lr = np.where(s >= int(e) * steps_per_epoch - warmup, lr * config.lr_decay_factor, lr)
  else:
    lr = np.full_like(t, config.learning_rate)
  if warmup:
    lr = np.where(t < warmup, config.learning_rate * t / warmup, lr)
  return lr.astype(np.float32)


def _sgd(learning_rate, weight_decay, momentum, nesterov):
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum and coupled weight decay, as PyTorch's SGD.

  Weight decay applies to every parameter, BN and biases included, like the reference PyTorch code (WRN,
  knockoffnets). The learning rate is an injected hyper-parameter (`optax.inject_hyperparams`) that the
  step sets from its `lr` argument, so the schedule is not part of the compiled program.
  """
  momentum = config.momentum or None
  return optax.inject_hyperparams(_sgd, static_args=("momentum", "nesterov"))(
      learning_rate=config.learning_rate, weight_decay=config.weight_decay, momentum=momentum,
      nesterov=bool(config.nesterov and momentum))


def with_learning_rate(opt_state, lr):
  """The optimiser state of `make_optimizer` with the learning rate for the coming update."""
  return opt_state._replace(hyperparams={**opt_state.hyperparams,
                                         "learning_rate": jnp.asarray(lr, opt_state.hyperparams["learning_rate"].dtype)})


def init_train_state(model: Model, tx: optax.GradientTransformation, key, image_shape) -> TrainState:
  """Initial state of one model from `key` (its pretrained layers the model's pretrained variables); image_shape is
  (H, W, C)."""
  return with_pretrained(model, fresh_train_state(model, tx, key, image_shape))


def fresh_train_state(model: Model, tx: optax.GradientTransformation, key, image_shape) -> TrainState:
  """`init_train_state` without the pretrained part (what a compiled init may close over: no weights)."""
  variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32))
  params = variables["params"]
  return TrainState(jnp.zeros((), jnp.int32), params, variables.get("batch_stats", {}), tx.init(params))


def with_pretrained(model: Model, state: TrainState, num_models: Optional[int] = None) -> TrainState:
  """The state with the model's pretrained layers set to their variables (`Model.pretrained`; broadcast over a
  leading axis of `num_models`). The optimiser's state does not depend on the parameters' values."""
  if model.pretrained is None:
    return state
  # copies: the training step donates the state, and the model's pretrained arrays must outlive it
  put = lambda v: jnp.array(v, copy=True) if num_models is None else jnp.broadcast_to(v, (num_models, *jnp.shape(v)))
  frozen = {c: {k: jax.tree.map(put, v) for k, v in model.pretrained[c].items()} for c in ("params", "batch_stats")}
  for c in ("params", "batch_stats"):
    held = getattr(state, c)
    missing = set(frozen[c]) - set(held)
    if missing:
      raise UserError(f"the pretrained variables name layers the model lacks: {sorted(missing)}")
    for k, v in frozen[c].items():
      if jax.tree.structure(v) != jax.tree.structure(held[k]) or any(
          jnp.shape(a) != jnp.shape(b) for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(held[k]))):
        raise UserError(f"the pretrained {c} of layer {k} do not fit the model's")
  return state._replace(params={**state.params, **frozen["params"]},
                        batch_stats={**state.batch_stats, **frozen["batch_stats"]})


def variables_of(state: TrainState):
  return {"params": state.params, "batch_stats": state.batch_stats}


def cross_entropy(logits, labels, mask=None, label_smoothing: float = 0.0):
  """Mean cross-entropy; labels are int[N] (hard) or f32[N, C] probabilities (soft); mask: bool[N] rows kept.

  Soft labels give the KnockoffNets loss, the cross-entropy against the victim's
  probability vectors (Orekondy et al. 2019, section 4.2). label_smoothing e trains against
  (1 - e) y + e / C (Szegedy et al. 2016, "Rethinking the Inception Architecture", Sec. 7).
  """
  logp = jax.nn.log_softmax(logits)
  if labels.ndim == 1:
    per_example = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
  else:
    per_example = -(labels * logp).sum(-1)
  if label_smoothing:   # -sum((1 - e) y + e / C) log p = (1 - e) CE(y) + e mean_c(-log p)
    per_example = (1 - label_smoothing) * per_example - label_smoothing * logp.mean(-1)
  if mask is None:
    return per_example.mean()
  return jnp.where(mask, per_example, 0.0).sum() / jnp.maximum(mask.sum(), 1)


def make_grad_fn(model: Model, loss_fn: Callable = cross_entropy, *, augment: bool = True) -> Callable:
  """The plain minibatch gradient: grad_fn(params, batch_stats, batch, key) -> (grads, aux).

  batch: {'x': u8[B, H, W, C] (or floats in [0, 1]), 'y': int[B] or f32[B, C], optionally 'mask': bool[B], the rows
  that count (passed to loss_fn as its third argument)}; aux: {'loss', 'logits', 'batch_stats'}.
  A gradient function of this signature is what `make_train_step_fn` takes (DP-SGD is one).
  """
  def grad_fn(params, batch_stats, batch, key):
    aug_key, dropout_key = jax.random.split(key)
    x = to_float(batch["x"]) if batch["x"].dtype == jnp.uint8 else batch["x"]
    if augment:
      x = random_crop_flip(aug_key, x)

    def loss(params):
      logits, new_model_state = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                            key=dropout_key)
      mask = batch.get("mask")
      value = loss_fn(logits, batch["y"]) if mask is None else loss_fn(logits, batch["y"], mask)
      return value, (logits, new_model_state)

    (value, (logits, new_model_state)), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return grads, dict(loss=value, logits=logits, batch_stats=new_model_state.get("batch_stats", batch_stats))
  return grad_fn


def update(tx, grad_fn, state: TrainState, batch, model_key, lr):
  """One step of one model: its key from state.step, its gradient from grad_fn, the optimiser update (pure: what
  `make_train_step_fn` jits, and what a compiled loop of its own may call)."""
  key = streams.derive(model_key, streams.STEP, state.step)
  grads, aux = grad_fn(state.params, state.batch_stats, batch, key)
  if jax.tree.structure(grads) != jax.tree.structure(state.params):
    raise UserError(f"grad_fn returned a tree of structure {jax.tree.structure(grads)}; the parameters have "
                    f"{jax.tree.structure(state.params)}")
  updates, opt_state = tx.update(grads, with_learning_rate(state.opt_state, lr), state.params)
  params = optax.apply_updates(state.params, updates)
  y = batch["y"]
  logits = aux["logits"]
  correct = logits.argmax(-1) == (y.argmax(-1) if y.ndim == logits.ndim else y)   # soft labels: one per logit
  mask = batch.get("mask")
  accuracy = correct.mean() if mask is None else jnp.where(mask, correct, False).sum() / jnp.maximum(mask.sum(), 1)
  return TrainState(state.step + 1, params, aux["batch_stats"], opt_state), {"loss": aux["loss"], "accuracy": accuracy}


MODEL_AXIS_STRATEGIES = ("auto", "vmap", "unroll")


def resolve_model_axis(strategy: str = "auto") -> str:
  """How K models share one jitted step: 'vmap', or 'unroll' (a Python loop over
  the K models traced into one XLA program). 'auto' is 'unroll' on CPU, 'vmap'
  elsewhere: on XLA:CPU a vmapped conv weight becomes a grouped convolution whose
  backward pass is slow (jax #13800), and im2col under vmap is still slower than
  unrolling (docs/cpu_gap.md has the measurements)."""
  if strategy not in MODEL_AXIS_STRATEGIES:
    raise UserError(f"unknown model axis strategy {strategy!r}; known: {', '.join(MODEL_AXIS_STRATEGIES)}")
  if strategy == "auto":
    return "unroll" if jax.default_backend() == "cpu" else "vmap"
  return strategy


def over_models(fn, num_models: int, in_axes: Sequence[Optional[int]], strategy: str = "auto"):
  """Adds a leading model axis K to `fn`, by `vmap` or by unrolling (same result)."""
  if resolve_model_axis(strategy) == "vmap":
    return jax.vmap(fn, in_axes=tuple(in_axes))

  def unrolled(*args):
    outs = [fn(*(a if ax is None else jax.tree.map(lambda t: t[j], a) for a, ax in zip(args, in_axes)))
            for j in range(num_models)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  return unrolled


def make_train_step_fn(model: Model, tx, *, augment: bool = True, loss_fn: Callable = cross_entropy,
                       grad_fn: Optional[Callable] = None, num_models: Optional[int] = None,
                       model_axis: str = "auto", mesh=None):
  """Returns jitted `step(state, batch, model_key, lr) -> (state, measurements)`.

  batch: {'x': u8[B, H, W, C], 'y': int[B] or f32[B, C], optionally 'mask': bool[B]} ([K, B, ...] with
  num_models); model_key: the model's key ([K] keys); lr: the learning rate of this step (shared by the K
  models). grad_fn: see `make_grad_fn` (the default, with `loss_fn` and `augment`). The state is donated.
  mesh: with num_models, the new state and measurements stay split over its 'models' axis.
  """
  grad_fn = grad_fn or make_grad_fn(model, loss_fn, augment=augment)
  frozen = {c: tuple(k for k in model.pretrained[c] if k not in model.fine_tuned)
            for c in ("params", "batch_stats")} if model.pretrained else None

  def train_step(state, batch, model_key, lr):
    new, measurements = update(tx, grad_fn, state, batch, model_key, lr)
    if frozen:   # the frozen part as it was (no weight decay, no running statistics)
      new = new._replace(params={**new.params, **{k: state.params[k] for k in frozen["params"]}},
                         batch_stats={**new.batch_stats, **{k: state.batch_stats[k] for k in frozen["batch_stats"]}})
    return new, measurements

  fn = train_step if num_models is None else over_models(train_step, num_models, (0, 0, 0, None), model_axis)
  if mesh is None:
    return jax.jit(fn, donate_argnums=0)
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("models"))
  return jax.jit(fn, donate_argnums=0, out_shardings=(split, split))


def make_predict_fn(model: Model, *, num_models: Optional[int] = None, model_axis: str = "auto"):
  """Returns jitted `predict(variables, images) -> logits f32[N, C]` ([K, N, C]).

  images are u8 (scaled to [0, 1] here) or floats already in [0, 1].
  """
  def fn(variables, images):
    x = to_float(images) if images.dtype == jnp.uint8 else images
    return model.apply(variables, x, train=False)[0]

  if num_models is not None:
    fn = over_models(fn, num_models, (0, None), model_axis)
  return jax.jit(fn)
