"""Extraction attacks by name, one contract: an oracle and images in, a trained surrogate out.

  run(name, oracle, pool_images, *, budget, surrogate, key, config, options, ...) -> ExtractionResult

`pool_images` are the attacker's natural images: the query pool of KnockoffNets and CloudLeak, the seed set that
JBDA grows; a data-free attack (DFME) has none (None) and makes every query itself. The attack spends at most `budget` queries of the oracle and uses nothing of it but the `Oracle`
protocol. It returns its surrogate and nothing else to judge it by: `snapshots` holds the surrogate at each budget
checkpoint for KnockoffNets (one trained on each prefix of the transfer set, as knockoffnets trains one per
budget), after each round for JBDA and CloudLeak; the evaluator judges them afterwards (`games.extraction`).
Each attack's options are a typed, frozen record (`ExtractionOptions` holds one per attack).
"""

import dataclasses
from typing import Callable, FrozenSet, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from mlpriv_jax import defences, streams, train
from mlpriv_jax.attacks.extraction.active import cloudleak, jbda
from mlpriv_jax.attacks.extraction.adaptive import recovery_attack, smoothing_queries
from mlpriv_jax.attacks.extraction.datafree import cost_per_iteration, dfme, disguide
from mlpriv_jax.attacks.extraction.knockoff import fit_batch, knockoff_adaptive, knockoff_random, train_surrogate
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


@dataclasses.dataclass(frozen=True)
class Top1Options:
  batch_size: int = 256            # queries per call

  def validate(self):
    integer(self.batch_size, "top1 batch_size")
    return self


@dataclasses.dataclass(frozen=True)
class SmoothingOptions:
  copies: int = 3                  # queries per image, each under a fresh augmentation (ModelGuard's qpi)
  pad: int = 4                     # the random crop's padding
  batch_size: int = 256            # queries per call

  def validate(self):
    integer(self.copies, "smoothing copies")
    integer(self.pad, "smoothing pad", at_least=0)
    integer(self.batch_size, "smoothing batch_size")
    return self


@dataclasses.dataclass(frozen=True)
class RecoveryOptions:
  num_shadows: int = 20            # the attacker's shadow victims (ModelGuard's default)
  table_images: int = 0            # pool images answered by every shadow for the table (0: the queried ones)
  epochs: int = 200                # of the recovery network (batch 1024, SGD 1e-2, halved every 100 epochs)
  guard_steps: int = 500           # of the attacker's MemGuard classifier, against MemGuard
  batch_size: int = 256            # queries per call

  def validate(self):
    integer(self.num_shadows, "recovery num_shadows")
    integer(self.table_images, "recovery table_images", at_least=0)
    integer(self.epochs, "recovery epochs")
    integer(self.guard_steps, "recovery guard_steps")
    integer(self.batch_size, "recovery batch_size")
    return self


@dataclasses.dataclass(frozen=True)
class DfmeOptions:
  batch_size: int = 256            # generated images per step (the original's defaults throughout)
  nz: int = 256                    # the generator's noise
  ngf: int = 64                    # the generator's width
  grad_m: int = 1                  # random directions of the forward-difference estimate
  grad_epsilon: float = 1e-3       # its step, in the generator's pre-tanh space
  g_iter: int = 1                  # generator steps per iteration
  d_iter: int = 5                  # student steps per iteration
  lr_student: float = 0.1          # SGD, momentum 0.9
  lr_generator: float = 1e-4       # Adam
  weight_decay: float = 5e-4       # the student's
  milestones: Tuple[float, ...] = (0.1, 0.3, 0.5)   # fractions of the iterations where both rates are scaled
  scale: float = 0.3
  logit_floor: float = 1e-6        # a released probability below it is read as it (top-k's and rounding's zeros)
  report_every: int = 200_000      # queries between progress reports

  def validate(self):
    for f in ("batch_size", "nz", "ngf", "grad_m", "g_iter", "d_iter", "report_every"):
      integer(getattr(self, f), f"dfme {f}")
    for f in ("grad_epsilon", "lr_student", "lr_generator", "scale", "logit_floor"):
      number(getattr(self, f), f"dfme {f}", above=0)
    number(self.weight_decay, "dfme weight_decay", at_least=0)
    for f in self.milestones:
      number(f, "each dfme milestone", above=0, at_most=1)
    return self

  def cost(self) -> int:
    """Victim queries per iteration."""
    return cost_per_iteration(self)


@dataclasses.dataclass(frozen=True)
class DisguideOptions:
  batch_size: int = 256            # generated images per iteration, each one query (the original's defaults)
  nz: int = 256
  ngf: int = 64
  lr_student: float = 0.03         # SGD, momentum 0.9, for both students
  lr_generator: float = 1e-4       # Adam
  weight_decay: float = 5e-4
  lambda_div: float = 0.2          # the diversity term (0.04 for CIFAR-100 in the original)
  replay_size: int = 1_000_000     # the replay buffer (at most the budget's images)
  replay_steps: int = 3            # student steps on replayed batches per iteration (`rep_iter`)
  grayscale: int = 8               # every grayscale-th generated image is made grey (0: none)
  milestones: Tuple[float, ...] = (0.4, 0.8)
  scale: float = 0.3
  report_every: int = 200_000

  def validate(self):
    for f in ("batch_size", "nz", "ngf", "replay_size", "report_every"):
      integer(getattr(self, f), f"disguide {f}")
    for f in ("replay_steps", "grayscale"):
      integer(getattr(self, f), f"disguide {f}", at_least=0)
    for f in ("lr_student", "lr_generator", "scale"):
      number(getattr(self, f), f"disguide {f}", above=0)
    number(self.weight_decay, "disguide weight_decay", at_least=0)
    number(self.lambda_div, "disguide lambda_div", at_least=0)
    for f in self.milestones:
      number(f, "each disguide milestone", above=0, at_most=1)
    return self

  def cost(self) -> int:
    """Victim queries per iteration: one generated batch."""
    return self.batch_size


class ExtractionAttack(NamedTuple):
  name: str
  fn: Callable[..., ExtractionResult]
  options: type              # its options record
  pool: str                  # 'pool': a large natural pool it draws from; 'seeds': a few images it grows;
                             # 'none': it makes its own queries (data-free)
  needs: FrozenSet[str]      # 'pool_labels': the pool's (fine, coarse) label hierarchy; 'defence': the defence
  description: str
  label_only: bool = False   # reads only the top-1 label of each answer
  adaptive: bool = False     # designed against output perturbation (knows the defence, or makes it moot)


def _budgets(checkpoints: Sequence[int], budget: int) -> list:
  """The budgets a surrogate is trained at: each checkpoint below the budget, and the budget."""
  return sorted({int(c) for c in checkpoints if 0 < c < budget} | {budget})


def _knockoff(strategy, top1: bool = False):
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
    snapshots = [(b, train_surrogate(surrogate, fit_batch(config, b), pool_images[idx[:b]], answers[:b], k_train,
                                     label_only=top1 or None).state) for b in _budgets(checkpoints, budget)]
    extra["pool_indices"] = idx
    return ExtractionResult(snapshots[-1][1], oracle.queries_used - used0, pool_images[idx], answers, snapshots,
                            extra)
  return fn


def _smoothing(oracle, pool_images, *, budget, surrogate, key, config, options, checkpoints=()):
  used0, k = oracle.queries_used, options.copies
  idx, answers = smoothing_queries(oracle, pool_images, budget, key, copies=k, batch_size=options.batch_size,
                                   pad=options.pad)
  k_train = streams.derive(key, streams.KNOCKOFF_TRAIN)
  snapshots = [(b // k * k, train_surrogate(surrogate, fit_batch(config, b // k), pool_images[idx[:b // k]],
                                            answers[:b // k], k_train).state)
               for b in _budgets(checkpoints, budget) if b >= k]
  return ExtractionResult(snapshots[-1][1], oracle.queries_used - used0, pool_images[idx], answers, snapshots,
                          {"pool_indices": idx})


def _recovery(oracle, pool_images, *, budget, surrogate, key, config, options, checkpoints=(), pool_labels=None,
              pool_coarse=None, defence=None):
  del pool_coarse
  used0 = oracle.queries_used
  idx, answers, recovered, net, shadow_acc = recovery_attack(
      oracle, pool_images, pool_labels, budget, key, surrogate, config, defence, num_shadows=options.num_shadows,
      table_images=options.table_images, batch_size=options.batch_size, epochs=options.epochs,
      guard_steps=options.guard_steps)
  k_train = streams.derive(key, streams.KNOCKOFF_TRAIN)
  snapshots = [(b, train_surrogate(surrogate, fit_batch(config, b), pool_images[idx[:b]], recovered[:b], k_train,
                                   label_only=False).state) for b in _budgets(checkpoints, budget)]
  return ExtractionResult(snapshots[-1][1], oracle.queries_used - used0, pool_images[idx], answers, snapshots,
                          dict(pool_indices=idx, recovered=recovered, shadow_accuracy=shadow_acc,
                               recovery_loss=float(net.losses[-1])))


def _active(method):
  def fn(oracle, pool_images, *, budget, surrogate, key, config, options, checkpoints=()):
    del checkpoints   # the active attacks measure after each round
    used0 = oracle.queries_used
    kw = dataclasses.asdict(options)
    res = (jbda if method == "jbda" else cloudleak)(oracle, pool_images, budget, key, surrogate, config, **kw)
    return ExtractionResult(res.state, oracle.queries_used - used0, res.images, res.answers, res.snapshots,
                            {"sources": res.sources})
  return fn


def _datafree(attack):
  """The registry's function of a data-free attack (`dfme`, `disguide`): no pool, its own recipe (the options)."""
  def fn(oracle, pool_images, *, budget, surrogate, key, config, options, checkpoints=(), progress=None):
    del pool_images, config
    used0 = oracle.queries_used
    res = attack(oracle, budget, key, surrogate, options=options, checkpoints=checkpoints, progress=progress)
    extra = dict(iterations=res.iterations, history=res.history, **({"note": res.stopped} if res.stopped else {}))
    return ExtractionResult(res.state, oracle.queries_used - used0, res.images, res.answers, res.snapshots, extra)
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
    ExtractionAttack("top1", _knockoff("random", top1=True), Top1Options, "pool", frozenset(),
                     "KnockoffNets-random trained on the top-1 of every answer (ModelGuard's Top-1, Tang et al. "
                     "2024)", label_only=True, adaptive=True),
    ExtractionAttack("smoothing", _smoothing, SmoothingOptions, "pool", frozenset(),
                     "each image queried k times under random crops and flips, the answers averaged (ModelGuard's "
                     "Smoothing, Tang et al. 2024)", adaptive=True),
    ExtractionAttack("recovery", _recovery, RecoveryOptions, "pool", frozenset({"pool_labels", "defence"}),
                     "D-DAE: answers recovered by a network fitted on shadows behind the known defence (Chen et al. "
                     "2023)", adaptive=True),
    ExtractionAttack("dfme", _datafree(dfme), DfmeOptions, "none", frozenset(),
                     "DFME: data-free, a generator trained against the student's disagreement with the victim, "
                     "zeroth-order gradients (Truong et al. 2021)"),
    ExtractionAttack("disguide", _datafree(disguide), DisguideOptions, "none", frozenset(),
                     "DisGUIDE: data-free and hard-label, a generator trained to make two students disagree, a "
                     "replay buffer (Rosenthal et al. 2023)", label_only=True),
)}


@dataclasses.dataclass(frozen=True)
class ExtractionOptions(PerAttack):
  """The options of every extraction attack, one typed record each (the registry's defaults unless given)."""
  knockoff_random: KnockoffRandomOptions = KnockoffRandomOptions()
  knockoff_adaptive: KnockoffAdaptiveOptions = KnockoffAdaptiveOptions()
  cloudleak: CloudLeakOptions = CloudLeakOptions()
  jbda: JbdaOptions = JbdaOptions()
  top1: Top1Options = Top1Options()
  smoothing: SmoothingOptions = SmoothingOptions()
  recovery: RecoveryOptions = RecoveryOptions()
  dfme: DfmeOptions = DfmeOptions()
  disguide: DisguideOptions = DisguideOptions()


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


def known_defence(defence, oracle) -> Tuple[str, Optional[float], str]:
  """What an attack that needs the defence takes it to be: (name, strength, note). `defence` = (registry name,
  strength) as the attacker knows it (Kerckhoffs), else what the oracle disclosed (`disclosed_defence`), else
  none; an undisclosed strength is the registry's default, guessed. The note says what was assumed ('' if
  nothing)."""
  if defence is None:
    defence = getattr(oracle, "disclosed_defence", None)
  if defence is None or defence[0] is None:
    return "none", None, "the defence was not disclosed: none assumed"
  name, strength = defence
  spec = defences.check(name, strength)
  if spec.strength is None:
    return name, None, ""
  if strength is None:
    return name, spec.default, f"{name}'s strength was not disclosed: the registry's default {spec.default:g} assumed"
  return name, float(strength), ""


def run(name: str, oracle: Oracle, pool_images, *, budget: int, surrogate: Model, key, config: train.TrainConfig,
        options=None, checkpoints: Sequence[int] = (), pool_labels=None, pool_coarse=None,
        defence: Optional[Tuple[str, Optional[float]]] = None, progress: Optional[Callable] = None
        ) -> ExtractionResult:
  """Runs extraction attack `name` against `oracle` with at most `budget` queries (see the module docstring).

  The one place an attack's inputs are checked (the attacks below it trust them). options: the attack's record
  (None: its defaults); checkpoints: KnockoffNets' budgets at which a surrogate is also trained; pool_labels and
  pool_coarse: knockoff_adaptive's label hierarchy (recovery's shadows' labels); defence: (registry name,
  strength) of the defence, for an attack that needs it (`known_defence`; what it assumed is in `extra["note"]`);
  progress: a data-free attack's report every so many queries, progress(queries used, student state, record).
  """
  attack = get(name)
  options = attack.options() if options is None else options
  if not isinstance(options, attack.options):
    raise UserError(f"{name} takes {attack.options.__name__} options, got {type(options).__name__}")
  options.validate()
  budget = check_budget(budget, len(pool_images)) if attack.pool == "pool" else integer(budget, "budget")
  if attack.pool == "none" and budget < options.cost():
    raise UserError(f"{name} needs at least {options.cost()} queries (one iteration), got a budget of {budget}")
  check_oracle_budget(oracle, budget, name)
  if surrogate.num_classes != oracle.num_classes:
    raise UserError(f"the surrogate has {surrogate.num_classes} classes, the oracle answers {oracle.num_classes}")
  if attack.pool != "none" and tuple(np.shape(pool_images)[1:]) != tuple(oracle.input_shape):
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
  note = ""
  if "defence" in attack.needs:
    d, s, note = known_defence(defence, oracle)
    extra["defence"] = (d, s)
  if attack.pool == "none":
    extra["progress"] = progress
  res = attack.fn(oracle, pool_images, budget=budget, surrogate=surrogate, key=key, config=config,
                  options=options, checkpoints=checkpoints, **extra)
  if "defence" in attack.needs:
    res.extra.update(defence=defences.label(*extra["defence"]), **({"note": note} if note else {}))
  return res
