"""Membership inference against a target behind an oracle (what experiments/mia.py runs).

Protocol (LiRA's, Carlini et al. 2022): a universe of N training examples; the target trains on a random half;
K shadow models of the same architecture and recipe train on balanced keep masks (each example in exactly half
of them), all K + 1 at once with `train_k` (keep.npy, row 0 the target). The target answers through a `Victim`
with the chosen defence; every registered attack scores all N examples and is judged against the target's
membership. MemGuard's defence classifier is trained by the defender on the target's members against held-out
test images (disjoint from the evaluated non-members).

Score attacks (Shokri, metric, LiRA, RMIA) score what the oracle released for the candidates (RMIA also for
population points: images the attacker holds apart from the candidates, from the test split or the training split
beyond the universe); query attacks (the label-only ones) query the oracle themselves, on all candidates or a
random subset of them, and calibrate on the attacker's own shadow models.

The pieces (`membership_keep`, `train_models`, `prepare_attacker`, `attack_target`) are shared with the arena,
which trains the shadows and prepares the attacker once for every defence it puts in front of the target.
"""

import dataclasses
import hashlib
import os
import time
from typing import Callable, Dict, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlpriv_jax import data, defences, models, plots, results, train
from mlpriv_jax.attacks import membership as M
from mlpriv_jax.errors import UserError
from mlpriv_jax.lab import workdir as wd
from mlpriv_jax.lab.training import STREAM_KEEP, STREAM_TRAIN, model_meta
from mlpriv_jax.oracle import Oracle, Service, Victim, check_budget, query_all
from mlpriv_jax.utils import atomic_write, write_json

DEFAULT_AUDIT_DELTA = 1e-5   # the audit's delta when the target was not trained with DP
STREAM_TARGET_HALF, STREAM_MEMGUARD, STREAM_SHOKRI, STREAM_VICTIM, STREAM_LABEL_ONLY, STREAM_EVAL = 2, 3, 4, 5, 6, 7
POPULATIONS = ("test", "train")


def membership_keep(key, num_examples: int, num_shadows: int):
  """(target_keep bool[N], shadow_keep bool[K, N]): the target on a random half, the shadows balanced."""
  target_keep = np.zeros(num_examples, bool)
  half = np.asarray(jax.random.permutation(jax.random.fold_in(key, STREAM_TARGET_HALF), num_examples))
  target_keep[half[: num_examples // 2]] = True
  shadow_keep = np.asarray(train.balanced_keep(jax.random.fold_in(key, STREAM_KEEP), num_shadows, num_examples))
  return target_keep, shadow_keep


def train_models(model, config, x, y, keep, key, *, workdir: Optional[str], chunk_size: Optional[int] = None,
                 meta: Optional[dict] = None, dp_config=None, log: Callable = print):
  """The K + 1 models of the game, trained at once (resumes from `workdir`); variables stacked on axis 0.

  dp_config: a `dp.DPConfig`: every model trained with DP-SGD."""
  res = train.train_k(model, config, x, y, keep, jax.random.fold_in(key, STREAM_TRAIN), chunk_size=chunk_size,
                      workdir=workdir, meta=meta, dp=dp_config,
                      on_epoch_end=lambda r: log(f"  epoch {r['epoch']} models {r['models']} loss {r['train_loss']:.3f}"))
  return train.variables_of(res.state)


def released_views(oracle: Oracle, views, batch_size: int = 500) -> np.ndarray:
  """The oracle's answers for every view, f32[N, A, C] (views: u8[A, N, H, W, C])."""
  return np.stack([query_all(oracle, v, batch_size) for v in views], axis=1)


def shadow_view_logits(model, shadow_variables, views, num_shadows: int) -> np.ndarray:
  """The shadows' logits for every view, f32[K, N, A, C]."""
  return np.asarray(jnp.stack([train.predict(model, shadow_variables, v, num_models=num_shadows) for v in views],
                              axis=2))


def score_attacks(names: Sequence[str], inputs: M.ScoreInputs, key, *, options: Optional[dict] = None,
                  log: Callable = print) -> Dict[str, tuple]:
  """{name: (scores f64[N], extras)} for the score attacks `names` (options[name]: that attack's keywords)."""
  out = {}
  for name in names:
    out[name] = M.score(name, inputs, jax.random.fold_in(key, STREAM_SHOKRI), **(options or {}).get(name, {}))
  return out


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


def query_attacks(names: Sequence[str], oracle: Oracle, model, shadow_variables, x, y, shadow_keep, key, *,
                  options: Optional[dict] = None, memo: Optional[dict] = None) -> Dict[str, tuple]:
  """{name: (scores f64[M], extras, queries per example, seconds)} of the query attacks `names` on candidates
  x u8[M, ...], y int[M]; they query `oracle` and calibrate on the shadows (stacked variables, keep bool[K, M])."""
  shadow_service = Service.from_model(model, jax.tree.map(lambda v: v[0], shadow_variables),
                                      input_shape=tuple(x.shape[1:]))
  shadow_oracle = lambda k: Victim.of(shadow_service.with_variables(jax.tree.map(lambda v: v[k], shadow_variables)))
  inputs = M.QueryInputs(x, y, shadow_keep, shadow_oracle, memo)
  out = {}
  for name in names:
    before, t0 = oracle.queries_used, time.time()
    scores, extras = M.query_attack(name, oracle, inputs, jax.random.fold_in(key, STREAM_LABEL_ONLY),
                                    **(options or {}).get(name, {}))
    out[name] = (scores, extras, (oracle.queries_used - before) / len(y), time.time() - t0)
  return out


class AttackerKit(NamedTuple):
  """What the attacker prepares once, whatever defence the target answers behind: the views it will query, its
  shadows' logits on them, and the candidates its query attacks score."""
  names: tuple                       # the attacks
  model: object                      # the shared architecture
  shadow_variables: dict             # stacked over K
  x: np.ndarray                      # u8[N, ...] candidates
  y: np.ndarray                      # int[N]
  shadow_keep: np.ndarray            # bool[K, N]
  views: np.ndarray                  # u8[A, N, ...] the views the score attacks query
  shadow_logits: Optional[np.ndarray]   # f32[K, N, A, C] (None without score attacks)
  population: Optional[tuple]        # (views u8[A, P, ...], labels int[P], shadow logits f32[K, P, A, C]) or None
  label_index: np.ndarray            # int[M] candidates of the query attacks
  memo: dict                         # what the attacks fit on the shadows alone, filled by the first target


def prepare_attacker(model, shadow_variables, x, y, shadow_keep, attacks: Sequence[str], *, pop=None,
                     mirror: bool = False, shifts: int = 0, label_examples: Optional[int] = None,
                     key=None) -> AttackerKit:
  """The defence-independent part of the attack (the arena makes it once for every defence setting)."""
  score_names = [a for a in attacks if M.get(a).kind == "score"]
  views = M.query_views(x, mirror=mirror, shifts=shifts)  # u8[A, N, H, W, C]
  views = views if M.views_needed(score_names) else views[:1]
  k = shadow_keep.shape[0]
  logits = shadow_view_logits(model, shadow_variables, views, k) if score_names else None
  population = None
  if score_names and pop is not None and any(M.get(a).population for a in score_names):
    pop_views = M.query_views(pop[0], mirror=mirror, shifts=shifts)[:len(views)]
    population = (pop_views, pop[1], shadow_view_logits(model, shadow_variables, pop_views, k))
  n = len(y)
  m = n if label_examples is None else min(int(label_examples), n)
  idx = np.sort(np.asarray(jax.random.permutation(jax.random.fold_in(key, STREAM_LABEL_ONLY), n))[:m])
  return AttackerKit(tuple(attacks), model, shadow_variables, x, y, shadow_keep, views, logits, population, idx, {})


def kit_query_attacks(kit: AttackerKit, oracle: Oracle, key, *, options: Optional[dict] = None) -> Dict[str, tuple]:
  """`query_attacks` for the kit's query attacks on its query candidates (`label_index`)."""
  idx = kit.label_index
  return query_attacks([a for a in kit.names if M.get(a).kind == "query"], oracle, kit.model, kit.shadow_variables,
                       kit.x[idx], kit.y[idx], kit.shadow_keep[:, idx], key, options=options, memo=kit.memo)


def attack_target(oracle: Oracle, kit: AttackerKit, target_keep, key, *, options: Optional[dict] = None,
                  fprs=(0.001, 0.01), num_bootstrap: int = 200, audit_delta: float = DEFAULT_AUDIT_DELTA,
                  seed: int = 0, query_results: Optional[dict] = None, log: Callable = print):
  """Every attack of `kit` against `oracle`, judged against target_keep bool[N].

  query_results: the query attacks' results against this oracle's setting, as `kit_query_attacks` returns them,
  when they were computed apart (the arena runs them once for every setting that answers them alike).

  Returns (reports {name: membership_report + queries_per_example, num_scored, settings, audit}, scores {name:
  f64[M]}, subsets {name: int[M] candidates scored}, extras (phi arrays), query seconds, attack seconds)."""
  score_names = [a for a in kit.names if M.get(a).kind == "score"]
  query_names = [a for a in kit.names if M.get(a).kind == "query"]
  n = len(kit.y)
  scored, subsets, queries, seconds = {}, {}, {}, {}
  t0 = time.time()
  if score_names:
    before = oracle.queries_used
    inputs = M.ScoreInputs(released_views(oracle, kit.views), kit.y, kit.shadow_logits, kit.shadow_keep,
                           memo=kit.memo)
    if kit.population is not None:
      pop_views, pop_labels, pop_logits = kit.population
      inputs = inputs._replace(population_probs=released_views(oracle, pop_views), population_labels=pop_labels,
                               population_shadow_logits=pop_logits)
    per_score = (oracle.queries_used - before) / n
  t_query = time.time() - t0
  t0 = time.time()
  if score_names:
    scored.update(score_attacks(score_names, inputs, key, options=options, log=log))
    queries.update({name: per_score for name in score_names})
    subsets.update({name: np.arange(n) for name in score_names})
  if query_names:
    if query_results is None:
      query_results = kit_query_attacks(kit, oracle, key, options=options)
    for name in query_names:
      sc, ex, q, sec = query_results[name]
      scored[name], subsets[name], queries[name], seconds[name] = (sc, ex), kit.label_index, q, sec
  out, extra = {}, {}
  for name in kit.names:
    s, ex = scored[name]
    member = target_keep[subsets[name]]
    extra.update({k: v for k, v in ex.items() if k.startswith("phi_")})
    out[name] = M.membership_report(s, member, fprs=fprs, num_bootstrap=num_bootstrap, seed=seed)
    out[name].update(queries_per_example=queries[name], num_scored=int(len(s)),
                     settings={k: v for k, v in ex.items() if isinstance(v, (bool, int, float, str, dict))})
    if name in seconds:
      out[name]["seconds"] = seconds[name]
    if "threshold" in ex:   # the threshold calibrated on a shadow model, applied to the target
      pred = s > ex["threshold"]
      out[name]["calibrated_accuracy"] = float(0.5 * (pred[member].mean() + (~pred[~member]).mean()))
    out[name]["audit"] = _audit(s, member, audit_delta)
    log(f"  {name:18s} AUC {out[name]['auc']:.4f}  balanced acc {out[name]['balanced_accuracy']:.4f}  " +
        "  ".join(f"TPR@{f} {v:.4f}" for f, v in out[name]["tpr_at_fpr"].items()) +
        f"  ({queries[name]:.1f} queries per example)" +
        (f"  audited eps >= {out[name]['audit']['epsilon_lower_bound']:.3f}" if out[name]["audit"] else ""))
  return out, {name: scored[name][0] for name in kit.names}, subsets, extra, t_query, time.time() - t0


@dataclasses.dataclass(frozen=True)
class MembershipGame:
  """The data, models and recipe of one run: what the attacker's shadows share with the target."""
  dataset: str
  arch: str
  num_examples: int
  num_shadows: int
  config: train.TrainConfig
  seed: int = 0
  chunk_size: Optional[int] = None
  dp: Optional[object] = None   # a `dp.DPTarget`: target and shadows trained with DP-SGD, one recipe


def check_game(game: MembershipGame, attacks: Sequence[str]) -> None:
  M.check_shadows(attacks, game.num_shadows)
  n = game.num_examples
  if n < 4 or n % 2:
    raise UserError(f"--num_examples must be an even number >= 4 (half members, half not), got {n}")
  models.canonical_name(game.arch)
  game.config.validate()
  if game.dp is not None:
    from mlpriv_jax import dp
    game.dp.validate(n // 2)
    dp.check_dp_model(models.get_model(game.arch, 10))


def load_game_data(game: MembershipGame, data_dir: Optional[str] = None) -> data.Dataset:
  ds = data.load_dataset(game.dataset, data_dir, seed=game.seed)
  if game.num_examples > len(ds.x_train):
    raise UserError(f"--num_examples {game.num_examples} is more than {ds.name}'s {len(ds.x_train)} training "
                    f"examples")
  return ds


def dp_recipe(game: MembershipGame):
  """(DPConfig, record) of a DP game (None, None otherwise): the noise meeting game.dp for its K + 1 models.

  The accountant covers the largest sampling rate B / n_k of the models and the engine's step count."""
  if game.dp is None:
    return None, None
  from mlpriv_jax import dp
  target_keep, shadow_keep = membership_keep(jax.random.key(game.seed), game.num_examples, game.num_shadows)
  return dp.calibrate_training(game.dp, counts=np.r_[target_keep.sum(), shadow_keep.sum(1)],
                               batch_size=game.config.batch_size, num_epochs=game.config.num_epochs)


def setup(game: MembershipGame, ds: data.Dataset, workdir: str, *, recipe=None, log: Callable = print):
  """Trains (or resumes) the target and shadows on `ds`; writes keep.npy and the target artifact.

  recipe: `dp_recipe(game)` if already computed. Returns dict(ds, x, y, model, variables (K + 1 stacked),
  target_keep, shadow_keep, target_variables, dp (the accounted guarantee of a DP game, or None)).
  """
  n = game.num_examples
  x, y = ds.x_train[:n], ds.y_train[:n]
  mean, std = data.channel_stats(x) if game.dp is None else (models.CIFAR_MEAN, models.CIFAR_STD)   # public under DP
  model = models.get_model(game.arch, ds.num_classes, mean=mean, std=std)
  key = jax.random.key(game.seed)
  target_keep, shadow_keep = membership_keep(key, n, game.num_shadows)
  keep = np.concatenate([target_keep[None], shadow_keep])  # row 0: the target
  wd.save_npy(os.path.join(workdir, "keep.npy"), keep)
  dp_config, dp_record = recipe or dp_recipe(game)
  if dp_record is not None:
    from mlpriv_jax import dp
    log(dp.describe(dp_record))
  variables = train_models(model, game.config, x, y, keep, key, workdir=os.path.join(workdir, "models"),
                           chunk_size=game.chunk_size, meta=dict(dataset=ds.name), dp_config=dp_config, log=log)
  target_vars = jax.tree.map(lambda v: v[0], variables)
  target_dir = os.path.join(workdir, "target")
  if not os.path.exists(os.path.join(target_dir, models.artifact.FILE)):
    test_acc = float(train.evaluate(model, target_vars, ds.x_test, ds.y_test))
    meta = model_meta(ds, game.config, seed=game.seed, num_train=int(target_keep.sum()), test_accuracy=test_acc,
                      role="membership target (row 0 of keep.npy)", dp=dp_record)
    meta["data"]["member_indices"] = np.flatnonzero(target_keep).tolist()
    models.save_model(target_dir, model, target_vars, input_shape=ds.image_shape, meta=meta)
  return dict(ds=ds, x=x, y=y, model=model, variables=variables, target_vars=target_vars, target_keep=target_keep,
              shadow_keep=shadow_keep, dp=dp_record)


def run(*, game: MembershipGame, workdir: str, attacks: Sequence[str] = ("all",), defence: str = "none",
        strength: Optional[float] = None, data_dir: Optional[str] = None, num_defence_examples: int = 500,
        fix_variance: Optional[bool] = None, mirror: Optional[bool] = None, shifts: int = 0,
        shokri_features: str = "probs", fprs: Sequence[float] = (0.001, 0.01), num_test: int = 1000,
        num_bootstrap: int = 200, num_population: int = 1000, population: str = "test",
        label_examples: Optional[int] = None, budget: Optional[int] = None,
        attack_options: Optional[Dict[str, dict]] = None, run_config: Optional[dict] = None,
        victim_url: Optional[str] = None, api_key: Optional[str] = None, model_name: str = "victim",
        log: Callable = print) -> dict:
  """The whole membership experiment into `workdir`; returns results.json's content.

  With `victim_url` the attacker queries the target served there (`experiments/serve.py --victim=<this
  workdir>`, behind the server's own defence) instead of the in-process one; the game's models (the target's
  membership, the shadows) come from the workdir as always, and the utility figures are the undefended target's.

  attack_options: {attack: keywords} for the registry's attacks (e.g. rmia_offline=dict(offline_a="tune"),
  label_boundary=dict(max_queries=300)). label_examples: how many candidates (a random subset) the query
  attacks score (None: all). budget: the attacker's query budget at the victim (None: unlimited).
  """
  t_start = time.time()
  wd.require(workdir)
  attacks = M.parse(attacks)
  fprs = M.check_fprs(fprs)
  check_game(game, attacks)
  if shifts < 0 or num_bootstrap < 0:
    raise UserError(f"--shifts and --num_bootstrap must be >= 0, got {shifts}, {num_bootstrap}")
  if budget is not None and (int(budget) != budget or budget < 0):
    raise UserError(f"--budget must be an integer >= 0, got {budget}")
  if label_examples is not None and not 1 <= label_examples:
    raise UserError(f"--label_examples must be >= 1, got {label_examples}")
  for name, o in (attack_options or {}).items():
    if M.get(name).population:
      M.rmia_settings(**o)
  score_names = [a for a in attacks if M.get(a).kind == "score"]
  query_names = [a for a in attacks if M.get(a).kind == "query"]
  if victim_url and not api_key:
    raise UserError("--victim_url needs an API key (--api_key, or $MLPRIV_API_KEY)")
  if victim_url and defence != "none":
    raise UserError(f"--defence={defence} defends the in-process target; a served target answers with its own "
                    f"defence (experiments/serve.py --defence)")
  dspec = defences.check(defence, strength, threat=defences.MEMBERSHIP)
  strength = strength if dspec.strength is not None else None
  if game.dp is not None and "members" in dspec.needs:
    raise UserError(f"{defence} trains on the target's members outside DP-SGD, so the DP guarantee would not cover "
                    f"what it releases; run it without --dp_epsilon")
  n = game.num_examples
  ds = load_game_data(game, data_dir)
  pop = None
  if any(M.get(a).population for a in score_names):
    pop = population_points(ds, ds.x_train[:n], num_population, population)
  if "members" in dspec.needs and not 1 <= num_defence_examples <= min(n // 2, len(ds.x_test)):
    raise UserError(f"--num_defence_examples must lie in [1, {min(n // 2, len(ds.x_test))}], got "
                    f"{num_defence_examples}")
  recipe = dp_recipe(game)   # an unreachable epsilon fails here, before anything is written
  wd.claim(workdir, dict(run_config or {}, dataset=game.dataset, arch=models.canonical_name(game.arch),
                         num_examples=n, num_shadows=game.num_shadows, config=repr(game.config), seed=game.seed,
                         dp=repr(game.dp)),
           keys=("dataset", "arch", "num_examples", "num_shadows", "config", "seed", "dp"))
  log(f"mia: {game.arch} on {game.dataset}, N = {n} (target on {n // 2}), {game.num_shadows} shadows, "
      f"{game.config.num_epochs} epochs; attacks {', '.join(attacks)}; defence {defence}"
      + (f"; DP-SGD to epsilon {game.dp.epsilon:g}" if game.dp is not None else ""))
  g = setup(game, ds, workdir, recipe=recipe, log=log)
  t_train = time.time() - t_start
  x, y, model = g["x"], g["y"], g["model"]
  target_keep, shadow_keep, target_vars = g["target_keep"], g["shadow_keep"], g["target_vars"]

  # The target's own (undefended) view, for the defender and for the accuracy it gives up.
  key = jax.random.key(game.seed)
  n_test = min(len(ds.x_test), num_test)
  xt, yt = ds.x_test[:n_test], ds.y_test[:n_test]
  test_logits = train.predict(model, target_vars, xt)
  guard = None
  if "members" in dspec.needs:
    # The defender's non-members are test images: disjoint from the evaluated non-members (training split).
    guard = defences.make_memguard_classifier(model, target_vars, x[target_keep][:num_defence_examples],
                                              ds.x_test[-num_defence_examples:], jax.random.fold_in(key, STREAM_MEMGUARD))
  d = defences.build(defence, strength, memguard_params=guard)
  service = Service.from_model(model, target_vars, input_shape=ds.image_shape, defence=d)
  victim = Victim.of(service, budget=budget, key=jax.random.fold_in(key, STREAM_VICTIM))   # the attacker's account
  if victim_url:
    from mlpriv_jax.serve import RemoteVictim
    victim = RemoteVictim(victim_url, api_key, model_name)
    if (victim.input_shape, victim.num_classes) != (tuple(ds.image_shape), model.num_classes):
      raise UserError(f"{victim_url} serves {victim.num_classes} classes of {victim.input_shape}; the target "
                      f"has {model.num_classes} of {tuple(ds.image_shape)}")
  evaluator = Victim.of(service, key=jax.random.fold_in(key, STREAM_EVAL))   # ours: utility, not the attacker's budget

  # Query the views the models trained on: a mirror view of models that never saw flips only adds noise
  # (measured on the smoke preset: LiRA online TPR at 1% FPR 0.07 with it, 0.25 without).
  mirror = game.config.augment if mirror is None else mirror
  shadow_vars = jax.tree.map(lambda v: v[1:], g["variables"])
  kit = prepare_attacker(model, shadow_vars, x, y, shadow_keep, attacks, pop=pop, mirror=mirror, shifts=shifts,
                         label_examples=label_examples, key=key)
  if score_names:
    check_budget(victim, len(kit.views) * (n + (len(pop[0]) if pop else 0)), "the score attacks' queries")
  released = released_views(evaluator, M.query_views(x, mirror=False)[:1])[:, 0]   # f32[N, C], our measurement
  released_test = query_all(evaluator, xt, 500)
  options = dict(shokri=dict(features=shokri_features), lira_online=dict(fix_variance=fix_variance),
                 lira_offline=dict(fix_variance=fix_variance))
  for name, o in (attack_options or {}).items():
    options[name] = dict(options.get(name, {}), **o)
  audit_delta = game.dp.delta if game.dp is not None else DEFAULT_AUDIT_DELTA
  out, scores, subsets, extra, t_query, t_attacks = attack_target(
      victim, kit, target_keep, key, options=options, fprs=fprs, num_bootstrap=num_bootstrap,
      audit_delta=audit_delta, seed=game.seed, log=log)

  train_acc = float((released[target_keep].argmax(-1) == y[target_keep]).mean())
  # What the defence changed on the evaluated queries (identity view): L1 distortion, labels flipped.
  clean = np.asarray(jax.nn.softmax(train.predict(model, target_vars, x)))
  l1 = np.abs(released - clean).sum(-1)
  g_auc = {}
  if guard is not None:  # MemGuard's own view: its classifier g before and after the noise
    for what, p in (("clean", clean), ("released", released)):
      g_auc[what] = M.membership_report(np.asarray(defences.defence_classifier_score(guard, p)), target_keep,
                                        num_bootstrap=0)["auc"]
    log(f"  MemGuard's classifier g: AUC {g_auc['clean']:.4f} on clean outputs, {g_auc['released']:.4f} on "
        f"released ones")
  fix = next((o["settings"]["fix_variance"] for o in out.values() if "fix_variance" in o["settings"]), fix_variance)
  res = dict(
      member_is_positive=True, dataset=ds.name, arch=model.name, num_examples=n, num_members=int(target_keep.sum()),
      num_shadows=game.num_shadows, num_views=int(len(kit.views)), fix_variance=fix,
      num_population=int(len(pop[0])) if pop is not None else 0, population=population if pop is not None else None,
      queries_used=victim.queries_used, budget=budget, dp=g["dp"],
      defence=d.name, epsilon=strength, target_train_accuracy=train_acc, victim_url=victim_url,
      defence_mean_l1=float(l1.mean()), defence_changed_fraction=float((l1 > 1e-6).mean()),
      defence_label_flips=int((released.argmax(-1) != clean.argmax(-1)).sum()),
      memguard_classifier_auc=g_auc or None,
      target_test_accuracy=float((released_test.argmax(-1) == yt).mean()),
      target_test_accuracy_undefended=float((np.asarray(test_logits).argmax(-1) == yt).mean()),
      shadow_train_accuracy=_shadow_train_accuracy(model, shadow_vars, x, y, shadow_keep),
      attacks=out, seconds=dict(train=t_train, queries=t_query, attacks=t_attacks, total=time.time() - t_start),
      config=dict(run_config or {}, **{k: getattr(game.config, k) for k in ("num_epochs", "batch_size",
                                                                            "learning_rate", "weight_decay",
                                                                            "augment")}))
  write_json(os.path.join(workdir, "results.json"), res)
  results.write_jsonl(os.path.join(workdir, "results.jsonl"), report_rows(out, defence=defence, strength=strength,
                                                                          seed=game.seed, data_source=ds.source))
  subset_index = {f"index_{k}": subsets[k] for k in query_names}   # the candidates a query attack scored
  atomic_write(os.path.join(workdir, "scores.npz"),
               lambda f: np.savez(f, is_member=target_keep, labels=y, shadow_keep=shadow_keep, **extra, **subset_index,
                                  **{f"score_{k}": v for k, v in scores.items()}))
  curves = {}
  for name in attacks:
    fpr, tpr = M.roc_curve(scores[name], target_keep[subsets[name]])
    curves[name] = (fpr, tpr, out[name]["auc"])
  plots.roc_loglog(os.path.join(workdir, "roc.png"), curves,
                   f"{model.name} on {ds.name}, {game.num_shadows} shadows, defence {d.name} (member = positive)")
  log(f"target train acc {train_acc:.4f}, test acc {res['target_test_accuracy']:.4f} "
      f"(undefended {res['target_test_accuracy_undefended']:.4f}); wall {time.time() - t_start:.0f} s; "
      f"results in {workdir}")
  return res


def _audit(scores, member, delta: float) -> Optional[dict]:
  """The attack's privacy audit of the target (`dp.audit_report`), None without the 'dp' extra."""
  try:
    import jax_privacy  # noqa: F401
  except ImportError:
    return None
  from mlpriv_jax import dp
  return dp.audit_report(scores, member, delta=delta)


def _shadow_train_accuracy(model, shadow_vars, x, y, shadow_keep) -> float:
  logits = np.asarray(train.predict(model, shadow_vars, x, num_models=shadow_keep.shape[0]))
  return float(np.mean([(logits[k, shadow_keep[k]].argmax(-1) == y[shadow_keep[k]]).mean()
                        for k in range(shadow_keep.shape[0])]))


def report_rows(reports: dict, **common) -> list:
  """Flat result rows of membership reports {attack: membership_report(...)}."""
  rows = []
  for name, r in reports.items():
    iv = r.get("interval", {})
    if "queries_per_example" in r:   # what this attack asked the victim, in all
      common = dict(common, queries=round(r["queries_per_example"] * r["num_scored"]))
    for metric in ("auc", "balanced_accuracy", "advantage"):
      rows.append(results.row(metric=metric, value=r[metric], attack=name, ci=iv.get(metric), **common))
    for f, v in r["tpr_at_fpr"].items():
      rows.append(results.row(metric=f"tpr_at_fpr_{f}", value=v, attack=name, ci=iv.get("tpr_at_fpr", {}).get(f),
                              **common))
  return rows
