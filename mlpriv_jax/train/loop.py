"""Training loops: one model (`train`) and K models at once (`train_k`).

Both share the data order and key schedule, so model k of `train_k` is the model
that `train` produces with the same key, keep mask and steps per epoch
(tests/train_test.py):

* model key   k_m = fold_in(key, k)           (the same whether K is 4 or 64)
* init key        = fold_in(k_m, INIT)        (the names are `mlpriv_jax.streams`')
* epoch order     = argsort of uniforms from fold_in(fold_in(k_m, ORDER), epoch),
                    with the examples outside keep[k] sorted last
* step key        = fold_in(fold_in(k_m, STEP), state.step), folded inside the step

An epoch is ceil(max_k n_k / B) steps; batch t of model k takes positions
t*B .. t*B+B-1 of its order, modulo n_k (its kept count), so a model with fewer
examples than the largest wraps around. The images stay on the device, padded to
a bucket of a power-of-two size (`bucket_size`) so that datasets of sizes in one
bucket share every compiled function; each step's batch is gathered by index
outside the step, so the step itself compiles once per (model, batch size, K,
gradient function), whatever the data size, schedule or epoch count.

DP-SGD (`dp=dpsgd.DPConfig(...)`) replaces the epoch order by Poisson sampling: at global step s, model k
takes each of its examples with probability B / n_k from fold_in(fold_in(k_m, POISSON), s), in passes of a fixed
number of rows (`dpsgd`), and its gradient is the clipped, noised sum.

Compiled functions live in one bounded cache (`FUNCTIONS`, least recently used out).

A Python loop over jitted steps (not `lax.scan`): on XLA:CPU the scanned loop
measured about 5x slower.

Sharding the K axis: `train_k(..., mesh=...)` splits the K models over the devices
of a mesh axis named "models" (state and keys `P("models")`, data replicated); the
models never communicate, so the program is the same with or without the mesh.
Several processes (hosts) share one workdir with `process_index`/`process_count`:
each trains the chunks i with i % process_count == process_index and writes their
checkpoints; a later call with process_count=1 finds every chunk finished and
returns all K.
"""

import collections
import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax import streams
from mlpriv_jax.errors import UserError
from mlpriv_jax.models import Model, with_conv_impl
from mlpriv_jax.train import checkpoint, dpsgd
from mlpriv_jax.train.step import (TrainConfig, TrainState, cross_entropy, fresh_train_state, learning_rates,
                                   make_grad_fn, make_optimizer, make_predict_fn, make_train_step_fn,
                                   resolve_model_axis, variables_of, with_pretrained)

MIN_BUCKET = 256


class TrainResult(NamedTuple):
  state: TrainState          # stacked on a leading K axis for train_k
  history: list              # one dict per epoch
  compile_seconds: float
  train_images_per_sec: float
  model_ids: tuple = ()      # the models of `state` (train_k: all K, or this process's share)


class FunctionCache:
  """Compiled functions by what they close over (Flax modules hash by value), least recently used out."""

  def __init__(self, maxsize: int = 64):
    self.maxsize, self._fns = maxsize, collections.OrderedDict()
    self.hits = self.misses = 0

  def get(self, key, make: Callable):
    if key in self._fns:
      self.hits += 1
      self._fns.move_to_end(key)
      return self._fns[key]
    self.misses += 1
    fn = self._fns[key] = make()
    if len(self._fns) > self.maxsize:
      self._fns.popitem(last=False)
    return fn

  def clear(self):
    self._fns.clear()
    self.hits = self.misses = 0

  def __len__(self):
    return len(self._fns)


FUNCTIONS = FunctionCache()


def bucket_size(n: int) -> int:
  """The padded size of a dataset of n examples: the next power of two, at least MIN_BUCKET."""
  return max(MIN_BUCKET, 1 << max(int(n) - 1, 0).bit_length())


def _pad_rows(a, size: int, axis: int = 0):
  pad = size - a.shape[axis]
  if pad == 0:
    return a
  widths = [(0, 0)] * a.ndim
  widths[axis] = (0, pad)
  return np.pad(np.asarray(a), widths)


def _epoch_order(model_key, keep_row, epoch):
  u = jax.random.uniform(streams.derive(model_key, streams.ORDER, epoch), keep_row.shape)
  return jnp.argsort(jnp.where(keep_row, u, 2.0))


def _make_gather(batch_size: int, per_model_labels: bool):
  def gather_batch(order_row, count, t, images, labels):
    """Batch t of one model: positions t*B .. t*B+B-1 of its epoch order, modulo its kept count."""
    idx = order_row[(t * batch_size + jnp.arange(batch_size)) % count]
    return {"x": images[idx], "y": labels[idx]}
  return jax.jit(jax.vmap(gather_batch, in_axes=(0, 0, None, None, 0 if per_model_labels else None)))


def check_keep(keep, num_examples: int, batch_size: int) -> np.ndarray:
  keep = np.asarray(keep)
  if keep.ndim != 2 or keep.shape[1] != num_examples or keep.dtype != np.bool_:
    raise UserError(f"keep must be bool [K, N] with N = {num_examples}, got {keep.dtype} {list(keep.shape)}")
  if keep.shape[0] < 1:
    raise UserError("keep must hold at least one model (K >= 1)")
  n = keep.sum(1)
  if n.min() < batch_size:
    raise UserError(f"batch_size {batch_size} is larger than the data of model {int(n.argmin())} "
                    f"({int(n.min())} examples)")
  return keep


def _check_data(model: Model, config: TrainConfig, images, labels, num_models: Optional[int] = None):
  config.validate()
  images = np.asarray(images) if not isinstance(images, jax.Array) else images
  if images.dtype != np.uint8 or images.ndim != 4:
    raise UserError(f"images must be uint8 [N, H, W, C], got {images.dtype} {list(images.shape)}")
  n = images.shape[0]
  per_model = num_models is not None and labels.ndim == 3
  if per_model and tuple(labels.shape[:2]) != (num_models, n):
    raise UserError(f"per-model soft labels must be f32[K, N, C] with K = {num_models}, N = {n}, got "
                    f"{list(labels.shape)}")
  if not per_model and (labels.shape[0] != n or labels.ndim not in (1, 2)):
    raise UserError(f"labels must be int [N], float [N, C] (or [K, N, C] for train_k) with N = {n}, got "
                    f"{list(labels.shape)}")
  if labels.ndim >= 2 and labels.shape[-1] != model.num_classes:
    raise UserError(f"soft labels have {labels.shape[-1]} classes, the model {model.num_classes}")
  if labels.ndim >= 2 and not np.all(np.isfinite(np.asarray(labels))):
    raise UserError("soft labels hold NaN or inf")
  if labels.ndim == 1 and (np.asarray(labels).min() < 0 or np.asarray(labels).max() >= model.num_classes):
    raise UserError(f"labels must lie in [0, {model.num_classes}), got [{np.asarray(labels).min()}, "
                    f"{np.asarray(labels).max()}]")


def _check_mesh(mesh, num_models: int, chunk_size: int):
  if "models" not in mesh.axis_names:
    raise UserError(f"the mesh needs an axis named 'models' to split the K models over; it has {mesh.axis_names}")
  d = mesh.shape["models"]
  if num_models % d or chunk_size % d:
    raise UserError(f"K = {num_models} models in chunks of {chunk_size} cannot be split evenly over the mesh's "
                    f"{d} 'models' devices; use a K and chunk_size divisible by {d}")


def train_k(model: Model, config: TrainConfig, images, labels, keep, key, *,
            chunk_size: Optional[int] = None, workdir: Optional[str] = None, eval_data=None,
            on_epoch_end: Optional[Callable[[dict], None]] = None, meta: Optional[dict] = None,
            model_axis: str = "auto", grad_fn: Optional[Callable] = None, mesh=None,
            process_index: int = 0, process_count: int = 1, dp: Optional[dpsgd.DPConfig] = None,
            key_ids=None, checkpoint_every_s: float = 0.0) -> TrainResult:
  """Trains K models of one architecture at once, model k on images[keep[k]].

  Args:
    model: the architecture (all K share it).
    config: hyper-parameters.
    images: u8[N, H, W, C]; labels: int[N], soft f32[N, C], or per-model soft f32[K, N, C].
    keep: bool[K, N], the examples each model trains on (Shokri/LiRA keep masks).
    key: typed PRNG key; model k uses fold_in(key, k).
    chunk_size: train at most this many models at once (memory, and compile time
      when unrolled); results do not depend on it. Default: all K with vmap, 16
      when unrolled.
    workdir: if given, a checkpoint per chunk is written after every epoch and a
      rerun resumes from it.
    checkpoint_every_s: with a workdir (ckpt_path), checkpoint at the end of an epoch only once this many seconds
      have passed since the last one, and after the last epoch (0: every epoch). A resume redoes at most that
      much work; the results do not depend on it (an epoch is a function of the state and its index).
    eval_data: optional (images, labels) evaluated after every epoch.
    on_epoch_end: called with each epoch's record (for progress lines).
    meta: extra metadata stored in (and checked against) the checkpoints.
    model_axis: 'auto', 'vmap' or 'unroll' (see `step.resolve_model_axis`).
    grad_fn: the gradient function of every step (see `step.make_grad_fn`; DP-SGD's is another).
    mesh: a `jax.sharding.Mesh` with an axis 'models': the K models of a chunk are split over its devices.
    process_index, process_count: this process trains chunk i when i % process_count == process_index
      (several hosts sharing one workdir); the result then holds only those models (`model_ids`).
    dp: train with DP-SGD (`dpsgd`): Poisson sampling at rate B / n_k for model k, clipped and noised
      gradients; config.batch_size is then the expected batch size.
    key_ids: int[K], the key index of each model (default: k). Equal ids give equal initialisations and batch
      orders: zeros train every model as `train(..., model_index=0)` would, a paired comparison (e.g. one surrogate
      trained on each defence's answers to the same queries).
  Returns:
    TrainResult whose state leaves have a leading axis K.
  """
  keep = check_keep(keep, images.shape[0], config.batch_size)
  num_models = keep.shape[0]
  _check_data(model, config, images, labels, num_models)
  if mesh is not None:
    if model_axis == "unroll":
      raise UserError("a mesh splits the K models with vmap; model_axis='unroll' cannot be sharded")
    model_axis = "vmap"
  model_axis = resolve_model_axis(model_axis)
  if model_axis == "vmap" and jax.default_backend() == "cpu" and model.module.conv_impl == "auto":
    model = with_conv_impl(model, "im2col")  # vmapped lax convs are ~4x slower on XLA:CPU
  if chunk_size is None:
    chunk_size = num_models if model_axis == "vmap" else 16
  chunk_size = int(chunk_size)
  if chunk_size < 1:
    raise UserError(f"chunk_size must be >= 1, got {chunk_size}")
  if mesh is not None:
    _check_mesh(mesh, num_models, min(chunk_size, num_models))
  if not 0 <= process_index < process_count:
    raise UserError(f"need 0 <= process_index < process_count, got {process_index}, {process_count}")
  key_ids = np.arange(num_models) if key_ids is None else np.asarray(key_ids, np.int64)
  if key_ids.shape != (num_models,) or key_ids.min() < 0:
    raise UserError(f"key_ids must be {num_models} integers >= 0, got shape {list(key_ids.shape)}")
  steps = math.ceil(int(keep.sum(1).max()) / config.batch_size)  # over all K: chunking changes nothing
  data = _device_data(images, labels, mesh)
  states, history, compile_s, rates, ids = [], [], 0.0, [], []
  for i, start in enumerate(range(0, num_models, chunk_size)):
    stop = min(start + chunk_size, num_models)
    path = os.path.join(workdir, f"models_{start:05d}-{stop:05d}.msgpack") if workdir else None
    if i % process_count != process_index:
      continue
    chunk_labels = data[1][start:stop] if labels.ndim == 3 else data[1]
    r = _run(model, config, (data[0], chunk_labels, images.shape[0]), keep[start:stop], key, key_ids[start:stop],
             vmapped=True, ckpt_path=path, eval_data=eval_data, on_epoch_end=on_epoch_end, meta=meta,
             model_axis=model_axis, steps=steps, grad_fn=grad_fn, mesh=mesh, per_model_labels=labels.ndim == 3,
             dp=dp, checkpoint_every_s=checkpoint_every_s)
    states.append(r.state)
    history.extend(r.history)
    compile_s += r.compile_seconds
    rates.append(r.train_images_per_sec)
    ids.extend(range(start, stop))
  state = jax.tree.map(lambda *xs: jnp.concatenate(xs), *states) if len(states) > 1 else states[0]
  return TrainResult(state, history, compile_s, float(np.mean(rates)), tuple(ids))


def train(model: Model, config: TrainConfig, images, labels, key, *, keep=None, model_index: int = 0,
          steps_per_epoch: Optional[int] = None, ckpt_path: Optional[str] = None, eval_data=None,
          on_epoch_end=None, meta: Optional[dict] = None, grad_fn: Optional[Callable] = None,
          dp: Optional[dpsgd.DPConfig] = None, checkpoint_every_s: float = 0.0) -> TrainResult:
  """Trains one model (the un-vmapped path); same arguments as `train_k`.

  keep: optional bool[N]; model_index: the k whose keys this model uses;
  steps_per_epoch: default ceil(n / B). Then
  `train(..., keep=keep[k], model_index=k, steps_per_epoch=ceil(max_j n_j / B))`
  reproduces model k of `train_k` (the default agrees whenever the counts round up
  alike, e.g. equal counts).
  """
  _check_data(model, config, images, labels)
  keep = np.ones(images.shape[0], bool) if keep is None else np.asarray(keep)
  keep = check_keep(keep[None], images.shape[0], config.batch_size)
  if steps_per_epoch is not None and steps_per_epoch < 1:
    raise UserError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
  data = _device_data(images, labels, None)
  return _run(model, config, (*data, images.shape[0]), keep, key, np.array([model_index]), vmapped=False,
              ckpt_path=ckpt_path, eval_data=eval_data, on_epoch_end=on_epoch_end, meta=meta,
              steps=steps_per_epoch, grad_fn=grad_fn, dp=dp, checkpoint_every_s=checkpoint_every_s)


def _device_data(images, labels, mesh):
  """Images and labels on the device(s), padded to the bucket of their size (replicated over a mesh)."""
  n_b = bucket_size(images.shape[0])
  x = _pad_rows(np.asarray(images), n_b)
  y = _pad_rows(np.asarray(labels), n_b, axis=1 if labels.ndim == 3 else 0)
  if mesh is None:
    return jnp.asarray(x), jnp.asarray(y)
  from jax.sharding import NamedSharding, PartitionSpec as P
  return (jax.device_put(x, NamedSharding(mesh, P())),
          jax.device_put(y, NamedSharding(mesh, P("models") if labels.ndim == 3 else P())))


def _shard(tree, mesh):
  from jax.sharding import NamedSharding, PartitionSpec as P
  return jax.device_put(tree, NamedSharding(mesh, P("models")))


def _run(model, config, data, keep, key, model_ids, *, vmapped, ckpt_path, eval_data, on_epoch_end, meta,
         model_axis="vmap", steps=None, grad_fn=None, mesh=None, per_model_labels=False, dp=None,
         checkpoint_every_s=0.0) -> TrainResult:
  images_d, labels_d, num_examples = data
  num_models = keep.shape[0]
  steps = steps or math.ceil(int(keep.sum(1).max()) / config.batch_size)
  if dp is not None:
    dp.validate()
    dpsgd.check_dp_model(model)
    if grad_fn is not None or labels_d.ndim != 1:
      raise UserError("DP-SGD trains on hard labels int[N] with its own gradient (no grad_fn, no soft labels)")
    grad_fn = FUNCTIONS.get(("dp_grad", model.module, dp, config.batch_size, config.augment),
                            lambda: dpsgd.make_dp_grad_fn(model, dp, config.batch_size, augment=config.augment))
  if config.label_smoothing:
    if grad_fn is not None or dp is not None:
      raise UserError("label_smoothing applies to the plain cross-entropy step (no grad_fn, no DP-SGD)")
    smoothed = functools.partial(cross_entropy, label_smoothing=config.label_smoothing)
    grad_fn = FUNCTIONS.get(("smoothed_grad", model.module, config.label_smoothing, config.augment),
                            lambda: make_grad_fn(model, smoothed, augment=config.augment))
  tx = make_optimizer(config)
  lrs = learning_rates(config, steps)
  image_shape = tuple(images_d.shape[1:])
  opt_key = (config.momentum, config.nesterov)   # what the optimiser's structure depends on
  model_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(model_ids))
  def init_states(k, weight_decay):
    # The optimiser's hyper-parameters are values in its state, so one compiled init serves every value.
    s = fresh_train_state(model, tx, streams.derive(k, streams.INIT), image_shape)
    hyper = dict(s.opt_state.hyperparams, weight_decay=jnp.asarray(weight_decay, jnp.float32))
    return s._replace(opt_state=s.opt_state._replace(hyperparams=hyper))
  init_fn = FUNCTIONS.get(("init", model.module, opt_key, image_shape),
                          lambda: jax.jit(jax.vmap(init_states, in_axes=(0, None))))
  state = with_pretrained(model, init_fn(model_keys, config.weight_decay), num_models)
  keep_d = jnp.asarray(_pad_rows(keep, images_d.shape[0], axis=1))
  order_fn = FUNCTIONS.get(("order", keep_d.shape), lambda: jax.jit(jax.vmap(_epoch_order, in_axes=(0, 0, None))))
  b = config.batch_size
  gather_fn = FUNCTIONS.get(("gather", keep_d.shape, b, labels_d.shape, per_model_labels),
                            lambda: _make_gather(b, per_model_labels))
  if vmapped:
    step_fn = FUNCTIONS.get(("step", model.module, opt_key, config.augment, num_models, model_axis, grad_fn, mesh),
                            lambda: make_train_step_fn(model, tx, augment=config.augment, grad_fn=grad_fn,
                                                       num_models=num_models, model_axis=model_axis, mesh=mesh))
  else:
    state = jax.tree.map(lambda x: x[0], state)
    step_fn = FUNCTIONS.get(("step", model.module, opt_key, config.augment, None, None, grad_fn),
                            lambda: make_train_step_fn(model, tx, augment=config.augment, grad_fn=grad_fn))
  if dp is not None:
    rows = dp.physical_batch or dpsgd.physical_batch_size(b)
    if dp.microbatch_size and rows % dp.microbatch_size:
      raise UserError(f"microbatch_size {dp.microbatch_size} must divide the {rows} rows of a DP-SGD pass")
    sample = _poisson_sampler(keep_d.shape, labels_d.shape, rows)
    rates = jnp.asarray(dpsgd.sampling_rates(config.batch_size, keep.sum(1)))
  if mesh is not None:
    state, model_keys, keep_d = _shard(state, mesh), _shard(model_keys, mesh), _shard(keep_d, mesh)
    if dp is not None:
      rates = _shard(rates, mesh)

  meta = dict(meta or {}, arch=model.name, num_classes=model.num_classes, num_models=num_models,
              model_ids=[int(model_ids[0]), int(model_ids[-1])], vmapped=vmapped, batch_size=config.batch_size,
              num_epochs=config.num_epochs, steps_per_epoch=steps,
              dp=dataclasses.asdict(dp) if dp is not None else None,
              train_config=json.loads(json.dumps(dataclasses.asdict(config))),
              data=hashlib.sha256(np.packbits(keep).tobytes() + str((num_examples, *image_shape)).encode()
                                  ).hexdigest()[:16])
  history, first_epoch = [], 0
  if ckpt_path and os.path.exists(ckpt_path):
    # Resume: everything the remaining epochs need is a function of (state, epoch).
    # A rerun with other hyper-parameters or data must not continue this state.
    check = {k: meta[k] for k in ("arch", "num_classes", "num_models", "model_ids", "batch_size", "steps_per_epoch",
                                  "train_config", "data", "dp")}
    state, saved_meta = checkpoint.restore(ckpt_path, state, check)
    if mesh is not None:
      state = _shard(state, mesh)
    first_epoch, history = saved_meta["epoch"], saved_meta["history"]

  counts = jnp.asarray(keep.sum(1).astype(np.int32))
  compile_s, busy_s, seen, last_save = 0.0, 0.0, 0, time.perf_counter()
  for epoch in range(first_epoch, config.num_epochs):
    order = order_fn(model_keys, keep_d, epoch) if dp is None else None   # [K, N_bucket]; DP samples per step
    t_epoch = time.perf_counter()
    for t in range(steps):
      if dp is None:
        batch = gather_fn(order, counts, t, images_d, labels_d)
      else:
        batch = sample(model_keys, keep_d, rates, epoch * steps + t, images_d, labels_d)
      lr = lrs[epoch * steps + t]
      t0 = time.perf_counter()
      if vmapped:
        state, meas = step_fn(state, batch, model_keys, lr)
      else:
        state, meas = step_fn(state, jax.tree.map(lambda a: a[0], batch), model_keys[0], lr)
      if epoch == first_epoch and t == 0:
        jax.block_until_ready(meas)
        compile_s = time.perf_counter() - t0
        t_epoch = time.perf_counter()
      elif t == steps - 1:
        jax.block_until_ready(meas)
    elapsed = time.perf_counter() - t_epoch
    counted = steps - 1 if epoch == first_epoch else steps
    busy_s += elapsed
    seen += counted * config.batch_size * num_models
    record = {"epoch": epoch + 1, "models": [int(model_ids[0]), int(model_ids[-1])],
              "train_loss": float(jnp.mean(meas["loss"])), "train_batch_accuracy": float(jnp.mean(meas["accuracy"])),
              "images_per_sec": counted * config.batch_size * num_models / max(elapsed, 1e-9)}
    if eval_data is not None:
      acc = evaluate(model, state, *eval_data, num_models=num_models if vmapped else None, model_axis=model_axis)
      record["test_accuracy"] = acc.tolist() if vmapped else float(acc)
    history.append(record)
    if ckpt_path and (epoch + 1 == config.num_epochs or time.perf_counter() - last_save >= checkpoint_every_s):
      checkpoint.save(ckpt_path, state, dict(meta, epoch=epoch + 1, history=history))
      last_save = time.perf_counter()
    if on_epoch_end:
      on_epoch_end(record)
  return TrainResult(state, history, compile_s, seen / busy_s if busy_s > 0 else float("nan"),
                     tuple(int(i) for i in model_ids))


def _poisson_sampler(keep_shape, labels_shape, rows: int):
  """sample(model_keys, keep, rates, step, images, labels) -> the K models' Poisson batches [K, chunks, rows, ...].

  One host sync per step (the largest sample's size sets the number of passes, almost always 1)."""
  order_fn = FUNCTIONS.get(("poisson", keep_shape),
                           lambda: jax.jit(jax.vmap(dpsgd.poisson_sample, in_axes=(0, 0, 0, None))))

  def sample(model_keys, keep_d, rates, step, images_d, labels_d):
    order, count = order_fn(model_keys, keep_d, rates, step)
    chunks = max(1, math.ceil(int(count.max()) / rows))
    gather = FUNCTIONS.get(("poisson_gather", keep_shape, labels_shape, rows, chunks), lambda: jax.jit(jax.vmap(
        lambda o, c, x, y: dpsgd.gather_sample(o, c, x, y, num_chunks=chunks, rows=rows), in_axes=(0, 0, None, None))))
    return gather(order, count, images_d, labels_d)
  return sample


def predict(model: Model, variables, images, *, batch_size: int = 500, num_models: Optional[int] = None,
            model_axis: str = "auto", chunk_size: Optional[int] = None):
  """Logits f32[N, C] (f32[K, N, C] with num_models) in fixed-size batches.

  images: u8[N, H, W, C] or f32 in [0, 1]. Batches are `batch_size` rows, the last one padded to a
  power of two (at most batch_size), so a few compiled shapes serve every call. With num_models, the
  K models run `chunk_size` at a time (default: all); the last chunk is padded with copies of its
  last model, so one compiled K serves every chunk.
  """
  if num_models is not None and chunk_size is not None and chunk_size < num_models:
    out = []
    for start in range(0, num_models, chunk_size):
      stop = min(start + chunk_size, num_models)
      chunk = jax.tree.map(lambda v: v[start:stop], variables)
      if stop - start < chunk_size:
        chunk = jax.tree.map(lambda v: jnp.concatenate([v, jnp.repeat(v[-1:], chunk_size - (stop - start), 0)]),
                             chunk)
      logits = predict(model, chunk, images, batch_size=batch_size, num_models=chunk_size, model_axis=model_axis)
      out.append(logits[: stop - start])
    return jnp.concatenate(out)
  model_axis = resolve_model_axis(model_axis)
  fn = FUNCTIONS.get(("predict", model.module, num_models, model_axis),
                     lambda: make_predict_fn(model, num_models=num_models, model_axis=model_axis))
  n = images.shape[0]
  out = []
  for s in range(0, n, batch_size):
    chunk = images[s : s + batch_size]
    # A short batch is padded to a power of two (a few compiled shapes), a full one is batch_size.
    pad = min(batch_size, max(8, 1 << (chunk.shape[0] - 1).bit_length())) - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    logits = fn(variables, jnp.asarray(chunk))
    out.append(logits[..., : logits.shape[-2] - pad, :] if pad else logits)
  return jnp.concatenate(out, axis=-2)


def predict_k(model: Model, variables, images, *, chunk_size: int = 16, batch_size: int = 500,
              model_axis: str = "auto"):
  """Logits f32[K, N, C] of K stacked models, `chunk_size` models at a time (bounded memory and program size)."""
  num_models = int(jax.tree.leaves(variables)[0].shape[0])
  return predict(model, variables, images, batch_size=batch_size, num_models=num_models, model_axis=model_axis,
                 chunk_size=min(chunk_size, num_models))


def evaluate(model: Model, state_or_variables, images, labels, *, batch_size: int = 500,
             num_models: Optional[int] = None, model_axis: str = "auto"):
  """Top-1 accuracy (f32[K] with num_models) of a state or variables on (images, labels)."""
  variables = variables_of(state_or_variables) if isinstance(state_or_variables, TrainState) else state_or_variables
  logits = predict(model, variables, images, batch_size=batch_size, num_models=num_models,
                   model_axis=model_axis)
  labels = jnp.asarray(labels)
  return (logits.argmax(-1) == (labels if logits.ndim == 2 else labels[None])).mean(-1)
