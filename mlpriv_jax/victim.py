"""The black-box victim: the only door an attack may use.

`Victim.query(x)` answers a batch of images with (defended) probability vectors
and counts every example against the budget. Model and defence run as one
jitted function; the parameters, logits and pre-defence probabilities live only
inside that closure. Randomness per call is fold_in(key, queries_used), so a
rerun reproduces every answer.
"""

import json
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax.defences import Defence, identity


class BudgetExceeded(ValueError):
  """A query would pass the victim's budget; nothing was answered."""


class QueryError(ValueError):
  """A query has the wrong shape, dtype or values; nothing was answered or counted."""


class QueryRefused(ValueError):
  """The victim's monitor (PRADA) flagged this client and the victim refuses to answer."""


class Victim:
  """A model behind an API. `query(x) -> f32[B, C]`, counted against `budget`.

  Args:
    model: a zoo Model; variables: its {'params', 'batch_stats'}.
    defence: applied to the softmax before release (default: none).
    budget: the most examples this victim answers (None: unlimited).
    key: PRNG key for the defence's randomness.
    input_shape: (H, W, C) the victim accepts.
    monitor: a stream detector with `observe(x, top1) -> flagged` (e.g. `defences.Prada`).
    on_detect: once the monitor flags the client, 'refuse' (raise QueryRefused) or
      'degrade' (shuffle the top-3 released probabilities, as PRADA's demo server).
  """
  __slots__ = ("_answer", "_state", "_key", "_monitor", "_on_detect", "budget", "queries_used", "input_shape",
               "num_classes", "defence_name")

  def __init__(self, model, variables, *, defence: Optional[Defence] = None, budget: Optional[int] = None,
               key=None, input_shape=(32, 32, 3), monitor=None, on_detect: str = "refuse"):
    if budget is not None and (int(budget) != budget or budget < 0):
      raise ValueError(f"victim budget must be an integer >= 0 or None, got {budget}")
    if on_detect not in ("refuse", "degrade"):
      raise ValueError(f"on_detect must be 'refuse' or 'degrade', got {on_detect!r}")
    defence = defence or identity()

    @jax.jit
    def answer(x, state, key):
      probs = jax.nn.softmax(model.apply(variables, x, train=False)[0])
      released, state = defence.apply(x, probs, state, key)
      return released, state, probs.argmax(-1)    # the top-1 stays with the defender (monitor)

    self._answer = answer
    self._state = defence.init()
    self._key = jax.random.key(0) if key is None else key
    self.budget = budget
    self.queries_used = 0
    self.input_shape = tuple(input_shape)
    self.num_classes = model.num_classes
    self.defence_name = defence.name
    self._monitor, self._on_detect = monitor, on_detect

  @property
  def budget_left(self):
    return None if self.budget is None else self.budget - self.queries_used

  def query(self, x) -> np.ndarray:
    """Answers f32[B, C] for images x f32[B, H, W, C] in [0, 1] (or uint8)."""
    x = _validate(x, self.input_shape)
    b = x.shape[0]
    if self.budget is not None and self.queries_used + b > self.budget:
      raise BudgetExceeded(f"a query of {b} examples would pass the budget: {self.queries_used} of "
                           f"{self.budget} used")
    key = jax.random.fold_in(self._key, self.queries_used)
    out, state, top1 = self._answer(jnp.asarray(x), self._state, key)
    out = np.asarray(out)
    if self._monitor is not None and self._monitor.observe(x, np.asarray(top1)):
      if self._on_detect == "refuse":
        raise QueryRefused(f"query refused: the stream was flagged as an extraction attack after "
                           f"{self._monitor.first_flag_at} queries")
      out = _shuffle_top3(out, np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()))
    self._state = state
    self.queries_used += b
    return out


def _shuffle_top3(out, rng):
  out = out.copy()
  for row in out:
    top = np.argsort(-row)[:3]
    row[top] = row[rng.permutation(top)]
  return out


def _validate(x, input_shape):
  x = np.asarray(x)
  if x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape):
    raise QueryError(f"queries must have shape [B, {', '.join(map(str, input_shape))}], got {list(x.shape)}")
  if x.shape[0] == 0:
    raise QueryError("empty query batch")
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  if not np.issubdtype(x.dtype, np.floating):
    raise QueryError(f"queries must be float in [0, 1] or uint8, got {x.dtype}")
  if not np.all(np.isfinite(x)):
    raise QueryError(f"queries hold {int((~np.isfinite(x)).sum())} NaN or inf values")
  if x.min() < 0 or x.max() > 1:
    raise QueryError(f"query values must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")
  return x.astype(np.float32)


def load_trained(workdir: str):
  """(model, variables, config) from a workdir of experiments/train.py (one model)."""
  from mlpriv_jax import models, train
  from mlpriv_jax.train import checkpoint
  cfg_path, ckpt = os.path.join(workdir, "config.json"), os.path.join(workdir, "checkpoint.msgpack")
  if not os.path.exists(cfg_path) or not os.path.exists(ckpt):
    raise FileNotFoundError(f"no trained model in {workdir}: expected config.json and checkpoint.msgpack "
                            f"(run experiments/train.py --workdir={workdir} first)")
  with open(cfg_path) as f:
    cfg = json.load(f)
  model = models.get_model(cfg["arch"], cfg["num_classes"], mean=cfg["mean"], std=cfg["std"],
                           dropout_rate=cfg.get("dropout_rate", 0.0))
  # The template must have the optimiser state's structure, which depends on momentum only.
  tx = train.make_optimizer(train.TrainConfig(num_epochs=1, momentum=cfg.get("momentum", 0.9)), 1)
  template = train.init_train_state(model, tx, jax.random.key(0), tuple(cfg.get("image_shape", (32, 32, 3))))
  state, meta = checkpoint.restore(ckpt, template, {"arch": model.name, "num_classes": model.num_classes})
  if meta.get("epoch", 0) < meta.get("num_epochs", 0):
    raise ValueError(f"{workdir}: training stopped at epoch {meta['epoch']} of {meta['num_epochs']}; "
                     f"rerun experiments/train.py with this --workdir to finish it")
  return model, train.variables_of(state), cfg
