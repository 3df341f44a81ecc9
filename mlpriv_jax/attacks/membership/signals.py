"""Per-example membership signals, each higher = member, and the augmented query views.

All signals take log-probabilities `log_probs: f[..., C]` and labels `int[...]`:
`jax.nn.log_softmax(logits)` for models we hold, `released_log_probs(p)` for what
a victim released.
"""

import jax
import jax.numpy as jnp
import numpy as np
from mlpriv_jax.errors import UserError

# The victim releases probabilities that may be exactly 0 (top-k, rounding, float32
# underflow); the floor is forced by that outside input (LiRA's code uses 1e-45).
_LOG_FLOOR = -103.0  # ~ log(1e-45)


def released_log_probs(probs):
  """log p for probability vectors released by a victim, f32[..., C], floored at log(1e-45)."""
  probs = jnp.asarray(probs, jnp.float32)
  return jnp.maximum(jnp.log(probs), _LOG_FLOOR)


def _true_class(log_probs, labels):
  return jnp.take_along_axis(log_probs, jnp.asarray(labels)[..., None], axis=-1)[..., 0]


def logit_scaled_confidence(log_probs, labels):
  """LiRA's phi = log p_y - log sum_{j != y} p_j (Carlini et al. 2022, Sec. IV-A), f32[...].

  Computed as log p_y - logsumexp_{j != y} log p_j, which neither saturates at
  p_y = 1 nor cancels (1 - p_y is never formed).
  """
  log_py = _true_class(log_probs, labels)
  others = jnp.where(jax.nn.one_hot(labels, log_probs.shape[-1], dtype=bool), -jnp.inf, log_probs)
  return log_py - jax.nn.logsumexp(others, axis=-1)


def loss_score(log_probs, labels):
  """Yeom et al. 2018: minus the cross-entropy loss, -(-log p_y) = log p_y."""
  return _true_class(log_probs, labels)


def confidence_score(log_probs, labels):
  """Song & Mittal 2021: the true class's probability p_y."""
  return jnp.exp(_true_class(log_probs, labels))


def entropy_score(log_probs, labels):
  """Song & Mittal 2021: minus the prediction entropy, -H(p) = sum_i p_i log p_i (labels unused)."""
  del labels
  return (jnp.exp(log_probs) * log_probs).sum(-1)


def modified_entropy_score(log_probs, labels):
  """Minus Song & Mittal's (2021, Eq. 4) Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i).

  log(1 - p_i) is log1p(-p_i), floored like the reference's log(max(., 1e-30)).
  """
  p = jnp.exp(log_probs)
  is_y = jax.nn.one_hot(labels, log_probs.shape[-1], dtype=bool)
  log_1mp = jnp.maximum(jnp.log1p(-jnp.minimum(p, 1.0)), np.log(1e-30))
  log_p = jnp.maximum(log_probs, np.log(1e-30))
  mentr = jnp.where(is_y, -(1 - p) * log_p, -p * log_1mp).sum(-1)
  return -mentr


SIGNALS = {"loss": loss_score, "confidence": confidence_score, "entropy": entropy_score,
           "mentropy": modified_entropy_score, "phi": logit_scaled_confidence}


def query_views(images, *, mirror: bool = True, shifts: int = 0):
  """The augmented views LiRA queries, u8[A, N, H, W, C] (axis A first, for one query per view).

  View order: identity, then (if mirror) the flip, then every shift (dy, dx) in
  {-shifts..shifts}^2 other than (0, 0), with reflect padding (the reference's
  `inference.py` uses mirror only; the paper's ablation adds shifts), each with
  and without the flip.
  """
  if shifts < 0:
    raise UserError(f"shifts must be >= 0, got {shifts}")
  images = np.asarray(images)
  flips = (False, True) if mirror else (False,)
  offsets = [(0, 0)] + [(dy, dx) for dy in range(-shifts, shifts + 1) for dx in range(-shifts, shifts + 1)
                        if (dy, dx) != (0, 0)]
  views = []
  padded = np.pad(images, ((0, 0), (shifts, shifts), (shifts, shifts), (0, 0)), mode="reflect") if shifts else images
  h, w = images.shape[1:3]
  for dy, dx in offsets:
    shifted = padded[:, shifts + dy: shifts + dy + h, shifts + dx: shifts + dx + w]
    for flip in flips:
      views.append(shifted[:, :, ::-1] if flip else shifted)
  return np.stack(views)
