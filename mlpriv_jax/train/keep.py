"""Keep masks: which examples each of K models trains on."""

import jax
import jax.numpy as jnp
from mlpriv_jax.errors import UserError


def balanced_keep(key, num_models: int, num_examples: int, fraction: float = 0.5):
  """bool[K, N] with every example in exactly round(fraction * K) models.

  The LiRA construction (Carlini et al. 2022, tensorflow/privacy
  research/mi_lira_2021/train.py): per example, a random ranking of the K models,
  of which the first fraction * K keep it. fraction = 1 keeps everything.
  """
  if num_models < 1 or num_examples < 1:
    raise UserError(f"need num_models >= 1 and num_examples >= 1, got {num_models}, {num_examples}")
  if not 0 < fraction <= 1:
    raise UserError(f"keep fraction must lie in (0, 1], got {fraction}")
  order = jnp.argsort(jax.random.uniform(key, (num_models, num_examples)), axis=0)
  return order < max(1, round(fraction * num_models))
