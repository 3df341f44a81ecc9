"""A victim artifact with its data: what the defender holds (the model, its training members, its test split)."""

import os
from typing import NamedTuple, Optional

import numpy as np

from mlpriv_jax import data, models
from mlpriv_jax.errors import UserError


class LoadedVictim(NamedTuple):
  model: models.Model
  variables: dict
  meta: dict
  dataset: data.Dataset

  @property
  def input_shape(self) -> tuple:
    return tuple(self.meta["input_shape"])

  def member_images(self, n: Optional[int] = None) -> np.ndarray:
    """The victim's training images (its members), the first n of them."""
    d = self.meta.get("data", {})
    if "member_indices" in d:
      x = self.dataset.x_train[np.asarray(d["member_indices"], np.int64)]
    else:
      x = self.dataset.x_train[: d.get("num_train_used") or len(self.dataset.x_train)]
    return x if n is None else x[:n]


def load(path: str, data_dir: Optional[str] = None) -> LoadedVictim:
  """The artifact at `path` (or in a workdir holding one) and the dataset it was trained on.

  The dataset is looked up by the name recorded in the artifact, in `data_dir`, else in the folder of the file
  it was read from when that still exists, else the usual places (`data.load_dataset`).
  """
  model, variables, meta = models.load_model(path)
  d = meta.get("data")
  if not isinstance(d, dict) or not isinstance(d.get("name"), str):
    raise UserError(f"{meta['artifact']}: the artifact does not record its training data, so its test set is "
                    f"unknown")
  seed = d.get("seed", 0)
  if type(seed) is not int:
    raise UserError(f"{meta['artifact']}: its meta's data.seed must be an integer, got {seed!r}")
  source = d.get("source")
  if data_dir is None and d.get("kind") in ("npz", "jpeg") and isinstance(source, str) and os.path.exists(source):
    data_dir = os.path.dirname(source)
  ds = data.load_dataset(d["name"], data_dir, seed=seed)
  members = d.get("member_indices", [])
  used = d.get("num_train_used") or 0
  if (not isinstance(members, list) or not all(type(i) is int and 0 <= i < len(ds.x_train) for i in members)
      or type(used) is not int or not 0 <= used <= len(ds.x_train)):
    raise UserError(f"{meta['artifact']}: its meta's member_indices / num_train_used do not index the "
                    f"{len(ds.x_train)} training images of {ds.name}")
  if ds.num_classes != model.num_classes or ds.image_shape != tuple(meta["input_shape"]):
    raise UserError(f"{meta['artifact']}: the artifact's model has {model.num_classes} classes and takes "
                    f"{tuple(meta['input_shape'])}, but dataset {ds.name} has {ds.num_classes} classes of "
                    f"{ds.image_shape}")
  return LoadedVictim(model, variables, meta, ds)
