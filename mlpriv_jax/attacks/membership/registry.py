"""Membership attacks by name. Member = positive; every score is higher = member.

Two contracts:

* `score` attacks score what the oracle released for the candidates, with the help of the attacker's own
  shadow (reference) models: `fn(inputs: ScoreInputs, key, **options) -> (scores f32[N], extras dict)`.
  They never query the oracle themselves; the caller queries it once for every attack (`views_needed`).
* `query` attacks query the oracle inside their loop (the label-only attacks): `fn(oracle, inputs, key,
  **options) -> (scores f32[N], extras dict)`; every query counts against the oracle's budget.
"""

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax.attacks.membership.lira import lira_offline, lira_online
from mlpriv_jax.attacks.membership.shokri import attack_records, shokri_score, train_shokri
from mlpriv_jax.attacks.membership.signals import SIGNALS, logit_scaled_confidence, released_log_probs
from mlpriv_jax.attacks.membership.threshold import calibrated_score, class_thresholds
from mlpriv_jax.errors import UserError


class ScoreInputs(NamedTuple):
  """What a score attack sees. A: augmented query views (view 0 is the image itself)."""
  target_probs: np.ndarray     # f32[N, A, C]: released by the oracle for the candidates' views
  labels: np.ndarray           # int[N]
  shadow_logits: np.ndarray    # f32[K, N, A, C]: the attacker's shadow models on the same views
  shadow_keep: np.ndarray      # bool[K, N]: shadow k trained on candidate n
  population_probs: Optional[np.ndarray] = None          # f32[Z, A, C]: released for population points
  population_shadow_logits: Optional[np.ndarray] = None  # f32[K, Z, A, C]
  population_labels: Optional[np.ndarray] = None         # int[Z]

  @property
  def num_classes(self) -> int:
    return int(self.target_probs.shape[-1])


class MembershipAttack(NamedTuple):
  name: str
  kind: str           # 'score' or 'query'
  fn: Callable
  uses_views: bool    # scores every augmented view (else the identity view only)
  min_shadows: int    # shadow models needed (balanced keep masks: each example IN for half of them)
  description: str


def _shokri(inputs: ScoreInputs, key, *, features: str = "probs", **_):
  shadow_probs = jax.nn.softmax(jnp.asarray(inputs.shadow_logits[:, :, 0]))
  probs, labels, is_in = attack_records(shadow_probs, inputs.labels, inputs.shadow_keep)
  attack = train_shokri(key, probs, labels, is_in, inputs.num_classes, features=features)
  return shokri_score(attack, jnp.asarray(inputs.target_probs[:, 0]), inputs.labels), {}


def _metric(signal_name):
  def fn(inputs: ScoreInputs, key, **_):
    del key
    signal, y, k = SIGNALS[signal_name], inputs.labels, inputs.shadow_keep.shape[0]
    shadow_logp = jax.nn.log_softmax(jnp.asarray(inputs.shadow_logits[:, :, 0]))
    tau = class_thresholds(np.asarray(signal(shadow_logp, y[None])).ravel(), np.tile(y, k),
                           inputs.shadow_keep.ravel(), inputs.num_classes)
    return calibrated_score(signal(released_log_probs(inputs.target_probs[:, 0]), y), y, tau), {"thresholds": tau}
  return fn


def lira_phis(inputs: ScoreInputs):
  """LiRA's phi for the target's released outputs f32[N, A] and for the shadows f32[K, N, A]."""
  y = inputs.labels
  phi_target = logit_scaled_confidence(released_log_probs(inputs.target_probs), y[:, None])
  phi_shadow = logit_scaled_confidence(jax.nn.log_softmax(jnp.asarray(inputs.shadow_logits)), y[None, :, None])
  return phi_target, phi_shadow


def _lira(online):
  def fn(inputs: ScoreInputs, key, *, fix_variance: Optional[bool] = None, **_):
    del key
    if fix_variance is None:   # a global variance beats per-example ones below ~64 shadows (LiRA, Sec. VI-B)
      fix_variance = inputs.shadow_keep.shape[0] < 64
    phi_target, phi_shadow = lira_phis(inputs)
    score = (lira_online if online else lira_offline)(phi_target, phi_shadow, inputs.shadow_keep,
                                                      fix_variance=fix_variance)
    return score, {"phi_target": np.asarray(phi_target), "phi_shadow": np.asarray(phi_shadow),
                   "fix_variance": fix_variance}
  return fn


REGISTRY = {a.name: a for a in (
    MembershipAttack("shokri", "score", _shokri, False, 2,
                     "shadow models and per-class attack MLPs on the output vector (Shokri et al. 2017)"),
    MembershipAttack("loss", "score", _metric("loss"), False, 2, "minus the loss, class thresholds (Yeom et al. 2018)"),
    MembershipAttack("confidence", "score", _metric("confidence"), False, 2,
                     "the true class's probability, class thresholds (Song & Mittal 2021)"),
    MembershipAttack("entropy", "score", _metric("entropy"), False, 2,
                     "minus the prediction entropy, class thresholds (Song & Mittal 2021)"),
    MembershipAttack("mentropy", "score", _metric("mentropy"), False, 2,
                     "minus the modified entropy, class thresholds (Song & Mittal 2021, Eq. 4)"),
    MembershipAttack("lira_online", "score", _lira(True), True, 2,
                     "likelihood ratio of IN and OUT Gaussians over views (Carlini et al. 2022)"),
    MembershipAttack("lira_offline", "score", _lira(False), True, 2,
                     "one-sided test against the OUT Gaussian over views (Carlini et al. 2022)"),
)}


def get(name: str) -> MembershipAttack:
  if name not in REGISTRY:
    raise UserError(f"unknown attack {name}; known: {', '.join(REGISTRY)}, all")
  return REGISTRY[name]


def parse(names) -> list:
  """Attack names from a list (or 'all'), each checked against the registry."""
  names = [n.strip() for n in names if n.strip()]
  if names == ["all"]:
    return list(REGISTRY)
  if not names:
    raise UserError(f"unknown attack (none given); known: {', '.join(REGISTRY)}, all")
  for n in names:
    get(n)
  return names


def check_shadows(names, num_shadows: int) -> None:
  for n in names:
    need = get(n).min_shadows
    if num_shadows < need:
      raise UserError(f"--num_shadows {num_shadows}: {n} needs at least {need} shadow models, so that every "
                      f"example has shadows trained with it (in) and without it (out)")


def views_needed(names) -> bool:
  """Whether any of the attacks scores the augmented views (else only the identity view is queried)."""
  return any(get(n).uses_views for n in names)


def score(name: str, inputs: ScoreInputs, key, **options):
  """(scores f32[N], extras) of score attack `name`; higher = member."""
  attack = get(name)
  if attack.kind != "score":
    raise UserError(f"{name} queries the oracle itself; it is not a score attack")
  scores, extras = attack.fn(inputs, key, **options)
  return np.asarray(scores, np.float64), extras
