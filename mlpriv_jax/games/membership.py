"""The membership game (LiRA's protocol, Carlini et al. 2022) in four steps, which mia.py and the arena compose:

  trained = setup(game, ds, workdir)                 # the world: the target and K shadows, trained at once
  kit = prepare(trained, audit, key)                 # the attacker, once: views, shadow logits, population points
  scores = attack(kit, oracle, key, audit.options)   # every attack against one oracle: {name: Scores}; only attacks
  rows = judge(scores, trained.target_keep, ...)     # results rows; only judges

A universe of N training examples; the target trains on a random half; K shadow models of the same architecture and
recipe train on balanced keep masks (each example in exactly half of them), all K + 1 at once with `train_k`
(keep.npy, row 0 the target). Score attacks (Shokri, metric, LiRA, RMIA) score what the oracle released for the
candidates (RMIA also for population points the attacker holds apart); query attacks (the label-only ones) query the
oracle themselves, on a random subset of the candidates, and calibrate on the attacker's own shadows. What the
attacker fits on its shadows alone is kept in the kit's memo, so a kit attacks one target behind many defences.
`aware_kit` is the attacker who knows the defence: the same kit, its shadows answering through the defence.
"""

import dataclasses
import hashlib
import os
import time
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax import data, defences, hosts, models, results, streams, train
from mlpriv_jax.attacks import membership as M
from mlpriv_jax.errors import UserError, integer
from mlpriv_jax.oracle import Oracle, Service, Victim, query_all
from mlpriv_jax.utils import atomic_write

DEFAULT_AUDIT_DELTA = 1e-5   # the audit's delta when the target was not trained with DP
POPULATIONS = ("test", "train")


@dataclasses.dataclass(frozen=True)
class MembershipGame:
  """The data, models and recipe of one game: what the attacker's shadows share with the target."""
  dataset: str
  arch: str
  num_examples: int                     # the universe N; the target trains on N / 2
  num_shadows: int                      # the attacker's shadow models K
  train: train.TrainConfig              # one recipe for the target and every shadow
  seed: int = 0
  chunk_size: Optional[int] = None      # models per compiled chunk of `train_k` (None: its default)
  dp: Optional[object] = None           # a `dp.DPTarget`: target and shadows trained with DP-SGD, one recipe

  def validate(self, attacks: Sequence[str] = ()):
    n = integer(self.num_examples, "num_examples", at_least=4)
    if n % 2:
      raise UserError(f"num_examples must be an even number >= 4 (half members, half not), got {n}")
    integer(self.num_shadows, "num_shadows", at_least=0)
    M.check_shadows(attacks, self.num_shadows)
    if self.chunk_size is not None:
      integer(self.chunk_size, "chunk_size")
    models.canonical_name(self.arch)
    self.train.validate()
    if self.dp is not None:
      from mlpriv_jax import dp
      self.dp.validate(n // 2)
      dp.check_dp_model(models.get_model(self.arch, 10))
    return self


@dataclasses.dataclass(frozen=True)
class MembershipAudit:
  """What the attacker does in a game, the same for mia.py and the arena."""
  attacks: Tuple[str, ...]                   # registry names, in the order they are run
  options: M.MembershipOptions = M.MembershipOptions()
  label_examples: Optional[int] = None       # candidates the query attacks score (a random subset; None: all)
  num_population: int = 1000                 # RMIA's population points, the first of `population`'s split
  population: str = "test"                   # ... of the test split, or of the training split after the universe
  mirror: Optional[bool] = None              # also query the mirror view (None: if the recipe flips)
  shifts: int = 0                            # also query shifts up to this many pixels
  fprs: Tuple[float, ...] = (0.001, 0.01)    # FPRs at which the TPR is read
  num_bootstrap: int = 200                   # bootstrap resamples of the intervals

  def validate(self, game: Optional[MembershipGame] = None):
    if not self.attacks:
      raise UserError(f"no membership attack given; known: {', '.join(M.REGISTRY)}")
    for a in self.attacks:
      M.get(a)
    if game is not None:
      M.check_shadows(self.attacks, game.num_shadows)
    self.options.validate()
    if self.label_examples is not None:
      integer(self.label_examples, "label_examples")
    integer(self.num_population, "num_population")
    if self.population not in POPULATIONS:
      raise UserError(f"population must be one of {', '.join(POPULATIONS)}, got {self.population!r}")
    integer(self.shifts, "shifts", at_least=0)
    integer(self.num_bootstrap, "num_bootstrap", at_least=0)
    M.check_fprs(self.fprs)
    return self


class TrainedGame(NamedTuple):
  """A game's world after `setup`: every model and who trained on what."""
  game: MembershipGame
  dataset: data.Dataset
  model: models.Model                  # the architecture of the target and every shadow
  variables: dict                      # stacked over K + 1: row 0 the target, rows 1.. the shadows
  target_keep: np.ndarray              # bool[N]: the target's members
  shadow_keep: np.ndarray              # bool[K, N]: shadow k trained on candidate n
  dp: Optional[dict]                   # the accounted guarantee of a DP game, or None

  @property
  def x(self) -> np.ndarray:
    """u8[N, H, W, C]: the universe, the candidates of every attack."""
    return self.dataset.x_train[:self.game.num_examples]

  @property
  def y(self) -> np.ndarray:
    return self.dataset.y_train[:self.game.num_examples]

  @property
  def target_variables(self) -> dict:
    return jax.tree.map(lambda v: v[0], self.variables)

  @property
  def shadow_variables(self) -> dict:
    return jax.tree.map(lambda v: v[1:], self.variables)


def membership_keep(key, num_examples: int, num_shadows: int):
  """(target_keep bool[N], shadow_keep bool[K, N]): the target on a random half, the shadows balanced."""
  target_keep = np.zeros(num_examples, bool)
  half = np.asarray(jax.random.permutation(streams.derive(key, streams.TARGET_HALF), num_examples))
  target_keep[half[: num_examples // 2]] = True
  if not num_shadows:   # a game without shadows: the arena's extraction and ownership families alone
    return target_keep, np.zeros((0, num_examples), bool)
  shadow_keep = np.asarray(train.balanced_keep(streams.derive(key, streams.KEEP), num_shadows, num_examples))
  return target_keep, shadow_keep


def load_data(game: MembershipGame, data_dir: Optional[str] = None) -> data.Dataset:
  ds = data.load_dataset(game.dataset, data_dir, seed=game.seed)
  if game.num_examples > len(ds.x_train):
    raise UserError(f"num_examples {game.num_examples} is more than {ds.name}'s {len(ds.x_train)} training examples")
  return ds


def dp_recipe(game: MembershipGame):
  """(DPConfig, record) of a DP game (None, None otherwise): the noise meeting game.dp for its K + 1 models.

  The accountant covers the largest sampling rate B / n_k of the models and the engine's step count."""
  if game.dp is None:
    return None, None
  from mlpriv_jax import dp
  target_keep, shadow_keep = membership_keep(jax.random.key(game.seed), game.num_examples, game.num_shadows)
  return dp.calibrate_training(game.dp, counts=np.r_[target_keep.sum(), shadow_keep.sum(1)],
                               batch_size=game.train.batch_size, num_epochs=game.train.num_epochs)


def setup(game: MembershipGame, ds: data.Dataset, workdir: str, *, recipe=None, log: Callable = print) -> TrainedGame:
  """Trains (or resumes, from `workdir`) the target and shadows on `ds`; writes keep.npy and the target's artifact
  (`<workdir>/target/`, its members recorded). recipe: `dp_recipe(game)` if already computed.

  Under a multi-process launch (`hosts`) each process trains its chunks of the K + 1 models; process 0 then reads
  them all and returns the game, the others return None (they write only their chunks' checkpoints)."""
  n = game.num_examples
  x = ds.x_train[:n]
  mean, std = data.channel_stats(x) if game.dp is None else (models.CIFAR_MEAN, models.CIFAR_STD)   # public under DP
  model = models.get_model(game.arch, ds.num_classes, mean=mean, std=std)
  key = jax.random.key(game.seed)
  target_keep, shadow_keep = membership_keep(key, n, game.num_shadows)
  keep = np.concatenate([target_keep[None], shadow_keep])  # row 0: the target
  if hosts.writer():
    atomic_write(os.path.join(workdir, "keep.npy"), lambda f: np.save(f, keep))
  dp_config, dp_record = recipe or dp_recipe(game)
  if dp_record is not None:
    from mlpriv_jax import dp
    log(dp.describe(dp_record))
  ckpt = os.path.join(workdir, "models")
  chunk = hosts.chunk_size(len(keep), game.chunk_size, ckpt)
  fit = lambda index, count: train.train_k(
      model, game.train, x, ds.y_train[:n], keep, streams.derive(key, streams.TRAIN), chunk_size=chunk,
      workdir=ckpt, meta=dict(dataset=ds.name), dp=dp_config, process_index=index, process_count=count,
      on_epoch_end=lambda r: log(f"  epoch {r['epoch']} models {r['models']} loss {r['train_loss']:.3f}"))
  res = hosts.fan_out(fit, "membership", log)   # each process its chunks, then process 0 alone reads them all
  if res is None:
    return None
  trained = TrainedGame(game, ds, model, train.variables_of(res.state), target_keep, shadow_keep, dp_record)
  target_dir = os.path.join(workdir, "target")
  if not os.path.exists(os.path.join(target_dir, models.artifact.FILE)):
    test_acc = float(train.evaluate(model, trained.target_variables, ds.x_test, ds.y_test))
    meta = dict(data=ds.describe(seed=game.seed, num_train_used=int(target_keep.sum())),
                recipe=dataclasses.asdict(game.train), test_accuracy=test_acc,
                role="membership target (row 0 of keep.npy)", dp=dp_record)
    meta["data"]["member_indices"] = np.flatnonzero(target_keep).tolist()
    models.save_model(target_dir, model, trained.target_variables, input_shape=ds.image_shape, meta=meta)
  return trained


def population_points(ds: data.Dataset, candidates, num: int, source: str = "test"):
  """(images, labels) of `num` population points: the first of the test split, or of the training split after
  the candidates' universe. Raises if any is byte-identical to a candidate (RMIA's population must be apart)."""
  if source not in POPULATIONS:
    raise UserError(f"--population must be one of {', '.join(POPULATIONS)}, got {source!r}")
  xs, ys = (ds.x_test, ds.y_test) if source == "test" else (ds.x_train[len(candidates):], ds.y_train[len(candidates):])
  if not 1 <= num <= len(xs):
    raise UserError(f"--num_population must lie in [1, {len(xs)}] for the {source} population of {ds.name}, got {num}")
  digest = lambda a: {hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in np.asarray(a)}
  shared = len(digest(candidates) & digest(xs[:num]))
  if shared:
    raise UserError(f"the population overlaps the candidates: {shared} of its {num} images are candidates too")
  return xs[:num], ys[:num]


def released_views(oracle: Oracle, views, batch_size: int = 500) -> np.ndarray:
  """The oracle's answers for every view, f32[N, A, C] (views: u8[A, N, H, W, C])."""
  return np.stack([query_all(oracle, v, batch_size) for v in views], axis=1)


def shadow_view_logits(model, shadow_variables, views, num_shadows: int) -> np.ndarray:
  """The shadows' logits for every view, f32[K, N, A, C]."""
  return np.asarray(jnp.stack([train.predict(model, shadow_variables, v, num_models=num_shadows) for v in views],
                              axis=2))


class AttackerKit(NamedTuple):
  """What the attacker prepares once, whatever defence the target answers behind: the views it will query, its
  shadows' logits on them, and the candidates its query attacks score."""
  names: tuple                       # the attacks
  model: models.Model                # the shared architecture
  shadow_variables: dict             # stacked over K
  x: np.ndarray                      # u8[N, ...] candidates
  y: np.ndarray                      # int[N]
  shadow_keep: np.ndarray            # bool[K, N]
  views: np.ndarray                  # u8[A, N, ...] the views the score attacks query
  shadow_logits: Optional[np.ndarray]   # f32[K, N, A, C] (None without score attacks)
  population: Optional[tuple]        # (views u8[A, P, ...], labels int[P], shadow logits f32[K, P, A, C]) or None
  label_index: np.ndarray            # int[M] candidates of the query attacks
  memo: dict                         # what the attacks fit on the shadows alone, filled by the first target


def prepare(trained: TrainedGame, audit: MembershipAudit, key) -> AttackerKit:
  """The defence-independent part of the attack, made once (the arena uses it against every defence setting).

  Views: the identity view, and the mirror (when `audit.mirror`, by default when the recipe flips: a mirror view
  of models that never saw flips only adds noise; measured on the smoke preset, LiRA online's TPR at 1% FPR 0.07
  with it, 0.25 without) and the shifts; queried only when an attack scores views."""
  score_names, _ = M.split(audit.attacks)
  mirror = trained.game.train.augment if audit.mirror is None else audit.mirror
  x, y, shadow_keep = trained.x, trained.y, trained.shadow_keep
  views = M.query_views(x, mirror=mirror, shifts=audit.shifts)  # u8[A, N, H, W, C]
  views = views if M.views_needed(score_names) else views[:1]
  k = shadow_keep.shape[0]
  shadow_vars = trained.shadow_variables
  logits = shadow_view_logits(trained.model, shadow_vars, views, k) if score_names else None
  population = None
  if score_names and M.needs_population(score_names):
    px, py = population_points(trained.dataset, x, audit.num_population, audit.population)
    pop_views = M.query_views(px, mirror=mirror, shifts=audit.shifts)[:len(views)]
    population = (pop_views, py, shadow_view_logits(trained.model, shadow_vars, pop_views, k))
  n = len(y)
  m = n if audit.label_examples is None else min(int(audit.label_examples), n)
  idx = np.sort(np.asarray(jax.random.permutation(streams.derive(key, streams.QUERY_CANDIDATES), n))[:m])
  return AttackerKit(tuple(audit.attacks), trained.model, shadow_vars, x, y, shadow_keep, views, logits, population,
                     idx, {})


class Scores(NamedTuple):
  """One attack's scores against one oracle (higher = member) and what they cost."""
  scores: np.ndarray            # f64[M]
  index: np.ndarray             # int[M]: the candidates scored (all N for a score attack)
  queries_per_example: float    # oracle queries per candidate scored
  seconds: Optional[float]      # the attack's own time (query attacks), None where not measured apart
  extras: dict                  # what the attack reports besides its scores (thresholds, phi, settings)


class Released(NamedTuple):
  """What the target released for the kit's views: the score attacks' only input from the oracle."""
  views: np.ndarray                  # f32[N, A, C], the candidates' views
  population: Optional[np.ndarray]   # f32[P, A, C], the population points' (None without)
  queries_per_example: float


def release(kit: AttackerKit, oracle: Oracle) -> Released:
  """The oracle's answers for every view of every candidate (and population point), each queried once."""
  before = oracle.queries_used
  views = released_views(oracle, kit.views)
  population = released_views(oracle, kit.population[0]) if kit.population is not None else None
  return Released(views, population, (oracle.queries_used - before) / len(kit.y))


def score_released(kit: AttackerKit, released: Released, key, options: M.MembershipOptions) -> Dict[str, Scores]:
  """The kit's score attacks on what the target released (`release`)."""
  names, _ = M.split(kit.names)
  n = len(kit.y)
  inputs = M.ScoreInputs(released.views, kit.y, kit.shadow_logits, kit.shadow_keep, memo=kit.memo)
  if kit.population is not None:
    _, pop_labels, pop_logits = kit.population
    inputs = inputs._replace(population_probs=released.population, population_labels=pop_labels,
                             population_shadow_logits=pop_logits)
  out = {}
  for name in names:
    s, ex = M.score(name, inputs, streams.derive(key, streams.SCORE_ATTACKS), options.of(name))
    out[name] = Scores(s, np.arange(n), released.queries_per_example, None, ex)
  return out


def attack_by_score(kit: AttackerKit, oracle: Oracle, key, options: M.MembershipOptions) -> Dict[str, Scores]:
  """The kit's score attacks: the oracle is queried once for every view of every candidate (and population point),
  then each attack scores what it released."""
  if not M.split(kit.names)[0]:
    return {}
  return score_released(kit, release(kit, oracle), key, options)


AWARE = "_aware"   # the suffix of a defence-aware attack's name in results


def aware_kit(kit: AttackerKit, name: str, strength: Optional[float], key, *, guard_steps: int = 500) -> AttackerKit:
  """The kit of the attacker who knows the defence (Song & Mittal, USENIX Security 2021, Sec. 4): every shadow
  answers through the attacker's copy of defence `name` at `strength` (`defences.attacker_copy`: MemGuard's
  classifier trained on shadow 0's members against its non-members), a `Service` per shadow as the target's,
  before any score attack fits on them: Shokri's attack models, the metric thresholds, LiRA's Gaussians and RMIA's
  ratios all see released outputs. The shadows' 'logits' are the log of what they release (a softmax gives it
  back); its memo is its own."""
  k = kit.shadow_keep.shape[0]
  shadow = lambda i: jax.tree.map(lambda v: v[i], kit.shadow_variables)
  x = kit.x
  copy = defences.attacker_copy(name, strength, kit.model, shadow(0), streams.derive(key, streams.AWARE_DEFENCE),
                                input_shape=tuple(x.shape[1:]), members=x[kit.shadow_keep[0]],
                                nonmembers=x[~kit.shadow_keep[0]], guard_steps=guard_steps)
  service = Service.from_model(kit.model, shadow(0), input_shape=tuple(x.shape[1:]), defence=copy)

  def released_log(views):   # u8[A, N, ...] -> f32[K, N, A, C]
    return np.stack([np.log(np.maximum(released_views(Victim.of(
        service.with_variables(shadow(i)), key=streams.derive(key, streams.AWARE_ANSWERS, i)), views),
        np.finfo(np.float32).tiny)) for i in range(k)])

  logits = released_log(kit.views) if kit.shadow_logits is not None else None
  population = None
  if kit.population is not None:
    population = (kit.population[0], kit.population[1], released_log(kit.population[0]))
  names, _ = M.split(kit.names)
  return kit._replace(names=tuple(names), shadow_logits=logits, population=population, memo={})


def attack_by_query(kit: AttackerKit, oracle: Oracle, key, options: M.MembershipOptions) -> Dict[str, Scores]:
  """The kit's query attacks on its query candidates: they query `oracle` and calibrate on the shadows."""
  _, names = M.split(kit.names)
  if not names:
    return {}
  idx = kit.label_index
  x, y, keep = kit.x[idx], kit.y[idx], kit.shadow_keep[:, idx]
  shadow_service = Service.from_model(kit.model, jax.tree.map(lambda v: v[0], kit.shadow_variables),
                                      input_shape=tuple(x.shape[1:]))
  shadow_oracle = lambda k: Victim.of(shadow_service.with_variables(jax.tree.map(lambda v: v[k],
                                                                                 kit.shadow_variables)))
  inputs = M.QueryInputs(x, y, keep, shadow_oracle, kit.memo)
  out = {}
  for name in names:
    before, t0 = oracle.queries_used, time.time()
    s, ex = M.query_attack(name, oracle, inputs, streams.derive(key, streams.QUERY_ATTACKS), options.of(name))
    out[name] = Scores(s, idx, (oracle.queries_used - before) / len(y), time.time() - t0, ex)
  return out


def attack(kit: AttackerKit, oracle: Oracle, key, options: M.MembershipOptions) -> Dict[str, Scores]:
  """Every attack of the kit against `oracle` (the score attacks' queries first), in the kit's order."""
  out = {**attack_by_score(kit, oracle, key, options), **attack_by_query(kit, oracle, key, options)}
  return {name: out[name] for name in kit.names}


def reports(scores: Dict[str, Scores], target_keep, *, fprs=(0.001, 0.01), num_bootstrap: int = 200,
            audit_delta: float = DEFAULT_AUDIT_DELTA, key=None) -> Dict[str, dict]:
  """{name: membership_report} of each attack's scores against the target's membership bool[N], with the audit
  (the epsilon its scores prove; None without the 'dp' extra), how many it scored and its queries per example.
  key: the bootstrap's stream (the evaluator's: `streams.BOOTSTRAP`), the same for every attack."""
  key = jax.random.key(0) if key is None else key
  out = {}
  for name, sc in scores.items():
    member = np.asarray(target_keep)[sc.index]
    r = M.membership_report(sc.scores, member, fprs=fprs, num_bootstrap=num_bootstrap, seed=key)
    r.update(queries_per_example=sc.queries_per_example, num_scored=int(len(sc.scores)),
             audit=_audit(sc.scores, member, audit_delta))
    if "threshold" in sc.extras:   # the threshold calibrated on a shadow model, applied to the target
      pred = sc.scores > sc.extras["threshold"]
      r["calibrated_accuracy"] = float(0.5 * (pred[member].mean() + (~pred[~member]).mean()))
    out[name] = r
  return out


def judge(scores: Dict[str, Scores], target_keep, *, fprs=(0.001, 0.01), num_bootstrap: int = 200,
          audit_delta: float = DEFAULT_AUDIT_DELTA, key=None, seed: Optional[int] = None, **common) -> list:
  """The results rows of every attack's scores against the target's membership bool[N] (`reports`, flattened by
  `results.membership_rows`); key: the bootstrap's stream; seed: the run's, recorded in the rows; `common`: the
  fields every row shares (defence, strength, data_source, ...)."""
  out = []
  for name, r in reports(scores, target_keep, fprs=fprs, num_bootstrap=num_bootstrap, audit_delta=audit_delta,
                         key=key).items():
    out += results.membership_rows(r, family="membership", attack=name, seed=seed,
                                   queries=r["queries_per_example"] * r["num_scored"], **common)
  return out


def settings_of(scores: Dict[str, Scores]) -> Dict[str, dict]:
  """{name: the scalar settings an attack reports} (RMIA's preset and gamma, LiRA's variance, ...)."""
  return {name: {k: v for k, v in sc.extras.items() if isinstance(v, (bool, int, float, str, dict))}
          for name, sc in scores.items()}


def log_line(name: str, metrics: dict, fprs) -> str:
  """One log line of an attack's judged metrics."""
  eps = metrics.get("epsilon_lower_bound")
  return (f"  {name:18s} AUC {metrics['auc']:.4f}  balanced acc {metrics['balanced_accuracy']:.4f}  "
          + "  ".join(f"TPR@{f:g} {metrics[f'tpr_at_{f:g}']:.4f}" for f in fprs)
          + f"  ({metrics['queries_per_example']:.1f} queries per example)"
          + (f"  audited eps >= {eps:.3f}" if eps is not None else ""))


def _audit(scores, member, delta: float) -> Optional[dict]:
  """The attack's privacy audit of the target (`dp.audit_report`), None without the 'dp' extra."""
  try:
    import jax_privacy  # noqa: F401
  except ImportError:
    return None
  from mlpriv_jax import dp
  return dp.audit_report(scores, member, delta=delta)
