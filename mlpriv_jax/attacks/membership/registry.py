"""Membership attacks by name. Member = positive; every score is higher = member.

Two contracts, two types:

* a `ScoreAttack` scores what the oracle released for the candidates, with the help of the attacker's own shadow
  (reference) models: `fn(inputs: ScoreInputs, key, options) -> (scores f32[N], extras dict)`. It never queries
  the oracle itself; the caller queries it once for every score attack (`views_needed`).
* a `QueryAttack` queries the oracle inside its loop (the label-only attacks): `fn(oracle, inputs: QueryInputs,
  key, options) -> (scores f32[N], extras dict)`; every query counts against the oracle's budget.

Each attack's options are a typed, frozen record (`options`: its class, whose defaults are the attack's; an unknown
or misspelt option is refused by name); `MembershipOptions` holds one record per attack.
"""

import dataclasses
import functools
from typing import Callable, NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax import streams
from mlpriv_jax.attacks.membership import label_only as L
from mlpriv_jax.attacks.membership import rmia as R
from mlpriv_jax.attacks.membership.lira import lira_offline, lira_online
from mlpriv_jax.attacks.membership.shokri import FEATURES, attack_records, shokri_score, train_shokri
from mlpriv_jax.attacks.membership.signals import SIGNALS, logit_scaled_confidence, released_log_probs
from mlpriv_jax.attacks.membership.threshold import calibrated_score, class_thresholds
from mlpriv_jax.config import PerAttack
from mlpriv_jax.errors import UserError, integer, number
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


@dataclasses.dataclass(frozen=True)
class NoOptions:
  """An attack without options."""

  def validate(self):
    return self


@dataclasses.dataclass(frozen=True)
class ShokriOptions:
  features: str = "probs"   # the attack models' input: probs (the paper's), log_probs, sorted_probs (Salem et al.)

  def validate(self):
    if self.features not in FEATURES:
      raise UserError(f"shokri features must be one of {', '.join(FEATURES)}, got {self.features!r}")
    return self


@dataclasses.dataclass(frozen=True)
class LiraOptions:
  fix_variance: Optional[bool] = None   # one global std; None: when fewer than 64 shadows (LiRA, Sec. VI-B)

  def validate(self):
    return self


@dataclasses.dataclass(frozen=True)
class RmiaOptions:
  preset: str = "paper_softmax"            # whose defaults: paper_softmax, paper, privacy_meter, leakpro
  gamma: Optional[float] = None            # the likelihood-ratio threshold (None: the preset's)
  offline_a: Union[None, float, str] = None   # a in [0, 1] of P_IN ~ a P_OUT + 1 - a, or 'tune' (None: the preset's)

  def validate(self):
    rmia_settings(self)
    return self


@dataclasses.dataclass(frozen=True)
class LabelAugmentationOptions:
  d: int = 1               # translations by up to d pixels: 4d + 1 queries per example
  mirror: bool = False     # also the mirrored copies
  scorer: str = "mlp"      # 'mlp' (the paper code's per-class attack MLPs) or 'count' (labels right)

  def validate(self):
    integer(self.d, "label_augmentation d", at_least=0)
    if self.scorer not in ("mlp", "count"):
      raise UserError(f"label_augmentation scorer must be 'mlp' or 'count', got {self.scorer!r}")
    return self


@dataclasses.dataclass(frozen=True)
class LabelNoiseOptions:
  sigma: float = 0.05           # std of the Gaussian noise, pixels in [0, 1]
  num_samples: int = 50         # noisy copies queried per example
  num_calibration: int = 200    # candidates of the shadow its threshold is fitted on

  def validate(self):
    number(self.sigma, "label_noise sigma", above=0)
    integer(self.num_samples, "label_noise num_samples")
    integer(self.num_calibration, "label_noise num_calibration", at_least=2)
    return self


@dataclasses.dataclass(frozen=True)
class LabelBoundaryOptions:
  max_queries: Optional[int] = None   # HopSkipJump's queries per example, the label included (None: no cap)
  num_iterations: int = 64            # cleverhans' defaults from here on
  initial_num_evals: int = 100
  max_num_evals: int = 10_000
  gamma: float = 1.0
  num_calibration: int = 100

  def validate(self):
    if self.max_queries is not None:
      integer(self.max_queries, "label_boundary max_queries")
    integer(self.num_iterations, "label_boundary num_iterations")
    integer(self.initial_num_evals, "label_boundary initial_num_evals")
    integer(self.max_num_evals, "label_boundary max_num_evals")
    number(self.gamma, "label_boundary gamma", above=0)
    integer(self.num_calibration, "label_boundary num_calibration", at_least=2)
    return self


class ScoreAttack(NamedTuple):
  """An attack on the released outputs, calibrated on the attacker's shadows (see the module docstring)."""
  name: str
  fn: Callable[[ScoreInputs, jax.Array, object], Tuple[np.ndarray, dict]]
  options: type           # its options record
  uses_views: bool        # scores every augmented view (else the identity view only)
  min_shadows: int        # shadow models needed (balanced keep masks: each example IN for half of them)
  description: str
  population: bool = False   # needs population points apart from the candidates (ScoreInputs.population_*)


class QueryAttack(NamedTuple):
  """An attack that queries the oracle itself and calibrates on the attacker's shadows."""
  name: str
  fn: Callable[[Oracle, QueryInputs, jax.Array, object], Tuple[np.ndarray, dict]]
  options: type
  min_shadows: int
  description: str
  label_only: bool = False   # reads only the top-1 label of each answer (`labels_of`)


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


def _shokri(inputs: ScoreInputs, key, options: ShokriOptions):
  def fit():
    shadow_probs = jax.nn.softmax(jnp.asarray(inputs.shadow_logits[:, :, 0]))
    probs, labels, is_in = attack_records(shadow_probs, inputs.labels, inputs.shadow_keep)
    return train_shokri(key, probs, labels, is_in, inputs.num_classes, features=options.features)
  attack = _once(inputs.memo, ("shokri", options.features), key, fit)
  return shokri_score(attack, jnp.asarray(inputs.target_probs[:, 0]), inputs.labels), {}


def _metric(signal_name):
  def fn(inputs: ScoreInputs, key, options: NoOptions):
    del key, options
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
  def fn(inputs: ScoreInputs, key, options: LiraOptions):
    del key
    fix_variance = options.fix_variance
    if fix_variance is None:   # a global variance beats per-example ones below ~64 shadows (LiRA, Sec. VI-B)
      fix_variance = inputs.shadow_keep.shape[0] < 64
    phi_target, phi_shadow = lira_phis(inputs)
    score = (lira_online if online else lira_offline)(phi_target, phi_shadow, inputs.shadow_keep,
                                                      fix_variance=fix_variance)
    return score, {"phi_target": np.asarray(phi_target), "phi_shadow": np.asarray(phi_shadow),
                   "fix_variance": fix_variance}
  return fn


def rmia_settings(options: RmiaOptions):
  """(preset, gamma, a or 'tune') with the preset's values filled in, each checked (one-line errors).

  The default preset is the authors' code with the true-class softmax at T = 1: an oracle releases probabilities,
  and the code's Taylor signal is defined on logits (not shift-invariant), which they do not determine.
  """
  p = R.get_preset(options.preset)
  gamma = p.gamma if options.gamma is None else float(options.gamma)
  offline_a = options.offline_a
  if isinstance(offline_a, str) and offline_a != "tune":
    raise UserError(f"RMIA offline a must be a number in [0, 1] or 'tune', got {offline_a!r}")
  a = p.offline_a if offline_a is None else offline_a
  R.check_rmia(gamma, None if a == "tune" else float(a))
  return p, gamma, a


def _rmia(online):
  def fn(inputs: ScoreInputs, key, options: RmiaOptions):
    del key
    p, gamma, a = rmia_settings(options)
    preset = options.preset
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


def _gap(oracle, inputs: QueryInputs, key, options: NoOptions):
  del key, options
  _need(oracle, inputs, 1, "gap")
  return L.gap_score(labels_of(oracle), inputs.images, inputs.labels), {}


def _label_augmentation(oracle, inputs: QueryInputs, key, options: LabelAugmentationOptions):
  d, mirror, scorer = options.d, options.mirror, options.scorer
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


def _label_noise(oracle, inputs: QueryInputs, key, options: LabelNoiseOptions):
  sigma, num_samples, num_calibration = options.sigma, options.num_samples, options.num_calibration
  _need(oracle, inputs, 1 + int(num_samples), "label_noise")
  score_fn = lambda lab, x, y: L.noise_robustness(lab, x, y, streams.derive(key, streams.LABEL_CALIBRATION), sigma=sigma,
                                                  num_samples=num_samples)
  extras = dict(sigma=sigma, num_samples=num_samples,
                **_calibrated(score_fn, inputs, num_calibration, ("label_noise", sigma, num_samples), key))
  return L.noise_robustness(labels_of(oracle), inputs.images, inputs.labels,
                            streams.derive(key, streams.LABEL_TARGET), sigma=sigma, num_samples=num_samples), extras


def _label_boundary(oracle, inputs: QueryInputs, key, options: LabelBoundaryOptions):
  max_queries, num_iterations, gamma = options.max_queries, options.num_iterations, options.gamma
  initial_num_evals, max_num_evals, num_calibration = (options.initial_num_evals, options.max_num_evals,
                                                       options.num_calibration)
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

  calib = _calibrated(lambda lab, x, y: distances(lab, x, y, streams.derive(key, streams.LABEL_CALIBRATION))[0], inputs, num_calibration,
                      ("label_boundary", per_example, *sorted(hsj.items())), key)
  scores, grad_queries = distances(labels_of(oracle), inputs.images, inputs.labels,
                                      streams.derive(key, streams.LABEL_TARGET))
  return scores, dict(max_queries=per_example, gradient_queries_per_example=grad_queries, **hsj, **calib)


REGISTRY = {a.name: a for a in (
    ScoreAttack("shokri", _shokri, ShokriOptions, False, 2,
                "shadow models and per-class attack MLPs on the output vector (Shokri et al. 2017)"),
    ScoreAttack("loss", _metric("loss"), NoOptions, False, 2, "minus the loss, class thresholds (Yeom et al. 2018)"),
    ScoreAttack("confidence", _metric("confidence"), NoOptions, False, 2,
                "the true class's probability, class thresholds (Song & Mittal 2021)"),
    ScoreAttack("entropy", _metric("entropy"), NoOptions, False, 2,
                "minus the prediction entropy, class thresholds (Song & Mittal 2021)"),
    ScoreAttack("mentropy", _metric("mentropy"), NoOptions, False, 2,
                "minus the modified entropy, class thresholds (Song & Mittal 2021, Eq. 4)"),
    ScoreAttack("lira_online", _lira(True), LiraOptions, True, 2,
                "likelihood ratio of IN and OUT Gaussians over views (Carlini et al. 2022)"),
    ScoreAttack("lira_offline", _lira(False), LiraOptions, True, 2,
                "one-sided test against the OUT Gaussian over views (Carlini et al. 2022)"),
    ScoreAttack("rmia_online", _rmia(True), RmiaOptions, True, 2,
                "pairwise likelihood ratios against population points, IN and OUT references "
                "(Zarifzadeh et al. 2024)", population=True),
    ScoreAttack("rmia_offline", _rmia(False), RmiaOptions, True, 2,
                "pairwise likelihood ratios against population points, OUT references only "
                "(Zarifzadeh et al. 2024)", population=True),
    QueryAttack("gap", _gap, NoOptions, 0, "the label is right: member (Yeom et al. 2018; the baseline)",
                label_only=True),
    QueryAttack("label_augmentation", _label_augmentation, LabelAugmentationOptions, 2,
                "labels of translated copies, per-class attack MLPs (Choquette-Choo et al. 2021)", label_only=True),
    QueryAttack("label_noise", _label_noise, LabelNoiseOptions, 2,
                "label robustness to Gaussian noise (Choquette-Choo et al. 2021)", label_only=True),
    QueryAttack("label_boundary", _label_boundary, LabelBoundaryOptions, 2,
                "HopSkipJump distance to the decision boundary (Choquette-Choo et al. 2021; Li & Zhang 2021)",
                label_only=True),
)}


@dataclasses.dataclass(frozen=True)
class MembershipOptions(PerAttack):
  """The options of every membership attack, one typed record each (the registry's defaults unless given)."""
  shokri: ShokriOptions = ShokriOptions()
  loss: NoOptions = NoOptions()
  confidence: NoOptions = NoOptions()
  entropy: NoOptions = NoOptions()
  mentropy: NoOptions = NoOptions()
  lira_online: LiraOptions = LiraOptions()
  lira_offline: LiraOptions = LiraOptions()
  rmia_online: RmiaOptions = RmiaOptions()
  rmia_offline: RmiaOptions = RmiaOptions()
  gap: NoOptions = NoOptions()
  label_augmentation: LabelAugmentationOptions = LabelAugmentationOptions()
  label_noise: LabelNoiseOptions = LabelNoiseOptions()
  label_boundary: LabelBoundaryOptions = LabelBoundaryOptions()


def get(name: str) -> Union[ScoreAttack, QueryAttack]:
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


def split(names: Sequence[str]) -> Tuple[list, list]:
  """(score attacks, query attacks) among `names`, each in the given order."""
  return ([n for n in names if isinstance(get(n), ScoreAttack)],
          [n for n in names if isinstance(get(n), QueryAttack)])


def views_needed(names) -> bool:
  """Whether any of the attacks scores the augmented views (else only the identity view is queried)."""
  return any(isinstance(get(n), ScoreAttack) and get(n).uses_views for n in names)


def needs_population(names) -> bool:
  """Whether any of the attacks needs population points (RMIA)."""
  return any(isinstance(get(n), ScoreAttack) and get(n).population for n in names)


def reads_labels_only(names) -> bool:
  """Whether every one of the query attacks `names` reads only the top-1 label of its answers."""
  return all(isinstance(get(n), QueryAttack) and get(n).label_only for n in names)


def score(name: str, inputs: ScoreInputs, key, options=None):
  """(scores f64[N], extras) of score attack `name` with its options record (None: its defaults); higher = member."""
  attack = get(name)
  if not isinstance(attack, ScoreAttack):
    raise UserError(f"{name} queries the oracle itself; it is not a score attack")
  scores, extras = attack.fn(inputs, key, attack.options() if options is None else options)
  return np.asarray(scores, np.float64), extras


def query_attack(name: str, oracle: Oracle, inputs: QueryInputs, key, options=None):
  """(scores f64[N], extras) of query attack `name`, which queries `oracle`; higher = member."""
  attack = get(name)
  if not isinstance(attack, QueryAttack):
    raise UserError(f"{name} scores released outputs; it is not a query attack")
  scores, extras = attack.fn(oracle, inputs, key, attack.options() if options is None else options)
  return np.asarray(scores, np.float64), extras
