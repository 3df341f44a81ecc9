"""Training loops: one model (`train`) and K models at once (`train_k`).

Both share the data order and key schedule, so model k of `train_k` is the model
that `train` produces with the same key, keep mask and steps per epoch
(tests/train_test.py):

* model key   k_m = fold_in(key, k)           (the same whether K is 4 or 64)
* init key        = fold_in(k_m, 0)
* epoch order     = argsort of uniforms from fold_in(fold_in(k_m, 1), epoch),
                    with the examples outside keep[k] sorted last
* step key        = fold_in(fold_in(k_m, 2), global_step)

An epoch is ceil(max_k n_k / B) steps; batch t of model k takes positions
t*B .. t*B+B-1 of its order, modulo n_k (its kept count), so a model with fewer
examples than the largest wraps around. The images stay on the device and each
step gathers its batch by index.

A Python loop over jitted steps (not `lax.scan`): on XLA:CPU the scanned loop
measured about 5x slower.
"""

import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax.errors import UserError
from mlpriv_jax.models import Model, with_conv_impl
from mlpriv_jax.train import checkpoint
from mlpriv_jax.train.step import (TrainConfig, TrainState, init_train_state, make_optimizer,
                                   make_predict_fn, make_train_step_fn, resolve_model_axis, variables_of)

_INIT, _ORDER, _STEP = 0, 1, 2


class TrainResult(NamedTuple):
  state: TrainState          # stacked on a leading K axis for train_k
  history: list              # one dict per epoch
  compile_seconds: float
  train_images_per_sec: float


def _epoch_order(model_key, keep_row, epoch):
  u = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(model_key, _ORDER), epoch), keep_row.shape)
  return jnp.argsort(jnp.where(keep_row, u, 2.0))


def _epoch_indices(model_key, keep_row, epoch, steps: int, batch_size: int):
  """int[steps, B]: the batches of one model for one epoch."""
  order = _epoch_order(model_key, keep_row, epoch)
  pos = jnp.arange(steps * batch_size) % keep_row.sum()
  return order[pos].reshape(steps, batch_size)


def _step_key(model_key, step):
  return jax.random.fold_in(jax.random.fold_in(model_key, _STEP), step)


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


def _check_data(model: Model, config: TrainConfig, images, labels):
  config.validate()
  images = np.asarray(images) if not isinstance(images, jax.Array) else images
  if images.dtype != np.uint8 or images.ndim != 4:
    raise UserError(f"images must be uint8 [N, H, W, C], got {images.dtype} {list(images.shape)}")
  if labels.shape[0] != images.shape[0] or labels.ndim not in (1, 2):
    raise UserError(f"labels must be int [N] or float [N, C] with N = {images.shape[0]}, got {list(labels.shape)}")
  if labels.ndim == 2 and labels.shape[1] != model.num_classes:
    raise UserError(f"soft labels have {labels.shape[1]} classes, the model {model.num_classes}")
  if labels.ndim == 2 and not np.all(np.isfinite(np.asarray(labels))):
    raise UserError("soft labels hold NaN or inf")
  if labels.ndim == 1 and (np.asarray(labels).min() < 0 or np.asarray(labels).max() >= model.num_classes):
    raise UserError(f"labels must lie in [0, {model.num_classes}), got [{np.asarray(labels).min()}, "
                     f"{np.asarray(labels).max()}]")


def train_k(model: Model, config: TrainConfig, images, labels, keep, key, *,
            chunk_size: Optional[int] = None, workdir: Optional[str] = None, eval_data=None,
            on_epoch_end: Optional[Callable[[dict], None]] = None, meta: Optional[dict] = None,
            model_axis: str = "auto") -> TrainResult:
  """Trains K models of one architecture at once, model k on images[keep[k]].

  Args:
    model: the architecture (all K share it).
    config: hyper-parameters.
    images: u8[N, H, W, C]; labels: int[N] or soft f32[N, C].
    keep: bool[K, N], the examples each model trains on (Shokri/LiRA keep masks).
    key: typed PRNG key; model k uses fold_in(key, k).
    chunk_size: train at most this many models at once (memory, and compile time
      when unrolled); results do not depend on it. Default: all K with vmap, 16
      when unrolled.
    workdir: if given, a checkpoint per chunk is written after every epoch and a
      rerun resumes from it.
    eval_data: optional (images, labels) evaluated after every epoch.
    on_epoch_end: called with each epoch's record (for progress lines).
    meta: extra metadata stored in (and checked against) the checkpoints.
    model_axis: 'auto', 'vmap' or 'unroll' (see `step.resolve_model_axis`).
  Returns:
    TrainResult whose state leaves have a leading axis K.
  """
  _check_data(model, config, images, labels)
  keep = check_keep(keep, images.shape[0], config.batch_size)
  num_models = keep.shape[0]
  model_axis = resolve_model_axis(model_axis)
  if model_axis == "vmap" and jax.default_backend() == "cpu" and model.module.conv_impl == "auto":
    model = with_conv_impl(model, "im2col")  # vmapped lax convs are ~4x slower on XLA:CPU
  if chunk_size is None:
    chunk_size = num_models if model_axis == "vmap" else 16
  chunk_size = int(chunk_size)
  if chunk_size < 1:
    raise UserError(f"chunk_size must be >= 1, got {chunk_size}")
  steps = math.ceil(int(keep.sum(1).max()) / config.batch_size)  # over all K: chunking changes nothing
  states, history, compile_s, rates = [], [], 0.0, []
  for start in range(0, num_models, chunk_size):
    stop = min(start + chunk_size, num_models)
    path = os.path.join(workdir, f"models_{start:05d}-{stop:05d}.msgpack") if workdir else None
    r = _run(model, config, images, labels, keep[start:stop], key, np.arange(start, stop), vmapped=True,
             ckpt_path=path, eval_data=eval_data, on_epoch_end=on_epoch_end, meta=meta, model_axis=model_axis,
             steps=steps)
    states.append(r.state)
    history.extend(r.history)
    compile_s += r.compile_seconds
    rates.append(r.train_images_per_sec)
  state = jax.tree.map(lambda *xs: jnp.concatenate(xs), *states) if len(states) > 1 else states[0]
  return TrainResult(state, history, compile_s, float(np.mean(rates)))


def train(model: Model, config: TrainConfig, images, labels, key, *, keep=None, model_index: int = 0,
          steps_per_epoch: Optional[int] = None, ckpt_path: Optional[str] = None, eval_data=None,
          on_epoch_end=None, meta: Optional[dict] = None) -> TrainResult:
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
  return _run(model, config, images, labels, keep, key, np.array([model_index]), vmapped=False,
              ckpt_path=ckpt_path, eval_data=eval_data, on_epoch_end=on_epoch_end, meta=meta,
              steps=steps_per_epoch)


def _run(model, config, images, labels, keep, key, model_ids, *, vmapped, ckpt_path, eval_data,
         on_epoch_end, meta, model_axis="vmap", steps=None) -> TrainResult:
  num_models = keep.shape[0]
  steps = steps or math.ceil(int(keep.sum(1).max()) / config.batch_size)
  tx = make_optimizer(config, steps)
  model_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(model_ids))
  # Cached like the step: a loop of K sequential `train` calls compiles each of these once, not K times.
  init_fn = _cached(("init", model.module, repr(config), steps, images.shape[1:]), lambda: jax.jit(jax.vmap(
      lambda k: init_train_state(model, tx, jax.random.fold_in(k, _INIT), images.shape[1:]))))
  state = init_fn(model_keys)
  indices_fn = _cached(("indices", steps, config.batch_size), lambda: jax.jit(jax.vmap(
      lambda k, r, e: _epoch_indices(k, r, e, steps, config.batch_size), in_axes=(0, 0, None))))
  step_keys_fn = _cached(("step_keys",), lambda: jax.jit(jax.vmap(_step_key, in_axes=(0, None))))
  if vmapped:
    step_fn = _cached_step_fn(model, tx, config, steps, num_models, model_axis)
  else:
    state = jax.tree.map(lambda x: x[0], state)
    step_fn = _cached_step_fn(model, tx, config, steps, None, None)

  meta = dict(meta or {}, arch=model.name, num_classes=model.num_classes, num_models=num_models,
              model_ids=[int(model_ids[0]), int(model_ids[-1])], vmapped=vmapped, batch_size=config.batch_size,
              num_epochs=config.num_epochs, steps_per_epoch=steps,
              train_config=json.loads(json.dumps(dataclasses.asdict(config))),
              data=hashlib.sha256(np.packbits(keep).tobytes() + str(images.shape).encode()).hexdigest()[:16])
  history, first_epoch = [], 0
  if ckpt_path and os.path.exists(ckpt_path):
    # Resume: everything the remaining epochs need is a function of (state, epoch).
    # A rerun with other hyper-parameters or data must not continue this state.
    check = {k: meta[k] for k in ("arch", "num_classes", "num_models", "model_ids", "batch_size", "steps_per_epoch",
                                  "train_config", "data")}
    state, saved_meta = checkpoint.restore(ckpt_path, state, check)
    first_epoch, history = saved_meta["epoch"], saved_meta["history"]

  images_d, labels_d = jnp.asarray(images), jnp.asarray(labels)
  keep_d = jnp.asarray(keep)
  compile_s, busy_s, seen = 0.0, 0.0, 0
  for epoch in range(first_epoch, config.num_epochs):
    idx = indices_fn(model_keys, keep_d, epoch)           # [K, steps, B]
    t_epoch = time.perf_counter()
    for t in range(steps):
      global_step = epoch * steps + t
      keys = step_keys_fn(model_keys, global_step)
      t0 = time.perf_counter()
      if vmapped:
        state, meas = step_fn(state, images_d, labels_d, idx[:, t], keys)
      else:
        state, meas = step_fn(state, images_d, labels_d, idx[0, t], keys[0])
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
      acc = evaluate(model, state, *eval_data, num_models=num_models if vmapped else None,
                     model_axis=model_axis)
      record["test_accuracy"] = acc.tolist() if vmapped else float(acc)
    history.append(record)
    if ckpt_path:
      checkpoint.save(ckpt_path, state, dict(meta, epoch=epoch + 1, history=history))
    if on_epoch_end:
      on_epoch_end(record)
  return TrainResult(state, history, compile_s, seen / busy_s if busy_s > 0 else float("nan"))


def predict(model: Model, variables, images, *, batch_size: int = 500, num_models: Optional[int] = None,
            model_axis: str = "auto"):
  """Logits f32[N, C] (f32[K, N, C] with num_models) in fixed-size batches.

  images: u8[N, H, W, C] or f32 in [0, 1]. The last batch is padded, so one
  compiled shape serves every call.
  """
  fn = _predict_fn(model, num_models, resolve_model_axis(model_axis))
  n = images.shape[0]
  out = []
  for s in range(0, n, batch_size):
    chunk = images[s : s + batch_size]
    pad = batch_size - chunk.shape[0] if n > batch_size else 0
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    logits = fn(variables, jnp.asarray(chunk))
    out.append(logits[..., : logits.shape[-2] - pad, :] if pad else logits)
  return jnp.concatenate(out, axis=-2)


# Jitted functions are cached by what they close over (Flax modules hash by value), so
# that chunks of train_k and repeated evaluations compile once.
_FN_CACHE = {}


def _cached(key, make):
  if key not in _FN_CACHE:
    _FN_CACHE[key] = make()
  return _FN_CACHE[key]


def _predict_fn(model, num_models, model_axis):
  key = ("predict", model.module, num_models, model_axis)
  if key not in _FN_CACHE:
    _FN_CACHE[key] = make_predict_fn(model, num_models=num_models, model_axis=model_axis)
  return _FN_CACHE[key]


def _cached_step_fn(model, tx, config, steps, num_models, model_axis):
  key = ("step", model.module, repr(config), steps, num_models, model_axis)
  if key not in _FN_CACHE:
    _FN_CACHE[key] = make_train_step_fn(model, tx, augment=config.augment, num_models=num_models,
                                        model_axis=model_axis)
  return _FN_CACHE[key]


def evaluate(model: Model, state_or_variables, images, labels, *, batch_size: int = 500,
             num_models: Optional[int] = None, model_axis: str = "auto"):
  """Top-1 accuracy (f32[K] with num_models) of a state or variables on (images, labels)."""
  variables = variables_of(state_or_variables) if isinstance(state_or_variables, TrainState) else state_or_variables
  logits = predict(model, variables, images, batch_size=batch_size, num_models=num_models,
                   model_axis=model_axis)
  return (logits.argmax(-1) == jnp.asarray(labels)).mean(-1)
