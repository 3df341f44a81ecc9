"""Extraction attacks by name, one contract: an oracle and images in, a trained surrogate out.

  run(name, oracle, pool_images, *, budget, surrogate, key, config, **options) -> ExtractionResult

`pool_images` are the attacker's natural images: the query pool of KnockoffNets and CloudLeak, the seed set that
JBDA grows. The attack spends at most `budget` queries of the oracle and uses nothing of it but the `Oracle`
protocol. `eval_fn(state) -> (accuracy, fidelity)` (optional, the evaluator's, not the attacker's) gives the curve:
at each budget checkpoint for KnockoffNets (a surrogate trained on each prefix of the transfer set, as
knockoffnets trains one per budget), after each round for JBDA and CloudLeak.
"""

from typing import Callable, FrozenSet, NamedTuple, Optional, Sequence

import jax
import numpy as np

from mlpriv_jax import train
from mlpriv_jax.attacks.extraction.active import cloudleak, jbda
from mlpriv_jax.attacks.extraction.knockoff import check_budget, knockoff_adaptive, knockoff_random, train_surrogate
from mlpriv_jax.errors import UserError
from mlpriv_jax.models import Model
from mlpriv_jax.oracle import Oracle, check_budget as check_oracle_budget


class ExtractionResult(NamedTuple):
  state: train.TrainState  # the surrogate trained on the whole transfer set
  queries_used: int        # queries this attack spent
  images: np.ndarray       # u8[B, H, W, C]: the transfer set, every image queried
  answers: np.ndarray      # f32[B, C]: the oracle's answers
  curve: list              # [{"queries", "accuracy", "fidelity"}] when an eval_fn is given
  extra: dict              # attack-specific records (CloudLeak / JBDA sources, the bandit's history)


class ExtractionAttack(NamedTuple):
  name: str
  fn: Callable[..., ExtractionResult]
  pool: str                  # 'pool': a large natural pool it draws from; 'seeds': a few images it grows
  needs: FrozenSet[str]      # 'pool_labels': the pool's (fine, coarse) label hierarchy
  description: str
  label_only: bool = False   # reads only the top-1 label of each answer


def _curve(points):
  return [dict(queries=int(q), accuracy=float(a), fidelity=float(f)) for q, a, f in points]


def _knockoff(strategy):
  def fn(oracle, pool_images, *, budget, surrogate, key, config, eval_fn=None, checkpoints: Sequence[int] = (),
         pool_labels=None, pool_coarse=None, batch_size: int = 256):
    used0 = oracle.queries_used
    k_query, k_train = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    extra = {}
    if strategy == "random":
      idx, answers = knockoff_random(oracle, pool_images, budget, k_query, batch_size=batch_size)
    else:
      idx, answers, history = knockoff_adaptive(oracle, pool_images, pool_labels, budget, k_query, surrogate,
                                                pool_coarse=pool_coarse)
      extra["bandit"] = history._asdict()
    points, state = [], None
    for b in sorted({int(c) for c in checkpoints if 0 < c < budget} | {budget}):
      state = train_surrogate(surrogate, config, pool_images[idx[:b]], answers[:b], k_train).state
      if eval_fn is not None:
        points.append((b, *eval_fn(state)))
    extra["pool_indices"] = idx
    return ExtractionResult(state, oracle.queries_used - used0, pool_images[idx], answers, _curve(points), extra)
  return fn


def _active(method):
  def fn(oracle, pool_images, *, budget, surrogate, key, config, eval_fn=None, checkpoints=(), **options):
    del checkpoints   # the active attacks measure after each round
    used0 = oracle.queries_used
    attack = jbda if method == "jbda" else cloudleak
    res = attack(oracle, pool_images, budget, key, surrogate, config, eval_fn=eval_fn, **options)
    return ExtractionResult(res.state, oracle.queries_used - used0, res.images, res.answers, _curve(res.curve),
                            {"sources": res.sources})
  return fn


REGISTRY = {a.name: a for a in (
    ExtractionAttack("knockoff_random", _knockoff("random"), "pool", frozenset(),
                     "KnockoffNets, random strategy (Orekondy et al. 2019)"),
    ExtractionAttack("knockoff_adaptive", _knockoff("adaptive"), "pool", frozenset({"pool_labels"}),
                     "KnockoffNets, adaptive strategy: a gradient bandit over the pool's label hierarchy"),
    ExtractionAttack("cloudleak", _active("cloudleak"), "pool", frozenset(),
                     "CloudLeak-style margin-based active learning with FeatureFool or PGD candidates (Yu et al. 2020)"),
    ExtractionAttack("jbda", _active("jbda"), "seeds", frozenset(),
                     "Jacobian-based dataset augmentation from a few seeds, label-only (Papernot et al. 2017)",
                     label_only=True),
)}


def get(name: str) -> ExtractionAttack:
  if name not in REGISTRY:
    raise UserError(f"unknown extraction attack {name!r}; known: {', '.join(REGISTRY)}")
  return REGISTRY[name]


def run(name: str, oracle: Oracle, pool_images, *, budget: int, surrogate: Model, key, config: train.TrainConfig,
        eval_fn: Optional[Callable] = None, **options) -> ExtractionResult:
  """Runs extraction attack `name` against `oracle` with at most `budget` queries (see the module docstring).

  options: `checkpoints` (KnockoffNets), `pool_labels` and `pool_coarse` (knockoff_adaptive), and each attack's
  own keywords (JBDA: lam, tau; CloudLeak: num_rounds, method, seed_fraction, candidates_per_query, eps, steps).
  """
  attack = get(name)
  if int(budget) != budget or budget < 1:
    raise UserError(f"budget must be a positive integer, got {budget}")
  if attack.pool == "pool":
    check_budget(budget, len(pool_images))
  check_oracle_budget(oracle, int(budget), name)
  if surrogate.num_classes != oracle.num_classes:
    raise UserError(f"the surrogate has {surrogate.num_classes} classes, the oracle answers {oracle.num_classes}")
  if tuple(np.shape(pool_images)[1:]) != tuple(oracle.input_shape):
    raise UserError(f"the attacker's images have shape {tuple(np.shape(pool_images)[1:])}, the oracle takes "
                    f"{tuple(oracle.input_shape)}")
  if "pool_labels" in attack.needs and options.get("pool_labels") is None:
    raise UserError(f"{name} needs the pool's labels (pool_labels=, and pool_coarse= for its hierarchy)")
  return attack.fn(oracle, pool_images, budget=int(budget), surrogate=surrogate, key=key, config=config,
                   eval_fn=eval_fn, **options)
