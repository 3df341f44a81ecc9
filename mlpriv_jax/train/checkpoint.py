"""Atomic checkpoints of a pytree plus JSON metadata, in one msgpack file."""

import json
import os
from typing import Any, Optional, Tuple

import jax
import numpy as np
from flax import serialization

from mlpriv_jax.errors import UserError
from mlpriv_jax.utils import atomic_write


class CheckpointError(UserError):
  """A checkpoint is missing, unreadable, or belongs to another run (one-line message)."""


def save(path: str, tree: Any, meta: dict) -> None:
  """Writes {meta, tree} atomically: a killed writer leaves the previous file intact."""
  payload = {"meta": json.dumps(meta, sort_keys=True),
             "tree": serialization.to_state_dict(jax.device_get(tree))}
  data = serialization.msgpack_serialize(payload)
  atomic_write(path, lambda f: f.write(data))


def load_meta(path: str) -> Optional[dict]:
  """The metadata of the checkpoint at `path`, or None if there is none."""
  if not os.path.exists(path):
    return None
  return json.loads(_read(path)["meta"])


def restore(path: str, template: Any, expect: Optional[dict] = None) -> Tuple[Any, dict]:
  """Restores the tree at `path` into the structure of `template`.

  Args:
    expect: metadata entries that must match (e.g. arch, num_classes); a mismatch
      raises CheckpointError naming the entry, so a workdir is never reused for
      another run by accident.
  """
  if not os.path.exists(path):
    raise CheckpointError(f"no checkpoint at {path}")
  payload = _read(path)
  meta = json.loads(payload["meta"])
  check_meta(path, meta, expect or {})
  try:
    tree = serialization.from_state_dict(template, payload["tree"])
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"{path}: does not fit the expected model state ({str(e).splitlines()[0]})") from None
  leaves_t, leaves = jax.tree.leaves(template), jax.tree.leaves(tree)
  for a, b in zip(leaves_t, leaves):
    if np.shape(a) != np.shape(b):
      raise CheckpointError(f"{path}: holds an array of shape {np.shape(b)} where {np.shape(a)} is expected")
  return tree, meta


def check_meta(path: str, meta: dict, expect: dict) -> None:
  for k, v in expect.items():
    if k in meta and meta[k] != v:
      raise CheckpointError(f"{path} holds a checkpoint with {k}={meta[k]!r}, not {v!r}; "
                            f"use another workdir (nothing was overwritten)")


def _read(path: str) -> dict:
  try:
    with open(path, "rb") as f:
      payload = serialization.msgpack_restore(f.read())
  except Exception as e:  # msgpack raises several types on a truncated or foreign file
    raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__})") from None
  if not isinstance(payload, dict) or not isinstance(payload.get("meta"), str) or "tree" not in payload:
    raise CheckpointError(f"{path}: not an mlpriv_jax checkpoint")
  return payload
