"""A program's output folder: claimed by one run, resumed by the same run, refused to any other."""

import json
import os
from typing import Optional, Sequence

import numpy as np

from mlpriv_jax.errors import UserError
from mlpriv_jax.utils import atomic_write, write_json


def claim(workdir: str, config: dict, keys: Sequence[str]) -> None:
  """Writes `config.json`, or checks that an existing one describes the same run (on `keys`).

  A workdir of another run is refused with one line, and nothing in it is touched.
  """
  path = os.path.join(require(workdir), "config.json")
  old = load_json(path)
  if old is not None:
    for k in keys:
      if k in old and old[k] != config.get(k):
        raise UserError(f"{workdir} holds a run with {k}={old[k]!r}, not {config.get(k)!r}; "
                        f"use another --workdir (nothing was overwritten)")
  os.makedirs(workdir, exist_ok=True)
  write_json(path, config)


def load_json(path: str) -> Optional[dict]:
  """The JSON at path, or None if there is none (partial results of a killed run resume from it)."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def save_npy(path: str, array) -> None:
  atomic_write(path, lambda f: np.save(f, np.asarray(array)))


def save_text(path: str, text: str) -> None:
  atomic_write(path, lambda f: f.write(text), mode="w")


def require(workdir: Optional[str]) -> str:
  """The workdir, or a one-line error before any work is done."""
  if not workdir:
    raise UserError("--workdir is required")
  return workdir
