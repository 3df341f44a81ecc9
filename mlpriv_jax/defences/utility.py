"""What a defence costs benign users: accuracy, label flips, and distortion."""

import jax.numpy as jnp
import numpy as np

from mlpriv_jax.defences.base import safe_log
from mlpriv_jax.errors import UserError


def defence_utility(released, original, labels) -> dict:
  """Utility metrics of released outputs against the undefended ones.

  Args:
    released, original: f32[N, C] probabilities (after and before the defence).
    labels: int[N] true labels.
  Returns:
    accuracy (released top-1 vs labels), original_accuracy, label_flip_rate
    (released top-1 != original top-1), l1 and kl (mean ||y - y~||_1 and KL(y || y~)),
    and their standard deviations.
  """
  released, original, labels = jnp.asarray(released), jnp.asarray(original), jnp.asarray(labels)
  if released.shape != original.shape or released.ndim != 2 or labels.shape != released.shape[:1]:
    raise UserError(f"need released and original f32[N, C] and labels int[N], got {released.shape}, "
                     f"{original.shape}, {labels.shape}")
  l1 = jnp.abs(released - original).sum(-1)
  # KL >= 0; float32 rounding makes an unchanged release's -1e-10. Zeros in `released` are floored by safe_log, so
  # a one-hot release scores about 34 nats, not infinity.
  kl = jnp.maximum((original * (safe_log(original) - safe_log(released))).sum(-1), 0.0)
  out = dict(accuracy=(released.argmax(-1) == labels).mean(), original_accuracy=(original.argmax(-1) == labels).mean(),
             label_flip_rate=(released.argmax(-1) != original.argmax(-1)).mean(), l1=l1.mean(), l1_std=l1.std(),
             kl=kl.mean(), kl_std=kl.std())
  return {k: float(np.asarray(v)) for k, v in out.items()}
