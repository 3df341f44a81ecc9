"""Adaptive Misinformation (Kariyappa & Qureshi, CVPR 2020).

Queries that look out of distribution (low maximum softmax probability, the
paper's OOD score) are answered from a misinformation function instead:

  y' = (1 - a) y + a y_mis,   a = sigmoid(nu * (tau - max_k y_k))

so in-distribution queries (max prob well above tau) keep y, and OOD ones (as
KnockoffNets' natural out-of-distribution queries mostly are) get y_mis.
The paper's y_mis is a network trained to put little mass on the correct class
(loss -log(1 - f_mis(x)_y)); any x -> probs callable can be passed. By default
we use softmax(-log y), the victim's own posterior reversed: it needs no
training and puts the least mass on the predicted class.
"""

from typing import Callable, Optional

import jax

from mlpriv_jax.defences.base import Defence, safe_log, stateless
from mlpriv_jax.errors import UserError


def reversed_posterior(x, probs):
  """The default misinformation function: softmax(-log y)."""
  return jax.nn.softmax(-safe_log(probs))


def adaptive_misinformation(tau: float = 0.5, nu: float = 1000.0,
                            misinformation: Optional[Callable] = None) -> Defence:
  """Args: tau: OOD threshold on the max probability; nu: sharpness of the switch;
  misinformation: (x, probs) -> f32[B, C] (default `reversed_posterior`)."""
  if not 0 < tau <= 1:
    raise UserError(f"adaptive_misinformation: tau must lie in (0, 1], got {tau}")
  if not nu > 0:
    raise UserError(f"adaptive_misinformation: nu must be > 0, got {nu}")
  mis = misinformation or reversed_posterior

  def fn(x, probs, key):
    y_mis = mis(x, probs)
    if y_mis.shape != probs.shape:
      raise UserError(f"adaptive_misinformation: the misinformation function gives {y_mis.shape[-1]} classes, "
                       f"the victim {probs.shape[-1]}")
    a = jax.nn.sigmoid(nu * (tau - probs.max(-1, keepdims=True)))
    return (1 - a) * probs + a * y_mis
  return stateless(fn, f"misinfo{tau:g}")
