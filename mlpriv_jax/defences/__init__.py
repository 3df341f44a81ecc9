"""Output defences as optax-style (init, apply) pairs over (x, probs, state, key), found by name in `REGISTRY`."""

from mlpriv_jax.defences.base import Defence, EmptyState, chain, client_state, identity, stateless
from mlpriv_jax.defences.baselines import label_only, logit_noise, reverse_sigmoid, rounding, top_k
from mlpriv_jax.defences.mad import angular_deviation, mad, proxy_from_model
from mlpriv_jax.defences.memguard import (defence_classifier_score, memguard, memguard_noise,
                                          train_defence_classifier)
from mlpriv_jax.defences.misinformation import adaptive_misinformation, reversed_posterior
from mlpriv_jax.defences.modelguard import modelguard_w
from mlpriv_jax.defences.prada import Prada
from mlpriv_jax.defences.registry import (BOTH, EXTRACTION, MEMBERSHIP, REGISTRY, DefenceSpec, DefenderKit, assemble,
                                          attacker_copy, build, check, get, label, make_memguard_classifier,
                                          make_proxy, settings)
from mlpriv_jax.defences.utility import defence_utility
