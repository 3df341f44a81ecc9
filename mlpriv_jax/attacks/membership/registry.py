"""Membership attacks by name. Member = positive; every score is higher = member.

Two contracts:

* `score` attacks score what the oracle released for the candidates, with the help of the attacker's own
  shadow (reference) models: `fn(inputs: ScoreInputs, key, **options) -> (scores f32[N], extras dict)`.
  They never query the oracle themselves; the caller queries it once for every attack (`views_needed`).
* `query` attacks query the oracle inside their loop (the label-only attacks): `fn(oracle, inputs, key,
  **options) -> (scores f32[N], extras dict)`; every query counts against the oracle's budget.
"""

import functools
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax.attacks.membership import label_only as L
from mlpriv_jax.attacks.membership import rmia as R
from mlpriv_jax.attacks.membership.lira import lira_offline, lira_online
from mlpriv_jax.attacks.membership.shokri import attack_records, shokri_score, train_shokri
from mlpriv_jax.attacks.membership.signals import SIGNALS, logit_scaled_confidence, released_log_probs
from mlpriv_jax.attacks.membership.threshold import calibrated_score, class_thresholds
from mlpriv_jax.errors import UserError
from mlpriv_jax.oracle import BudgetExceeded, Oracle, query_all
from mlpriv_jax.train.mlp import grouped_logits, train_binary_mlps


class ScoreInputs(NamedTuple):
  """What a score attack sees. A: augmented query views (view 0 is the image itself)."""
  target_probs: np.ndarray     # f32[N, A, C]: released by the oracle for the candidates' views
  labels: np.ndarray           # int[N]
  shadow_logits: np.ndarray    # f32[K, N, A, C]: the attacker's shadow models on the same views
  shadow_keep: np.ndarray      # bool[K, N]: shadow k trained on candidate n
  population_probs: Optional[np.ndarray] = None          # f32[Z, A, C]: released for population points
  population_shadow_logits: Optional[np.ndarray] = None  # f32[K, Z, A, C]
  population_labels: Optional[np.ndarray] = None         # int[Z]
  memo: Optional[dict] = None  # the attacker's defence-independent work, kept across targets (see `_once`)

  @property
  def num_classes(self) -> int:
    return int(self.target_probs.shape[-1])


class QueryInputs(NamedTuple):
  """What a query attack sees besides the oracle: the candidates and the attacker's own shadow models."""
  images: np.ndarray           # u8[N, H, W, C]: the candidates
  labels: np.ndarray           # int[N]
  shadow_keep: np.ndarray      # bool[K, N]: shadow k trained on candidate n
  shadow_oracle: Callable      # k -> Oracle answering for the attacker's shadow model k (not the target's budget)
  memo: Optional[dict] = None  # the attacker's defence-independent work, kept across targets (see `_once`)


class MembershipAttack(NamedTuple):
  name: str
  kind: str           # 'score' or 'query'
  fn: Callable
  uses_views: bool    # scores every augmented view (else the identity view only)
  min_shadows: int    # shadow models needed (balanced keep masks: each example IN for half of them)
  description: str
  population: bool = False   # needs population points apart from the candidates (ScoreInputs.population_*)
  label_only: bool = False   # a query attack that reads only the top-1 label of each answer (`labels_of`)


def _once(memo: Optional[dict], tag: tuple, key, fn: Callable):
  """fn(), or its value from an earlier call with the same tag and key. What an attack computes from the
  attacker's shadows alone (Shokri's attack models, a label-only threshold) does not depend on the target's
  defence: the arena attacks one victim behind many defences with one memo (memo None: always computed)."""
  if memo is None:
    return fn()
  tag = (*tag, tuple(np.asarray(jax.random.key_data(key)).ravel().tolist()))
  if tag not in memo:
    memo[tag] = fn()
  return memo[tag]


def _shokri(inputs: ScoreInputs, key, *, features: str = "probs", **_):
  def fit():
    shadow_probs = jax.nn.softmax(jnp.asarray(inputs.shadow_logits[:, :, 0]))
    probs, labels, is_in = attack_records(shadow_probs, inputs.labels, inputs.shadow_keep)
    return train_shokri(key, probs, labels, is_in, inputs.num_classes, features=features)
  attack = _once(inputs.memo, ("shokri", features), key, fit)
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


def rmia_settings(preset: str = "paper_softmax", gamma: Optional[float] = None,
                  offline_a: Union[None, float, str] = None):
  """(preset, gamma, a or 'tune') with the preset's values filled in, each checked (one-line errors).

  The default preset is the authors' code with the true-class softmax at T = 1: an oracle releases probabilities,
  and the code's Taylor signal is defined on logits (not shift-invariant), which they do not determine.
  """
  p = R.get_preset(preset)
  gamma = p.gamma if gamma is None else float(gamma)
  if isinstance(offline_a, str) and offline_a != "tune":
    raise UserError(f"RMIA offline a must be a number in [0, 1] or 'tune', got {offline_a!r}")
  a = p.offline_a if offline_a is None else offline_a
  R.check_rmia(gamma, None if a == "tune" else float(a))
  return p, gamma, a


def _rmia(online):
  def fn(inputs: ScoreInputs, key, *, preset: str = "paper_softmax", gamma: Optional[float] = None,
         offline_a: Union[None, float, str] = None, **_):
    del key
    p, gamma, a = rmia_settings(preset, gamma, offline_a)
    if inputs.population_probs is None:
      raise UserError("RMIA needs population points: data the attacker holds apart from the candidates")
    views = slice(None) if p.use_views else slice(0, 1)
    signal = functools.partial(R.rmia_signal, signal=p.signal, temperature=p.temperature, margin=p.margin,
                               taylor_order=p.taylor_order)
    released = lambda probs, y: signal(R.logits_from_log_probs(released_log_probs(probs[:, views])), y[:, None])
    shadows = lambda logits, y: signal(R.logits_from_log_probs(jax.nn.log_softmax(jnp.asarray(logits[:, :, views]))),
                                       y[None, :, None])
    y, yz = inputs.labels, inputs.population_labels
    tx, rx = released(inputs.target_probs, y), shadows(inputs.shadow_logits, y)
    tz, rz = released(inputs.population_probs, yz), shadows(inputs.population_shadow_logits, yz)
    extras = dict(preset=preset, gamma=gamma, num_population=int(len(yz)))
    if a == "tune":
      a, extras["offline_a_auc"] = R.tune_offline_a(rx, inputs.shadow_keep, rz, gamma=gamma, trim=p.trim)
    extras["offline_a"] = a = float(a)
    return R.rmia(tx, rx, inputs.shadow_keep, tz, rz, online=online, gamma=gamma, offline_a=a, trim=p.trim), extras
  return fn


def labels_of(oracle: Oracle, batch_size: int = 512) -> Callable:
  """images -> int[N]: the top-1 label the oracle releases (all a label-only attacker reads)."""
  return lambda x: query_all(oracle, x, batch_size).argmax(-1)


def _need(oracle: Oracle, inputs: QueryInputs, per_example: int, name: str) -> None:
  """Refuses before the first query if the budget cannot cover every candidate at `per_example` queries."""
  left, n = oracle.budget_left, len(inputs.labels)
  if left is not None and left < per_example * n:
    raise BudgetExceeded(f"{name} needs up to {per_example} queries per example, {per_example * n} for {n} "
                         f"candidates; the oracle has {left} left")


def _calibrated(score_fn: Callable, inputs: QueryInputs, num_calibration: int, tag: tuple, key) -> dict:
  """The threshold fitted on shadow model 0's scores for the first candidates (ART's supervised rule); `tag` and
  `key` name it in the memo (every option of score_fn in the tag)."""
  m = min(int(num_calibration), len(inputs.labels))
  if m < 2:
    raise UserError(f"calibration needs >= 2 candidates, got {num_calibration}")

  def fit():
    s = score_fn(labels_of(inputs.shadow_oracle(0)), inputs.images[:m], inputs.labels[:m])
    keep = np.asarray(inputs.shadow_keep[0, :m], bool)
    tau, acc = L.calibrate_threshold(s[keep], s[~keep])
    return dict(threshold=tau, shadow_accuracy=acc, num_calibration=m)
  return dict(_once(inputs.memo, (*tag, m), key, fit))


def _gap(oracle, inputs: QueryInputs, key, **_):
  del key
  _need(oracle, inputs, 1, "gap")
  return L.gap_score(labels_of(oracle), inputs.images, inputs.labels), {}


def _label_augmentation(oracle, inputs: QueryInputs, key, *, d: int = 1, mirror: bool = False,
                        scorer: str = "mlp", **_):
  if scorer not in ("mlp", "count"):
    raise UserError(f"label_augmentation scorer must be 'mlp' or 'count', got {scorer!r}")
  num_views = len(L.translations(d)) * (2 if mirror else 1)
  _need(oracle, inputs, num_views, "label_augmentation")
  feats = lambda o: L.augmentation_features(labels_of(o), inputs.images, inputs.labels, d, mirror=mirror)
  c = feats(oracle)
  extras = dict(d=d, mirror=mirror, num_views=num_views, scorer=scorer)
  if scorer == "count":
    return c.sum(1).astype(np.float64), extras
  # The paper code's rule: an attack MLP per true class on the shadow (source) models' features.
  k = inputs.shadow_keep.shape[0]

  def fit():   # (Dense 10, Dense 10 as the paper code's AttackModel, with ReLU for its LeakyReLU; Adam, lr 1e-3.)
    shadow_c = np.concatenate([feats(inputs.shadow_oracle(j)) for j in range(k)])
    return train_binary_mlps(key, shadow_c.astype(np.float32), np.asarray(inputs.shadow_keep).ravel(),
                             np.tile(inputs.labels, k), oracle.num_classes, widths=(10, 10))
  params = _once(inputs.memo, ("label_augmentation", d, mirror), key, fit)
  return grouped_logits(params, c.astype(np.float32), inputs.labels, (10, 10)), extras


def _label_noise(oracle, inputs: QueryInputs, key, *, sigma: float = 0.05, num_samples: int = 50,
                 num_calibration: int = 200, **_):
  _need(oracle, inputs, 1 + int(num_samples), "label_noise")
  score_fn = lambda lab, x, y: L.noise_robustness(lab, x, y, jax.random.fold_in(key, 1), sigma=sigma,
                                                  num_samples=num_samples)
  extras = dict(sigma=sigma, num_samples=num_samples,
                **_calibrated(score_fn, inputs, num_calibration, ("label_noise", sigma, num_samples), key))
  return L.noise_robustness(labels_of(oracle), inputs.images, inputs.labels, jax.random.fold_in(key, 0),
                            sigma=sigma, num_samples=num_samples), extras


def _label_boundary(oracle, inputs: QueryInputs, key, *, max_queries: Optional[int] = None, num_iterations: int = 64,
                    initial_num_evals: int = 100, max_num_evals: int = 10_000, gamma: float = 1.0,
                    num_calibration: int = 100, **_):
  hsj = dict(num_iterations=num_iterations, initial_num_evals=initial_num_evals, max_num_evals=max_num_evals,
             gamma=gamma)
  dim = int(np.prod(inputs.images.shape[1:]))
  if max_queries is not None and int(max_queries) < 1 + L.hsj_min_queries(dim, gamma):
    raise UserError(f"label_boundary needs max_queries >= {1 + L.hsj_min_queries(dim, gamma)} per example "
                    f"(the label, then HopSkipJump's start at dimension {dim}), got {max_queries}")
  per_example = 1 + (L.hsj_max_queries(dim, **hsj) if max_queries is None else int(max_queries) - 1)
  _need(oracle, inputs, per_example, "label_boundary")

  def distances(lab, images, labels, k):
    """(distance f64[N], gradient queries per example): 0 for a misclassified x, which costs one query."""
    x = L.as_float(images)
    dist = np.zeros(len(x))
    idx = np.flatnonzero(np.asarray(lab(x)) == labels)
    if not len(idx):
      return dist, 0.0
    decide = lambda xs, ii: np.asarray(lab(xs.reshape(-1, *x.shape[1:]))) != labels[idx][ii]
    r = L.hopskipjump_l2(decide, x[idx].reshape(len(idx), -1), k, max_queries=per_example - 1, **hsj)
    dist[idx] = r.distance
    return dist, float(r.gradient_queries.sum()) / len(x)

  calib = _calibrated(lambda lab, x, y: distances(lab, x, y, jax.random.fold_in(key, 1))[0], inputs, num_calibration,
                      ("label_boundary", per_example, *sorted(hsj.items())), key)
  scores, grad_queries = distances(labels_of(oracle), inputs.images, inputs.labels, jax.random.fold_in(key, 0))
  return scores, dict(max_queries=per_example, gradient_queries_per_example=grad_queries, **hsj, **calib)


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
    MembershipAttack("rmia_online", "score", _rmia(True), True, 2,
                     "pairwise likelihood ratios against population points, IN and OUT references "
                     "(Zarifzadeh et al. 2024)", population=True),
    MembershipAttack("rmia_offline", "score", _rmia(False), True, 2,
                     "pairwise likelihood ratios against population points, OUT references only "
                     "(Zarifzadeh et al. 2024)", population=True),
    MembershipAttack("gap", "query", _gap, False, 0, "the label is right: member (Yeom et al. 2018; the baseline)",
                     label_only=True),
    MembershipAttack("label_augmentation", "query", _label_augmentation, False, 2,
                     "labels of translated copies, per-class attack MLPs (Choquette-Choo et al. 2021)",
                     label_only=True),
    MembershipAttack("label_noise", "query", _label_noise, False, 2,
                     "label robustness to Gaussian noise (Choquette-Choo et al. 2021)", label_only=True),
    MembershipAttack("label_boundary", "query", _label_boundary, False, 2,
                     "HopSkipJump distance to the decision boundary (Choquette-Choo et al. 2021; Li & Zhang 2021)",
                     label_only=True),
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


def query_attack(name: str, oracle: Oracle, inputs: QueryInputs, key, **options):
  """(scores f64[N], extras) of query attack `name`, which queries `oracle`; higher = member."""
  attack = get(name)
  if attack.kind != "query":
    raise UserError(f"{name} scores released outputs; it is not a query attack")
  scores, extras = attack.fn(oracle, inputs, key, **options)
  return np.asarray(scores, np.float64), extras
