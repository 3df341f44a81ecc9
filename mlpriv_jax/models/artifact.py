"""A trained model as one artifact: what rebuilds it, its variables, and where it came from.

A directory holding

* `model.msgpack`: {format, spec, meta, variables}, written atomically (the only file `load_model` reads);
* `model.json`: the same spec and meta, for people and other tools.

`spec` is `Model.spec` (architecture, classes, normalisation, compute dtype, input shape); `variables` are the
model's {'params', 'batch_stats'}; nothing of the optimiser is kept (checkpoints are for resuming training, an
artifact is for using the model). `meta` says where the model came from: the training data (name, source kind, sizes,
seed), the recipe and the test accuracy, as the program that trained it recorded them.
"""

import json
import os
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from mlpriv_jax.errors import UserError
from mlpriv_jax.models.zoo import Model, from_spec
from mlpriv_jax.utils import atomic_write, jsonable, write_json

FORMAT = "mlpriv_jax.model/1"
FILE = "model.msgpack"


class ArtifactError(UserError):
  """No artifact where one was expected, or one that is not readable (one-line message)."""


def save_model(directory: str, model: Model, variables, *, meta: Optional[dict] = None,
               input_shape=(32, 32, 3)) -> str:
  """Writes the artifact of `model` with `variables` into `directory` (created); returns the directory.

  A killed writer leaves the previous artifact intact (`model.msgpack` is replaced in one rename).
  """
  if model.spec is None:
    raise UserError(f"model {model.name!r} was not built by models.get_model, so it has no spec to save")
  variables = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
  leaves = jax.tree.leaves(variables)
  if not leaves or not all(np.all(np.isfinite(np.asarray(v))) for v in leaves):
    raise UserError(f"refusing to save {model.name}: its variables are empty or hold NaN/inf")
  spec = dict(model.spec, input_shape=[int(d) for d in input_shape])
  meta = json.loads(json.dumps(meta or {}, default=jsonable))
  payload = {"format": FORMAT, "spec": json.dumps(spec, sort_keys=True), "meta": json.dumps(meta, sort_keys=True),
             "variables": serialization.to_state_dict(jax.device_get(variables))}
  data = serialization.msgpack_serialize(payload)
  os.makedirs(directory, exist_ok=True)
  atomic_write(os.path.join(directory, FILE), lambda f: f.write(data))
  write_json(os.path.join(directory, "model.json"), {"format": FORMAT, "spec": spec, "meta": meta})
  return directory


def find_artifact(path: str) -> str:
  """The artifact directory at `path`: the directory itself, or the one artifact directly inside it.

  A workdir of experiments/train.py holds `model/`, of mia.py `target/`, of survey_tables.py one
  `victim_<name>/` per table; a workdir with several artifacts must be named more precisely.
  """
  path = os.path.expanduser(path)
  if os.path.isfile(os.path.join(path, FILE)):
    return path
  if not os.path.isdir(path):
    raise ArtifactError(f"no model artifact at {path}: no such directory")
  inside = sorted(d for d in os.listdir(path) if os.path.isfile(os.path.join(path, d, FILE)))
  if len(inside) == 1:
    return os.path.join(path, inside[0])
  if inside:
    raise ArtifactError(f"{path} holds {len(inside)} model artifacts ({', '.join(inside)}); pass one of them, "
                        f"e.g. {os.path.join(path, inside[0])}")
  raise ArtifactError(f"no model artifact in {path}: expected {FILE} there or in one folder inside it (train.py "
                      f"writes <workdir>/model/, mia.py <workdir>/target/, survey_tables.py <workdir>/victim_<name>/)")


def _rebuild(path: str, payload: dict, conv_impl: str):
  """(model, meta, input_shape, variables' shapes) from an artifact's spec and meta; a spec or meta edited by hand
  into something no model has is one ArtifactError naming the file."""
  try:
    spec, meta = json.loads(payload.get("spec")), json.loads(payload.get("meta"))
    if not isinstance(spec, dict) or not isinstance(meta, dict):
      raise ValueError("spec and meta must be JSON objects")
    input_shape = tuple(spec.get("input_shape", (32, 32, 3)))
    if len(input_shape) != 3 or not all(type(d) is int and d > 0 for d in input_shape):
      raise ValueError(f"input_shape must be [H, W, C] of positive integers, got {spec.get('input_shape')!r}")
    if type(spec["num_classes"]) is not int or spec["num_classes"] < 1:
      raise ValueError(f"num_classes must be a positive integer, got {spec['num_classes']!r}")
    for k in ("mean", "std"):
      v = np.asarray(spec[k], dtype=np.float64)
      if v.ndim > 1 or v.size not in (1, input_shape[-1]) or not np.all(np.isfinite(v)) or (k == "std" and
                                                                                             np.any(v <= 0)):
        raise ValueError(f"{k} must be {input_shape[-1]} finite numbers{' > 0' if k == 'std' else ''}, got {spec[k]!r}")
    model = from_spec(spec, conv_impl=conv_impl)
    template = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
  except UserError as e:
    raise ArtifactError(f"{path}: {e}") from None
  except Exception as e:   # json, numpy and flax raise many types on a spec no model has
    why = str(e).splitlines()[0] if str(e) else ""
    raise ArtifactError(f"{path}: its spec or meta is damaged ({type(e).__name__}: {why})") from None
  return model, meta, input_shape, {k: template[k] for k in ("params", "batch_stats") if k in template}


def load_model(directory: str, *, conv_impl: str = "auto") -> Tuple[Model, dict, dict]:
  """(model, variables, meta) from an artifact directory (or a workdir holding one, see `find_artifact`).

  The returned meta also carries `input_shape` (H, W, C) and `artifact` (the directory read).
  """
  directory = find_artifact(directory)
  path = os.path.join(directory, FILE)
  try:
    with open(path, "rb") as f:
      payload = serialization.msgpack_restore(f.read())
  except Exception as e:  # msgpack raises several types on a truncated or foreign file
    raise ArtifactError(f"{path}: unreadable model artifact ({type(e).__name__})") from None
  if not isinstance(payload, dict) or payload.get("format") != FORMAT:
    raise ArtifactError(f"{path}: not an mlpriv_jax model artifact (expected format {FORMAT!r})")
  model, meta, input_shape, template = _rebuild(path, payload, conv_impl)
  try:
    variables = serialization.from_state_dict(template, payload["variables"])
  except (ValueError, KeyError, TypeError) as e:
    raise ArtifactError(f"{path}: its variables do not fit a {model.name} ({str(e).splitlines()[0]})") from None
  for want, got in zip(jax.tree.leaves(template), jax.tree.leaves(variables)):
    if tuple(want.shape) != np.shape(got):
      raise ArtifactError(f"{path}: holds an array of shape {np.shape(got)} where {model.name} has {want.shape}")
  variables = jax.tree.map(jnp.asarray, variables)
  return model, variables, dict(meta, input_shape=input_shape, artifact=directory)
