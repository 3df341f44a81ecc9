"""Extraction attacks by name, one contract: an oracle and images in, a trained surrogate out.

  run(name, oracle, pool_images, *, budget, surrogate, key, config, options, ...) -> ExtractionResult

`pool_images` are the attacker's natural images: the query pool of KnockoffNets and CloudLeak, the seed set that
JBDA grows. The attack spends at most `budget` queries of the oracle and uses nothing of it but the `Oracle`
protocol. It returns its surrogate and nothing else to judge it by: `snapshots` holds the surrogate at each budget
checkpoint for KnockoffNets (one trained on each prefix of the transfer set, as knockoffnets trains one per
budget), after each round for JBDA and CloudLeak; the evaluator judges them afterwards (`games.extraction`).
Each attack's options are a typed, frozen record (`ExtractionOptions` holds one per attack).
"""

import dataclasses
from typing import Callable, FrozenSet, NamedTuple, Sequence, Tuple

import numpy as np

from mlpriv_jax import streams, train
from mlpriv_jax.attacks.extraction.active import cloudleak, jbda
from mlpriv_jax.attacks.extraction.knockoff import knockoff_adaptive, knockoff_random, train_surrogate
from mlpriv_jax.config import PerAttack
from mlpriv_jax.errors import UserError, integer, number
from mlpriv_jax.models import Model
from mlpriv_jax.oracle import Oracle, check_budget as check_oracle_budget


class ExtractionResult(NamedTuple):
  state: train.TrainState  # the surrogate trained on the whole transfer set
  queries_used: int        # queries this attack spent
  images: np.ndarray       # u8[B, H, W, C]: the transfer set, every image queried
  answers: np.ndarray      # f32[B, C]: the oracle's answers
  snapshots: list          # [(queries, surrogate state)]: at each checkpoint or round, the last one `state`
  extra: dict              # attack-specific records (CloudLeak / JBDA sources, the bandit's history)


@dataclasses.dataclass(frozen=True)
class KnockoffRandomOptions:
  batch_size: int = 256            # queries per call

  def validate(self):
    integer(self.batch_size, "knockoff_random batch_size")
    return self


@dataclasses.dataclass(frozen=True)
class KnockoffAdaptiveOptions:
  batch_size: int = 64             # the bandit's actions (and queries) per step
  learning_rate: float = 0.01      # of the online surrogate (SGD, momentum 0.5, as knockoffnets)
  rewards: Tuple[str, ...] = ("cert", "div", "loss")

  def validate(self):
    integer(self.batch_size, "knockoff_adaptive batch_size")
    number(self.learning_rate, "knockoff_adaptive learning_rate", above=0)
    unknown = set(self.rewards) - {"cert", "div", "loss"}
    if unknown or not self.rewards:
      raise UserError(f"unknown knockoff_adaptive rewards {sorted(unknown)}; known: cert, div, loss")
    return self


@dataclasses.dataclass(frozen=True)
class CloudLeakOptions:
  num_rounds: int = 5              # train -> craft -> query rounds
  seed_fraction: float = 0.3       # of the budget spent on random pool images first
  candidates_per_query: int = 4    # adversarial candidates crafted per query sent
  method: str = "featurefool"      # 'featurefool' (Eq. 10-11) or 'pgd' (on the surrogate's margin)
  eps: float = 8 / 255             # L-inf radius of a candidate around its pool image
  steps: int = 10                  # signed-gradient steps per candidate

  def validate(self):
    integer(self.num_rounds, "cloudleak num_rounds")
    number(self.seed_fraction, "cloudleak seed_fraction", above=0, at_most=1)
    integer(self.candidates_per_query, "cloudleak candidates_per_query")
    if self.method not in ("featurefool", "pgd"):
      raise UserError(f"unknown CloudLeak method {self.method!r}; known: featurefool, pgd")
    number(self.eps, "cloudleak eps", above=0)
    integer(self.steps, "cloudleak steps")
    return self


@dataclasses.dataclass(frozen=True)
class JbdaOptions:
  lam: float = 0.1                 # the step lambda of x + lambda sign(grad)
  tau: int = 3                     # rounds between sign flips of lambda

  def validate(self):
    number(self.lam, "jbda lam", above=0)
    integer(self.tau, "jbda tau")
    return self


class ExtractionAttack(NamedTuple):
  name: str
  fn: Callable[..., ExtractionResult]
  options: type              # its options record
  pool: str                  # 'pool': a large natural pool it draws from; 'seeds': a few images it grows
  needs: FrozenSet[str]      # 'pool_labels': the pool's (fine, coarse) label hierarchy
  description: str
  label_only: bool = False   # reads only the top-1 label of each answer


def _knockoff(strategy):
  def fn(oracle, pool_images, *, budget, surrogate, key, config, options, checkpoints: Sequence[int] = (),
         pool_labels=None, pool_coarse=None):
    used0 = oracle.queries_used
    k_query, k_train = streams.derive(key, streams.KNOCKOFF_QUERIES), streams.derive(key, streams.KNOCKOFF_TRAIN)
    extra = {}
    if strategy == "random":
      idx, answers = knockoff_random(oracle, pool_images, budget, k_query, batch_size=options.batch_size)
    else:
      idx, answers, history = knockoff_adaptive(oracle, pool_images, pool_labels, budget, k_query, surrogate,
                                                pool_coarse=pool_coarse, batch_size=options.batch_size,
                                                learning_rate=options.learning_rate, rewards=options.rewards)
      extra["bandit"] = history._asdict()
    snapshots = []
    for b in sorted({int(c) for c in checkpoints if 0 < c < budget} | {budget}):
      snapshots.append((b, train_surrogate(surrogate, config, pool_images[idx[:b]], answers[:b], k_train).state))
    extra["pool_indices"] = idx
    return ExtractionResult(snapshots[-1][1], oracle.queries_used - used0, pool_images[idx], answers, snapshots,
                            extra)
  return fn


def _active(method):
  def fn(oracle, pool_images, *, budget, surrogate, key, config, options, checkpoints=()):
    del checkpoints   # the active attacks measure after each round
    used0 = oracle.queries_used
    kw = dataclasses.asdict(options)
    res = (jbda if method == "jbda" else cloudleak)(oracle, pool_images, budget, key, surrogate, config, **kw)
    return ExtractionResult(res.state, oracle.queries_used - used0, res.images, res.answers, res.snapshots,
                            {"sources": res.sources})
  return fn


REGISTRY = {a.name: a for a in (
    ExtractionAttack("knockoff_random", _knockoff("random"), KnockoffRandomOptions, "pool", frozenset(),
                     "KnockoffNets, random strategy (Orekondy et al. 2019)"),
    ExtractionAttack("knockoff_adaptive", _knockoff("adaptive"), KnockoffAdaptiveOptions, "pool",
                     frozenset({"pool_labels"}),
                     "KnockoffNets, adaptive strategy: a gradient bandit over the pool's label hierarchy"),
    ExtractionAttack("cloudleak", _active("cloudleak"), CloudLeakOptions, "pool", frozenset(),
                     "CloudLeak-style margin-based active learning with FeatureFool or PGD candidates (Yu et al. 2020)"),
    ExtractionAttack("jbda", _active("jbda"), JbdaOptions, "seeds", frozenset(),
                     "Jacobian-based dataset augmentation from a few seeds, label-only (Papernot et al. 2017)",
                     label_only=True),
)}


@dataclasses.dataclass(frozen=True)
class ExtractionOptions(PerAttack):
  """The options of every extraction attack, one typed record each (the registry's defaults unless given)."""
  knockoff_random: KnockoffRandomOptions = KnockoffRandomOptions()
  knockoff_adaptive: KnockoffAdaptiveOptions = KnockoffAdaptiveOptions()
  cloudleak: CloudLeakOptions = CloudLeakOptions()
  jbda: JbdaOptions = JbdaOptions()


def get(name: str) -> ExtractionAttack:
  if name not in REGISTRY:
    raise UserError(f"unknown extraction attack {name!r}; known: {', '.join(REGISTRY)}")
  return REGISTRY[name]


def check_budget(budget, pool_size: int) -> int:
  """A budget is a positive integer no larger than the pool it is drawn from."""
  budget = integer(budget, "budget")
  if budget > pool_size:
    raise UserError(f"budget {budget} is larger than the query pool ({pool_size} images)")
  return budget


def run(name: str, oracle: Oracle, pool_images, *, budget: int, surrogate: Model, key, config: train.TrainConfig,
        options=None, checkpoints: Sequence[int] = (), pool_labels=None, pool_coarse=None) -> ExtractionResult:
  """Runs extraction attack `name` against `oracle` with at most `budget` queries (see the module docstring).

  The one place an attack's inputs are checked (the attacks below it trust them). options: the attack's record
  (None: its defaults); checkpoints: KnockoffNets' budgets at which a surrogate is also trained; pool_labels and
  pool_coarse: knockoff_adaptive's label hierarchy.
  """
  attack = get(name)
  options = attack.options() if options is None else options
  if not isinstance(options, attack.options):
    raise UserError(f"{name} takes {attack.options.__name__} options, got {type(options).__name__}")
  options.validate()
  budget = check_budget(budget, len(pool_images)) if attack.pool == "pool" else integer(budget, "budget")
  check_oracle_budget(oracle, budget, name)
  if surrogate.num_classes != oracle.num_classes:
    raise UserError(f"the surrogate has {surrogate.num_classes} classes, the oracle answers {oracle.num_classes}")
  if tuple(np.shape(pool_images)[1:]) != tuple(oracle.input_shape):
    raise UserError(f"the attacker's images have shape {tuple(np.shape(pool_images)[1:])}, the oracle takes "
                    f"{tuple(oracle.input_shape)}")
  extra = {}
  if "pool_labels" in attack.needs:
    if pool_labels is None:
      raise UserError(f"{name} needs the pool's labels (pool_labels=, and pool_coarse= for its hierarchy)")
    fine = np.asarray(pool_labels)
    coarse = np.zeros_like(fine) if pool_coarse is None else np.asarray(pool_coarse)
    if fine.shape != (len(pool_images),) or coarse.shape != fine.shape:
      raise UserError(f"pool labels must be int[N] with N = {len(pool_images)}, got {fine.shape} and "
                      f"{coarse.shape}")
    extra = dict(pool_labels=pool_labels, pool_coarse=pool_coarse)
  return attack.fn(oracle, pool_images, budget=budget, surrogate=surrogate, key=key, config=config,
                   options=options, checkpoints=checkpoints, **extra)
