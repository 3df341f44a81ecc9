"""Output defences as optax-style (init, apply) pairs over (x, probs, state, key)."""

from mlpriv_jax.defences.base import Defence, EmptyState, chain, identity, stateless
from mlpriv_jax.defences.baselines import label_only, logit_noise, reverse_sigmoid, rounding, top_k
from mlpriv_jax.defences.mad import angular_deviation, mad, proxy_from_model
from mlpriv_jax.defences.memguard import (defence_classifier_score, memguard, memguard_noise,
                                          train_defence_classifier)
